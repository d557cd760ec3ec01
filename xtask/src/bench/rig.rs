//! The bench's topology and every process it starts, torn down on drop.
//!
//! client ns (10.88.1.2) -- h0/c0 -- host ns (10.88.1.1, bridge docker0
//! 172.29.0.1/16) -- web ns (172.29.0.10: nginx :80, iperf3 :5201), and a
//! peer ns (172.29.0.20) on the bridge: the hairpin client.
use std::{
    io::Read as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};

use super::modes::MODES;
use crate::{
    cmd::run,
    netns::{ip, NetnsGuard, NETNS_DIR},
};

pub const HOST_IP: &str = "10.88.1.1";
pub const WEB_IP: &str = "172.29.0.10";
/// A second container on the bridge: the hairpin client.
pub const PEER_IP: &str = "172.29.0.20";
pub const BRIDGE: &str = "docker0";

/// Where a client runs, in report order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client {
    /// The client namespace, through the host's external address.
    Remote,
    /// The host namespace, in the bench cgroup (127.0.0.1).
    Local,
    /// Another container on the bridge, through the host's address.
    Hairpin,
}

impl Client {
    pub const ALL: [Client; 3] = [Client::Remote, Client::Local, Client::Hairpin];

    /// The key of the client's results.
    pub fn key(self) -> &'static str {
        match self {
            Client::Remote => "remote",
            Client::Local => "local",
            Client::Hairpin => "hairpin",
        }
    }
}

/// The topology and every process the bench started; torn down on drop.
pub struct Rig {
    pub portfwd: PathBuf,
    pub client: String,
    pub host: String,
    pub web: String,
    pub peer: String,
    pub cgroup: PathBuf,
    pub tmp: PathBuf,
    pub children: Vec<Child>,
    /// The portfwd binary that attached in the host namespace, if any.
    pub attached: Option<PathBuf>,
    // Last: namespaces go after the processes in them (read only by Drop).
    _netns: NetnsGuard,
}

impl Drop for Rig {
    fn drop(&mut self) {
        // SIGTERM first: nginx's master takes its workers down with it on a
        // TERM, but leaves them running (orphaned, in a deleted namespace) on
        // a KILL.
        for c in &self.children {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        for c in &mut self.children {
            while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = self.detach_portfwd();
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// `sysctl -qw SETTING` inside namespace `ns`.
pub fn sysctl(ns: &str, setting: &str) -> Result<()> {
    run(Command::new("ip").args(["netns", "exec", ns, "sysctl", "-qw", setting]))
}

/// A container namespace `ns` on the host's docker0 through veth `port`:
/// eth0 at `addr`/16, its default route via `gateway`.
pub fn add_container(host: &str, port: &str, ns: &str, addr: &str, gateway: &str) -> Result<()> {
    ip(
        host,
        &format!("link add {port} type veth peer name eth0 netns {ns}"),
    )?;
    ip(host, &format!("link set {port} master {BRIDGE}"))?;
    ip(host, &format!("link set {port} up"))?;
    ip(ns, &format!("addr add {addr}/16 dev eth0"))?;
    ip(ns, "link set eth0 up")?;
    ip(ns, &format!("route add default via {gateway}"))
}

/// A command inside a namespace (and optionally a cgroup), set up in the
/// child between fork and exec.
pub fn in_ns(cmd: &mut Command, netns: &str, cgroup: Option<&Path>) -> Result<()> {
    let ns = std::fs::File::open(Path::new(NETNS_DIR).join(netns))?;
    let procs = match cgroup {
        Some(cg) => Some(
            std::fs::OpenOptions::new()
                .write(true)
                .open(cg.join("cgroup.procs"))?,
        ),
        None => None,
    };
    let ns_fd = ns.as_raw_fd();
    let procs_fd = procs.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: between fork and exec only async-signal-safe calls (write,
    // setns) on descriptors opened before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(fd) = procs_fd {
                if libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if libc::setns(ns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The files must stay open until spawn: leak them into the command's life.
    std::mem::forget(ns);
    std::mem::forget(procs);
    Ok(())
}

pub fn output(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Rig {
    pub fn build(portfwd: &Path) -> Result<Self> {
        let id = std::process::id();
        let mut netns = NetnsGuard::default();
        let (client, host, web, peer) = (
            format!("pfbench-{id}-client"),
            format!("pfbench-{id}-host"),
            format!("pfbench-{id}-web"),
            format!("pfbench-{id}-peer"),
        );
        for n in [&host, &client, &web, &peer] {
            netns.add(n)?;
        }
        ip(
            &host,
            &format!("link add h0 type veth peer name c0 netns {client}"),
        )?;
        ip(&client, "addr add 10.88.1.2/24 dev c0")?;
        ip(&client, "link set c0 up")?;
        ip(&client, &format!("route add 172.29.0.0/16 via {HOST_IP}"))?;
        ip(&host, &format!("addr add {HOST_IP}/24 dev h0"))?;
        ip(&host, "link set h0 up")?;
        ip(&host, "route add default via 10.88.1.2")?;
        ip(&host, &format!("link add {BRIDGE} type bridge"))?;
        ip(&host, &format!("addr add 172.29.0.1/16 dev {BRIDGE}"))?;
        ip(&host, &format!("link set {BRIDGE} up"))?;
        add_container(&host, "vweb", &web, WEB_IP, "172.29.0.1")?;
        add_container(&host, "vpeer", &peer, PEER_IP, "172.29.0.1")?;
        // The routed path (direct) and the netfilter modes need forwarding;
        // portfwd does not, but its figures are taken with it on, like a Docker host.
        sysctl(&host, "net.ipv4.ip_forward=1")?;
        sysctl(&host, "net.ipv4.conf.all.route_localnet=1")?;
        let root = cgroup2_root()?;
        let cgroup = root.join(format!("pfbench-{id}"));
        std::fs::create_dir_all(&cgroup)?;
        let tmp = std::env::temp_dir().join(format!("pfbench-{id}"));
        std::fs::create_dir_all(&tmp)?;
        Ok(Self {
            portfwd: portfwd.to_owned(),
            client,
            host,
            web,
            peer,
            cgroup,
            tmp,
            children: Vec::new(),
            attached: None,
            _netns: netns,
        })
    }

    /// `portfwd detach` with the binary that attached, if one did.
    pub fn detach_portfwd(&mut self) -> Result<()> {
        let Some(portfwd) = self.attached.take() else {
            return Ok(());
        };
        let mut c = Command::new(portfwd);
        c.args(["-n", &self.host, "detach", BRIDGE]);
        output(c, "portfwd detach").map(drop)
    }

    pub fn spawn(&mut self, mut cmd: Command, netns: &str) -> Result<()> {
        let ns = netns.to_string();
        in_ns(&mut cmd, &ns, None)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        self.children.push(child);
        Ok(())
    }

    pub fn start_servers(&mut self) -> Result<()> {
        let www = self.tmp.join("www");
        std::fs::create_dir_all(&www)?;
        std::fs::write(www.join("index.html"), "x".repeat(612))?;
        let conf = self.tmp.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "daemon off; worker_processes 1; pid {tmp}/nginx.pid; error_log {tmp}/error.log;\n\
                 events {{ worker_connections 4096; }}\n\
                 http {{ access_log off; keepalive_requests 1000000; keepalive_timeout 60;\n\
                 client_body_temp_path {tmp}; proxy_temp_path {tmp}; fastcgi_temp_path {tmp}; uwsgi_temp_path {tmp}; scgi_temp_path {tmp};\n\
                 server {{ listen 80 backlog=4096; listen 81 backlog=4096; listen 82 backlog=4096; listen 83 backlog=4096; listen 84 backlog=4096; listen 85 backlog=4096; listen 86 backlog=4096; root {www}; }} }}\n",
                tmp = self.tmp.display(),
                www = www.display()
            ),
        )?;
        let mut nginx = Command::new("nginx");
        nginx.args([
            "-c",
            conf.to_str().unwrap(),
            "-p",
            self.tmp.to_str().unwrap(),
        ]);
        let web = self.web.clone();
        self.spawn(nginx, &web)?;
        for m in &MODES {
            let mut iperf = Command::new("iperf3");
            iperf.args(["-s", "-p", &m.backend().iperf.to_string()]);
            self.spawn(iperf, &web)?;
        }
        for m in &MODES {
            wait_port(&self.web, WEB_IP, m.backend().http)?;
            wait_port(&self.web, WEB_IP, m.backend().iperf)?;
        }
        Ok(())
    }

    pub fn host_sh(&self, script: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", &self.host, "sh", "-c", script]))
    }

    /// docker-proxy reports readiness by writing a byte to fd 3 (and newer
    /// ones close their listener if fd 3 is not open): give it a pipe there.
    pub fn docker_proxy(&mut self, bin: &Path, proto: &str, from: u16, to: u16) -> Result<()> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            bail!("pipe: {}", std::io::Error::last_os_error());
        }
        let (r, w) = (fds[0], fds[1]);
        let mut c = Command::new(bin);
        c.args([
            "-proto",
            proto,
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            &from.to_string(),
        ])
        .args(["-container-ip", WEB_IP, "-container-port", &to.to_string()]);
        in_ns(&mut c, &self.host, None)?;
        // SAFETY: dup2 in the child, between fork and exec.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(w, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        // SAFETY: closing our copy of the write end; the child holds its own.
        unsafe { libc::close(w) };
        // SAFETY: r is ours; File takes ownership.
        let mut rf = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(r) };
        let mut byte = [0u8; 1];
        // The readiness byte, or EOF from proxies that do not write one.
        let _ = rf.read(&mut byte);
        self.children.push(child);
        Ok(())
    }

    pub fn client_cmd(&self, client: Client, program: &str) -> Result<Command> {
        let mut c = Command::new(program);
        match client {
            Client::Remote => in_ns(&mut c, &self.client, None)?,
            Client::Hairpin => in_ns(&mut c, &self.peer, None)?,
            // Host-local clients run in the host namespace inside the bench
            // cgroup, where portfwd's socket hooks see them.
            Client::Local => in_ns(&mut c, &self.host, Some(&self.cgroup))?,
        }
        Ok(c)
    }
}

pub fn cgroup2_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let mounts: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mp = left.split_whitespace().nth(4)?;
            (right.split_whitespace().next() == Some("cgroup2")).then(|| PathBuf::from(mp))
        })
        .collect();
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .iter()
        .map(PathBuf::from)
        .find(|p| mounts.contains(p))
        .or_else(|| mounts.into_iter().next())
        .ok_or_else(|| anyhow!("no cgroup2 mount"))
}

pub fn wait_port(ns: &str, addr: &str, port: u16) -> Result<()> {
    let target: std::net::SocketAddr = format!("{addr}:{port}").parse()?;
    let ns = ns.to_string();
    crate::netns::run_in(&ns, move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if std::net::TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{target} never accepted a connection");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
}
