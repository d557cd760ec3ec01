//! Test harness: throwaway network-namespace topologies and helpers to run
//! code and commands inside them.
//!
//! Every topology gets unique namespace names and a guard that tears it down
//! (portfwd state included) when dropped, also when the test panics. Nothing
//! is created in the root network namespace: veth pairs are created directly
//! inside the test namespaces with `ip -n`.
#![allow(dead_code)]

use std::{
    fs::File,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    process::{Command, Output},
    sync::atomic::{AtomicUsize, Ordering},
    thread::JoinHandle,
    time::{Duration, Instant},
};

pub const PORTFWD: &str = env!("CARGO_BIN_EXE_portfwd");

pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 2);
pub const HOST_EXT_IP: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 1);
pub const BRIDGE_IP: Ipv4Addr = Ipv4Addr::new(172, 30, 0, 1);

/// The address of container `i` on the bridge.
pub fn container_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(172, 30, 0, 10 + i as u8)
}

/// True if the tests can run here. Under CI=true a machine that cannot run
/// them is a failure, never a silent skip.
pub fn privileged_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let netns_ok = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && netns_ok {
        return true;
    }
    let why = if root {
        "iproute2 (`ip`) is missing"
    } else {
        "not running as root"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run network tests under CI=true: {why}");
    }
    eprintln!("SKIPPED {test}: {why} (needs root, BPF and network namespaces)");
    false
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
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: setns on an open netns fd; it moves only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

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
        let mut topo = Self {
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

    /// Adds a container namespace on docker0; returns its index.
    pub fn add_container(&mut self) -> usize {
        let i = self.containers.len();
        let ns = Netns::new(format!("{}-k{i}", self.host.name.trim_end_matches("-host")));
        let port = format!("vk{i}");
        self.host.ip(&[
            "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        self.host.ip(&["link", "set", &port, "master", "docker0"]);
        self.host.ip(&["link", "set", &port, "up"]);
        ns.ip(&[
            "addr",
            "add",
            &format!("{}/16", container_ip(i)),
            "dev",
            "eth0",
        ]);
        ns.ip(&["link", "set", "eth0", "up"]);
        ns.ip(&["route", "add", "default", "via", "172.30.0.1"]);
        self.containers.push(ns);
        i
    }

    /// Runs portfwd against the host namespace.
    pub fn portfwd(&self, args: &[&str]) -> Output {
        Command::new(PORTFWD)
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

    /// The host namespace's portfwd state directory.
    pub fn state_dir(&self) -> std::path::PathBuf {
        in_netns(&self.host.name, || {
            portfwd::state::StateDir::current()
                .expect("netns cookie")
                .path
        })
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
        let _ = self.portfwd(&["detach", "docker0"]);
        let dir = self.state_dir();
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_dir(portfwd::state::root());
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

/// A TCP listener inside a namespace, bound before this returns (so a
/// client can connect right away).
pub fn tcp_listener(ns: &str, port: u16) -> TcpListener {
    let l = in_netns(ns, move || {
        TcpListener::bind(("0.0.0.0", port)).expect("bind")
    });
    l.set_nonblocking(true).expect("nonblocking");
    l
}

/// Accepts one connection, giving up (None) after `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                return Some((s, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// An HTTP server in namespace `ns` on `port` that answers up to `max`
/// requests, each with "<name> saw <peer ip>", then stops (also by itself
/// after `timeout` without a connection). Returns the peers it saw.
pub fn http_server(
    ns: &str,
    port: u16,
    name: &'static str,
    max: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let l = tcp_listener(ns, port);
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        while peers.len() < max {
            let Some((mut s, peer)) = accept_within(&l, Duration::from_secs(15)) else {
                break;
            };
            answer_http(&mut s, peer, name);
            peers.push(peer);
        }
        peers
    })
}

/// Reads one request and answers "<name> saw <peer ip>", then closes.
fn answer_http(s: &mut TcpStream, peer: SocketAddr, name: &str) {
    read_http_head(s);
    let body = format!("{name} saw {}", peer.ip());
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
}

/// Reads until the end of an HTTP request head.
pub fn read_http_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) => buf.push(byte[0]),
        }
    }
    buf
}

/// Connects from namespace `ns` to `addr:port`.
pub fn connect_from(ns: &str, addr: Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let target = SocketAddr::V4(SocketAddrV4::new(addr, port));
    in_netns(ns, move || {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        Ok(s)
    })
}

/// One HTTP GET from namespace `ns`; returns the body.
pub fn http_get(ns: &str, addr: Ipv4Addr, port: u16) -> std::io::Result<String> {
    let mut s = connect_from(ns, addr, port)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "unexpected response: {resp:?}"
    );
    Ok(body)
}

/// Deterministic pseudorandom bytes (xorshift), so both ends can agree on
/// content without sharing a buffer.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The ids of the TCX ingress programs on `iface` in namespace `ns`.
pub fn tcx_ingress_programs(ns: &str, iface: &'static str) -> Vec<u32> {
    in_netns(ns, move || match aya::programs::SchedClassifier::query_tcx(
        iface,
        aya::programs::TcAttachType::Ingress,
    ) {
        Ok((_, progs)) => progs.iter().map(|p| p.id()).collect(),
        Err(e) => panic!("query tcx on {iface}: {e}"),
    })
}

/// An HTTP server like `http_server` that keeps answering until `stop` is
/// set (or nothing connects for 20 s). Returns how many requests it answered.
pub fn http_server_until(
    ns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<usize> {
    let l = tcp_listener(ns, port);
    std::thread::spawn(move || {
        let mut served = 0;
        let mut idle_since = Instant::now();
        while !stop.load(Ordering::Relaxed) && idle_since.elapsed() < Duration::from_secs(20) {
            let Some((mut s, peer)) = accept_within(&l, Duration::from_millis(100)) else {
                continue;
            };
            idle_since = Instant::now();
            answer_http(&mut s, peer, name);
            served += 1;
        }
        served
    })
}

/// `portfwd list --json` for the topology's host namespace, parsed.
pub fn list_json(topo: &Topology) -> Vec<serde_json::Value> {
    let out = topo.portfwd(&["list", "--json"]);
    assert!(
        out.status.success(),
        "list --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "list --json is not a JSON array ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a portfwd invocation succeeded; returns its stdout.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
