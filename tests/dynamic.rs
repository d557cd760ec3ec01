//! Mappings changed at runtime: add, del (drain and --kill), replace with zero
//! failed requests, ranges, concurrent adds, kill -9, port reservation,
//! counters and flows.
mod common;

use std::{
    io::{Read, Write},
    net::{Shutdown, TcpListener, UdpSocket},
    process::Command,
    sync::{atomic::AtomicBool, mpsc, Arc},
    time::{Duration, Instant},
};

use common::*;
use sha2::{Digest, Sha256};

fn json_row<'a>(rows: &'a [serde_json::Value], port: u64, proto: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["host_port"] == port && r["proto"] == proto)
        .unwrap_or_else(|| panic!("no {port}/{proto} row in {rows:#?}"))
}

#[test]
fn add_while_attached_then_list_counts_traffic() {
    require_privileges!();
    let topo = Topology::new("add", 1);
    topo.attach(&[]);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    assert!(
        connect_from(&topo.client.name, HOST_EXT_IP, 8080).is_err(),
        "nothing is published yet"
    );
    ok(topo.portfwd(&["add", "8080=172.30.0.10:80"]), "add");
    for _ in 0..2 {
        assert_eq!(
            http_get(&topo.client.name, HOST_EXT_IP, 8080).unwrap(),
            format!("web saw {CLIENT_IP}")
        );
    }
    server.join().unwrap();

    let rows = list_json(&topo);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    let r = json_row(&rows, 8080, "tcp");
    assert_eq!(r["host_ip"], "0.0.0.0");
    assert_eq!(r["container_ip"], "172.30.0.10");
    assert_eq!(r["container_port"], 80);
    assert_eq!(r["connections"], 2, "two connections were opened: {r:#}");
    let (p_in, p_out) = (
        r["packets_in"].as_u64().unwrap(),
        r["packets_out"].as_u64().unwrap(),
    );
    assert!(
        p_in >= 6 && p_out >= 6,
        "each connection is at least 3 packets each way: {r:#}"
    );
    assert_eq!(r["packets"].as_u64().unwrap(), p_in + p_out);
    assert!(r["bytes"].as_u64().unwrap() > r["bytes_in"].as_u64().unwrap());
    // The human table is there too.
    let table = ok(topo.portfwd(&["list"]), "list");
    assert!(
        table.contains("0.0.0.0:8080") && table.contains("172.30.0.10:80"),
        "{table}"
    );
}

/// A server that sends `first` bytes, waits for a go signal, then sends
/// `rest` bytes and closes. Returns whether every write succeeded.
fn paused_sender(
    listener: TcpListener,
    first: usize,
    rest: usize,
    go: mpsc::Receiver<()>,
) -> std::thread::JoinHandle<bool> {
    std::thread::spawn(move || {
        let (mut s, _) = accept_within(&listener, Duration::from_secs(10)).expect("no connection");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let data = pattern(9, first + rest);
        if s.write_all(&data[..first]).is_err() {
            return false;
        }
        go.recv_timeout(Duration::from_secs(20)).expect("go signal");
        // Small writes spaced out, so a reset arrives between them.
        for chunk in data[first..].chunks(64 << 10) {
            if s.write_all(chunk).is_err() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        s.shutdown(Shutdown::Write).is_ok()
    })
}

#[test]
fn del_drains_established_flows_and_refuses_new_ones() {
    require_privileges!();
    let topo = Topology::dual("drain", 1);
    for stack in Stack::BOTH {
        drain(&topo, stack);
    }
}

fn drain(topo: &Topology, stack: Stack) {
    let listener = tcp_listener_at(&topo.containers[0].name, stack.any(), 80);
    topo.attach(&[&stack.map(8080, 0, 80, "tcp")]);
    let (first, rest) = (1 << 20, 8 << 20);
    let (go, wait) = mpsc::channel();
    let server = paused_sender(listener, first, rest, wait);
    let mut c = connect_from(&topo.client.name, stack.host_ext(), 8080).unwrap();
    let mut got = vec![0u8; first];
    c.read_exact(&mut got).unwrap();

    ok(topo.portfwd(&["del", "8080"]), "del");
    go.send(()).unwrap();
    let mut tail = Vec::new();
    c.read_to_end(&mut tail)
        .expect("the established transfer must complete after del");
    got.extend_from_slice(&tail);
    assert!(server.join().unwrap(), "server writes failed");
    assert_eq!(got.len(), first + rest);
    assert_eq!(
        Sha256::digest(&got),
        Sha256::digest(pattern(9, first + rest)),
        "drained data corrupted"
    );

    let err = connect_from(&topo.client.name, stack.host_ext(), 8080)
        .expect_err("new connections must not be forwarded");
    assert_eq!(
        err.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{}: expected the host's RST, got {err}",
        stack.name()
    );
    assert!(list_json(topo).is_empty());
}

#[test]
fn del_kill_ends_established_flows_on_both_ends() {
    require_privileges!();
    kill_ends_both_ends("kill", false);
}

/// The same for a hairpin flow (container 1 through the bridge's address),
/// whose entries are NATed both ways.
#[test]
fn del_kill_ends_hairpin_flows_on_both_ends() {
    require_privileges!();
    kill_ends_both_ends("kill-hp", true);
}

fn kill_ends_both_ends(tag: &str, hairpin: bool) {
    let topo = Topology::dual(tag, 2);
    for stack in Stack::BOTH {
        kill_in(&topo, stack, hairpin);
    }
}

fn kill_in(topo: &Topology, stack: Stack, hairpin: bool) {
    let (client_ns, addr, client_ip) = if hairpin {
        (
            topo.containers[1].name.clone(),
            stack.bridge(),
            stack.container(1),
        )
    } else {
        (topo.client.name.clone(), stack.host_ext(), stack.client())
    };
    let listener = tcp_listener_at(&topo.containers[0].name, stack.any(), 80);
    topo.attach(&[&stack.map(8080, 0, 80, "tcp")]);
    let (first, rest) = (1 << 20, 64 << 20);
    let (go, wait) = mpsc::channel();
    let server = paused_sender(listener, first, rest, wait);
    let mut c = connect_from(&client_ns, addr, 8080).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = vec![0u8; first];
    c.read_exact(&mut got).unwrap();
    let flows = ok(topo.portfwd(&["flows", "--json"]), "flows");
    let flows: Vec<serde_json::Value> = serde_json::from_str(&flows).unwrap();
    // Only this family's: the other family's killed flow may linger.
    let client = format!("{}:", Stack::spec(client_ip));
    let flows: Vec<_> = flows
        .into_iter()
        .filter(|f| f["client"].as_str().unwrap().starts_with(&client))
        .collect();
    assert_eq!(flows.len(), 1, "one flow from {client}: {flows:#?}");
    assert_eq!(flows[0]["state"], "established");
    if hairpin {
        let seen = flows[0]["container_sees"].as_str().unwrap_or_default();
        assert!(
            seen.starts_with(&format!("{}:", Stack::spec(stack.bridge()))),
            "hairpin source: {flows:#?}"
        );
    } else {
        assert!(flows[0]["container_sees"].is_null(), "{flows:#?}");
    }

    ok(topo.portfwd(&["del", "--kill", "8080"]), "del --kill");
    let start = Instant::now();
    go.send(()).unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 64 << 10];
    let client_end = loop {
        match c.read(&mut buf) {
            Ok(0) => break "eof",
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break "reset",
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("client read after kill: {e} (after {total} bytes)"),
        }
    };
    assert_eq!(client_end, "reset", "the client must see a reset");
    assert!(
        total < rest,
        "the killed transfer must not complete ({total} bytes)"
    );
    assert!(
        !server.join().unwrap(),
        "the container's writes must fail: its end was reset too"
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "kill took {:?}",
        start.elapsed()
    );
}

#[test]
fn replace_under_load_has_zero_failures() {
    require_privileges!();
    let topo = Topology::dual("replace", 2);
    for stack in Stack::BOTH {
        replace_under_load(&topo, stack);
    }
}

fn replace_under_load(topo: &Topology, stack: Stack) {
    let stop = Arc::new(AtomicBool::new(false));
    let serve = |i: usize, name| {
        http_server_until_at(
            &topo.containers[i].name,
            stack.any(),
            80,
            name,
            stop.clone(),
        )
    };
    let (a, b) = (serve(0, "A"), serve(1, "B"));
    topo.attach(&[&stack.map(8080, 0, 80, "tcp")]);
    const N: usize = 300;
    let client = {
        let ns = topo.client.name.clone();
        let to = stack.host_ext();
        std::thread::spawn(move || {
            (0..N)
                .map(|_| http_get(&ns, to, 8080).map_err(|e| e.to_string()))
                .collect::<Vec<_>>()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    ok(
        topo.portfwd(&["add", "--replace", &stack.map(8080, 1, 80, "tcp")]),
        "add --replace",
    );
    let results = client.join().unwrap();
    assert_eq!(
        http_get(&topo.client.name, stack.host_ext(), 8080).unwrap(),
        format!("B saw {}", stack.client()),
        "{}: the replaced mapping serves new connections",
        stack.name()
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failures: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failures.is_empty(),
        "{} of {N} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let bodies: Vec<&str> = results.iter().map(|r| r.as_deref().unwrap()).collect();
    let first_b = bodies
        .iter()
        .position(|b| b.starts_with("B "))
        .expect("B never answered after the replace");
    assert!(first_b > 0, "A answered before the replace");
    assert!(
        bodies[first_b..].iter().all(|b| b.starts_with("B ")),
        "A answered after B took over"
    );
    assert_eq!(a.join().unwrap() + b.join().unwrap(), N + 1);
}

#[test]
fn udp_follows_replace_and_del_immediately() {
    require_privileges!();
    let topo = Topology::new("udprep", 2);
    let servers: Vec<_> = (0..2)
        .map(|i| {
            let sock = in_netns(&topo.containers[i].name, || {
                UdpSocket::bind("0.0.0.0:53").unwrap()
            });
            sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 512];
                let mut n_served = 0;
                while let Ok((n, peer)) = sock.recv_from(&mut buf) {
                    let mut reply = if i == 0 {
                        b"A:".to_vec()
                    } else {
                        b"B:".to_vec()
                    };
                    reply.extend_from_slice(&buf[..n]);
                    sock.send_to(&reply, peer).unwrap();
                    n_served += 1;
                }
                n_served
            })
        })
        .collect();
    topo.attach(&["5353=172.30.0.10:53/udp"]);
    let sock = in_netns(&topo.client.name, || UdpSocket::bind("0.0.0.0:0").unwrap());
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let ask = |msg: &str| -> Option<String> {
        sock.send_to(msg.as_bytes(), (HOST_EXT_IP, 5353)).unwrap();
        let mut buf = [0u8; 512];
        sock.recv_from(&mut buf)
            .ok()
            .map(|(n, _)| String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    assert_eq!(ask("1").as_deref(), Some("A:1"));
    ok(
        topo.portfwd(&["add", "--replace", "5353=172.30.0.11:53/udp"]),
        "replace",
    );
    // Same client socket, same 5-tuple: the very next datagram goes to B.
    assert_eq!(
        ask("2").as_deref(),
        Some("B:2"),
        "UDP must follow the new mapping at once"
    );
    ok(topo.portfwd(&["del", "5353/udp"]), "del");
    assert_eq!(ask("3"), None, "UDP must stop at once after del");
    for s in servers {
        s.join().unwrap();
    }
}

#[test]
fn port_ranges_add_and_del() {
    require_privileges!();
    let topo = Topology::new("range", 1);
    let servers: Vec<_> = (0..3)
        .map(|i| {
            http_server(
                &topo.containers[0].name,
                9000 + i,
                ["p0", "p1", "p2"][i as usize],
                1,
            )
        })
        .collect();
    topo.attach(&[]);
    ok(
        topo.portfwd(&["add", "8000-8002=172.30.0.10:9000-9002"]),
        "add range",
    );
    for (i, name) in ["p0", "p1", "p2"].iter().enumerate() {
        assert_eq!(
            http_get(&topo.client.name, HOST_EXT_IP, 8000 + i as u16).unwrap(),
            format!("{name} saw {CLIENT_IP}")
        );
    }
    for s in servers {
        s.join().unwrap();
    }
    assert_eq!(list_json(&topo).len(), 3);
    ok(topo.portfwd(&["del", "8000-8002"]), "del range");
    assert!(list_json(&topo).is_empty());
    for port in 8000..=8002 {
        assert!(
            connect_from(&topo.client.name, HOST_EXT_IP, port).is_err(),
            "{port} still forwarded"
        );
    }
}

#[test]
fn twenty_concurrent_adds_all_land() {
    require_privileges!();
    let topo = Topology::new("concurrent", 1);
    topo.attach(&[]);
    let children: Vec<_> = (0..20)
        .map(|i| {
            Command::new(PORTFWD)
                .args([
                    "-n",
                    &topo.host.name,
                    "add",
                    &format!("{}=172.30.0.10:{}", 7000 + i, 9000 + i),
                ])
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "a concurrent add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = list_json(&topo);
    assert_eq!(rows.len(), 20, "every add must land: {rows:#?}");
    for i in 0..20u64 {
        assert_eq!(json_row(&rows, 7000 + i, "tcp")["container_port"], 9000 + i);
    }
}

#[test]
fn duplicate_and_malformed_adds_exit_2_and_change_nothing() {
    require_privileges!();
    let topo = Topology::new("dupadd", 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let before = list_json(&topo);
    for (args, needle) in [
        (vec!["add", "8080=172.30.0.11:80"], "already published"),
        (
            vec!["add", "10.0.1.1:8080=172.30.0.11:80"],
            "already published",
        ),
        (
            vec!["add", "8081=172.30.0.11:80", "8081=172.30.0.12:80"],
            "twice",
        ),
        (vec!["add", "8081=nonsense"], "invalid mapping"),
        (
            vec!["add", "8081-8083=172.30.0.11:80-81"],
            "differ in length",
        ),
        (vec!["del", "9999"], "not published"),
        (vec!["del", "0"], "port 0"),
    ] {
        let out = topo.portfwd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line expected: {err}");
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} should mention {needle:?}"
        );
        assert_eq!(list_json(&topo), before, "{args:?} changed the table");
    }
}

#[test]
fn kill_9_during_a_batch_of_adds_leaves_a_consistent_table() {
    require_privileges!();
    let topo = Topology::new("kill9", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    topo.attach(&["8080=172.30.0.10:80"]);
    // 20 000 mappings in one invocation; kill it part way through.
    let mut child = Command::new(PORTFWD)
        .args([
            "-n",
            &topo.host.name,
            "add",
            "20000-39999=172.30.0.10:20000-39999",
        ])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    let _ = child.kill();
    let _ = child.wait();

    let rows = list_json(&topo);
    assert!(!rows.is_empty(), "the table must still be readable");
    for r in &rows {
        // Every mapping present is whole: its endpoint matches its host port.
        let port = r["host_port"].as_u64().unwrap();
        let expect = if port == 8080 { 80 } else { port };
        assert_eq!(r["container_port"], expect, "torn mapping {r:#}");
        assert_eq!(r["container_ip"], "172.30.0.10", "torn mapping {r:#}");
    }
    // Forwarding still works, and the table still takes changes.
    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 8080).unwrap(),
        format!("web saw {CLIENT_IP}")
    );
    ok(
        topo.portfwd(&["add", "--replace", "20000-20099=172.30.0.10:20000-20099"]),
        "add after kill -9",
    );
    ok(topo.portfwd(&["del", "20000-20099"]), "del after kill -9");
    assert_eq!(
        http_get(&topo.client.name, HOST_EXT_IP, 8080).unwrap(),
        format!("web saw {CLIENT_IP}")
    );
    server.join().unwrap();
}

#[test]
fn adding_a_port_a_host_process_holds_fails_unless_forced() {
    require_privileges!();
    let topo = Topology::dual("held", 1);
    topo.attach(&[]);
    for (stack, port) in [(Stack::V4, 8085), (Stack::V6, 8086)] {
        let holder = in_netns(&topo.host.name, move || {
            TcpListener::bind((stack.any(), port)).unwrap()
        });
        let spec = stack.map(port, 0, 80, "tcp");
        let out = topo.portfwd(&["add", &spec]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{spec}: {err}");
        let pid = std::process::id().to_string();
        assert!(
            err.contains("in use by") && err.contains(&pid),
            "{spec}: the error must name the process (pid {pid}): {err}"
        );
        assert!(
            !list_json(&topo).iter().any(|r| r["host_port"] == port),
            "{spec} was added"
        );
        ok(topo.portfwd(&["add", "--force", &spec]), "add --force");
        drop(holder);
    }
    assert_eq!(list_json(&topo).len(), 2);
    // A listener of one family does not hold the port in the other.
    let holder = in_netns(&topo.host.name, || {
        TcpListener::bind((Stack::V4.any(), 8087)).unwrap()
    });
    ok(
        topo.portfwd(&["add", &Stack::V6.map(8087, 0, 80, "tcp")]),
        "an IPv6 mapping beside an IPv4 listener",
    );
    drop(holder);
}

#[test]
fn reattach_keeps_mappings_counters_and_flows() {
    require_privileges!();
    let topo = Topology::new("upgrade", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    topo.attach(&[]);
    ok(topo.portfwd(&["add", "8080=172.30.0.10:80"]), "add");
    http_get(&topo.client.name, HOST_EXT_IP, 8080).unwrap();
    let before = list_json(&topo);
    topo.attach(&[]);
    let after = list_json(&topo);
    assert_eq!(after.len(), 1, "mappings must survive a re-attach");
    for field in ["packets", "bytes", "connections"] {
        assert_eq!(
            after[0][field], before[0][field],
            "{field} reset by re-attach"
        );
    }
    http_get(&topo.client.name, HOST_EXT_IP, 8080).unwrap();
    assert_eq!(list_json(&topo)[0]["connections"], 2);
    server.join().unwrap();
}

/// The bits of `pf_hot` set for (set, protocol, port).
fn hot(topo: &Topology, set: u32, proto: u8, port: u16) -> bool {
    let dir = topo.state_dir();
    let data = aya::maps::MapData::from_pin(dir.join(portfwd_common::MAP_HOT)).expect("pf_hot");
    let map: aya::maps::Array<_, u64> =
        aya::maps::Array::try_from(aya::maps::Map::Array(data)).expect("an array");
    let (word, bit) = portfwd_common::hot_bit(set, proto, port.to_be());
    map.get(&word, 0).expect("a word") & bit != 0
}

/// The ports packets may be portfwd's on follow the table: set by add for
/// the host and the container port, kept after del while a flow drains,
/// cleared once neither a mapping nor a flow uses them (attach recomputes).
#[test]
fn hot_ports_follow_the_table_and_its_flows() {
    require_privileges!();
    let topo = Topology::new("hot", 1);
    let (tcp, udp) = (portfwd_common::PROTO_TCP, portfwd_common::PROTO_UDP);
    use portfwd_common::{HOT_BACKEND, HOT_HOST};
    topo.attach(&[]);
    assert!(
        !hot(&topo, HOT_HOST, tcp, 8080),
        "nothing published, nothing hot"
    );
    ok(
        topo.portfwd(&["add", "8080=172.30.0.10:80", "5353=172.30.0.10:53/udp"]),
        "add",
    );
    for (what, set, proto, port) in [
        ("the TCP host port", HOT_HOST, tcp, 8080),
        ("the TCP container port", HOT_BACKEND, tcp, 80),
        ("the UDP host port", HOT_HOST, udp, 5353),
        ("the UDP container port", HOT_BACKEND, udp, 53),
    ] {
        assert!(hot(&topo, set, proto, port), "{what} is hot after add");
    }
    assert!(!hot(&topo, HOT_HOST, udp, 8080), "TCP and UDP are apart");

    // A flow in progress keeps 8080 hot after del, through a recompute.
    let listener = tcp_listener(&topo.containers[0].name, 80);
    let mut client = connect_from(&topo.client.name, HOST_EXT_IP, 8080).expect("connect");
    let (mut server, _) = accept_within(&listener, Duration::from_secs(5)).expect("accept");
    ok(topo.portfwd(&["del", "8080", "5353/udp"]), "del");
    topo.attach(&[]);
    assert!(
        hot(&topo, HOT_HOST, tcp, 8080),
        "a draining flow keeps its host port hot"
    );
    assert!(hot(&topo, HOT_BACKEND, tcp, 80), "and its container port");
    assert!(
        !hot(&topo, HOT_HOST, udp, 5353),
        "a port with neither mapping nor flow cools"
    );
    client.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    server
        .read_exact(&mut buf)
        .expect("the draining flow still works");
}
