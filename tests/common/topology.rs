//! Throwaway topologies: network namespaces with unique names, a guard that
//! tears each down (portfwd state included) when dropped, also when the test
//! panics, and ways to run code and commands inside them. Nothing is created
//! in the root network namespace: veth pairs are created directly inside the
//! test namespaces with `ip -n`.
use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
    time::Duration,
};

use super::ok;

pub const PORTFWD: &str = env!("CARGO_BIN_EXE_portfwd");

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const HOST_EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

/// The address of container `i` on the bridge.
pub fn container_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 10 + i as u8)
}

/// The IPv6 addresses of a dual-stack topology (`Topology::dual`): the same
/// links as IPv4's, each with a /64 of fd00::/8.
pub const CLIENT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 2);
pub const HOST_EXT_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 1, 0, 0, 0, 0, 0, 1);
pub const BRIDGE_IP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 1);

/// The IPv6 address of container `i` on the bridge of a dual-stack topology.
pub fn container_ip6(i: usize) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x30, 0, 0, 0, 0, 0, 0x10 + i as u16)
}

/// One address family of a topology, so that a test is written once and
/// run for each (`Stack::BOTH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stack {
    V4,
    V6,
}

impl Stack {
    pub const BOTH: [Stack; 2] = [Stack::V4, Stack::V6];

    fn pick(self, v4: impl Into<IpAddr>, v6: impl Into<IpAddr>) -> IpAddr {
        match self {
            Self::V4 => v4.into(),
            Self::V6 => v6.into(),
        }
    }

    pub fn client(self) -> IpAddr {
        self.pick(CLIENT_IP, CLIENT_IP6)
    }

    pub fn host_ext(self) -> IpAddr {
        self.pick(HOST_EXT_IP, HOST_EXT_IP6)
    }

    pub fn bridge(self) -> IpAddr {
        self.pick(BRIDGE_IP, BRIDGE_IP6)
    }

    pub fn container(self, i: usize) -> IpAddr {
        self.pick(container_ip(i), container_ip6(i))
    }

    /// The wildcard address a server binds to.
    pub fn any(self) -> IpAddr {
        self.pick(Ipv4Addr::UNSPECIFIED, Ipv6Addr::UNSPECIFIED)
    }

    pub fn loopback(self) -> IpAddr {
        self.pick(Ipv4Addr::LOCALHOST, Ipv6Addr::LOCALHOST)
    }

    /// `addr` as a SPEC writes it: IPv6 in brackets.
    pub fn spec(addr: IpAddr) -> String {
        match addr {
            IpAddr::V4(a) => a.to_string(),
            IpAddr::V6(a) => format!("[{a}]"),
        }
    }

    /// `PORT=CONTAINER:CPORT[/udp]` to container `i` of this family.
    pub fn map(self, port: u16, i: usize, cport: u16, proto: &str) -> String {
        let suffix = if proto == "udp" { "/udp" } else { "" };
        format!("{port}={}:{cport}{suffix}", Self::spec(self.container(i)))
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::V4 => "IPv4",
            Self::V6 => "IPv6",
        }
    }
}

/// Writes `value` to /proc/sys/`key` (dots for slashes) of namespace `ns`,
/// from a thread that entered it (/proc/sys/net is the opener's namespace's).
pub fn sysctl_in(ns: &str, key: &str, value: &str) {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    let value = value.to_string();
    in_netns(ns, move || {
        std::fs::write(&path, &value).unwrap_or_else(|e| panic!("write {path}: {e}"))
    });
}

/// Runs a command; panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn unique_prefix(tag: &str) -> String {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("pft-{}-{n}-{tag}", std::process::id())
}

/// Runs `f` on a new thread that has entered network namespace `ns`. Sockets
/// created there belong to `ns` for good and may be used from any thread.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Like `in_netns` but returns the thread's handle.
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    let path = format!("{NETNS_DIR}/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an open netns fd; it moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// Where the tests' portfwd keeps what survives a reboot (`persist`): what
/// `cargo xtask test` says, else a directory of the tests' own, never the
/// host's /var/lib/portfwd. Files are per namespace, whose names are unique.
pub fn persist_dir() -> std::path::PathBuf {
    std::env::var_os(portfwd::persist::DIR_ENV)
        .map(Into::into)
        .unwrap_or_else(|| std::env::temp_dir().join("portfwd-test-state"))
}

/// Runs `cmd` in network namespace `ns` (entered with setns between fork
/// and exec, so that /sys and the mounts stay the test's, unlike `ip netns
/// exec`), with `stdin` on its standard input; returns its output.
pub fn output_in(ns: &str, cmd: &mut Command, stdin: &[u8]) -> Output {
    use std::{io::Write as _, os::unix::process::CommandExt as _, process::Stdio};
    let path = format!("{NETNS_DIR}/{ns}");
    let netns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let fd = netns.as_raw_fd();
    // SAFETY: the closure runs between fork and exec and makes one
    // async-signal-safe syscall on a descriptor opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} in {ns}: {e}"));
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("wait")
}

/// Where `ip netns` keeps its namespaces.
const NETNS_DIR: &str = "/var/run/netns";

/// A network namespace deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(name: String) -> Self {
        sh(&["ip", "netns", "add", &name]);
        sh(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self { name }
    }

    /// Whether the namespace is still there (a test may delete it).
    pub fn exists(&self) -> bool {
        std::path::Path::new(NETNS_DIR).join(&self.name).exists()
    }

    /// Deletes the namespace now (`ip netns del`), as a user would without
    /// detaching first.
    pub fn delete(&self) {
        sh(&["ip", "netns", "del", &self.name]);
    }

    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "-n", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.name))
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        let out = self.exec(&["sysctl", "-qw", &format!("{key}={value}")]);
        assert!(
            out.status.success(),
            "sysctl {key}={value}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// client ns (10.0.1.2/24, c0) <-> host ns (h0 10.0.1.1/24, default route via
/// the client, bridge docker0 172.30.0.1/16) <-> N container namespaces
/// (eth0 172.30.0.10+i/16, default route via the bridge).
///
/// Dropping it detaches portfwd, removes any state it pinned for the host
/// namespace, then deletes every namespace.
pub struct Topology {
    /// IPv6 too on every link (`Topology::dual`).
    pub dual: bool,
    /// A cgroup of its own for portfwd's socket hooks, so that they see only
    /// the processes a test puts there: the test's own threads (the emulated
    /// remote client among them) stay outside, as a remote machine would.
    pub cgroup: std::path::PathBuf,
    pub client: Netns,
    pub containers: Vec<Netns>,
    // Declared last: dropped last, after the Drop impl below has cleaned up.
    pub host: Netns,
}

impl Topology {
    pub fn new(tag: &str, containers: usize) -> Self {
        Self::build(tag, containers, false)
    }

    /// The same topology with IPv6 on every link as well: the addresses of
    /// `Stack::V6`, a default route each way as IPv4's, forwarding on in
    /// the host, and no duplicate address detection (addresses are usable
    /// at once).
    pub fn dual(tag: &str, containers: usize) -> Self {
        Self::build(tag, containers, true)
    }

    fn build(tag: &str, containers: usize, dual: bool) -> Self {
        let prefix = unique_prefix(tag);
        let host = Netns::new(format!("{prefix}-host"));
        let client = Netns::new(format!("{prefix}-client"));
        host.ip(&[
            "link",
            "add",
            "h0",
            "type",
            "veth",
            "peer",
            "name",
            "c0",
            "netns",
            &client.name,
        ]);
        client.ip(&["addr", "add", "10.0.1.2/24", "dev", "c0"]);
        client.ip(&["link", "set", "c0", "up"]);
        host.ip(&["addr", "add", "10.0.1.1/24", "dev", "h0"]);
        host.ip(&["link", "set", "h0", "up"]);
        host.ip(&["route", "add", "default", "via", "10.0.1.2"]);
        host.ip(&["link", "add", "docker0", "type", "bridge"]);
        host.ip(&["addr", "add", "172.30.0.1/16", "dev", "docker0"]);
        host.ip(&["link", "set", "docker0", "up"]);
        let cgroup = portfwd::host::cgroup::default_root()
            .expect("cgroup2 root")
            .join(&prefix);
        std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("mkdir {}: {e}", cgroup.display()));
        if dual {
            for ns in [&host, &client] {
                sysctl_in(&ns.name, "net.ipv6.conf.all.disable_ipv6", "0");
                sysctl_in(&ns.name, "net.ipv6.conf.default.disable_ipv6", "0");
            }
            sysctl_in(&host.name, "net.ipv6.conf.all.forwarding", "1");
            client.ip(&["-6", "addr", "add", "fd00:1::2/64", "dev", "c0", "nodad"]);
            host.ip(&["-6", "addr", "add", "fd00:1::1/64", "dev", "h0", "nodad"]);
            host.ip(&["-6", "route", "add", "default", "via", "fd00:1::2"]);
            host.ip(&[
                "-6",
                "addr",
                "add",
                "fd00:30::1/64",
                "dev",
                "docker0",
                "nodad",
            ]);
        }
        let mut topo = Self {
            dual,
            cgroup,
            client,
            containers: Vec::new(),
            host,
        };
        for _ in 0..containers {
            topo.add_container();
        }
        topo
    }

    /// Adds a container namespace on docker0 (with its IPv6 address too in
    /// a dual-stack topology); returns its index.
    pub fn add_container(&mut self) -> usize {
        let i = self.containers.len();
        self.add_container_on("docker0", container_ip(i), BRIDGE_IP);
        if self.dual {
            let ns = &self.containers[i];
            sysctl_in(&ns.name, "net.ipv6.conf.all.disable_ipv6", "0");
            let cidr = format!("{}/64", container_ip6(i));
            ns.ip(&["-6", "addr", "add", &cidr, "dev", "eth0", "nodad"]);
            ns.ip(&["-6", "route", "add", "default", "via", "fd00:30::1"]);
        }
        i
    }

    /// Adds a bridge `name` with address `cidr` (e.g. "172.31.0.1/16") to the
    /// host namespace.
    pub fn add_bridge(&self, name: &str, cidr: &str) {
        self.host.ip(&["link", "add", name, "type", "bridge"]);
        self.host.ip(&["addr", "add", cidr, "dev", name]);
        self.host.ip(&["link", "set", name, "up"]);
    }

    /// Adds a container namespace on `bridge` at `addr` (a /16), routed
    /// through `gateway`; returns its index.
    pub fn add_container_on(&mut self, bridge: &str, addr: Ipv4Addr, gateway: Ipv4Addr) -> usize {
        let i = self.containers.len();
        let ns = Netns::new(format!("{}-k{i}", self.host.name.trim_end_matches("-host")));
        let port = format!("vk{i}");
        self.host.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.host.ip(&["link", "set", &port, "master", bridge]);
        self.host.ip(&["link", "set", &port, "up"]);
        ns.ip(&["addr", "add", &format!("{addr}/16"), "dev", "eth0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", &gateway.to_string()]);
        self.containers.push(ns);
        i
    }

    /// Runs portfwd against the host namespace.
    pub fn portfwd(&self, args: &[&str]) -> Output {
        Command::new(PORTFWD)
            .env(portfwd::persist::DIR_ENV, persist_dir())
            .args(["-n", &self.host.name])
            .args(args)
            .output()
            .expect("run portfwd")
    }

    /// `portfwd attach docker0 --cgroup <the topology's> --map ...`, which must succeed.
    pub fn attach(&self, maps: &[&str]) -> String {
        self.attach_with(maps, &[])
    }

    /// `attach` with extra arguments.
    pub fn attach_with(&self, maps: &[&str], extra: &[&str]) -> String {
        let cgroup = self.cgroup.to_str().expect("utf-8 path");
        let mut args = vec!["attach", "docker0", "--cgroup", cgroup];
        for m in maps {
            args.extend(["--map", m]);
        }
        args.extend_from_slice(extra);
        ok(self.portfwd(&args), &format!("portfwd {args:?}"))
    }

    /// `portfwd watch --timeout 30` on the host namespace, given a moment
    /// to subscribe before this returns.
    pub fn watch(&self) -> std::process::Child {
        let watcher = Command::new(PORTFWD)
            .env(portfwd::persist::DIR_ENV, persist_dir())
            .args(["-n", &self.host.name, "watch", "--timeout", "30"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start portfwd watch");
        std::thread::sleep(Duration::from_millis(300));
        watcher
    }

    /// Detaches, then waits for `watcher` to exit by itself, successfully.
    pub fn detach_ends_watch(&self, mut watcher: std::process::Child) {
        ok(self.portfwd(&["detach", "docker0"]), "detach");
        let deadline = std::time::Instant::now() + Duration::from_secs(6);
        loop {
            if let Some(status) = watcher.try_wait().unwrap() {
                assert!(status.success(), "watch exited with {status}");
                return;
            }
            if std::time::Instant::now() > deadline {
                let _ = watcher.kill();
                panic!("watch did not exit after detach");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// An HTTP GET from the client to `addr:port`, retried for 5 s (while
    /// `watcher` publishes a new address); kills the watcher and panics if
    /// it never succeeds.
    pub fn client_get_soon(
        &self,
        watcher: &mut std::process::Child,
        addr: IpAddr,
        port: u16,
    ) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            match super::http_get(&self.client.name, addr, port) {
                Ok(body) => return body,
                Err(e) if std::time::Instant::now() > deadline => {
                    let _ = watcher.kill();
                    panic!("the new host address {addr} never became published: {e}");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// The host namespace's portfwd state directory.
    pub fn state_dir(&self) -> std::path::PathBuf {
        in_netns(&self.host.name, || {
            portfwd::state::StateDir::current()
                .expect("netns cookie")
                .path
        })
    }

    /// No proxy: the host namespace holds no TCP socket at all (the flows
    /// through portfwd have none there).
    pub fn assert_no_proxy(&self) {
        let sockets = self.host_sockets("all");
        assert!(sockets.is_empty(), "host has sockets: {sockets:?}");
    }

    /// Sockets in the host namespace in the given `ss` state filter.
    pub fn host_sockets(&self, state: &str) -> Vec<String> {
        let out = self.host.exec(&["ss", "-tanH", "state", state]);
        assert!(
            out.status.success(),
            "ss: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // A test may have deleted the host namespace itself.
        if self.host.exists() {
            let _ = self.portfwd(&["detach", "docker0"]);
            let dir = self.state_dir();
            let _ = std::fs::remove_dir_all(&dir);
            let _ = std::fs::remove_dir(portfwd::state::root());
        }
        let _ = std::fs::remove_file(persist_dir().join(format!("netns-{}.json", self.host.name)));
        // Processes a test started in the cgroup have exited by now; retry
        // briefly in case the kernel is still reaping one.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() || !self.cgroup.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Fields drop next, deleting every namespace.
    }
}
