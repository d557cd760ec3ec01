//! What survives a reboot: the state file every command writes, and
//! `portfwd restore`, which builds everything again from it. A reboot is
//! played by removing portfwd's bpffs tree for the namespace (bpffs starts
//! empty at boot): the pinned links go with it, so every program comes off
//! its hook.
mod common;

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use common::*;
use serde_json::Value;

/// The namespace's state file, as `persist` names it.
fn state_file(topo: &Topology) -> std::path::PathBuf {
    persist_dir().join(format!("netns-{}.json", topo.host.name))
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One datagram from the client to `to`; its reply, or None if none came
/// within a second.
fn udp_reply(topo: &Topology, to: SocketAddr, payload: &str) -> Option<String> {
    let payload = payload.to_string();
    in_netns(&topo.client.name, move || {
        let any: IpAddr = if to.is_ipv4() {
            Stack::V4.any()
        } else {
            Stack::V6.any()
        };
        let s = UdpSocket::bind((any, 0)).expect("bind the UDP client");
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        s.send_to(payload.as_bytes(), to).expect("send");
        let mut buf = [0u8; 2048];
        let (n, _) = s.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// The published mappings as `list --json` shows them, without counters.
fn mappings(topo: &Topology) -> Vec<String> {
    list_json(topo)
        .iter()
        .map(|r| {
            let s = |k: &str| match &r[k] {
                Value::String(s) => s.clone(),
                v => v.to_string(),
            };
            format!(
                "{} {}:{} -> {}:{} on {}",
                s("proto"),
                s("host_ip"),
                s("host_port"),
                s("container_ip"),
                s("container_port"),
                s("bridge")
            )
        })
        .collect()
}

/// TCP (both families) to container 0 and UDP (both families) to container
/// 1 all answer, each from the container it was published to.
fn assert_served(topo: &Topology, what: &str) {
    let c0 = topo.containers[0].name.clone();
    let c1 = topo.containers[1].name.clone();
    for stack in Stack::BOTH {
        let server = http_server_at(&c0, stack.any(), 80, "web", 1);
        let body = http_get(&topo.client.name, stack.host_ext(), 8080).unwrap_or_else(|e| {
            panic!(
                "{what}: TCP over {} should reach container 0: {e}",
                stack.name()
            )
        });
        assert_eq!(body, format!("web saw {}", stack.client()), "{what}");
        server.join().unwrap();
        let echo = udp_echo(&c1, stack.any(), 53, 1);
        let reply = udp_reply(topo, SocketAddr::new(stack.host_ext(), 5353), "ping");
        assert_eq!(
            reply.as_deref(),
            Some("echo:ping"),
            "{what}: UDP over {} should reach container 1",
            stack.name()
        );
        let peers = echo.join().unwrap();
        assert_eq!(peers.len(), 1, "{what}: container 1 answered {peers:?}");
    }
}

/// Nothing is published: TCP is refused by the host, UDP gets no answer.
fn assert_not_served(topo: &Topology, what: &str) {
    for stack in Stack::BOTH {
        let got = http_get(&topo.client.name, stack.host_ext(), 8080);
        assert!(
            got.is_err(),
            "{what}: TCP over {} got {got:?}",
            stack.name()
        );
        let reply = udp_reply(topo, SocketAddr::new(stack.host_ext(), 5353), "ping");
        assert_eq!(
            reply,
            None,
            "{what}: UDP over {} was answered",
            stack.name()
        );
    }
}

/// What a reboot leaves of portfwd's kernel state: nothing. Removing the
/// pins releases the links, which takes the programs off their hooks (the
/// kernel frees a pin's inode a moment later: wait for it, 5 s at most).
fn reboot(topo: &Topology) {
    let dir = topo.state_dir();
    std::fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !tcx_ingress_programs(&topo.host.name, "docker0").is_empty()
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        tcx_ingress_programs(&topo.host.name, "docker0").is_empty(),
        "after the pins are gone no program should stay on docker0"
    );
    assert_eq!(
        cgroup_hooks(&topo.cgroup),
        hooks(0, 0),
        "after the pins are gone no socket hook should stay"
    );
}

#[test]
fn restore_after_a_reboot_publishes_everything_again() {
    require_privileges!();
    let topo = Topology::dual("restore", 2);
    let maps: Vec<String> = Stack::BOTH
        .iter()
        .flat_map(|s| [s.map(8080, 0, 80, "tcp"), s.map(5353, 1, 53, "udp")])
        .collect();
    attach_all(&topo, &maps[..2]);
    // The other family's by `add`: both commands write the file.
    let mut add = vec!["add"];
    add.extend(maps[2..].iter().map(String::as_str));
    ok(topo.portfwd(&add), "add the IPv6 mappings");
    assert_served(&topo, "before the reboot");

    let file = state_file(&topo);
    let saved = read(&file);
    let doc: Value = serde_json::from_str(&saved).expect("the state file is JSON");
    let entries = doc["bridges"]["docker0"]["mappings"]
        .as_array()
        .unwrap_or_else(|| panic!("the state file should list docker0's mappings: {saved}"));
    assert_eq!(entries.len(), 4, "four mappings recorded: {saved}");
    let before = mappings(&topo);

    reboot(&topo);
    assert_not_served(&topo, "after the reboot, before restore");
    let out = ok(topo.portfwd(&["restore"]), "restore after the reboot");
    assert!(
        out.contains("attached docker0"),
        "restore says what it attached: {out}"
    );
    assert_served(&topo, "after restore");
    assert_eq!(
        mappings(&topo),
        before,
        "restore should publish what was published"
    );
    assert_eq!(
        read(&file),
        saved,
        "restore should leave the state file as it was"
    );
    assert_eq!(tcx_ingress_programs(&topo.host.name, "docker0").len(), 1);

    // Again: nothing changes, an established connection included.
    let c0 = topo.containers[0].name.clone();
    let listener = tcp_listener(&c0, 80);
    let mut client = connect_from(&topo.client.name, HOST_EXT_IP, 8080).expect("connect");
    let (mut server, _) = accept_within(&listener, Duration::from_secs(5)).expect("accept");
    ok(topo.portfwd(&["restore"]), "restore a second time");
    assert_eq!(
        mappings(&topo),
        before,
        "a second restore should change no mapping"
    );
    assert_eq!(
        read(&file),
        saved,
        "a second restore should not change the file"
    );
    assert_eq!(
        cgroup_hooks(&topo.cgroup),
        hooks(1, 1),
        "one program per socket hook"
    );
    echo_once(
        &mut client,
        &mut server,
        "a connection made before the second restore",
    );
    drop((client, server, listener));
    assert_served(&topo, "after the second restore");

    // A file this portfwd cannot read: one line, exit 2, nothing changed.
    let programs = tcx_ingress_programs(&topo.host.name, "docker0");
    std::fs::write(&file, "{\"format\": 1, \"bridges\": {\"docker0\": [").unwrap();
    let out = topo.portfwd(&["restore"]);
    assert_usage_error(
        &out,
        &file.display().to_string(),
        "restore over a corrupt file",
    );
    assert_eq!(
        tcx_ingress_programs(&topo.host.name, "docker0"),
        programs,
        "a refused restore should leave the programs as they were"
    );
    assert_eq!(
        mappings(&topo),
        before,
        "a refused restore changed the mappings"
    );
    let out = topo.portfwd(&["del", "8080"]);
    assert_usage_error(&out, "state file", "del over a corrupt file");
    assert_eq!(
        mappings(&topo),
        before,
        "a refused del changed the mappings"
    );
    std::fs::write(&file, &saved).unwrap();

    // del takes the port out of the file too (both families).
    ok(topo.portfwd(&["del", "8080"]), "del 8080");
    let doc: Value = serde_json::from_str(&read(&file)).unwrap();
    let specs: Vec<&str> = doc["bridges"]["docker0"]["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            e.as_str()
                .expect("a mapping by address is written as its SPEC")
        })
        .collect();
    assert_eq!(
        specs,
        [
            "0.0.0.0:5353=172.30.0.11:53/udp",
            "[::]:5353=[fd00:30::11]:53/udp"
        ],
        "after del 8080 only 5353 is recorded"
    );
    reboot(&topo);
    ok(topo.portfwd(&["restore"]), "restore after del");
    assert!(
        http_get(&topo.client.name, HOST_EXT_IP, 8080).is_err(),
        "a deleted port must not come back with restore"
    );
    assert_eq!(mappings(&topo).len(), 2, "{:?}", mappings(&topo));

    // Detaching the last bridge removes the file: restore has nothing to do.
    ok(topo.portfwd(&["detach", "docker0"]), "detach");
    assert!(!file.exists(), "detach should remove {}", file.display());
    let out = ok(topo.portfwd(&["restore"]), "restore with no file");
    assert!(out.contains("nothing to restore"), "{out}");
    assert!(
        !topo.state_dir().exists(),
        "restore with no file attached something"
    );
}

#[test]
fn restore_after_an_upgrade_that_changed_the_maps_layout() {
    require_privileges!();
    let topo = Topology::dual("restore-up", 2);
    let maps: Vec<String> = Stack::BOTH
        .iter()
        .flat_map(|s| [s.map(8080, 0, 80, "tcp"), s.map(5353, 1, 53, "udp")])
        .collect();
    attach_all(&topo, &maps);
    let before = mappings(&topo);
    // The pinned maps say another layout: this portfwd cannot read them.
    let dir = topo.state_dir();
    set_pinned_layout(&dir, portfwd_common::LAYOUT_VERSION + 1);
    let out = ok(topo.portfwd(&["restore"]), "restore over another layout");
    assert!(
        out.contains("made by another portfwd version"),
        "restore should say it replaced the old state: {out}"
    );
    assert_eq!(mappings(&topo), before);
    assert_served(&topo, "after restore over another layout");
}

/// `attach` with SPECs built at run time.
fn attach_all(topo: &Topology, maps: &[String]) {
    topo.attach(&maps.iter().map(String::as_str).collect::<Vec<_>>());
}

/// A line each way over an established connection.
fn echo_once(client: &mut std::net::TcpStream, server: &mut std::net::TcpStream, what: &str) {
    use std::io::{BufRead as _, BufReader, Write as _};
    client.write_all(b"ping\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut *server)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: the container should get the line: {e}"));
    assert_eq!(line, "ping\n", "{what}");
    server.write_all(b"pong\n").unwrap();
    let mut line = String::new();
    BufReader::new(&mut *client)
        .read_line(&mut line)
        .unwrap_or_else(|e| panic!("{what}: the client should get the answer: {e}"));
    assert_eq!(line, "pong\n", "{what}");
}
