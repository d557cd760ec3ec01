//! `cargo xtask bench`: portfwd against the routed path and the usual port
//! forwarders, measured side by side in one namespace topology.
//!
//! client ns (10.88.1.2) -- h0/c0 -- host ns (10.88.1.1, bridge docker0
//! 172.29.0.1/16) -- web ns (172.29.0.10: nginx :80, iperf3 :5201).
//!
//! Every mode is set up at once on its own host ports, so rounds interleave
//! the modes (A B C … A B C …) without reconfiguring, and the machine's drift
//! hits them alike. Reported: medians with min–max over the rounds.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Read as _,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use crate::{
    cmd::{capture, run, which},
    netns::{ip, NetnsGuard, NETNS_DIR},
};

const HOST_IP: &str = "10.88.1.1";
const WEB_IP: &str = "172.29.0.10";
/// The client paths measured, in report order.
const PATHS: [&str; 3] = ["remote", "local", "hairpin"];
/// A second container on the bridge: the hairpin client.
const PEER_IP: &str = "172.29.0.20";
const BRIDGE: &str = "docker0";
/// Ports the bench's table-size part fills with mappings / rules (clear of
/// the modes' 8080-12201), the port its add/del probe uses, and the first of
/// the ports the memory part's docker-proxy processes listen on.
const TABLE_FIRST_PORT: u16 = 13_000;
const TABLE_PROBE_PORT: u16 = 63_500;
const MEMORY_FIRST_PORT: u16 = 63_600;

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Comma-separated modes (default: all): direct,portfwd,iptables,nftables,docker-proxy,socat
    #[arg(long)]
    modes: Option<String>,
    /// Rounds over all modes.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    duration: u64,
    /// One short round, small table sizes: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Redraw bench/latest.png from a results JSON file; measure nothing.
    #[arg(long, value_name = "JSON")]
    replot: Option<PathBuf>,
}

/// A way to reach the container: where remote and host-local clients connect.
///
/// Each mode forwards to its own backend ports (nginx on 80+i, iperf3 on
/// 5201+i for the i-th mode): the client reuses its source ports quickly, and
/// with one backend port for all modes a new connection through one mode would
/// land on the container's TIME_WAIT socket of another mode's earlier
/// connection, whose TCP timestamps (offset per destination address) it fails
/// PAWS against: SYNs lost, one-second retransmits, a benchmark of the
/// collision rather than of the forwarder.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Index into MODES: the mode's backend ports are 80+i and 5201+i.
    index: u16,
    name: &'static str,
    /// (address, http port, iperf3 port) for the remote client.
    remote: (&'static str, u16, u16),
    /// The same for a client on the host, or None if the mode has no local path.
    local: Option<(&'static str, u16, u16)>,
    udp: bool,
}

const MODES: [Mode; 6] = [
    Mode {
        index: 0,
        name: "direct",
        remote: (WEB_IP, 80, 5201),
        local: Some((WEB_IP, 80, 5201)),
        udp: true,
    },
    Mode {
        index: 1,
        name: "portfwd",
        remote: (HOST_IP, 8080, 8201),
        local: Some(("127.0.0.1", 8080, 8201)),
        udp: true,
    },
    Mode {
        index: 2,
        name: "iptables",
        remote: (HOST_IP, 9080, 9201),
        local: Some(("127.0.0.1", 9080, 9201)),
        udp: true,
    },
    Mode {
        index: 3,
        name: "nftables",
        remote: (HOST_IP, 10080, 10201),
        local: Some(("127.0.0.1", 10080, 10201)),
        udp: true,
    },
    Mode {
        index: 4,
        name: "docker-proxy",
        remote: (HOST_IP, 12080, 12201),
        local: Some(("127.0.0.1", 12080, 12201)),
        udp: true,
    },
    Mode {
        index: 5,
        name: "socat",
        remote: (HOST_IP, 11080, 11201),
        local: Some(("127.0.0.1", 11080, 11201)),
        udp: false,
    },
];

impl Mode {
    fn http_backend(&self) -> u16 {
        80 + self.index
    }
    fn iperf_backend(&self) -> u16 {
        5201 + self.index
    }
}

const PACKAGES: [&str; 7] = [
    "iperf3",
    "nginx",
    "wrk",
    "socat",
    "nftables",
    "iptables",
    "docker.io",
];

/// The topology and every process the bench started; torn down on drop.
struct Rig {
    portfwd: PathBuf,
    client: String,
    host: String,
    web: String,
    peer: String,
    cgroup: PathBuf,
    tmp: PathBuf,
    children: Vec<Child>,
    attached: bool,
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
        if self.attached {
            let _ = Command::new(&self.portfwd)
                .args(["-n", &self.host, "detach", BRIDGE])
                .output();
        }
        let _ = std::fs::remove_dir(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

fn progress(msg: &str) {
    eprint!("\r\x1b[2Kbench: {msg}");
}

pub fn run_bench(portfwd: &Path, args: &BenchArgs) -> Result<()> {
    if let Some(file) = &args.replot {
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let results: Results = serde_json::from_value(raw["results"].clone())?;
        let caption = format!(
            "{} — {}",
            raw["date"].as_str().unwrap_or("?"),
            raw["machine"].as_str().unwrap_or("?")
        );
        let png = file.with_extension("png");
        chart(&results, &MODES, &png, &caption)?;
        std::fs::copy(&png, crate::cmd::workspace_root().join("bench/latest.png"))?;
        eprintln!("bench: redrew {} and bench/latest.png", png.display());
        return Ok(());
    }
    ensure_packages()?;
    let modes: Vec<Mode> = match &args.modes {
        None => MODES.to_vec(),
        Some(list) => list
            .split(',')
            .map(|n| {
                MODES
                    .iter()
                    .find(|m| m.name == n.trim())
                    .copied()
                    .ok_or_else(|| anyhow!("unknown mode {n}"))
            })
            .collect::<Result<_>>()?,
    };
    let (rounds, secs) = if args.quick {
        (1, 1)
    } else {
        (args.rounds.max(1), args.duration.max(1))
    };
    let mut rig = Rig::build(portfwd)?;
    rig.start_servers()?;
    rig.setup_modes(&modes)?;

    // results[path][metric][mode] = samples
    let mut results: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> =
        BTreeMap::new();
    for round in 1..=rounds {
        for path in PATHS {
            for m in &modes {
                // A hairpin client uses the remote client's address: the
                // host's, or the container's own for direct.
                let Some(target) = (if path == "local" {
                    m.local
                } else {
                    Some(m.remote)
                }) else {
                    continue;
                };
                progress(&format!("round {round}/{rounds} {path} {}", m.name));
                let samples = rig.measure(path, m, target, secs)?;
                for (metric, v) in samples {
                    results
                        .entry(path.into())
                        .or_default()
                        .entry(metric)
                        .or_default()
                        .entry(m.name.into())
                        .or_default()
                        .push(v);
                }
            }
        }
    }
    // The last two parts report an error in the results rather than lose the
    // rounds already measured.
    let table = if modes.iter().any(|m| m.name == "portfwd") {
        progress("table size");
        Some(
            rig.table_size(args.quick, secs)
                .unwrap_or_else(|e| json!({ "error": format!("{e:#}") })),
        )
    } else {
        None
    };
    progress("memory");
    let memory = rig
        .memory(if args.quick { 20 } else { 100 })
        .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
    eprintln!("\r\x1b[2Kbench: done");

    let machine = machine();
    let stamp = capture(Command::new("date").args(["-u", "+%Y%m%dT%H%M%SZ"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let report = render(
        &results,
        &modes,
        table.as_ref(),
        &memory,
        &machine,
        &stamp,
        rounds,
        secs,
    );
    println!("{report}");

    let dir = crate::cmd::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let raw = json!({
        "date": stamp, "machine": machine, "rounds": rounds, "seconds": secs,
        "results": results, "table_size": table, "memory": memory,
    });
    std::fs::write(
        dir.join(format!("{stamp}.json")),
        serde_json::to_string_pretty(&raw)?,
    )?;
    std::fs::write(dir.join(format!("{stamp}.md")), &report)?;
    let png = dir.join(format!("{stamp}.png"));
    chart(&results, &modes, &png, &format!("{stamp} — {machine}"))?;
    std::fs::copy(&png, crate::cmd::workspace_root().join("bench/latest.png"))?;
    std::fs::write(
        crate::cmd::workspace_root().join("bench/latest.md"),
        &report,
    )?;
    eprintln!(
        "bench: wrote {} (.json, .md, .png) and bench/latest.{{md,png}}",
        dir.join(&stamp).display()
    );
    Ok(())
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "bench: installing {} (benchmark peers and load generators)",
        missing.join(" ")
    );
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}

/// A command inside a namespace (and optionally a cgroup), set up in the
/// child between fork and exec.
fn in_ns(cmd: &mut Command, netns: &str, cgroup: Option<&Path>) -> Result<()> {
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

fn output(mut cmd: Command, what: &str) -> Result<String> {
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
    fn build(portfwd: &Path) -> Result<Self> {
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
        ip(
            &host,
            &format!("link add vweb type veth peer name eth0 netns {web}"),
        )?;
        ip(&host, &format!("link set vweb master {BRIDGE}"))?;
        ip(&host, "link set vweb up")?;
        ip(&web, &format!("addr add {WEB_IP}/16 dev eth0"))?;
        ip(&web, "link set eth0 up")?;
        ip(&web, "route add default via 172.29.0.1")?;
        ip(
            &host,
            &format!("link add vpeer type veth peer name eth0 netns {peer}"),
        )?;
        ip(&host, &format!("link set vpeer master {BRIDGE}"))?;
        ip(&host, "link set vpeer up")?;
        ip(&peer, &format!("addr add {PEER_IP}/16 dev eth0"))?;
        ip(&peer, "link set eth0 up")?;
        ip(&peer, "route add default via 172.29.0.1")?;
        // The routed path (direct) and the netfilter modes need forwarding;
        // portfwd does not, but its figures are taken with it on, like a Docker host.
        run(Command::new("ip").args([
            "netns",
            "exec",
            &host,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]))?;
        run(Command::new("ip").args([
            "netns",
            "exec",
            &host,
            "sysctl",
            "-qw",
            "net.ipv4.conf.all.route_localnet=1",
        ]))?;
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
            attached: false,
            _netns: netns,
        })
    }

    fn spawn(&mut self, mut cmd: Command, netns: &str) -> Result<()> {
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

    fn start_servers(&mut self) -> Result<()> {
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
                 server {{ listen 80 backlog=4096; listen 81 backlog=4096; listen 82 backlog=4096; listen 83 backlog=4096; listen 84 backlog=4096; listen 85 backlog=4096; root {www}; }} }}\n",
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
            iperf.args(["-s", "-p", &m.iperf_backend().to_string()]);
            self.spawn(iperf, &web)?;
        }
        for m in &MODES {
            wait_port(&self.web, WEB_IP, m.http_backend())?;
            wait_port(&self.web, WEB_IP, m.iperf_backend())?;
        }
        Ok(())
    }

    fn host_sh(&self, script: &str) -> Result<()> {
        run(Command::new("ip").args(["netns", "exec", &self.host, "sh", "-c", script]))
    }

    fn setup_modes(&mut self, modes: &[Mode]) -> Result<()> {
        for m in modes {
            match m.name {
                "direct" => {}
                "portfwd" => {
                    let cg = self.cgroup.to_str().unwrap().to_string();
                    output(
                        {
                            let mut c = Command::new(&self.portfwd);
                            let (h, i) = (m.http_backend(), m.iperf_backend());
                            c.args(["-n", &self.host, "attach", BRIDGE, "--cgroup", &cg])
                                .args([
                                    "--map",
                                    &format!("8080={WEB_IP}:{h}"),
                                    "--map",
                                    &format!("8201={WEB_IP}:{i}"),
                                ])
                                .args(["--map", &format!("8201={WEB_IP}:{i}/udp")]);
                            c
                        },
                        "portfwd attach",
                    )?;
                    self.attached = true;
                }
                "iptables" => {
                    let mut s = String::new();
                    for (from, to) in [(9080, m.http_backend()), (9201, m.iperf_backend())] {
                        for proto in ["tcp", "udp"] {
                            let _ = write!(s, "iptables -t nat -A PREROUTING -d {HOST_IP} -p {proto} --dport {from} -j DNAT --to-destination {WEB_IP}:{to} && ");
                            let _ = write!(s, "iptables -t nat -A OUTPUT -d 127.0.0.1 -p {proto} --dport {from} -j DNAT --to-destination {WEB_IP}:{to} && ");
                        }
                    }
                    s.push_str("iptables -t nat -A POSTROUTING -o docker0 -m addrtype --src-type LOCAL -j MASQUERADE && ");
                    // Hairpin (a container through the host address): the
                    // container's reply must come back through the host, as
                    // with portfwd's source NAT.
                    s.push_str("iptables -t nat -A POSTROUTING -o docker0 -s 172.29.0.0/16 -m conntrack --ctstate DNAT -j MASQUERADE && iptables -P FORWARD ACCEPT");
                    self.host_sh(&s)?;
                }
                "nftables" => {
                    let (h, i) = (m.http_backend(), m.iperf_backend());
                    let rules = format!(
                        "table ip pfbench {{\n chain pre {{ type nat hook prerouting priority -100; ip daddr {HOST_IP} tcp dport 10080 dnat to {WEB_IP}:{h}; ip daddr {HOST_IP} tcp dport 10201 dnat to {WEB_IP}:{i}; ip daddr {HOST_IP} udp dport 10201 dnat to {WEB_IP}:{i}; }}\n\
                         chain out {{ type nat hook output priority -100; ip daddr 127.0.0.1 tcp dport 10080 dnat to {WEB_IP}:{h}; ip daddr 127.0.0.1 tcp dport 10201 dnat to {WEB_IP}:{i}; ip daddr 127.0.0.1 udp dport 10201 dnat to {WEB_IP}:{i}; }}\n\
                         chain post {{ type nat hook postrouting priority 100; oifname \"docker0\" fib saddr type local masquerade; oifname \"docker0\" ip saddr 172.29.0.0/16 ct status dnat masquerade; }}\n}}\n"
                    );
                    let f = self.tmp.join("rules.nft");
                    std::fs::write(&f, rules)?;
                    self.host_sh(&format!("nft -f {}", f.display()))?;
                }
                "docker-proxy" => {
                    let bin = which("docker-proxy").or_else(|| Some(PathBuf::from("/usr/sbin/docker-proxy")).filter(|p| p.exists()))
                        .ok_or_else(|| anyhow!("docker-proxy not found (Debian's docker.io ships /usr/sbin/docker-proxy)"))?;
                    for (proto, from, to) in [
                        ("tcp", 12080, m.http_backend()),
                        ("tcp", 12201, m.iperf_backend()),
                        ("udp", 12201, m.iperf_backend()),
                    ] {
                        self.docker_proxy(&bin, proto, from, to)?;
                    }
                }
                "socat" => {
                    for (from, to) in [(11080, m.http_backend()), (11201, m.iperf_backend())] {
                        let mut c = Command::new("socat");
                        c.args([
                            format!("TCP-LISTEN:{from},fork,reuseaddr,backlog=4096"),
                            format!("TCP:{WEB_IP}:{to}"),
                        ]);
                        let host = self.host.clone();
                        self.spawn(c, &host)?;
                    }
                }
                other => bail!("unknown mode {other}"),
            }
        }
        for m in modes {
            if m.name != "direct" {
                wait_port(&self.client, m.remote.0, m.remote.1)?;
            }
        }
        Ok(())
    }

    /// docker-proxy reports readiness by writing a byte to fd 3 (and newer
    /// ones close their listener if fd 3 is not open): give it a pipe there.
    fn docker_proxy(&mut self, bin: &Path, proto: &str, from: u16, to: u16) -> Result<()> {
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

    fn client_cmd(&self, path: &str, program: &str) -> Result<Command> {
        let mut c = Command::new(program);
        if path == "remote" {
            in_ns(&mut c, &self.client, None)?;
        } else if path == "hairpin" {
            in_ns(&mut c, &self.peer, None)?;
        } else {
            // Host-local clients run in the host namespace inside the bench
            // cgroup, where portfwd's socket hooks see them.
            in_ns(&mut c, &self.host, Some(&self.cgroup))?;
        }
        Ok(c)
    }

    fn measure(
        &self,
        path: &str,
        m: &Mode,
        (addr, http, iperf): (&str, u16, u16),
        secs: u64,
    ) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let t = secs.to_string();
        let what = format!("{path} {}", m.name);
        for (label, streams) in [("tcp_1_stream_gbps", "1"), ("tcp_4_streams_gbps", "4")] {
            let cpu0 = cpu_seconds();
            let mut c = self.client_cmd(path, "iperf3")?;
            c.args([
                "-c",
                addr,
                "-p",
                &iperf.to_string(),
                "-t",
                &t,
                "-P",
                streams,
                "-J",
            ]);
            let v: Value = serde_json::from_str(&output(c, &format!("iperf3 {what}"))?)?;
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
            out.push((label.to_string(), bps / 1e9));
            if streams == "1" && bytes > 0.0 {
                out.push((
                    "cpu_seconds_per_gb".into(),
                    (cpu_seconds() - cpu0) / (bytes / 1e9),
                ));
            }
        }
        if m.udp {
            let mut c = self.client_cmd(path, "iperf3")?;
            c.args([
                "-c",
                addr,
                "-p",
                &iperf.to_string(),
                "-t",
                &t,
                "-u",
                "-b",
                "1G",
                "-l",
                "1400",
                "-J",
            ]);
            let v: Value = serde_json::from_str(&output(c, &format!("iperf3 -u {what}"))?)?;
            out.push((
                "udp_1g_offered_gbps".into(),
                v["end"]["sum"]["bits_per_second"].as_f64().unwrap_or(0.0)
                    * (1.0 - v["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0) / 100.0)
                    / 1e9,
            ));
            out.push((
                "udp_loss_percent".into(),
                v["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0),
            ));
        }
        let url = format!("http://{addr}:{http}/");
        let mut c = self.client_cmd(path, "wrk")?;
        c.args([
            "-t",
            "1",
            "-c",
            "16",
            "-d",
            &format!("{secs}s"),
            "-H",
            "Connection: close",
            &url,
        ]);
        out.push((
            "connections_per_s".into(),
            wrk_rps(&output(c, &format!("wrk {what}"))?)?,
        ));
        let mut c = self.client_cmd(path, "wrk")?;
        c.args([
            "-t",
            "1",
            "-c",
            "1",
            "-d",
            &format!("{secs}s"),
            "--latency",
            &url,
        ]);
        let text = output(c, &format!("wrk --latency {what}"))?;
        out.push(("latency_p50_us".into(), wrk_percentile(&text, "50%")?));
        out.push(("latency_p99_us".into(), wrk_percentile(&text, "99%")?));
        Ok(out)
    }

    /// Runs `program` in the host namespace (setns between fork and exec)
    /// and returns how long it took, spawn to exit, in milliseconds.
    fn timed_in_host(&self, program: &str, args: &[&str]) -> Result<f64> {
        Ok(self.timed_in_host_with_stderr(program, args)?.0)
    }

    /// `portfwd ARGS` timed as above, with the time portfwd reports for its
    /// own work (PORTFWD_TIMING: from main() to exit, start-up excluded).
    fn timed_portfwd(&self, args: &[&str]) -> Result<(f64, f64)> {
        let portfwd = self.portfwd.to_str().expect("utf-8 path");
        let (ms, stderr) = self.timed_in_host_with_stderr(portfwd, args)?;
        let own = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("portfwd: in-process time ")?
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| anyhow!("portfwd {args:?} reported no in-process time: {stderr}"))?;
        Ok((ms, own))
    }

    fn timed_in_host_with_stderr(&self, program: &str, args: &[&str]) -> Result<(f64, String)> {
        let mut c = Command::new(program);
        c.env("PORTFWD_TIMING", "1")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        in_ns(&mut c, &self.host, None)?;
        let t0 = Instant::now();
        let out = c.output().with_context(|| format!("running {program}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{program} {args:?} failed: {stderr}");
        }
        Ok((ms, stderr))
    }

    /// Latency of one add and one del at several table sizes, portfwd vs
    /// iptables, and portfwd forwarding with the biggest table.
    fn table_size(&self, quick: bool, secs: u64) -> Result<Value> {
        let sizes: &[usize] = if quick {
            &[1, 1_000]
        } else {
            &[1, 1_000, 10_000, 50_000]
        };
        let reps = if quick { 3 } else { 7 };
        let mut rows = Vec::new();
        let mut installed = 0usize;
        let chain_ready = self
            .host_sh("iptables -t nat -N PFTABLE 2>/dev/null; true")
            .is_ok();
        for &n in sizes {
            // Grow both tables to n entries.
            if n > installed {
                let (a, b) = (
                    TABLE_FIRST_PORT as usize + installed,
                    TABLE_FIRST_PORT as usize + n - 1,
                );
                let mut c = Command::new(&self.portfwd);
                c.args([
                    "-n",
                    &self.host,
                    "add",
                    &format!("{a}-{b}={WEB_IP}:{a}-{b}"),
                ]);
                output(c, "portfwd add (fill)")?;
                if chain_ready {
                    let mut rules = String::from("*nat\n");
                    for p in a..=b {
                        let _ = writeln!(rules, "-A PFTABLE -d {HOST_IP} -p tcp --dport {p} -j DNAT --to-destination {WEB_IP}:{p}");
                    }
                    rules.push_str("COMMIT\n");
                    let f = self.tmp.join("fill.rules");
                    std::fs::write(&f, rules)?;
                    self.host_sh(&format!("iptables-restore --noflush < {}", f.display()))?;
                }
                installed = n;
            }
            // Every command is timed the same way: one process spawned
            // straight into the host namespace (setns before exec), as a user
            // on the host would run it; no `ip netns exec`, no shell.
            let probe = format!("{TABLE_PROBE_PORT}={WEB_IP}:80");
            let probe_port = TABLE_PROBE_PORT.to_string();
            let (mut pf_add_ms, mut pf_del_ms) = (Vec::new(), Vec::new());
            let (mut pf_add_own, mut pf_del_own) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let (whole, own) = self.timed_portfwd(&["add", &probe])?;
                pf_add_ms.push(whole);
                pf_add_own.push(own);
                let (whole, own) = self.timed_portfwd(&["del", &probe_port])?;
                pf_del_ms.push(whole);
                pf_del_own.push(own);
            }
            let rule = format!("-d {HOST_IP} -p tcp --dport {TABLE_PROBE_PORT} -j DNAT --to-destination {WEB_IP}:80");
            let rule: Vec<&str> = rule.split_whitespace().collect();
            let with = |op: &'static str| -> Vec<&str> {
                let mut v = vec!["-t", "nat", op, "PFTABLE"];
                v.extend(&rule);
                v
            };
            let mut ipt_add_ms = Vec::new();
            let mut ipt_del_ms = Vec::new();
            for _ in 0..reps {
                ipt_add_ms.push(self.timed_in_host("iptables", &with("-A"))?);
                ipt_del_ms.push(self.timed_in_host("iptables", &with("-D"))?);
            }
            rows.push(json!({
                "entries": n,
                "portfwd_add_ms": median(&pf_add_ms), "portfwd_del_ms": median(&pf_del_ms),
                "portfwd_add_in_process_ms": median(&pf_add_own), "portfwd_del_in_process_ms": median(&pf_del_own),
                "iptables_add_ms": median(&ipt_add_ms), "iptables_del_ms": median(&ipt_del_ms),
            }));
        }
        // The floor under any whole command: starting a process that does
        // nothing, spawned the same way.
        let mut floor = Vec::new();
        for _ in 0..reps.max(20) {
            floor.push(self.timed_in_host("true", &[])?);
        }
        // Forwarding through portfwd with the biggest table installed.
        let m = MODES[1];
        let samples = self.measure("remote", &Mode { udp: false, ..m }, m.remote, secs)?;
        let big: BTreeMap<String, f64> = samples.into_iter().collect();
        Ok(
            json!({ "rows": rows, "spawn_floor_ms": median(&floor), "portfwd_forwarding_with_table": { "entries": installed, "figures": big } }),
        )
    }

    /// What published ports cost in memory: portfwd's kernel maps (fixed,
    /// preallocated) vs docker-proxy processes (one per port and protocol).
    fn memory(&mut self, proxies: usize) -> Result<Value> {
        let mut memlock = 0u64;
        let state = Path::new("/sys/fs/bpf/portfwd");
        if let Ok(dirs) = std::fs::read_dir(state) {
            for d in dirs.flatten() {
                if !d.file_name().to_string_lossy().starts_with("netns-") {
                    continue;
                }
                for f in std::fs::read_dir(d.path())?.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.starts_with("pf_") {
                        memlock += map_memlock(&f.path()).unwrap_or(0);
                    }
                }
            }
        }
        let mut rss_kib = 0u64;
        let mut started = 0usize;
        if let Some(bin) = which("docker-proxy")
            .or_else(|| Some(PathBuf::from("/usr/sbin/docker-proxy")).filter(|p| p.exists()))
        {
            let first = self.children.len();
            for i in 0..proxies {
                let port = MEMORY_FIRST_PORT + i as u16;
                self.docker_proxy(&bin, "tcp", port, 80)?;
                started += 1;
            }
            std::thread::sleep(Duration::from_millis(500));
            for c in &self.children[first..] {
                rss_kib += std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find(|l| l.starts_with("VmRSS:"))
                            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                    })
                    .unwrap_or(0);
            }
        }
        let per_proxy_kib = if started > 0 {
            rss_kib as f64 / started as f64
        } else {
            0.0
        };
        Ok(json!({
            "portfwd_kernel_maps_bytes": memlock,
            "portfwd_userspace_bytes": 0,
            "docker_proxy_processes_measured": started,
            "docker_proxy_rss_kib_per_process": per_proxy_kib,
            "docker_proxy_1000_ports_mib_extrapolated": per_proxy_kib * 1000.0 / 1024.0,
        }))
    }
}

/// memlock of a pinned map, from the fdinfo of a descriptor opened on its pin.
fn map_memlock(pin: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let fd = portfwd_sys::obj_get(pin).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok();
    info?
        .lines()
        .find(|l| l.starts_with("memlock:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn cgroup2_root() -> Result<PathBuf> {
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

fn wait_port(ns: &str, addr: &str, port: u16) -> Result<()> {
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

/// CPU time used by the whole machine (all CPUs), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let hz = 100.0; // USER_HZ
    stat.lines()
        .next()
        .map(|l| {
            // cpu user nice system idle iowait irq softirq steal
            let f: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            [0, 1, 2, 5, 6]
                .iter()
                .filter_map(|&i| f.get(i))
                .sum::<f64>()
                / hz
        })
        .unwrap_or(0.0)
}

fn wrk_rps(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Requests/sec:")
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output:\n{text}"))
}

fn wrk_percentile(text: &str, pct: &str) -> Result<f64> {
    let after = text
        .split("Latency Distribution")
        .nth(1)
        .ok_or_else(|| anyhow!("no latency distribution:\n{text}"))?;
    let line = after
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pct))
        .ok_or_else(|| anyhow!("no {pct} line"))?;
    let v = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad {pct} line"))?;
    let (num, unit): (String, String) = v.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let n: f64 = num.parse()?;
    Ok(match unit.as_str() {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => bail!("unknown unit in {v}"),
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}

type Results = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>;

const METRICS: [(&str, &str, bool); 8] = [
    ("tcp_1_stream_gbps", "TCP 1 stream (Gbit/s)", true),
    ("tcp_4_streams_gbps", "TCP 4 streams (Gbit/s)", true),
    (
        "udp_1g_offered_gbps",
        "UDP at 1 Gbit/s offered, delivered (Gbit/s)",
        true,
    ),
    ("udp_loss_percent", "UDP loss (%)", false),
    (
        "connections_per_s",
        "new connections/s (HTTP, Connection: close)",
        true,
    ),
    (
        "latency_p50_us",
        "request latency p50, kept-alive (µs)",
        false,
    ),
    (
        "latency_p99_us",
        "request latency p99, kept-alive (µs)",
        false,
    ),
    (
        "cpu_seconds_per_gb",
        "CPU seconds per GB (TCP 1 stream)",
        false,
    ),
];

#[allow(clippy::too_many_arguments)]
fn render(
    results: &Results,
    modes: &[Mode],
    table: Option<&Value>,
    memory: &Value,
    machine: &str,
    stamp: &str,
    rounds: usize,
    secs: u64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## portfwd benchmark, {stamp}\n\nMachine: {machine}. {rounds} round(s) of {secs} s per measurement, modes interleaved; median [min–max].\n");
    for path in PATHS {
        let Some(metrics) = results.get(path) else {
            continue;
        };
        let title = match path {
            "remote" => "Remote client (client namespace -> host address)",
            "local" => "Host-local client (127.0.0.1; direct = the container's address)",
            _ => "Hairpin client (another container on the bridge -> host address; direct = the container's address)",
        };
        let _ = writeln!(s, "### {title}\n");
        let present: Vec<&Mode> = modes
            .iter()
            .filter(|m| metrics.values().any(|by| by.contains_key(m.name)))
            .collect();
        let _ = write!(s, "| metric |");
        for m in &present {
            let _ = write!(s, " {} |", m.name);
        }
        let _ = writeln!(s, " portfwd / direct | portfwd / iptables |");
        let _ = writeln!(s, "|---|{}---|---|", "---|".repeat(present.len()));
        for (key, label, _) in METRICS {
            let Some(by_mode) = metrics.get(key) else {
                continue;
            };
            let _ = write!(s, "| {label} |");
            for m in &present {
                match by_mode.get(m.name) {
                    Some(v) => {
                        let (lo, hi) = (
                            v.iter().cloned().fold(f64::INFINITY, f64::min),
                            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        );
                        let _ = write!(s, " {} [{}–{}] |", fmt(median(v)), fmt(lo), fmt(hi));
                    }
                    None => s.push_str(" – |"),
                }
            }
            let ratio = |other: &str| -> String {
                match (by_mode.get("portfwd"), by_mode.get(other)) {
                    (Some(p), Some(o)) if median(o) != 0.0 => {
                        format!("{:.2}x", median(p) / median(o))
                    }
                    _ => "–".into(),
                }
            };
            let _ = writeln!(s, " {} | {} |", ratio("direct"), ratio("iptables"));
        }
        s.push('\n');
    }
    if let Some(t) = table {
        let _ = writeln!(
            s,
            "### Table size: latency of one add / del (ms, median)\n\nWhole command: spawn to exit, each tool started the same way, straight into the host namespace. In process: portfwd's own report (PORTFWD_TIMING), from main() to exit.\n"
        );
        let _ = writeln!(s, "| entries | portfwd add | portfwd del | iptables -A | iptables -D | portfwd add, in process | portfwd del, in process |\n|---|---|---|---|---|---|---|");
        for r in t["rows"].as_array().into_iter().flatten() {
            let cell = |k: &str| r[k].as_f64().map_or_else(|| "–".to_string(), fmt);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r["entries"],
                cell("portfwd_add_ms"),
                cell("portfwd_del_ms"),
                cell("iptables_add_ms"),
                cell("iptables_del_ms"),
                cell("portfwd_add_in_process_ms"),
                cell("portfwd_del_in_process_ms")
            );
        }
        if let Some(floor) = t["spawn_floor_ms"].as_f64() {
            let _ = writeln!(
                s,
                "\nStarting a process that does nothing (`true`, spawned the same way) takes {} ms here: the floor under any whole command.",
                fmt(floor)
            );
        }
        let big = &t["portfwd_forwarding_with_table"];
        let f = |k: &str| big["figures"][k].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "\nportfwd forwarding (remote client) with {} mappings installed: TCP 1 stream {} Gbit/s, 4 streams {} Gbit/s, {} connections/s, kept-alive p50 {} µs, p99 {} µs.\n",
            big["entries"],
            fmt(f("tcp_1_stream_gbps")),
            fmt(f("tcp_4_streams_gbps")),
            fmt(f("connections_per_s")),
            fmt(f("latency_p50_us")),
            fmt(f("latency_p99_us"))
        );
    }
    let _ = writeln!(
        s,
        "### Memory for published ports\n\nportfwd: kernel maps {:.1} MiB in all (preallocated, the same for 1 or 65 536 mappings), no process after attach returns. docker-proxy: {:.1} MiB RSS per process (measured over {} processes), so about {:.0} MiB for 1 000 ports of one protocol.\n",
        memory["portfwd_kernel_maps_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        memory["docker_proxy_rss_kib_per_process"].as_f64().unwrap_or(0.0) / 1024.0,
        memory["docker_proxy_processes_measured"],
        memory["docker_proxy_1000_ports_mib_extrapolated"].as_f64().unwrap_or(0.0),
    );
    s
}

fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Bar charts of throughput and connections/s per mode and path.
fn chart(results: &Results, modes: &[Mode], png: &Path, caption: &str) -> Result<()> {
    use plotters::prelude::*;
    let font = std::fs::read("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
        .context("DejaVuSans.ttf (Debian package fonts-dejavu-core)")?;
    let font: &'static [u8] = Box::leak(font.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, font)
        .map_err(|_| anyhow!("bad font"))?;
    let root = BitMapBackend::new(png, (1400, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(&format!("portfwd vs peers — {caption}"), ("sans-serif", 22))?;
    let panels = root.split_evenly((2, 2));
    let specs = [
        (
            "remote",
            "tcp_1_stream_gbps",
            "remote: TCP 1 stream, Gbit/s",
        ),
        ("remote", "connections_per_s", "remote: new connections/s"),
        (
            "local",
            "tcp_1_stream_gbps",
            "host-local: TCP 1 stream, Gbit/s",
        ),
        (
            "local",
            "connections_per_s",
            "host-local: new connections/s",
        ),
    ];
    for (area, (path, metric, title)) in panels.iter().zip(specs) {
        let Some(by_mode) = results.get(path).and_then(|p| p.get(metric)) else {
            continue;
        };
        let bars: Vec<(&str, f64)> = modes
            .iter()
            .filter_map(|m| Some((m.name, median(by_mode.get(m.name)?))))
            .collect();
        let max = bars.iter().map(|b| b.1).fold(0.0, f64::max).max(1e-9) * 1.2;
        let mut ch = ChartBuilder::on(area)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..bars.len() as f64, 0f64..max)?;
        ch.configure_mesh().disable_x_mesh().x_labels(0).draw()?;
        ch.draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
            let color = if *name == "portfwd" {
                RGBColor(220, 80, 40)
            } else {
                RGBColor(90, 120, 170)
            };
            Rectangle::new(
                [(i as f64 + 0.15, 0.0), (i as f64 + 0.85, *v)],
                color.filled(),
            )
        }))?;
        ch.draw_series(bars.iter().enumerate().map(|(i, (name, v))| {
            Text::new(
                format!("{name}: {}", fmt(*v)),
                (i as f64 + 0.12, *v + max * 0.06),
                ("sans-serif", 13),
            )
        }))?;
    }
    root.present()?;
    Ok(())
}
