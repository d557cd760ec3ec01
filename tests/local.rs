//! Host-local access through portfwd's cgroup socket hooks (connect4,
//! sendmsg4, recvmsg4, getpeername4), hairpin access from containers through
//! the bridge's TC program, and the bind4 port reservation, over real
//! sockets. The clients the hooks must see are `common::hooked` children.
mod common;

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use common::*;
use serde_json::json;

#[test]
fn host_process_reaches_container_via_loopback_and_host_addresses() {
    require_privileges!();
    let topo = Topology::new("lo-tcp", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 4);
    topo.attach(&["8080=172.30.0.10:80"]);
    assert_eq!(
        cgroup_hooks(&topo.cgroup),
        hooks(1, 1),
        "attach must put one program on each socket hook of {}",
        topo.cgroup.display()
    );

    // A host process outside the cgroup is not served: nothing listens on
    // the host's 127.0.0.1:8080.
    let outside = in_netns(&topo.host.name, || {
        TcpStream::connect_timeout(&"127.0.0.1:8080".parse().unwrap(), Duration::from_secs(5))
    });
    assert_eq!(
        outside
            .expect_err("a process outside the cgroup must not be redirected")
            .kind(),
        std::io::ErrorKind::ConnectionRefused
    );

    let bridge = BRIDGE_IP.to_string();
    let ext = HOST_EXT_IP.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            get("127.0.0.1", 8080),
            get("127.0.0.2", 8080),
            get(&ext, 8080),
            get(&bridge, 8080),
        ],
    );
    // The rewritten socket is routed to the container over the bridge: it
    // leaves from the bridge address.
    let page = format!("web saw {BRIDGE_IP}");
    assert_page(&r[0], &page, ("127.0.0.1", 8080));
    assert_page(&r[1], &page, ("127.0.0.2", 8080));
    assert_page(&r[2], &page, (&ext, 8080));
    assert_page(&r[3], &page, (&bridge, 8080));
    let peers = server.join().unwrap();
    assert_eq!(
        peers.len(),
        4,
        "the container must have served every GET: {peers:?}"
    );
    assert!(
        peers.iter().all(|p| p.ip() == BRIDGE_IP),
        "container peers: {peers:?}"
    );
}

#[test]
fn host_udp_via_loopback_replies_come_from_the_address_used() {
    require_privileges!();
    let topo = Topology::new("lo-udp", 1);
    let echo = udp_echo(&topo.containers[0].name, Stack::V4.any(), 53, 3);
    topo.attach(&["5353=172.30.0.10:53/udp"]);

    let ext = HOST_EXT_IP.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            udp_ask("127.0.0.1", 5353, false, "sendto-lo"),
            udp_ask("127.0.0.1", 5353, true, "connected-lo"),
            udp_ask(&ext, 5353, false, "sendto-ext"),
        ],
    );
    assert_eq!(
        r[0]["data"],
        json!("echo:sendto-lo"),
        "unconnected sendto via 127.0.0.1: {}",
        r[0]
    );
    assert_eq!(
        r[0]["src"],
        json!(["127.0.0.1", 5353]),
        "recvfrom() must show the reply coming from the address sent to: {}",
        r[0]
    );
    assert_eq!(
        r[1]["data"],
        json!("echo:connected-lo"),
        "connected socket via 127.0.0.1: {}",
        r[1]
    );
    assert_eq!(
        r[1]["peer"],
        json!(["127.0.0.1", 5353]),
        "getpeername() of the connected UDP socket: {}",
        r[1]
    );
    assert_eq!(
        r[1]["src"],
        json!(["127.0.0.1", 5353]),
        "recvfrom() on the connected socket must show the address connected to: {}",
        r[1]
    );
    assert_eq!(
        r[2]["data"],
        json!("echo:sendto-ext"),
        "sendto via the external address: {}",
        r[2]
    );
    assert_eq!(
        r[2]["src"],
        json!([ext, 5353]),
        "reply source for the external address: {}",
        r[2]
    );
    let peers = echo.join().unwrap();
    assert_eq!(
        peers.len(),
        3,
        "the container must have answered every datagram: {peers:?}"
    );
    assert!(
        peers.iter().all(|p| p.ip() == BRIDGE_IP),
        "container peers: {peers:?}"
    );
}

#[test]
fn hairpin_from_another_container_and_from_the_container_itself() {
    require_privileges!();
    let topo = Topology::new("hairpin", 2);
    let server = http_server(&topo.containers[0].name, 80, "web", 4);
    topo.attach(&["8080=172.30.0.10:80", "5353=172.30.0.10:53/udp"]);
    let echo = udp_echo(&topo.containers[0].name, Stack::V4.any(), 53, 1);

    // Hooked processes, so that the test also shows the socket hooks leave
    // containers alone: the bridge's TC program does the hairpin, DNAT to
    // the container plus SNAT to the host address the client used (the
    // container's reply would otherwise bypass the host).
    let ext = HOST_EXT_IP.to_string();
    let bridge = BRIDGE_IP.to_string();
    let r = hooked(
        &topo,
        &topo.containers[1].name,
        &[
            get(&ext, 8080),
            get(&bridge, 8080),
            udp_ask(&bridge, 5353, true, "ping"),
        ],
    );
    assert_page(&r[0], &format!("web saw {HOST_EXT_IP}"), (&ext, 8080));
    assert_page(&r[1], &format!("web saw {BRIDGE_IP}"), (&bridge, 8080));
    assert_eq!(
        r[2]["data"],
        json!("echo:ping"),
        "hairpin UDP through the bridge address: {}",
        r[2]
    );
    assert_eq!(
        r[2]["src"],
        json!([bridge, 5353]),
        "the UDP reply must come from the address asked: {}",
        r[2]
    );

    let r = hooked(&topo, &topo.containers[0].name, &[get(&ext, 8080)]);
    assert_page(&r[0], &format!("web saw {HOST_EXT_IP}"), (&ext, 8080));

    // And with plain sockets of the test, outside the hooks' cgroup.
    let body = http_get(&topo.containers[1].name, BRIDGE_IP, 8080)
        .expect("hairpin GET outside the cgroup");
    assert_eq!(body, format!("web saw {BRIDGE_IP}"));

    let peers = server.join().unwrap();
    let ips: Vec<_> = peers.iter().map(|p| p.ip()).collect();
    assert_eq!(
        ips,
        [HOST_EXT_IP, BRIDGE_IP, HOST_EXT_IP, BRIDGE_IP].map(std::net::IpAddr::V4),
        "hairpin connections come from the host address the client used"
    );
    let udp_peers = echo.join().unwrap();
    assert_eq!(
        udp_peers.len(),
        1,
        "the container must have answered the datagram"
    );
    assert_eq!(
        udp_peers[0].ip(),
        std::net::IpAddr::V4(BRIDGE_IP),
        "hairpin UDP source"
    );
}

/// A namespace that is not on the bridge (another netns on the same machine,
/// routed through the host) is neither rewritten by the socket hooks nor
/// hairpinned: its packets meet the external interface like a remote
/// client's, and the container sees its own address.
#[test]
fn another_namespace_on_the_machine_is_a_remote_client() {
    require_privileges!();
    let topo = Topology::new("otherns", 1);
    // The host routes nothing between the client and the bridge, as on a
    // Docker host whose FORWARD policy is DROP: a connection rewritten to
    // the container's address would go nowhere.
    topo.host.sysctl("net.ipv4.ip_forward", "0");
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let ext = HOST_EXT_IP.to_string();
    let r = hooked(&topo, &topo.client.name, &[get(&ext, 8080)]);
    assert_page(&r[0], &format!("web saw {CLIENT_IP}"), (&ext, 8080));
    assert_eq!(server.join().unwrap().len(), 1);
}

#[test]
fn a_containers_own_localhost_is_never_rewritten() {
    require_privileges!();
    let topo = Topology::new("ctr-lo", 2);
    let stop = Arc::new(AtomicBool::new(false));
    let web = http_server_until(&topo.containers[0].name, 80, "web", stop.clone());
    let local = in_netns(&topo.containers[1].name, || {
        TcpListener::bind(("127.0.0.1", 8080)).expect("bind 127.0.0.1:8080 in container 1")
    });
    local.set_nonblocking(true).unwrap();
    let local_server = std::thread::spawn(move || {
        let Some((mut s, _)) = accept_within(&local, Duration::from_secs(15)) else {
            return false;
        };
        read_http_head(&mut s);
        let _ =
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nlocal");
        true
    });
    topo.attach(&["8080=172.30.0.10:80"]);

    let ext = HOST_EXT_IP.to_string();
    // The same hooked process: its own 127.0.0.1:8080 stays its own, while
    // the host address on the same port is hairpinned.
    let r = hooked(
        &topo,
        &topo.containers[1].name,
        &[get("127.0.0.1", 8080), get(&ext, 8080)],
    );
    assert_page(&r[0], "local", ("127.0.0.1", 8080));
    assert_page(&r[1], &format!("web saw {HOST_EXT_IP}"), (&ext, 8080));

    assert!(
        local_server.join().unwrap(),
        "the container's local server got no connection"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        web.join().unwrap(),
        1,
        "container 0 must have served only the hairpin GET"
    );
}

#[test]
fn host_ip_mappings_are_reachable_only_through_their_address() {
    require_privileges!();
    let topo = Topology::new("hostip", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    topo.attach(&[
        "127.0.0.1:8081=172.30.0.10:80",
        "10.0.1.1:8082=172.30.0.10:80",
    ]);

    let ext = HOST_EXT_IP.to_string();
    let bridge = BRIDGE_IP.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            get("127.0.0.1", 8081),
            refused(&ext, 8081),
            refused(&bridge, 8081),
            get(&ext, 8082),
            refused("127.0.0.1", 8082),
            refused(&bridge, 8082),
        ],
    );
    let page = format!("web saw {BRIDGE_IP}");
    assert_page(&r[0], &page, ("127.0.0.1", 8081));
    assert_refused(&r[1]);
    assert_refused(&r[2]);
    assert_page(&r[3], &page, (&ext, 8082));
    assert_refused(&r[4]);
    assert_refused(&r[5]);
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn no_local_leaves_host_clients_alone_but_keeps_remote_access_and_bind4() {
    require_privileges!();
    let topo = Topology::new("nolocal", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    let out = topo.attach_with(&["8080=172.30.0.10:80"], &["--no-local"]);
    assert!(
        out.contains("--no-local"),
        "attach should say host-local access is off: {out}"
    );
    assert_eq!(
        cgroup_hooks(&topo.cgroup),
        hooks(1, 0),
        "--no-local must attach bind4 only to {}",
        topo.cgroup.display()
    );

    let ext = HOST_EXT_IP.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            refused("127.0.0.1", 8080),
            refused(&ext, 8080),
            bind_op("0.0.0.0", 8080, "tcp", "PermissionError"),
        ],
    );
    assert_refused(&r[0]);
    assert_refused(&r[1]);
    assert_bind_denied(&r[2]);

    let body = http_get(&topo.client.name, HOST_EXT_IP, 8080)
        .expect("the remote client must still get through");
    assert_eq!(body, format!("web saw {CLIENT_IP}"));
    // Hairpin is the datapath's, not the hooks': it stays.
    let body =
        http_get(&topo.containers[0].name, HOST_EXT_IP, 8080).expect("hairpin with --no-local");
    assert_eq!(body, format!("web saw {HOST_EXT_IP}"));
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn published_ports_are_reserved_on_the_host_until_deleted() {
    require_privileges!();
    let topo = Topology::new("bind", 1);
    topo.attach(&["8080=172.30.0.10:80"]);

    let ext = HOST_EXT_IP.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            bind_op("0.0.0.0", 8080, "tcp", "PermissionError"),
            bind_op("127.0.0.1", 8080, "tcp", "PermissionError"),
            bind_op(&ext, 8080, "tcp", "PermissionError"),
            bind_op("0.0.0.0", 8090, "tcp", "ok"),
            // The mapping is TCP only.
            bind_op("0.0.0.0", 8080, "udp", "ok"),
        ],
    );
    assert_bind_denied(&r[0]);
    assert_bind_denied(&r[1]);
    assert_bind_denied(&r[2]);
    assert_bound(&r[3]);
    assert_bound(&r[4]);

    // Containers are not affected.
    let r = hooked(
        &topo,
        &topo.containers[0].name,
        &[bind_op("0.0.0.0", 8080, "tcp", "ok")],
    );
    assert_bound(&r[0]);

    ok(topo.portfwd(&["del", "8080"]), "del 8080");
    let r = hooked(
        &topo,
        &topo.host.name,
        &[bind_op("0.0.0.0", 8080, "tcp", "ok")],
    );
    assert_bound(&r[0]);
}

#[test]
fn detach_removes_the_cgroup_programs() {
    require_privileges!();
    let topo = Topology::new("cgdetach", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let dir = topo.state_dir();
    assert_eq!(cgroup_hooks(&topo.cgroup), hooks(1, 1), "after attach");
    let r = hooked(&topo, &topo.host.name, &[get("127.0.0.1", 8080)]);
    assert_page(&r[0], &format!("web saw {BRIDGE_IP}"), ("127.0.0.1", 8080));
    assert_eq!(server.join().unwrap().len(), 1);

    ok(topo.portfwd(&["detach", "docker0"]), "detach");
    assert_nothing_left(&dir, &topo.cgroup, "detach");
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            refused("127.0.0.1", 8080),
            bind_op("0.0.0.0", 8080, "tcp", "ok"),
        ],
    );
    assert_refused(&r[0]);
    assert_bound(&r[1]);
}
