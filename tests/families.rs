//! IPv6 and dual stack over real packets: the paths of netns.rs and local.rs
//! for each family (`Stack::BOTH`), one host port published once per
//! family, IPv4-mapped addresses on dual-stack sockets, no NAT between
//! families, and what `list`, `flows` and `watch` make of IPv6. Every
//! topology is `Topology::dual`: IPv4 and IPv6 on every link.
mod common;

use std::{
    io::Read as _,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use common::*;
use serde_json::{json, Value};

/// `attach` with SPECs built at run time.
fn attach(topo: &Topology, maps: &[String]) -> String {
    topo.attach(&maps.iter().map(String::as_str).collect::<Vec<_>>())
}

/// A TCP and a UDP port published for each family, to container 0.
fn both_families(port: u16, udp_port: u16) -> Vec<String> {
    Stack::BOTH
        .iter()
        .flat_map(|s| [s.map(port, 0, 80, "tcp"), s.map(udp_port, 0, 53, "udp")])
        .collect()
}

#[test]
fn remote_clients_of_each_family_keep_their_address() {
    require_privileges!();
    let topo = Topology::dual("fam-remote", 1);
    let c0 = topo.containers[0].name.clone();
    attach(&topo, &both_families(8080, 5353));
    for stack in Stack::BOTH {
        let what = stack.name();
        let server = http_server_at(&c0, stack.any(), 80, "web", 1);
        let body = http_get(&topo.client.name, stack.host_ext(), 8080)
            .unwrap_or_else(|e| panic!("{what}: GET through the mapping: {e}"));
        assert_eq!(
            body,
            format!("web saw {}", stack.client()),
            "{what}: the container must see the real client address"
        );
        let peers = server.join().unwrap();
        assert_eq!(peers.len(), 1, "{what}: {peers:?}");
        assert_eq!(peers[0].ip(), stack.client(), "{what}");

        let echo = udp_echo(&c0, stack.any(), 53, 1);
        let to = SocketAddr::new(stack.host_ext(), 5353);
        let (reply, from) = udp_exchange(&topo.client.name, to, "ping");
        assert_eq!(reply, "echo:ping", "{what}: UDP through the mapping");
        assert_eq!(
            from, to,
            "{what}: the reply must come from the address the client sent to"
        );
        let peers = echo.join().unwrap();
        assert_eq!(
            peers.iter().map(SocketAddr::ip).collect::<Vec<_>>(),
            [stack.client()],
            "{what}: the container must see the client's own address"
        );
    }
    topo.assert_no_proxy();
}

#[test]
fn host_local_ipv6_via_loopback_and_the_hosts_own_addresses() {
    require_privileges!();
    let topo = Topology::dual("fam-local", 1);
    let c0 = topo.containers[0].name.clone();
    let server = http_server_at(&c0, Stack::V6.any(), 80, "web", 3);
    let echo = udp_echo(&c0, Stack::V6.any(), 53, 2);
    attach(
        &topo,
        &[
            Stack::V6.map(8080, 0, 80, "tcp"),
            Stack::V6.map(5353, 0, 53, "udp"),
        ],
    );
    let ext = HOST_EXT_IP6.to_string();
    let bridge = BRIDGE_IP6.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            get("::1", 8080),
            get(&ext, 8080),
            get(&bridge, 8080),
            udp_ask("::1", 5353, false, "sendto-lo"),
            udp_ask("::1", 5353, true, "connected-lo"),
        ],
    );
    // The redirected connection leaves from the bridge's address.
    let page = format!("web saw {BRIDGE_IP6}");
    assert_page(&r[0], &page, ("::1", 8080));
    assert_page(&r[1], &page, (&ext, 8080));
    assert_page(&r[2], &page, (&bridge, 8080));
    for (i, payload) in [(3, "sendto-lo"), (4, "connected-lo")] {
        assert_eq!(r[i]["data"], json!(format!("echo:{payload}")), "{}", r[i]);
        assert_eq!(
            r[i]["src"],
            json!(["::1", 5353]),
            "recvfrom() must show the reply coming from the address sent to: {}",
            r[i]
        );
    }
    assert_eq!(
        r[4]["peer"],
        json!(["::1", 5353]),
        "getpeername() of the connected UDP socket: {}",
        r[4]
    );
    assert_eq!(server.join().unwrap().len(), 3, "every GET served");
    assert_eq!(echo.join().unwrap().len(), 2, "every datagram answered");
}

#[test]
fn hairpin_from_another_container_over_ipv6() {
    require_privileges!();
    let topo = Topology::dual("fam-hairpin", 2);
    let server = http_server_at(&topo.containers[0].name, Stack::V6.any(), 80, "web", 2);
    attach(&topo, &[Stack::V6.map(8080, 0, 80, "tcp")]);
    for via in [HOST_EXT_IP6, BRIDGE_IP6] {
        let body = http_get(&topo.containers[1].name, via, 8080)
            .unwrap_or_else(|e| panic!("hairpin GET via [{via}]:8080: {e}"));
        assert_eq!(
            body,
            format!("web saw {via}"),
            "a hairpin connection comes from the host address the client used"
        );
    }
    assert_eq!(server.join().unwrap().len(), 2);
}

#[test]
fn bind6_of_a_published_port_is_refused() {
    require_privileges!();
    let topo = Topology::dual("fam-bind", 1);
    // 8080 in IPv6 only, 8081 in IPv4 only, 5353/udp in both.
    attach(
        &topo,
        &[
            Stack::V6.map(8080, 0, 80, "tcp"),
            Stack::V4.map(8081, 0, 80, "tcp"),
            Stack::V4.map(5353, 0, 53, "udp"),
            Stack::V6.map(5353, 0, 53, "udp"),
        ],
    );
    let ext = HOST_EXT_IP6.to_string();
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            bind6_op("::", 8080, "tcp", true, "PermissionError"),
            bind6_op("::1", 8080, "tcp", true, "PermissionError"),
            bind6_op(&ext, 8080, "tcp", true, "PermissionError"),
            bind6_op("::", 5353, "udp", true, "PermissionError"),
            // A dual-stack wildcard would take the IPv4 port too; the
            // program cannot read IPV6_V6ONLY, so `::` is refused with it
            // set as well.
            bind6_op("::", 8081, "tcp", false, "PermissionError"),
            bind6_op("::", 8081, "tcp", true, "PermissionError"),
            bind_op("0.0.0.0", 5353, "udp", "PermissionError"),
            // The port is free in the family it is not published in.
            bind_op("0.0.0.0", 8080, "tcp", "ok"),
            bind6_op("::1", 8081, "tcp", true, "ok"),
            bind6_op("::", 8082, "tcp", true, "ok"),
        ],
    );
    for denied in &r[..7] {
        assert_bind_denied(denied);
    }
    for bound in &r[7..] {
        assert_bound(bound);
    }
}

#[test]
fn one_port_in_both_families_reaches_each_familys_container() {
    require_privileges!();
    let topo = Topology::dual("fam-pair", 2);
    let web4 = http_server_at(&topo.containers[0].name, Stack::V4.any(), 80, "web4", 1);
    let web6 = http_server_at(&topo.containers[1].name, Stack::V6.any(), 80, "web6", 1);
    let out = attach(
        &topo,
        &[
            Stack::V4.map(8080, 0, 80, "tcp"),
            Stack::V6.map(8080, 1, 80, "tcp"),
        ],
    );
    assert!(
        out.contains("0.0.0.0:8080/tcp -> 172.30.0.10:80")
            && out.contains("[::]:8080/tcp -> [fd00:30::11]:80"),
        "attach lists both mappings: {out}"
    );
    for (stack, name) in [(Stack::V4, "web4"), (Stack::V6, "web6")] {
        let body = http_get(&topo.client.name, stack.host_ext(), 8080)
            .unwrap_or_else(|e| panic!("{}: {e}", stack.name()));
        assert_eq!(
            body,
            format!("{name} saw {}", stack.client()),
            "an {} client must reach the {} mapping's container",
            stack.name(),
            stack.name()
        );
    }
    assert_eq!(web4.join().unwrap().len(), 1);
    assert_eq!(web6.join().unwrap().len(), 1);
}

#[test]
fn a_v4_mapped_address_reaches_the_ipv4_mapping_and_no_family_is_translated() {
    require_privileges!();
    let topo = Topology::dual("fam-mapped", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    let echo = udp_echo(&topo.containers[0].name, Stack::V4.any(), 53, 2);
    attach(
        &topo,
        &[
            Stack::V4.map(8080, 0, 80, "tcp"),
            Stack::V4.map(5353, 0, 53, "udp"),
        ],
    );
    let mapped_ext = format!("::ffff:{HOST_EXT_IP}");
    let r = hooked(
        &topo,
        &topo.host.name,
        &[
            get("::ffff:127.0.0.1", 8080),
            get(&mapped_ext, 8080),
            udp_ask("::ffff:127.0.0.1", 5353, true, "mapped"),
            udp_ask("::ffff:127.0.0.1", 5353, false, "mapped-sendto"),
            // Published for IPv4 only: an IPv6 client is not served.
            refused("::1", 8080),
        ],
    );
    let page = format!("web saw {BRIDGE_IP}");
    assert_page(&r[0], &page, ("::ffff:127.0.0.1", 8080));
    assert_page(&r[1], &page, (&mapped_ext, 8080));
    assert_eq!(r[2]["data"], json!("echo:mapped"), "{}", r[2]);
    for field in ["peer", "src"] {
        assert_eq!(
            r[2][field],
            json!(["::ffff:127.0.0.1", 5353]),
            "a connected dual-stack UDP socket must keep seeing the mapped address ({field}): {}",
            r[2]
        );
    }
    assert_eq!(r[3]["data"], json!("echo:mapped-sendto"), "{}", r[3]);
    assert_eq!(
        r[3]["src"],
        json!(["::ffff:127.0.0.1", 5353]),
        "sendto from a dual-stack socket to a mapped address: {}",
        r[3]
    );
    assert_eq!(echo.join().unwrap().len(), 2);
    assert_refused(&r[4]);
    let remote = connect_from(&topo.client.name, HOST_EXT_IP6, 8080);
    assert_eq!(
        remote
            .expect_err("an IPv6 client of an IPv4-only port must not be served")
            .kind(),
        std::io::ErrorKind::ConnectionRefused
    );
    assert_eq!(server.join().unwrap().len(), 2);
    let list = ok(topo.portfwd(&["list"]), "list");
    assert!(
        list.contains("IPv4 only: 5353/udp 8080/tcp")
            && list.contains("no NAT between IPv4 and IPv6"),
        "list must say that IPv6 clients of 8080 are not served: {list}"
    );
}

/// The rows of `list --json` whose host_ip is `ip`.
fn rows_on<'a>(rows: &'a [Value], ip: &str) -> Vec<&'a Value> {
    rows.iter().filter(|r| r["host_ip"] == json!(ip)).collect()
}

#[test]
fn list_flows_and_counters_show_both_families() {
    require_privileges!();
    let topo = Topology::dual("fam-list", 1);
    let c0 = topo.containers[0].name.clone();
    attach(&topo, &both_families(8080, 5353));

    // A flow held open while flows are read.
    let listener = tcp_listener_at(&c0, Stack::V6.any(), 80);
    let mut client = connect_from(&topo.client.name, HOST_EXT_IP6, 8080)
        .expect("an IPv6 connection through the mapping");
    let (mut accepted, peer) =
        accept_within(&listener, Duration::from_secs(10)).expect("the container accepts");
    assert_eq!(peer.ip(), IpAddr::V6(CLIENT_IP6));
    std::io::Write::write_all(&mut client, b"hello").unwrap();
    let mut buf = [0u8; 5];
    accepted.read_exact(&mut buf).unwrap();

    let rows = list_json(&topo);
    assert_eq!(rows.len(), 4, "two ports in two families: {rows:#?}");
    let v6 = rows_on(&rows, "::");
    let v4 = rows_on(&rows, "0.0.0.0");
    assert_eq!((v6.len(), v4.len()), (2, 2), "{rows:#?}");
    let tcp6 = v6.iter().find(|r| r["proto"] == json!("tcp")).unwrap();
    assert_eq!(tcp6["container_ip"], json!("fd00:30::10"), "{tcp6:#}");
    assert_eq!(tcp6["host_port"], json!(8080), "{tcp6:#}");
    assert_eq!(tcp6["connections"], json!(1), "{tcp6:#}");
    assert_eq!(tcp6["active_flows"], json!(1), "{tcp6:#}");
    assert!(tcp6["packets_in"].as_u64().unwrap() >= 2, "{tcp6:#}");
    // The same fields in both families.
    let keys = |r: &Value| r.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(tcp6), keys(v4[0]), "one set of JSON fields");
    let tcp4 = v4.iter().find(|r| r["proto"] == json!("tcp")).unwrap();
    assert_eq!(
        tcp4["connections"],
        json!(0),
        "counters per family: {tcp4:#}"
    );

    let text = ok(topo.portfwd(&["list"]), "list");
    assert!(
        text.contains("[::]:8080") && text.contains("[fd00:30::10]:80"),
        "list writes IPv6 endpoints in brackets: {text}"
    );
    assert!(
        !text.contains("only:"),
        "every port is published in both families: {text}"
    );

    let flows = ok(topo.portfwd(&["flows", "--json"]), "flows --json");
    let flows: Vec<Value> = serde_json::from_str(&flows).expect("flows --json is JSON");
    assert_eq!(flows.len(), 1, "one flow: {flows:#?}");
    let f = &flows[0];
    let client_port = client.local_addr().unwrap().port();
    assert_eq!(
        f["client"],
        json!(format!("[{CLIENT_IP6}]:{client_port}")),
        "{f:#}"
    );
    assert_eq!(f["host"], json!(format!("[{HOST_EXT_IP6}]:8080")), "{f:#}");
    assert_eq!(f["container"], json!("[fd00:30::10]:80"), "{f:#}");
    assert_eq!(f["state"], json!("established"), "{f:#}");
    let text = ok(topo.portfwd(&["flows"]), "flows");
    assert!(
        text.contains(&format!("[{CLIENT_IP6}]:{client_port}")),
        "{text}"
    );

    let counters = ok(
        topo.portfwd(&["list", "--counters", "--json"]),
        "list --counters",
    );
    let counters: Value = serde_json::from_str(&counters).expect("JSON");
    assert!(
        counters["counters"]["dnat"].as_u64().unwrap_or(0) >= 2,
        "the IPv6 flow's packets are counted: {counters:#}"
    );
    assert_eq!(
        counters["conntrack"]["entries"],
        json!(2),
        "both directions of the one flow: {counters:#}"
    );
    drop((client, accepted));

    // del [::]:PORT: IPv6 only; del PORT: every family left.
    let out = ok(topo.portfwd(&["del", "[::]:8080"]), "del [::]:8080");
    assert_eq!(out.trim(), "removed [::]:8080/tcp", "{out}");
    let rows = list_json(&topo);
    assert_eq!(rows.len(), 3, "{rows:#?}");
    let text = ok(topo.portfwd(&["list"]), "list");
    assert!(text.contains("IPv4 only: 8080/tcp"), "{text}");
    assert_usage_error(
        &topo.portfwd(&["del", "[::]:8080"]),
        "[::]:8080/tcp is not published",
        "del of an IPv6 port published only for IPv4",
    );
    let out = ok(topo.portfwd(&["del", "5353/udp"]), "del 5353/udp");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["removed 0.0.0.0:5353/udp", "removed [::]:5353/udp"],
        "{out}"
    );
    assert_eq!(list_json(&topo).len(), 1);
}

#[test]
fn watch_follows_an_ipv6_address_added_later() {
    require_privileges!();
    let topo = Topology::dual("fam-watch", 1);
    let server = http_server_at(&topo.containers[0].name, Stack::V6.any(), 80, "web", 1);
    attach(&topo, &[Stack::V6.map(8080, 0, 80, "tcp")]);
    let mut watcher = topo.watch();
    topo.host
        .ip(&["-6", "addr", "add", "fd00:1::5/64", "dev", "h0", "nodad"]);
    let body = topo.client_get_soon(&mut watcher, "fd00:1::5".parse().unwrap(), 8080);
    assert_eq!(body, format!("web saw {CLIENT_IP6}"));
    server.join().unwrap();
    topo.detach_ends_watch(watcher);
    assert_nothing_left(&topo.state_dir(), &topo.cgroup, "after detach");
}

#[test]
fn bad_ipv6_specs_exit_2_and_change_nothing() {
    require_privileges!();
    let topo = Topology::dual("fam-bad", 1);
    attach(&topo, &[Stack::V6.map(8080, 0, 80, "tcp")]);
    let before = list_json(&topo);
    let cases: &[(&[&str], &str)] = &[
        (&["add", "[fd00:1::1]:9090=172.30.0.10:80"], "no NAT"),
        (&["add", "10.0.1.1:9090=[fd00:30::10]:80"], "no NAT"),
        (&["add", "9090=fd00:30::10:80"], "brackets"),
        (&["add", "9090=[fd00:30::10:80"], "closing"),
        (
            &["add", "9090=[fe80::1]:80"],
            "cannot be a container address",
        ),
        (&["add", "9090=[::1]:80"], "loopback"),
        (
            &[
                "add",
                "[::1]:9090=[fd00:30::10]:80",
                "9090=[fd00:30::11]:80",
            ],
            "twice",
        ),
        (
            &["add", "[::1]:8080=[fd00:30::11]:80"],
            "already published as [::]:8080/tcp",
        ),
        (&["del", "[::1]:9090"], "not published"),
        (&["del", "0.0.0.0:8080"], "not published"),
        (&["del", "::1:8080"], "brackets"),
    ];
    for (args, needle) in cases {
        assert_usage_error(&topo.portfwd(args), needle, &format!("portfwd {args:?}"));
    }
    assert_eq!(
        list_json(&topo),
        before,
        "a refused command changed the table"
    );
}

/// The link-local address of `dev` in `ns` once duplicate address detection
/// is over (it cannot be used while tentative).
fn link_local(ns: &Netns, dev: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = ns.ip(&["-6", "-o", "addr", "show", "dev", dev, "scope", "link"]);
        let addr = out
            .split_whitespace()
            .skip_while(|w| *w != "inet6")
            .nth(1)
            .and_then(|a| a.split('/').next());
        match addr {
            Some(a) if !out.contains("tentative") => return a.to_string(),
            _ if std::time::Instant::now() > deadline => {
                panic!(
                    "{dev} in {} has no usable link-local address: {out}",
                    ns.name
                )
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// `ping -6` from `ns`, two echoes, each waited for at most 2 s.
fn assert_ping6(ns: &Netns, to: &str, what: &str) {
    let out = ns.exec(&["ping", "-6", "-n", "-c", "2", "-W", "2", to]);
    assert!(
        out.status.success(),
        "{what}: ping -6 {to} from {} should be answered with portfwd attached:\n{}{}",
        ns.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The neighbour entry for `addr` on `dev` in `ns` holds a link-layer
/// address: neighbour discovery got its advertisement through.
fn assert_neighbour_resolved(ns: &Netns, dev: &str, addr: &str, what: &str) {
    let out = ns.ip(&["-6", "neigh", "show", "dev", dev, "to", addr]);
    assert!(
        out.contains("lladdr") && !out.contains("FAILED"),
        "{what}: {addr} on {dev} in {} should be resolved by neighbour discovery, the neighbour table says {out:?}",
        ns.name
    );
}

#[test]
fn neighbour_discovery_ping6_and_unpublished_ipv6_traffic_are_untouched() {
    require_privileges!();
    let topo = Topology::dual("fam-ndp", 1);
    let c0 = &topo.containers[0];
    attach(&topo, &both_families(8080, 5353));
    let (host_ext, client, bridge) = (
        Stack::V6.host_ext().to_string(),
        Stack::V6.client().to_string(),
        Stack::V6.bridge().to_string(),
    );
    // Neighbour solicitations and advertisements cross both attached
    // interfaces afresh: the caches are flushed first.
    topo.client.ip(&["-6", "neigh", "flush", "dev", "c0"]);
    topo.host.ip(&["-6", "neigh", "flush", "all"]);
    c0.ip(&["-6", "neigh", "flush", "dev", "eth0"]);
    assert_ping6(
        &topo.client,
        &host_ext,
        "client to the host's external address",
    );
    assert_neighbour_resolved(&topo.client, "c0", &host_ext, "client");
    assert_ping6(c0, &bridge, "container to the bridge's address");
    assert_neighbour_resolved(c0, "eth0", &bridge, "container");
    // Link-local addresses, on the external link and on the bridge.
    let h0_ll = link_local(&topo.host, "h0");
    assert_ping6(
        &topo.client,
        &format!("{h0_ll}%c0"),
        "client to the host's link-local address",
    );
    let br_ll = link_local(&topo.host, "docker0");
    assert_ping6(
        c0,
        &format!("{br_ll}%eth0"),
        "container to the bridge's link-local address",
    );
    // Not a mapping: the container pings the host's external address, and a
    // host service on a port nobody published answers the client with the
    // client's own address.
    assert_ping6(c0, &host_ext, "container to the host's external address");
    let server = http_server_at(&topo.host.name, Stack::V6.any(), 9090, "host", 1);
    let body = http_get(&topo.client.name, Stack::V6.host_ext(), 9090)
        .expect("GET the host's own unpublished IPv6 service");
    assert_eq!(body, format!("host saw {client}"), "the host's own service");
    server.join().unwrap();
    // The mapping still works after all this.
    let server = http_server_at(&c0.name, Stack::V6.any(), 80, "web", 1);
    let body = http_get(&topo.client.name, Stack::V6.host_ext(), 8080)
        .expect("GET through the IPv6 mapping");
    assert_eq!(body, format!("web saw {client}"));
    server.join().unwrap();
}
