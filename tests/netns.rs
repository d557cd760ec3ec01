//! End-to-end tests over real packets: each test builds a client / host
//! (bridge docker0) / container topology in fresh network namespaces, runs
//! the portfwd binary against the host namespace and talks through it with
//! real sockets.
mod common;

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, Shutdown, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use common::*;
use sha2::{Digest, Sha256};

#[test]
fn http_through_mapping_preserves_client_ip() {
    require_privileges!();
    let topo = Topology::new("http", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    let out = topo.attach(&["8080=172.30.0.10:80"]);
    assert!(
        out.contains("h0"),
        "attach should name the external interface it used: {out}"
    );

    let body = http_get(&topo.client.name, HOST_EXT_IP, 8080).expect("GET through the mapping");
    assert_eq!(
        body,
        format!("web saw {CLIENT_IP}"),
        "the container must see the real client address"
    );
    let peers = server.join().unwrap();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), std::net::IpAddr::V4(CLIENT_IP));
    topo.assert_no_proxy();
}

#[test]
fn half_close_reply_after_client_shutdown() {
    require_privileges!();
    let topo = Topology::new("half", 1);
    let listener = tcp_listener(&topo.containers[0].name, 80);
    topo.attach(&["8080=172.30.0.10:80"]);
    let reply = pattern(7, 1 << 20);
    let expected = reply.clone();
    let server = std::thread::spawn(move || {
        let (mut s, _) = accept_within(&listener, Duration::from_secs(10)).expect("no connection");
        let mut request = Vec::new();
        s.read_to_end(&mut request)
            .expect("read until the client's FIN");
        // Only now, after the client has half-closed, send the whole reply.
        s.write_all(&reply).expect("write reply");
        request
    });
    let mut c = connect_from(&topo.client.name, HOST_EXT_IP, 8080).expect("connect");
    c.write_all(b"request body, then FIN").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got)
        .expect("read reply after half-close");
    assert_eq!(server.join().unwrap(), b"request body, then FIN");
    assert_eq!(
        got.len(),
        expected.len(),
        "reply truncated after half-close"
    );
    assert!(got == expected, "reply corrupted after half-close");
}

#[test]
fn close_without_content_length_leaves_no_half_open_sockets() {
    require_privileges!();
    let topo = Topology::new("eof", 1);
    let listener = tcp_listener(&topo.containers[0].name, 80);
    topo.attach(&["8080=172.30.0.10:80"]);
    let server = std::thread::spawn(move || {
        for _ in 0..3 {
            let (mut s, _) =
                accept_within(&listener, Duration::from_secs(10)).expect("no connection");
            read_http_head(&mut s);
            s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nbody until close")
                .unwrap();
            // Dropping closes: the end of the body is the connection's end.
        }
    });
    for _ in 0..3 {
        let mut c = connect_from(&topo.client.name, HOST_EXT_IP, 8080).expect("connect");
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        c.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        let start = Instant::now();
        let mut resp = String::new();
        c.read_to_string(&mut resp)
            .expect("EOF must arrive promptly (read timed out)");
        assert!(resp.ends_with("body until close"), "got {resp:?}");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "EOF took {:?}",
            start.elapsed()
        );
    }
    server.join().unwrap();
    for state in ["close-wait", "fin-wait-2"] {
        let socks = topo.host_sockets(state);
        assert!(
            socks.is_empty(),
            "host namespace has {state} sockets: {socks:?}"
        );
    }
}

#[test]
fn sixty_four_mib_each_way_with_matching_sha256() {
    require_privileges!();
    const LEN: usize = 64 << 20;
    let topo = Topology::new("bulk", 1);
    let listener = tcp_listener(&topo.containers[0].name, 80);
    topo.attach(&["8080=172.30.0.10:80"]);

    // Each side sends LEN bytes of its own pattern while receiving the other's,
    // and returns the sha256 of what it received.
    fn exchange(s: std::net::TcpStream, seed: u64) -> [u8; 32] {
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let data = pattern(seed, LEN);
            w.write_all(&data).expect("send");
            w.shutdown(Shutdown::Write).unwrap();
        });
        let mut r = s;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 << 10];
        let mut total = 0;
        loop {
            let n = match r.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("receive: {e}"),
            };
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            total += n;
        }
        writer.join().unwrap();
        assert_eq!(total, LEN, "received byte count");
        hasher.finalize().into()
    }
    let server = std::thread::spawn(move || {
        let (s, _) = accept_within(&listener, Duration::from_secs(10)).expect("no connection");
        exchange(s, 2)
    });
    let c = connect_from(&topo.client.name, HOST_EXT_IP, 8080).expect("connect");
    let client_got = exchange(c, 1);
    let server_got = server.join().unwrap();
    let sha = |seed| -> [u8; 32] { Sha256::digest(pattern(seed, LEN)).into() };
    assert_eq!(server_got, sha(1), "client -> container stream corrupted");
    assert_eq!(client_got, sha(2), "container -> client stream corrupted");
}

#[test]
fn udp_concurrent_clients_get_their_own_replies() {
    require_privileges!();
    let topo = Topology::new("udp", 1);
    let server_sock = in_netns(&topo.containers[0].name, || {
        UdpSocket::bind("0.0.0.0:53").unwrap()
    });
    server_sock
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    topo.attach(&["5353=172.30.0.10:53/udp"]);
    const CLIENTS: usize = 4;
    const PER_CLIENT: usize = 25;
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        let mut peers = std::collections::BTreeSet::new();
        for _ in 0..CLIENTS * PER_CLIENT {
            let Ok((n, peer)) = server_sock.recv_from(&mut buf) else {
                break;
            };
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            server_sock.send_to(&reply, peer).unwrap();
            peers.insert(peer);
        }
        peers
    });
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            spawn_in(&topo.client.name, move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                let target: SocketAddr = (HOST_EXT_IP, 5353).into();
                let mut ok = 0;
                for seq in 0..PER_CLIENT {
                    let msg = format!("client {i} seq {seq}");
                    s.send_to(msg.as_bytes(), target).unwrap();
                    let mut buf = [0u8; 1500];
                    let (n, from) = s.recv_from(&mut buf).expect("UDP reply lost");
                    assert_eq!(
                        from, target,
                        "reply must come from the address the client sent to"
                    );
                    assert_eq!(
                        &buf[..n],
                        format!("echo:{msg}").as_bytes(),
                        "client {i} got another's reply"
                    );
                    ok += 1;
                }
                ok
            })
        })
        .collect();
    for c in clients {
        assert_eq!(c.join().unwrap(), PER_CLIENT);
    }
    let peers = server.join().unwrap();
    assert_eq!(
        peers.len(),
        CLIENTS,
        "the server should see each client's own address and port"
    );
    assert!(peers
        .iter()
        .all(|p| p.ip() == std::net::IpAddr::V4(CLIENT_IP)));
}

#[test]
fn two_mappings_and_everything_else_untouched() {
    require_privileges!();
    let topo = Topology::new("two", 2);
    // Routed traffic to a container's own address goes through the host's
    // normal forwarding path, which portfwd must leave alone.
    topo.host.sysctl("net.ipv4.ip_forward", "1");
    topo.client
        .ip(&["route", "add", "172.30.0.0/16", "via", "10.0.1.1"]);
    let a = http_server(&topo.containers[0].name, 80, "A", 2);
    let b = http_server(&topo.containers[1].name, 80, "B", 1);
    topo.attach(&["8080=172.30.0.10:80", "9090=172.30.0.11:80"]);

    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 8080).unwrap(),
        format!("A saw {CLIENT_IP}")
    );
    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 9090).unwrap(),
        format!("B saw {CLIENT_IP}")
    );

    // An unmapped port gets the host's own answer: nothing listens, so RST.
    let err = connect_from(&topo.client.name, HOST_EXT_IP, 7070)
        .expect_err("unmapped port must not connect");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "expected RST, got {err}"
    );

    // ICMP to the host is untouched.
    let ping = topo
        .client
        .exec(&["ping", "-c", "1", "-W", "2", "10.0.1.1"]);
    assert!(
        ping.status.success(),
        "ping to the host failed: {}",
        String::from_utf8_lossy(&ping.stdout)
    );

    // Routed to the container's own IP: reaches A directly, client IP intact.
    assert_eq!(
        http_get(&topo.client.name, container_ip(0), 80).unwrap(),
        format!("A saw {CLIENT_IP}")
    );
    a.join().unwrap();
    b.join().unwrap();
}

/// `portfwd detach docker0` succeeds and leaves no TC program on h0 or
/// docker0 and no state directory `dir`.
fn detach_leaves_nothing(topo: &Topology, dir: &std::path::Path, what: &str) {
    let out = topo.portfwd(&["detach", "docker0"]);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for iface in ["h0", "docker0"] {
        assert!(
            tcx_ingress_programs(&topo.host.name, iface).is_empty(),
            "{what}: program left on {iface}"
        );
    }
    assert!(
        !dir.exists(),
        "{what}: pins left behind in {}",
        dir.display()
    );
}

#[test]
fn detach_leaves_no_program_and_no_pin() {
    require_privileges!();
    let topo = Topology::new("detach", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let dir = topo.state_dir();
    assert!(
        dir.is_dir(),
        "state should be pinned under {}",
        dir.display()
    );
    assert_eq!(tcx_ingress_programs(&topo.host.name, "h0").len(), 1);
    assert_eq!(tcx_ingress_programs(&topo.host.name, "docker0").len(), 1);
    assert!(http_get(&topo.client.name, HOST_EXT_IP, 8080).is_ok());
    server.join().unwrap();

    detach_leaves_nothing(&topo, &dir, "detach");
    let err = connect_from(&topo.client.name, HOST_EXT_IP, 8080).expect_err("mapping must be gone");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

/// Creates an LRU hash map with the given sizes and pins it at `path`: a map
/// as an older portfwd with another layout would have left it (aya creates
/// maps only from an object).
fn pin_map_with_layout(path: &std::path::Path, key_size: u32, value_size: u32) {
    use std::os::fd::AsFd as _;
    let map = portfwd_sys::map_create(portfwd_sys::BPF_MAP_TYPE_LRU_HASH, key_size, value_size, 16)
        .unwrap_or_else(|e| panic!("BPF_MAP_CREATE: {e}"));
    // The pin keeps the map once our descriptor closes.
    portfwd_sys::obj_pin(map.as_fd(), path)
        .unwrap_or_else(|e| panic!("BPF_OBJ_PIN {}: {e}", path.display()));
}

#[test]
fn state_from_another_version_is_refused_and_detach_still_removes_it() {
    require_privileges!();
    let topo = Topology::new("stale", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let dir = topo.state_dir();
    // The conntrack map as a build with a 48-byte entry left it.
    let ct = dir.join(portfwd_common::MAP_CONNTRACK4);
    std::fs::remove_file(&ct).unwrap();
    pin_map_with_layout(&ct, 16, 48);

    for args in [
        vec!["list"],
        vec!["add", "8081=172.30.0.10:81"],
        vec![
            "attach",
            "docker0",
            "--no-local",
            "--map",
            "8082=172.30.0.10:82",
        ],
    ] {
        let out = topo.portfwd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "portfwd {args:?} over stale state: {err}"
        );
        assert!(
            err.contains(
                "holds maps made by another portfwd version (pf_ct4: key 16 bytes, value 48 bytes"
            ),
            "portfwd {args:?}: {err}"
        );
        assert_eq!(err.lines().count(), 1, "one line on stderr: {err}");
    }
    assert_eq!(
        tcx_ingress_programs(&topo.host.name, "docker0").len(),
        1,
        "the refused attach changed the links"
    );

    detach_leaves_nothing(&topo, &dir, "detach over stale state");
    topo.attach(&["8080=172.30.0.10:80"]);

    // Same sizes, another meaning: the layout version says so.
    set_pinned_layout(&dir, portfwd_common::LAYOUT_VERSION + 1);
    let out = topo.portfwd(&["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "list over another layout version: {err}"
    );
    assert!(
        err.contains(&format!(
            "(pf_meta: layout version {}",
            portfwd_common::LAYOUT_VERSION + 1
        )),
        "list over another layout version: {err}"
    );
    detach_leaves_nothing(&topo, &dir, "detach over another layout version");
    topo.attach(&["8080=172.30.0.10:80"]);
}

#[test]
fn reattach_updates_in_place_and_keeps_established_flows() {
    require_privileges!();
    let mut topo = Topology::new("reattach", 1);
    topo.add_container();
    let listener = tcp_listener(&topo.containers[0].name, 80);
    topo.attach(&["8080=172.30.0.10:80"]);
    let before = tcx_ingress_programs(&topo.host.name, "h0");

    // An established connection that echoes lines.
    let server = std::thread::spawn(move || {
        let (mut s, _) = accept_within(&listener, Duration::from_secs(10)).expect("no connection");
        let mut buf = [0u8; 64];
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).unwrap();
        }
    });
    let mut c = connect_from(&topo.client.name, HOST_EXT_IP, 8080).unwrap();
    let mut roundtrip = |msg: &[u8]| {
        c.write_all(msg).unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).expect("echo through the mapping");
        assert_eq!(got, msg);
    };
    roundtrip(b"before");

    let b = http_server(&topo.containers[1].name, 80, "B", 1);
    topo.attach(&["9090=172.30.0.11:80"]);
    roundtrip(b"after re-attach");
    let after = tcx_ingress_programs(&topo.host.name, "h0");
    assert_eq!(
        after.len(),
        1,
        "re-attach must not stack programs: {after:?}"
    );
    assert_ne!(before, after, "re-attach should load the new program");
    assert_eq!(tcx_ingress_programs(&topo.host.name, "docker0").len(), 1);
    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 9090).unwrap(),
        format!("B saw {CLIENT_IP}")
    );
    roundtrip(b"still there");
    drop(c);
    server.join().unwrap();
    b.join().unwrap();
}

#[test]
fn watch_follows_new_host_addresses_and_exits_on_detach() {
    require_privileges!();
    let topo = Topology::new("watch", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let mut watcher = topo.watch();
    topo.host.ip(&["addr", "add", "10.0.1.5/24", "dev", "h0"]);
    let new_addr = std::net::Ipv4Addr::new(10, 0, 1, 5);
    let body = topo.client_get_soon(&mut watcher, new_addr.into(), 8080);
    assert_eq!(body, format!("web saw {CLIENT_IP}"));
    server.join().unwrap();
    topo.detach_ends_watch(watcher);
}

#[test]
fn detaching_one_of_two_bridges_frees_its_ports() {
    require_privileges!();
    let mut topo = Topology::new("twobr", 1);
    topo.add_bridge("br1", "172.31.0.1/16");
    let on_br1 = Ipv4Addr::new(172, 31, 0, 10);
    let k1 = topo.add_container_on("br1", on_br1, Ipv4Addr::new(172, 31, 0, 1));
    let server = http_server(&topo.containers[k1].name, 80, "br1", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let cgroup = topo.cgroup.to_str().expect("utf-8 path").to_string();
    let spec = format!("8081={on_br1}:80");
    ok(
        topo.portfwd(&["attach", "br1", "--cgroup", &cgroup, "--map", &spec]),
        "attach br1",
    );
    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 8081).expect("GET 8081 on br1"),
        format!("br1 saw {CLIENT_IP}")
    );
    server.join().unwrap();

    let out = ok(topo.portfwd(&["detach", "br1"]), "detach br1");
    assert_eq!(out, "detached br1 (1 mappings removed)\n");
    assert_eq!(
        tcx_ingress_programs(&topo.host.name, "br1"),
        Vec::<u32>::new(),
        "program left on br1"
    );

    // The port is the host's again: a host process may bind it (docker0's
    // port stays reserved)...
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            bind_op("0.0.0.0", 8081, "tcp", "ok"),
            bind_op("0.0.0.0", 8080, "tcp", "PermissionError"),
        ],
    );
    assert_bound(&r[0]);
    assert_bind_denied(&r[1]);

    // ...and it can be published on the other bridge, counted from zero.
    let server = http_server(&topo.containers[0].name, 80, "docker0", 1);
    ok(
        topo.portfwd(&["add", "8081=172.30.0.10:80"]),
        "publishing 8081 again on docker0",
    );
    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 8081).expect("GET 8081 on docker0"),
        format!("docker0 saw {CLIENT_IP}")
    );
    server.join().unwrap();
    let rows = list_json(&topo);
    let row = rows
        .iter()
        .find(|r| r["host_port"] == 8081)
        .unwrap_or_else(|| panic!("no 8081 row: {rows:#?}"));
    assert_eq!(row["bridge"], "docker0", "{row:#}");
    assert_eq!(
        row["connections"], 1,
        "the counters of the mapping on br1 must not carry over: {row:#}"
    );
    assert!(
        rows.iter().any(|r| r["host_port"] == 8080),
        "docker0's own mapping must stay: {rows:#?}"
    );
}

#[test]
fn attach_says_when_the_bridge_mtu_exceeds_an_external_one() {
    require_privileges!();
    let topo = Topology::new("mtu", 1);
    let out = topo.attach(&["8080=172.30.0.10:80"]);
    assert!(
        !out.contains("warning"),
        "equal MTUs need no warning: {out}"
    );
    topo.host.ip(&["link", "set", "h0", "mtu", "1400"]);
    let out = topo.attach(&[]);
    let warnings: Vec<&str> = out.lines().filter(|l| l.starts_with("warning")).collect();
    assert_eq!(
        warnings,
        ["warning: docker0 MTU 1500 is larger than h0 MTU 1400; replies larger than 1400 bytes are answered with ICMP fragmentation needed"],
        "attach output: {out}"
    );
}

/// A second client namespace behind its own veth `host_if` (10.0.`net`.1 on
/// the host side, .2 on the client's, a default route back); the client's
/// address.
fn second_client(topo: &Topology, name: &str, host_if: &str, net: u8) -> (Netns, Ipv4Addr) {
    let client = Netns::new(format!("{}-{name}", topo.host.name));
    topo.host.ip(&[
        "link",
        "add",
        host_if,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &client.name,
    ]);
    let (host_ip, client_ip) = (Ipv4Addr::new(10, 0, net, 1), Ipv4Addr::new(10, 0, net, 2));
    topo.host
        .ip(&["addr", "add", &format!("{host_ip}/24"), "dev", host_if]);
    topo.host.ip(&["link", "set", host_if, "up"]);
    client.ip(&["addr", "add", &format!("{client_ip}/24"), "dev", "eth0"]);
    client.ip(&["link", "set", "eth0", "up"]);
    client.ip(&["route", "add", "default", "via", &host_ip.to_string()]);
    (client, client_ip)
}

#[test]
fn every_interface_with_an_address_is_served_and_watch_adds_new_ones() {
    require_privileges!();
    let topo = Topology::new("allext", 1);
    // h1 carries no default route and nobody names it.
    let (near, near_ip) = second_client(&topo, "near", "h1", 2);
    let server = http_server(&topo.containers[0].name, 80, "web", 3);
    let out = topo.attach(&["8080=172.30.0.10:80"]);
    assert!(
        out.contains("h0") && out.contains("h1") && !out.contains("lo,"),
        "attach should serve h0 and h1 (and name them), not loopback: {out}"
    );
    assert!(
        !out.contains("external: docker0") && !out.contains(", docker0"),
        "the bridge must not be external: {out}"
    );
    let body = http_get(&near.name, Ipv4Addr::new(10, 0, 2, 1), 8080)
        .expect("GET through h1, an interface nobody named");
    assert_eq!(body, format!("web saw {near_ip}"), "client address kept");

    // h2 appears after attach: served once watch has seen it.
    let mut watcher = topo.watch();
    let (late, late_ip) = second_client(&topo, "late", "h2", 3);
    let deadline = Instant::now() + Duration::from_secs(5);
    let body = loop {
        match http_get(&late.name, Ipv4Addr::new(10, 0, 3, 1), 8080) {
            Ok(body) => break body,
            Err(e) if Instant::now() > deadline => {
                let _ = watcher.kill();
                panic!("h2, added after attach, was not served within 5 s of watch: {e}");
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    assert_eq!(body, format!("web saw {late_ip}"), "client address kept");
    let body = http_get(&topo.client.name, HOST_EXT_IP, 8080).expect("GET through h0");
    assert_eq!(body, format!("web saw {CLIENT_IP}"));
    server.join().unwrap();
    topo.assert_no_proxy();
    topo.detach_ends_watch(watcher);
}

#[test]
fn named_external_interfaces_are_not_widened_by_watch() {
    require_privileges!();
    let topo = Topology::new("narrow", 1);
    let (near, _) = second_client(&topo, "near", "h1", 2);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    let out = topo.attach_with(&["8080=172.30.0.10:80"], &["--external", "h0"]);
    assert!(!out.contains("h1"), "--external h0 must narrow: {out}");
    let watcher = topo.watch();
    topo.host.ip(&["addr", "add", "10.0.2.7/24", "dev", "h1"]);
    std::thread::sleep(Duration::from_millis(500));
    let got = in_netns(&near.name, || {
        std::net::TcpStream::connect_timeout(
            &SocketAddr::from((Ipv4Addr::new(10, 0, 2, 1), 8080)),
            Duration::from_secs(1),
        )
    });
    assert!(
        got.is_err(),
        "h1 was not named with --external: port 8080 must not be served there"
    );
    http_get(&topo.client.name, HOST_EXT_IP, 8080).expect("GET through h0");
    server.join().unwrap();
    topo.detach_ends_watch(watcher);
}
