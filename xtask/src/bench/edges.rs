//! The edges of issue 15, each beside iptables DNAT on the same topology
//! and in the same run:
//!
//! far ns (c1 10.89.3.2/24, MTU 1500) -- router ns (r0 10.89.3.1 | r1
//! 10.89.2.2, MTU 1400) -- host ns (h1 10.89.2.1, MTU 1400; docker0
//! 172.28.0.1/16, MTU 1500) -- web ns (172.28.0.10).
//!
//! - a 20 MiB download through the small uplink while the client, on a
//!   1500 link, advertises MSS 1460: the container's full-size segments do
//!   not fit the way back, and only an ICMP "fragmentation needed" to it
//!   lets the download finish;
//! - 4000-byte UDP datagrams echoed by the container (fragments both ways);
//! - conntrack under pressure: a bounded SYN flood of unique tuples from
//!   several addresses of the far namespace (raw socket) while an
//!   established transfer runs: its throughput before and during, whether a
//!   new connection is served meanwhile and after, and the state tables'
//!   counters.
//!
//! Every portfwd build given is measured (one attached at a time, on ports
//! 8080 and 5353/udp); iptables DNAT stays on 9090 and 9053/udp throughout.
use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use super::{
    cost::Build,
    measure::median,
    packet::{ipv4, Tuple, L4, TCP_SYN},
    rig::{add_container, output, sysctl},
};
use crate::{
    cmd::stdout,
    netns::{ip, spawn_in, NetnsGuard},
};

const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 89, 2, 1);
const WEB_IP: &str = "172.28.0.10";
/// The far namespace's own address, and the first of the flood's sources.
const FAR_IP: &str = "10.89.3.2";
const FLOOD_FIRST_SOURCE: u8 = 10;
const FLOOD_SOURCES: u8 = 5;
/// Published ports: portfwd's, then iptables DNAT's; the container's.
const PORTFWD_TCP: u16 = 8080;
const PORTFWD_UDP: u16 = 5353;
const IPTABLES_TCP: u16 = 9090;
const IPTABLES_UDP: u16 = 9053;
const WEB_TCP: u16 = 80;
const WEB_UDP: u16 = 53;
const DOWNLOAD: usize = 20 << 20;
const DATAGRAM: usize = 4000;

/// What the web server sends after the client's first byte.
const ASK_DOWNLOAD: u8 = b'D';
const ASK_STREAM: u8 = b'S';
const ASK_HELLO: u8 = b'H';

/// The topology and the servers; servers stop and namespaces go on drop.
struct EdgeRig {
    far: String,
    host: String,
    web: String,
    stop: Arc<AtomicBool>,
    servers: Vec<JoinHandle<Result<()>>>,
    attached: Option<PathBuf>,
    // Last: namespaces go after everything in them.
    _netns: NetnsGuard,
}

impl Drop for EdgeRig {
    fn drop(&mut self) {
        let _ = self.detach();
        self.stop.store(true, Ordering::Relaxed);
        for s in self.servers.drain(..) {
            let _ = s.join();
        }
    }
}

fn host_sh(ns: &str, script: &str) -> Result<String> {
    stdout(Command::new("ip").args(["netns", "exec", ns, "sh", "-c", script]))
}

impl EdgeRig {
    fn build() -> Result<Self> {
        let id = std::process::id();
        let mut netns = NetnsGuard::default();
        let name = |role: &str| format!("pfedge-{id}-{role}");
        let (far, router, host, web) = (name("far"), name("rt"), name("host"), name("web"));
        for n in [&host, &router, &far, &web] {
            netns.add(n)?;
        }
        ip(
            &host,
            &format!("link add h1 mtu 1400 type veth peer name r1 mtu 1400 netns {router}"),
        )?;
        ip(
            &router,
            &format!("link add r0 type veth peer name c1 netns {far}"),
        )?;
        ip(&host, "addr add 10.89.2.1/24 dev h1")?;
        ip(&host, "link set h1 up")?;
        ip(&host, "route add default via 10.89.2.2")?;
        ip(&router, "addr add 10.89.2.2/24 dev r1")?;
        ip(&router, "addr add 10.89.3.1/24 dev r0")?;
        ip(&router, "link set r1 up")?;
        ip(&router, "link set r0 up")?;
        sysctl(&router, "net.ipv4.ip_forward=1")?;
        ip(&far, &format!("addr add {FAR_IP}/24 dev c1"))?;
        for i in 0..FLOOD_SOURCES {
            ip(
                &far,
                &format!("addr add 10.89.3.{}/24 dev c1", FLOOD_FIRST_SOURCE + i),
            )?;
        }
        ip(&far, "link set c1 up")?;
        ip(&far, "route add default via 10.89.3.1")?;
        ip(&host, "link add docker0 type bridge")?;
        ip(&host, "addr add 172.28.0.1/16 dev docker0")?;
        ip(&host, "link set docker0 up")?;
        add_container(&host, "vweb", &web, WEB_IP, "172.28.0.1")?;
        // iptables DNAT, the reference, forwards through the host.
        sysctl(&host, "net.ipv4.ip_forward=1")?;
        host_sh(
            &host,
            &format!(
                "iptables -t nat -A PREROUTING -p tcp --dport {IPTABLES_TCP} -j DNAT --to-destination {WEB_IP}:{WEB_TCP} && \
                 iptables -t nat -A PREROUTING -p udp --dport {IPTABLES_UDP} -j DNAT --to-destination {WEB_IP}:{WEB_UDP} && \
                 iptables -P FORWARD ACCEPT"
            ),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut rig = Self {
            far,
            host,
            web,
            stop,
            servers: Vec::new(),
            attached: None,
            _netns: netns,
        };
        rig.start_servers()?;
        Ok(rig)
    }

    /// The container's TCP server (downloads, endless streams, hellos) and
    /// UDP echo, both stopping with the rig.
    fn start_servers(&mut self) -> Result<()> {
        let stop = self.stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        self.servers.push(spawn_in(&self.web, move || {
            let l = TcpListener::bind(("0.0.0.0", WEB_TCP))?;
            l.set_nonblocking(true)?;
            let u = UdpSocket::bind(("0.0.0.0", WEB_UDP))?;
            u.set_read_timeout(Some(Duration::from_millis(100)))?;
            let _ = tx.send(());
            let echo_stop = stop.clone();
            let echo = std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                while !echo_stop.load(Ordering::Relaxed) {
                    if let Ok((n, peer)) = u.recv_from(&mut buf) {
                        let _ = u.send_to(&buf[..n], peer);
                    }
                }
            });
            while !stop.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((s, _)) => {
                        let stop = stop.clone();
                        std::thread::spawn(move || serve(s, &stop));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
            let _ = echo.join();
            Ok(())
        }));
        rx.recv_timeout(Duration::from_secs(5))
            .map_err(|_| anyhow!("the edge bench's servers did not start"))
    }

    fn attach(&mut self, portfwd: &Path) -> Result<()> {
        let mut c = Command::new(portfwd);
        c.args(["-n", &self.host, "attach", "docker0", "--external", "h1"])
            .arg("--no-local")
            .args(["--map", &format!("{PORTFWD_TCP}={WEB_IP}:{WEB_TCP}")])
            .args(["--map", &format!("{PORTFWD_UDP}={WEB_IP}:{WEB_UDP}/udp")]);
        output(c, "portfwd attach (edges)")?;
        self.attached = Some(portfwd.to_owned());
        Ok(())
    }

    fn detach(&mut self) -> Result<()> {
        let Some(portfwd) = self.attached.take() else {
            return Ok(());
        };
        let mut c = Command::new(portfwd);
        c.args(["-n", &self.host, "detach", "docker0"]);
        output(c, "portfwd detach (edges)").map(drop)
    }

    /// `portfwd list --counters --json` of the attached build.
    fn counters(&self) -> Result<Value> {
        let portfwd = self
            .attached
            .as_ref()
            .ok_or_else(|| anyhow!("nothing attached"))?;
        let mut c = Command::new(portfwd);
        c.args(["-n", &self.host, "list", "--counters", "--json"]);
        Ok(serde_json::from_str(&output(
            c,
            "portfwd list --counters",
        )?)?)
    }

    /// The kernel's conntrack in the host namespace: count, max and the
    /// sums of /proc/net/stat/nf_conntrack's drop columns.
    fn kernel_conntrack(&self) -> Value {
        let text = host_sh(
            &self.host,
            "cat /proc/sys/net/netfilter/nf_conntrack_count /proc/sys/net/netfilter/nf_conntrack_max; cat /proc/net/stat/nf_conntrack",
        )
        .unwrap_or_default();
        let mut lines = text.lines();
        let count: Option<u64> = lines.next().and_then(|l| l.trim().parse().ok());
        let max: Option<u64> = lines.next().and_then(|l| l.trim().parse().ok());
        let header: Vec<&str> = lines.next().unwrap_or("").split_whitespace().collect();
        let mut sums = vec![0u64; header.len()];
        for l in lines {
            for (sum, v) in sums.iter_mut().zip(l.split_whitespace()) {
                *sum += u64::from_str_radix(v, 16).unwrap_or(0);
            }
        }
        let col = |name: &str| header.iter().position(|h| *h == name).map(|i| sums[i]);
        json!({
            "count": count, "max": max,
            "drop": col("drop"), "early_drop": col("early_drop"),
            "insert_failed": col("insert_failed"),
        })
    }
}

/// One connection to the container's TCP server.
fn serve(mut s: TcpStream, stop: &AtomicBool) {
    let _ = s.set_nonblocking(false);
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
    let mut ask = [0u8; 1];
    if s.read_exact(&mut ask).is_err() {
        return;
    }
    let chunk = vec![0x5au8; 64 << 10];
    match ask[0] {
        ASK_DOWNLOAD => {
            for _ in 0..DOWNLOAD / chunk.len() {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        ASK_STREAM => {
            // Until the client goes (or the bench ends, or a minute).
            let started = Instant::now();
            while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        }
        _ => {
            let _ = s.write_all(b"hello");
        }
    }
}

/// Opens a TCP connection from the far namespace to the host's `port`
/// and asks for `what`.
fn ask(far: &str, port: u16, what: u8, timeout: Duration) -> Result<TcpStream> {
    let target = SocketAddrV4::new(HOST_IP, port).into();
    crate::netns::run_in(far, move || {
        let mut s = TcpStream::connect_timeout(&target, timeout)?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(&[what])?;
        Ok(s)
    })
}

/// (a): the download through the small uplink; (bytes, seconds).
fn download(rig: &EdgeRig, port: u16, limit: Duration) -> (usize, f64) {
    // The container forgets what it learned of the path before each run.
    let _ = ip(&rig.web, "route flush cache");
    let started = Instant::now();
    let Ok(mut s) = ask(&rig.far, port, ASK_DOWNLOAD, Duration::from_secs(5)) else {
        return (0, started.elapsed().as_secs_f64());
    };
    let mut got = 0;
    let mut buf = vec![0u8; 1 << 16];
    while got < DOWNLOAD && started.elapsed() < limit {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    (got, started.elapsed().as_secs_f64())
}

/// (b): `count` datagrams of 4000 bytes sent to the host's `port`, one at
/// a time; how many came back whole.
fn udp_echoes(far: &str, port: u16, count: usize) -> Result<usize> {
    let target = SocketAddrV4::new(HOST_IP, port);
    crate::netns::run_in(far, move || {
        let sock = UdpSocket::bind(("0.0.0.0", 0))?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut whole = 0;
        let mut buf = vec![0u8; 65_536];
        for i in 0..count {
            let msg: Vec<u8> = (0..DATAGRAM).map(|j| (i + j) as u8).collect();
            sock.send_to(&msg, target)?;
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                if buf[..n] == msg[..] && from == std::net::SocketAddr::V4(target) {
                    whole += 1;
                }
            }
        }
        Ok(whole)
    })
}

/// A raw IPv4 socket (IP_HDRINCL) in namespace `ns`.
fn raw_socket(ns: &str) -> Result<OwnedFd> {
    crate::netns::run_in(ns, || {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        if fd < 0 {
            bail!("raw socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nobody else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    })
}

fn send_raw(fd: &OwnedFd, dst: Ipv4Addr, pkt: &[u8]) -> bool {
    // SAFETY: an all-zero sockaddr_in is valid; the fields are set below.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as u16;
    sin.sin_addr.s_addr = u32::from_ne_bytes(dst.octets());
    // SAFETY: `pkt` and `sin` are readable for the sizes given.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    n == pkt.len() as isize
}

/// SYNs of distinct (source address, port) to the host's `port`, at most
/// `count` and for at most `limit`; (sent, seconds).
fn syn_flood(far: &str, port: u16, count: usize, limit: Duration) -> Result<(usize, f64)> {
    let fd = raw_socket(far)?;
    let started = Instant::now();
    let mut sent = 0;
    'flood: for i in 0..FLOOD_SOURCES {
        let src = Ipv4Addr::new(10, 89, 3, FLOOD_FIRST_SOURCE + i);
        for sport in 1024..=65535u16 {
            if sent == count || started.elapsed() > limit {
                break 'flood;
            }
            let syn = L4::Tcp {
                flags: TCP_SYN,
                seq: 0x1000_0000 ^ u32::from(sport),
                ack: 0,
            };
            let pkt = ipv4(Tuple::new(src, sport, HOST_IP, port), syn, &[]);
            // A full socket buffer: wait a moment and go on.
            while !send_raw(&fd, HOST_IP, &pkt) {
                if started.elapsed() > limit {
                    break 'flood;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent += 1;
        }
    }
    Ok((sent, started.elapsed().as_secs_f64()))
}

/// New connections (a hello each) every 250 ms until `stop`: (seconds
/// since `t0`, latency in ms or None when not served within 2 s).
fn probe(far: String, port: u16, t0: Instant, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            let served = ask(&far, port, ASK_HELLO, Duration::from_secs(2)).and_then(|mut s| {
                let mut hello = [0u8; 5];
                s.read_exact(&mut hello)?;
                Ok(hello == *b"hello")
            });
            out.push(json!({
                "at_s": (started - t0).as_secs_f64(),
                "latency_ms": matches!(served, Ok(true)).then(|| started.elapsed().as_secs_f64() * 1e3),
            }));
            std::thread::sleep(Duration::from_millis(250));
        }
        out
    })
}

/// (c): the flood beside a transfer and new connections, through `port`.
fn flood(rig: &EdgeRig, port: u16, syns: usize, quiet: Duration) -> Result<Value> {
    let received = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut s = ask(&rig.far, port, ASK_STREAM, Duration::from_secs(5))
        .context("the transfer's connection")?;
    let reader = {
        let (received, stop) = (received.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => {
                        received.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
            }
            true
        })
    };
    let t0 = Instant::now();
    let probes = probe(rig.far.clone(), port, t0, stop.clone());
    let rate = |from: u64, secs: f64| from as f64 * 8.0 / secs.max(1e-9) / 1e9;
    std::thread::sleep(quiet);
    let before = received.load(Ordering::Relaxed);
    let flood_start = t0.elapsed().as_secs_f64();
    let (sent, flood_secs) = syn_flood(&rig.far, port, syns, Duration::from_secs(20))?;
    let during = received.load(Ordering::Relaxed) - before;
    let flood_end = t0.elapsed().as_secs_f64();
    std::thread::sleep(quiet);
    let after = received.load(Ordering::Relaxed) - before - during;
    stop.store(true, Ordering::Relaxed);
    let alive = reader.join().unwrap_or(false);
    let probes = probes.join().unwrap_or_default();
    let window = |lo: f64, hi: f64| -> Value {
        let ps: Vec<&Value> = probes
            .iter()
            .filter(|p| p["at_s"].as_f64().is_some_and(|t| t >= lo && t < hi))
            .collect();
        let lat: Vec<f64> = ps.iter().filter_map(|p| p["latency_ms"].as_f64()).collect();
        json!({ "tried": ps.len(), "served": lat.len(), "median_latency_ms": (!lat.is_empty()).then(|| median(&lat)) })
    };
    Ok(json!({
        "syns_sent": sent,
        "flood_seconds": flood_secs,
        "transfer_gbps_before": rate(before, quiet.as_secs_f64()),
        "transfer_gbps_during": rate(during, flood_end - flood_start),
        "transfer_gbps_after": rate(after, quiet.as_secs_f64()),
        "transfer_alive_after": alive,
        "new_connections_before": window(0.0, flood_start),
        "new_connections_during": window(flood_start, flood_end),
        "new_connections_after": window(flood_end, f64::MAX),
    }))
}

/// A portfwd build's conntrack counters, as `list --counters --json`
/// gives them, with the evictions they imply.
fn portfwd_conntrack(v: &Value) -> Value {
    let c = &v["counters"];
    let n = |k: &str| c[k].as_u64();
    let entries = v["conntrack"]["entries"].as_u64();
    json!({
        "ct_new": n("ct_new"),
        "drop_ct_create": n("drop_ct_create"),
        "ct_sibling_lost": n("ct_sibling_lost"),
        "entries": entries,
        "capacity": v["conntrack"]["capacity"].as_u64(),
        "evictions_estimate": n("ct_new").zip(entries).map(|(new, live)| (2 * new).saturating_sub(live)),
        "counters": c,
    })
}

/// The edges section for each build, beside iptables DNAT.
pub fn run(builds: &[Build], quick: bool) -> Result<Value> {
    let (rounds, datagrams, syns, quiet) = if quick {
        (1, 20, 30_000, Duration::from_secs(1))
    } else {
        (3, 100, 300_000, Duration::from_secs(2))
    };
    let limit = Duration::from_secs(if quick { 10 } else { 20 });
    let mut rig = EdgeRig::build()?;
    let mut out = Vec::new();
    let mut paths: Vec<(String, Option<&Build>, u16, u16)> = builds
        .iter()
        .map(|b| {
            (
                format!("portfwd {}", b.label),
                Some(b),
                PORTFWD_TCP,
                PORTFWD_UDP,
            )
        })
        .collect();
    paths.push(("iptables DNAT".into(), None, IPTABLES_TCP, IPTABLES_UDP));
    for (label, build, tcp, udp) in paths {
        super::progress(&format!("edges: {label}"));
        if let Some(b) = build {
            rig.attach(&b.portfwd)?;
        }
        let mut downloads = Vec::new();
        for _ in 0..rounds {
            let (bytes, secs) = download(&rig, tcp, limit);
            downloads
                .push(json!({ "bytes": bytes, "seconds": secs, "complete": bytes == DOWNLOAD }));
        }
        let frag_needed =
            build.and_then(|_| rig.counters().ok()?["counters"]["icmp_frag_needed_sent"].as_u64());
        let echoed = udp_echoes(&rig.far, udp, datagrams)?;
        let before = if build.is_some() {
            rig.counters()
                .map(|v| portfwd_conntrack(&v))
                .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
        } else {
            rig.kernel_conntrack()
        };
        let pressure = flood(&rig, tcp, syns, quiet)?;
        let after = if build.is_some() {
            rig.counters()
                .map(|v| portfwd_conntrack(&v))
                .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }))
        } else {
            rig.kernel_conntrack()
        };
        if build.is_some() {
            rig.detach()?;
        }
        out.push(json!({
            "path": label,
            "download": { "bytes": DOWNLOAD, "runs": downloads, "icmp_frag_needed_sent": frag_needed },
            "udp_4000": { "sent": datagrams, "echoed_whole": echoed },
            "syn_flood": pressure,
            "conntrack_before": before,
            "conntrack_after": after,
        }));
    }
    Ok(json!({
        "download_limit_seconds": limit.as_secs(),
        "syns": syns,
        "flood_sources": FLOOD_SOURCES,
        "paths": out,
    }))
}
