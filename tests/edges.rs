//! Kernel-NAT parity on the edges, end to end over real sockets: a path MTU
//! smaller than the bridge's, large UDP datagrams (fragments, in order and
//! not), a refusal on a connected UDP socket, IP options, Docker-style
//! iptables DNAT onto the same container port, and a SYN flood beside an
//! established transfer. Where the kernel's own NAT is the reference, it is
//! set up on the same topology and measured in the same test.
mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{atomic::AtomicBool, Arc},
    time::{Duration, Instant},
};

use common::*;

/// A UDP echo server in namespace `ns` on `port` (up to `max` datagrams,
/// or until 15 s without one).
fn udp_echo(ns: &str, port: u16, max: usize) -> std::thread::JoinHandle<usize> {
    let sock = in_netns(ns, move || {
        UdpSocket::bind(("0.0.0.0", port)).expect("bind")
    });
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        let mut n = 0;
        while n < max {
            let Ok((len, peer)) = sock.recv_from(&mut buf) else {
                break;
            };
            sock.send_to(&buf[..len], peer).expect("echo");
            n += 1;
        }
        n
    })
}

/// client (c1, MTU 1500, 10.0.3.2) -- router (r0 10.0.3.1 | r1 10.0.2.2, MTU
/// 1400) -- host (h1 10.0.2.1, MTU 1400; docker0 MTU 1500) -- container. The
/// small link has MTU 1400 on both ends; the client, on a 1500 link,
/// advertises MSS 1460.
struct SmallUplink {
    topo: Topology,
    router: Netns,
    far: Netns,
}

impl SmallUplink {
    fn new(tag: &str) -> Self {
        let topo = Topology::new(tag, 1);
        let router = Netns::new(format!("{}-rt", topo.host.name.trim_end_matches("-host")));
        let far = Netns::new(format!("{}-far", topo.host.name.trim_end_matches("-host")));
        topo.host.ip(&[
            "link",
            "add",
            "h1",
            "mtu",
            "1400",
            "type",
            "veth",
            "peer",
            "name",
            "r1",
            "mtu",
            "1400",
            "netns",
            &router.name,
        ]);
        router.ip(&[
            "link", "add", "r0", "type", "veth", "peer", "name", "c1", "netns", &far.name,
        ]);
        topo.host.ip(&["addr", "add", "10.0.2.1/24", "dev", "h1"]);
        topo.host.ip(&["link", "set", "h1", "up"]);
        topo.host
            .ip(&["route", "replace", "default", "via", "10.0.2.2"]);
        router.ip(&["addr", "add", "10.0.2.2/24", "dev", "r1"]);
        router.ip(&["addr", "add", "10.0.3.1/24", "dev", "r0"]);
        router.ip(&["link", "set", "r1", "up"]);
        router.ip(&["link", "set", "r0", "up"]);
        router.sysctl("net.ipv4.ip_forward", "1");
        far.ip(&["addr", "add", "10.0.3.2/24", "dev", "c1"]);
        far.ip(&["link", "set", "c1", "up"]);
        far.ip(&["route", "add", "default", "via", "10.0.3.1"]);
        Self { topo, router, far }
    }
}

/// Serves `len` bytes of `pattern(seed)` to each connection on `port` in
/// namespace `ns`, for `conns` connections.
fn bulk_server(
    ns: &str,
    port: u16,
    seed: u64,
    len: usize,
    conns: usize,
) -> std::thread::JoinHandle<()> {
    let l = tcp_listener(ns, port);
    std::thread::spawn(move || {
        let data = pattern(seed, len);
        for _ in 0..conns {
            let Some((mut s, _)) = accept_within(&l, Duration::from_secs(15)) else {
                return;
            };
            let _ = s.write_all(&data);
        }
    })
}

/// Reads everything from `addr:port` (from namespace `ns`) within `limit`.
fn download(ns: &str, addr: Ipv4Addr, port: u16, limit: Duration) -> std::io::Result<Vec<u8>> {
    let mut s = connect_from(ns, addr, port)?;
    s.set_read_timeout(Some(limit))?;
    let mut got = Vec::new();
    s.read_to_end(&mut got)?;
    Ok(got)
}

#[test]
fn a_download_through_an_uplink_smaller_than_the_bridge_completes() {
    require_privileges!();
    let net = SmallUplink::new("pmtu");
    let host = &net.topo.host;
    let container = &net.topo.containers[0].name;
    let len = 20 << 20;
    let server = bulk_server(container, 80, 15, len, 2);

    let out = net
        .topo
        .attach_with(&["8080=172.30.0.10:80"], &["--external", "h1"]);
    assert!(
        out.contains("MTU 1500 is larger than h1 MTU 1400"),
        "attach must say the bridge's MTU is larger: {out}"
    );
    let started = Instant::now();
    let got = download(
        &net.far.name,
        Ipv4Addr::new(10, 0, 2, 1),
        8080,
        Duration::from_secs(30),
    )
    .expect("the download through portfwd");
    let took = started.elapsed();
    assert_eq!(got.len(), len, "bytes received through portfwd");
    assert!(
        got == pattern(15, len),
        "the bytes received are not the bytes sent"
    );
    let sent = counter(&net.topo, "icmp_frag_needed_sent");
    assert!(
        sent >= 1,
        "portfwd must have told the container the path MTU ({sent} errors sent)"
    );

    // The kernel's NAT on the same topology, the container's path MTU
    // forgotten first: the reference, side by side.
    net.topo.containers[0].ip(&["route", "flush", "cache"]);
    host.sysctl("net.ipv4.ip_forward", "1");
    iptables_dnat(host, "tcp", 9090, "172.30.0.10:80");
    let started = Instant::now();
    let reference = download(
        &net.far.name,
        Ipv4Addr::new(10, 0, 2, 1),
        9090,
        Duration::from_secs(30),
    );
    assert_eq!(
        reference.as_ref().map(Vec::len).ok(),
        Some(len),
        "the reference (iptables DNAT) download on this topology: {reference:?}"
    );
    eprintln!(
        "20 MiB through a 1400-MTU uplink: portfwd {took:?}, iptables DNAT {:?}",
        started.elapsed()
    );
    server.join().unwrap();
    let _ = &net.router;
}

/// A named counter of `portfwd list --json`'s counters, in the host
/// namespace.
fn counter(topo: &Topology, name: &str) -> u64 {
    let out = ok(
        topo.portfwd(&["list", "--counters", "--json"]),
        "list --counters",
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    v["counters"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {name} in {out}"))
}

#[test]
fn large_udp_datagrams_are_echoed_whole() {
    require_privileges!();
    let topo = Topology::new("bigudp", 1);
    let echo = udp_echo(&topo.containers[0].name, 53, 20);
    topo.attach(&["5353=172.30.0.10:53/udp"]);
    let sock = in_netns(&topo.client.name, || {
        UdpSocket::bind(("0.0.0.0", 0)).unwrap()
    });
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let target = SocketAddrV4::new(HOST_EXT_IP, 5353);
    let mut whole = 0;
    for (i, len) in [4000usize; 10]
        .into_iter()
        .chain([8000, 1473, 1500, 2961, 60_000])
        .enumerate()
    {
        let msg = pattern(i as u64 + 1, len);
        sock.send_to(&msg, target).expect("send");
        let mut buf = vec![0u8; 65_536];
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if buf[..n] == msg[..] && from == std::net::SocketAddr::V4(target) => {
                whole += 1
            }
            other => eprintln!("datagram {i} ({len} bytes): {other:?}"),
        }
    }
    assert_eq!(
        whole, 15,
        "datagrams of 1473 to 60 000 bytes echoed whole and from the published port"
    );
    drop(echo);
}

/// Large UDP datagrams through the 1400-MTU uplink, both ways: the client's
/// arrive cut by the router; the container's replies leave it in 1500-byte
/// fragments that portfwd must cut again to fit the uplink (no DF: the
/// kernel's forwarding path would fragment them), as the kernel's NAT on the
/// same topology does.
#[test]
fn large_udp_datagrams_cross_an_uplink_smaller_than_the_bridge() {
    require_privileges!();
    let net = SmallUplink::new("bigup");
    let container = &net.topo.containers[0].name;
    let echo = udp_echo(container, 53, 40);
    // Cutting needs IPv4 forwarding on the uplink (as the kernel's NAT
    // does): attach says so while it is off.
    net.topo.host.sysctl("net.ipv4.ip_forward", "0");
    let out = net
        .topo
        .attach_with(&["5353=172.30.0.10:53/udp"], &["--external", "h1"]);
    assert!(
        out.contains("IPv4 forwarding is off on h1"),
        "attach must warn that datagrams cannot be cut without forwarding: {out}"
    );
    net.topo.host.sysctl("net.ipv4.ip_forward", "1");
    iptables_dnat(&net.topo.host, "udp", 9053, "172.30.0.10:53");
    let sizes = [100usize, 4000, 4000, 4000, 1473, 2961, 8000, 20_000];
    let mut whole = [0usize; 2];
    let mut lost = Vec::new();
    for (k, port) in [5353u16, 9053].into_iter().enumerate() {
        // A socket of its own for each path: with one source port for both,
        // portfwd's flow would be the one the iptables path's replies match.
        let sock = in_netns(&net.far.name, || UdpSocket::bind(("0.0.0.0", 0)).unwrap());
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let target = SocketAddrV4::new(Ipv4Addr::new(10, 0, 2, 1), port);
        for (i, &len) in sizes.iter().enumerate() {
            let msg = pattern(i as u64 + 7, len);
            sock.send_to(&msg, target).expect("send");
            let mut buf = vec![0u8; 65_536];
            match sock.recv_from(&mut buf) {
                Ok((n, from))
                    if buf[..n] == msg[..] && from == std::net::SocketAddr::V4(target) =>
                {
                    whole[k] += 1
                }
                other => lost.push(format!("port {port}, {len} bytes: {other:?}")),
            }
        }
    }
    assert_eq!(
        whole,
        [sizes.len(); 2],
        "datagrams echoed whole through the 1400-MTU uplink: [portfwd, iptables DNAT]; not: {lost:?}"
    );
    assert!(
        counter(&net.topo, "fragmented") >= 1,
        "the container's fragments must have been cut to fit the uplink"
    );
    drop(echo);
}

/// The fragments of a UDP datagram, sent last first from a raw socket in
/// the client namespace: the container still receives the datagram whole.
#[test]
fn fragments_out_of_order_reach_the_container_whole() {
    require_privileges!();
    let topo = Topology::new("fragooo", 1);
    let sock = in_netns(&topo.containers[0].name, || {
        UdpSocket::bind(("0.0.0.0", 53)).unwrap()
    });
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    topo.attach(&["5353=172.30.0.10:53/udp"]);
    let payload = pattern(99, 3000);
    let frags = udp_fragments(CLIENT_IP, HOST_EXT_IP, 41_000, 5353, 0x4d2, &payload, 1480);
    assert_eq!(frags.len(), 3, "three fragments");
    raw_send(&topo.client.name, HOST_EXT_IP, frags.iter().rev());
    let mut buf = vec![0u8; 65_536];
    let (n, from) = sock
        .recv_from(&mut buf)
        .expect("the datagram, reassembled in the container");
    assert_eq!(&buf[..n], &payload[..], "the datagram's bytes");
    assert_eq!(
        from,
        std::net::SocketAddr::V4(SocketAddrV4::new(CLIENT_IP, 41_000)),
        "its source"
    );
}

#[test]
fn udp_to_a_container_port_nobody_listens_on_is_refused() {
    require_privileges!();
    let topo = Topology::new("udprefused", 1);
    topo.attach(&["5354=172.30.0.10:54/udp"]);
    let sock = in_netns(&topo.client.name, || {
        UdpSocket::bind(("0.0.0.0", 0)).unwrap()
    });
    sock.connect(SocketAddrV4::new(HOST_EXT_IP, 5354)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    sock.send(b"anyone?").unwrap();
    let err = sock.recv(&mut [0u8; 64]).expect_err("no answer can come");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "the container's port unreachable must reach the client as ECONNREFUSED, got {err:?}"
    );
}

#[test]
fn client_packets_with_ip_options_are_served() {
    require_privileges!();
    let topo = Topology::new("ipopts", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let body = in_netns(&topo.client.name, || {
        let s = TcpStream::connect_timeout(
            &SocketAddrV4::new(HOST_EXT_IP, 8080).into(),
            Duration::from_secs(5),
        )
        .expect("connect");
        // Three NOPs and an end of list: options on every packet.
        let opts = [1u8, 1, 1, 0];
        // SAFETY: setsockopt with a buffer of the length given.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_OPTIONS,
                opts.as_ptr() as *const _,
                4,
            )
        };
        assert_eq!(rc, 0, "IP_OPTIONS: {}", std::io::Error::last_os_error());
        let mut s = s;
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        resp
    });
    assert!(
        body.ends_with(&format!("web saw {CLIENT_IP}")),
        "the answer through the mapping: {body:?}"
    );
    server.join().unwrap();
}

/// Requests with `Connection: close` from `conns` connections at a time
/// (as wrk does) for `dur`; returns the answers per second.
fn churn(ns: &str, port: u16, conns: usize, dur: Duration) -> f64 {
    let workers: Vec<_> = (0..conns)
        .map(|_| {
            let ns = ns.to_string();
            std::thread::spawn(move || {
                in_netns(&ns, move || {
                    let started = Instant::now();
                    let mut answered = 0u64;
                    while started.elapsed() < dur {
                        let target = SocketAddrV4::new(HOST_EXT_IP, port).into();
                        let Ok(mut s) = TcpStream::connect_timeout(&target, Duration::from_secs(2))
                        else {
                            continue;
                        };
                        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                        let req = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
                        if s.write_all(req).is_err() {
                            continue;
                        }
                        let mut resp = Vec::new();
                        if s.read_to_end(&mut resp).is_ok() && resp.starts_with(b"HTTP/1.1 200") {
                            answered += 1;
                        }
                    }
                    answered
                })
            })
        })
        .collect();
    let answered: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    answered as f64 / dur.as_secs_f64()
}

/// Docker's own `-p` (iptables DNAT) and a portfwd mapping onto the SAME
/// container port, from one client at high connection churn (8 at a time,
/// `Connection: close`, the server closing first), its source ports coming
/// round every 2 000 connections, in alternating runs: each path keeps at
/// least what two iptables rules keep alternating the same way, measured
/// here first. (The kernel resolves its own tuple clashes by moving the
/// source port; a portfwd flow's tuple is not in its conntrack, so there the
/// container's TIME_WAIT meets the other path's SYN, and portfwd must leave
/// the TIME_WAIT's answer to the kernel.)
#[test]
fn iptables_dnat_and_portfwd_onto_one_container_port_alternate_cleanly() {
    require_privileges!();
    let topo = Topology::new("coexist", 1);
    let stop = Arc::new(AtomicBool::new(false));
    let server = http_server_until(&topo.containers[0].name, 80, "web", stop.clone());
    topo.host.sysctl("net.ipv4.ip_forward", "1");
    for port in [9090, 9091] {
        iptables_dnat(&topo.host, "tcp", port, "172.30.0.10:80");
    }
    topo.client
        .sysctl("net.ipv4.ip_local_port_range", "40000 41999");
    topo.attach(&["8080=172.30.0.10:80"]);

    let alternate = |a: u16, b: u16| -> Vec<(u16, f64)> {
        let mut runs = Vec::new();
        for _ in 0..3 {
            for port in [a, b] {
                runs.push((
                    port,
                    churn(&topo.client.name, port, 8, Duration::from_secs(2)),
                ));
            }
        }
        runs
    };
    let baseline = alternate(9090, 9091);
    let mixed = alternate(8080, 9090);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    eprintln!("two iptables rules alternating (port, answers/s): {baseline:.0?}");
    eprintln!("portfwd (8080) and iptables (9090) alternating: {mixed:.0?}");
    let worst = |runs: &[(u16, f64)], port: u16| {
        runs.iter()
            .filter(|r| r.0 == port)
            .map(|r| r.1)
            .fold(f64::MAX, f64::min)
    };
    let reference = worst(&baseline, 9090).min(worst(&baseline, 9091));
    for (path, port) in [("portfwd", 8080), ("iptables beside portfwd", 9090)] {
        let kept = worst(&mixed, port);
        assert!(
            kept >= reference * 0.8,
            "{path}: its slowest run ({kept:.0}/s) must keep what two iptables rules keep ({reference:.0}/s)"
        );
    }
}

/// A bounded SYN flood of unique tuples (several client addresses, every
/// port) that fills portfwd's conntrack, while a transfer runs: the
/// transfer completes and a new connection is still served.
#[test]
fn a_syn_flood_does_not_stop_an_established_transfer() {
    require_privileges!();
    let topo = Topology::new("flood", 1);
    let container = topo.containers[0].name.clone();
    // The container answers the flood with cookies, not state.
    topo.containers[0].sysctl("net.ipv4.tcp_syncookies", "2");
    let len = 64 << 20;
    let server = bulk_server(&container, 80, 21, len, 1);
    let web = http_server(&container, 81, "web", 1);
    topo.attach(&["8080=172.30.0.10:80", "8081=172.30.0.10:81"]);
    let sources: Vec<Ipv4Addr> = (3..=5).map(|i| Ipv4Addr::new(10, 0, 1, i)).collect();
    for a in &sources {
        topo.client
            .ip(&["addr", "add", &format!("{a}/24"), "dev", "c0"]);
    }

    // The transfer, read slowly enough to last through the flood.
    let client = topo.client.name.clone();
    let transfer = std::thread::spawn(move || {
        let mut s = connect_from(&client, HOST_EXT_IP, 8080).expect("connect");
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 1 << 16];
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < len && Instant::now() < deadline {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.len() < len / 2 {
                std::thread::sleep(Duration::from_micros(300));
            }
        }
        got
    });
    std::thread::sleep(Duration::from_millis(300));
    let syns = 150_000;
    let sent = syn_flood(
        &topo.client.name,
        &sources,
        HOST_EXT_IP,
        8080,
        syns,
        Duration::from_secs(20),
    );
    assert_eq!(sent, syns, "the flood is bounded in count");
    let got = transfer.join().unwrap();
    assert_eq!(got.len(), len, "the transfer completes during the flood");
    assert!(got == pattern(21, len), "the transfer's bytes");
    let body =
        http_get(&topo.client.name, HOST_EXT_IP, 8081).expect("a new connection after the flood");
    assert_eq!(body, format!("web saw {CLIENT_IP}"));
    let flows = counter(&topo, "ct_new");
    assert!(
        flows as usize >= syns / 2,
        "the flood created flows ({flows})"
    );
    server.join().unwrap();
    web.join().unwrap();
}

// ---------------------------------------------------------------------------
// Raw packets from the client namespace.
// ---------------------------------------------------------------------------

fn csum(data: &[u8], mut acc: u32) -> u16 {
    for w in data.chunks(2) {
        acc += u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, id: u16, frag: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x45, 0];
    p.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&frag.to_be_bytes());
    p.extend_from_slice(&[64, proto, 0, 0]);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let c = csum(&p, 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

fn pseudo(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: usize) -> u32 {
    let mut ph = Vec::new();
    ph.extend_from_slice(&src.octets());
    ph.extend_from_slice(&dst.octets());
    ph.extend_from_slice(&[0, proto]);
    ph.extend_from_slice(&(len as u16).to_be_bytes());
    u32::from(!csum(&ph, 0))
}

/// A UDP datagram as IPv4 fragments of at most `chunk` payload bytes.
fn udp_fragments(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    id: u16,
    payload: &[u8],
    chunk: usize,
) -> Vec<Vec<u8>> {
    let mut udp = Vec::new();
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = csum(&udp, pseudo(src, dst, 17, udp.len()));
    udp[6..8].copy_from_slice(&if c == 0 { 0xffff } else { c }.to_be_bytes());
    udp.chunks(chunk)
        .enumerate()
        .map(|(i, piece)| {
            let off = (i * chunk / 8) as u16;
            let more = if (i + 1) * chunk < udp.len() {
                0x2000
            } else {
                0
            };
            ipv4(src, dst, 17, id, more | off, piece)
        })
        .collect()
}

fn tcp_syn(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    let c = csum(&t, pseudo(src, dst, 6, t.len()));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, 6, 0, 0x4000, &t)
}

/// A raw IPv4 socket (IP_HDRINCL) in namespace `ns`.
fn raw_socket(ns: &str) -> OwnedFd {
    in_netns(ns, || {
        // SAFETY: plain socket(2); the descriptor is owned below.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nobody else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
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
            pkt.as_ptr() as *const _,
            pkt.len(),
            0,
            &sin as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    n == pkt.len() as isize
}

fn raw_send<'a>(ns: &str, dst: Ipv4Addr, pkts: impl Iterator<Item = &'a Vec<u8>>) {
    let fd = raw_socket(ns);
    for p in pkts {
        assert!(
            send_raw(&fd, dst, p),
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Sends `count` SYNs of distinct (source address, port) to `dst:port`,
/// giving up at `limit`; returns how many were sent.
fn syn_flood(
    ns: &str,
    sources: &[Ipv4Addr],
    dst: Ipv4Addr,
    port: u16,
    count: usize,
    limit: Duration,
) -> usize {
    let fd = raw_socket(ns);
    let started = Instant::now();
    let mut sent = 0;
    'flood: for src in sources {
        for sport in 1024..=65535u16 {
            if sent == count || started.elapsed() > limit {
                break 'flood;
            }
            let syn = tcp_syn(*src, dst, sport, port, 0x1000_0000 ^ u32::from(sport));
            // A full socket buffer: wait a moment and go on.
            while !send_raw(&fd, dst, &syn) {
                if started.elapsed() > limit {
                    break 'flood;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            sent += 1;
        }
    }
    sent
}

/// Adds the kernel's NAT for `port`/`proto` in `host` to `to`, the
/// reference path a test runs beside portfwd's.
fn iptables_dnat(host: &Netns, proto: &str, port: u16, to: &str) {
    let port = port.to_string();
    let out = host.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "PREROUTING",
        "-p",
        proto,
        "--dport",
        &port,
        "-j",
        "DNAT",
        "--to-destination",
        to,
    ]);
    assert!(
        out.status.success(),
        "iptables: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
