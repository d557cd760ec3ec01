//! The CNI contract, straight: the portfwd binary run with the CNI_*
//! variables and the stdin a runtime gives a chained plugin, in the host
//! namespace of a test topology (containers on its docker0 bridge), with
//! prevResults written as the bridge plugin writes them.
mod common;

use std::{net::SocketAddr, path::PathBuf, process::Command};

use common::*;
use serde_json::{json, Value};

const NETWORK: &str = "pftnet";

/// One topology with a private CNI state directory.
struct Cni {
    topo: Topology,
    state: PathBuf,
}

impl Cni {
    fn new(tag: &str, containers: usize) -> Self {
        Self::on(Topology::new(tag, containers))
    }

    fn on(topo: Topology) -> Self {
        let state = std::env::temp_dir().join(format!("{}-cni-state", topo.host.name));
        Self { topo, state }
    }

    /// Runs the plugin with CNI_COMMAND `command` for container `i` (its
    /// id and eth0), CNI_NETNS set unless `netns` is false, `stdin` as the
    /// configuration.
    fn run(&self, command: &str, i: usize, netns: bool, stdin: &str) -> std::process::Output {
        let mut cmd = Command::new(PORTFWD);
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("ctr{i}"))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/nonexistent")
            .env("PORTFWD_CNI_STATE_DIR", &self.state)
            .env(portfwd::persist::DIR_ENV, persist_dir());
        if netns {
            let c = &self.topo.containers[i].name;
            cmd.env("CNI_NETNS", format!("/var/run/netns/{c}"));
        }
        output_in(&self.topo.host.name, &mut cmd, stdin.as_bytes())
    }

    /// `run` that must succeed; its stdout.
    fn ok(&self, command: &str, i: usize, stdin: &str) -> String {
        ok(
            self.run(command, i, true, stdin),
            &format!("CNI {command} for ctr{i}"),
        )
    }

    /// The record files in the state directory.
    fn records(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let Ok(containers) = std::fs::read_dir(self.state.join(NETWORK)) else {
            return out;
        };
        for c in containers.flatten() {
            out.extend(
                std::fs::read_dir(c.path())
                    .unwrap()
                    .flatten()
                    .map(|f| f.path()),
            );
        }
        out
    }
}

impl Drop for Cni {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// The bridge plugin's result for container `i` of a topology, in the shape
/// of `version` (0.4.0 and before: ips carry "version").
fn prev_result(topo: &Topology, i: usize, version: &str) -> Value {
    let mut ip = json!({
        "address": format!("{}/16", container_ip(i)),
        "gateway": BRIDGE_IP.to_string(),
        "interface": 2,
    });
    if version.starts_with('0') {
        ip["version"] = json!("4");
    }
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "docker0", "mac": "02:00:00:00:00:01"},
            {"name": format!("vk{i}"), "mac": "02:00:00:00:00:02"},
            {"name": "eth0", "mac": "02:00:00:00:00:03",
             "sandbox": format!("/var/run/netns/{}", topo.containers[i].name)},
        ],
        "ips": [ip],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {},
    })
}

/// A configuration as a runtime hands it to portfwd: `ports` as
/// (hostPort, containerPort, protocol), `prev` as prevResult.
fn conf(topo: &Topology, version: &str, ports: &[(u16, u16, &str)], prev: Option<Value>) -> String {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|(h, c, p)| json!({"hostPort": h, "containerPort": c, "protocol": p, "hostIP": ""}))
        .collect();
    let mut c = json!({
        "cniVersion": version,
        "name": NETWORK,
        "type": "portfwd",
        "cgroup": topo.cgroup,
        "capabilities": {"portMappings": true},
        "runtimeConfig": {"portMappings": mappings},
    });
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c.to_string()
}

/// A CNI error on stdout: exit non-zero, the spec's JSON with `code`.
fn assert_cni_error(out: &std::process::Output, code: u64, what: &str) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success(),
        "{what}: expected a failure, got success: {stdout}"
    );
    let v: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: stdout must be the CNI error JSON ({e}): {stdout:?}"));
    assert_eq!(v["code"], json!(code), "{what}: wrong error code: {v}");
    assert!(
        v["msg"].as_str().is_some_and(|m| !m.is_empty()) && v["cniVersion"].is_string(),
        "{what}: the error needs cniVersion and msg: {v}"
    );
    v
}

/// A GET from the client to the host's external address, or its error.
fn client_get(topo: &Topology, port: u16) -> std::io::Result<String> {
    http_get(&topo.client.name, HOST_EXT_IP, port)
}

#[test]
fn add_check_del_for_cni_1_0_0() {
    require_privileges!();
    let cni = Cni::new("cni-add", 1);
    let topo = &cni.topo;
    let server = http_server(&topo.containers[0].name, 80, "ctr0", 1);
    let prev = prev_result(topo, 0, "1.0.0");
    let config = conf(topo, "1.0.0", &[(18080, 80, "tcp")], Some(prev.clone()));

    let out = cni.ok("ADD", 0, &config);
    let result: Value = serde_json::from_str(&out).expect("ADD prints JSON");
    assert_eq!(result, prev, "ADD must print prevResult unchanged");
    assert!(
        tcx_ingress_programs(&topo.host.name, "docker0").len() == 1,
        "ADD must attach the bridge the container is reached through"
    );
    let body = client_get(topo, 18080).expect("the published port must serve the client");
    assert_eq!(
        body,
        format!("ctr0 saw {CLIENT_IP}"),
        "client address must be preserved"
    );
    server.join().unwrap();
    assert_eq!(
        cni.records().len(),
        1,
        "ADD keeps one record per attachment"
    );

    cni.ok("CHECK", 0, &config);

    let del = conf(topo, "1.0.0", &[(18080, 80, "tcp")], Some(prev.clone()));
    assert_eq!(cni.ok("DEL", 0, &del), "", "DEL prints nothing");
    assert!(
        client_get(topo, 18080).is_err(),
        "after DEL the port must not be forwarded any more"
    );
    assert!(cni.records().is_empty(), "DEL must forget the attachment");
    assert!(
        !topo.state_dir().exists(),
        "DEL must detach the bridge ADD attached once nothing uses it"
    );
    assert!(
        tcx_ingress_programs(&topo.host.name, "docker0").is_empty(),
        "no program may stay on the bridge"
    );
    // DEL is idempotent; CHECK now finds the mapping missing.
    cni.ok("DEL", 0, &del);
    let out = cni.run("CHECK", 0, true, &config);
    assert_cni_error(&out, 102, "CHECK after DEL");

    let v: Value = serde_json::from_str(&cni.ok("VERSION", 0, r#"{"cniVersion":"1.0.0"}"#))
        .expect("VERSION prints JSON");
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        assert!(
            v["supportedVersions"]
                .as_array()
                .unwrap()
                .contains(&json!(version)),
            "VERSION must list {version}: {v}"
        );
    }
}

/// A dual-stack pod (the bridge plugin gave it an IPv4 and an IPv6
/// address): one portMapping is published in both families, to the address
/// of each, over TCP and UDP, and each client keeps its own address.
#[test]
fn a_dual_stack_pod_is_published_in_both_families() {
    require_privileges!();
    let cni = Cni::on(Topology::dual("cni-dual", 1));
    let topo = &cni.topo;
    let ctr = topo.containers[0].name.clone();
    let mut prev = prev_result(topo, 0, "1.0.0");
    prev["ips"].as_array_mut().unwrap().push(json!({
        "address": format!("{}/64", container_ip6(0)),
        "gateway": BRIDGE_IP6.to_string(),
        "interface": 2,
    }));
    let ports = [(18090, 80, "tcp"), (18091, 5353, "udp")];
    let config = conf(topo, "1.0.0", &ports, Some(prev.clone()));
    let result: Value = serde_json::from_str(&cni.ok("ADD", 0, &config)).unwrap();
    assert_eq!(result, prev, "ADD must print prevResult unchanged");
    cni.ok("CHECK", 0, &config);

    for stack in Stack::BOTH {
        let server = http_server_at(&ctr, stack.any(), 80, "ctr0", 1);
        let body = http_get(&topo.client.name, stack.host_ext(), 18090)
            .unwrap_or_else(|e| panic!("{}: the TCP hostPort must serve: {e}", stack.name()));
        assert_eq!(
            body,
            format!("ctr0 saw {}", stack.client()),
            "{}: the client's address must be preserved",
            stack.name()
        );
        server.join().unwrap();

        let echo = udp_echo(&ctr, stack.any(), 5353, 1);
        let to = SocketAddr::new(stack.host_ext(), 18091);
        let (reply, from) = udp_exchange(&topo.client.name, to, "ping");
        assert_eq!(
            reply,
            "echo:ping",
            "{}: the UDP hostPort must serve",
            stack.name()
        );
        assert_eq!(
            from,
            to,
            "{}: the reply must come from the host port",
            stack.name()
        );
        let peers = echo.join().unwrap();
        assert_eq!(
            peers.iter().map(|p| p.ip()).collect::<Vec<_>>(),
            [stack.client()],
            "{}: the container must see the client's own address",
            stack.name()
        );
    }

    cni.ok("DEL", 0, &config);
    for stack in Stack::BOTH {
        assert!(
            http_get(&topo.client.name, stack.host_ext(), 18090).is_err(),
            "{}: after DEL the port must not be forwarded",
            stack.name()
        );
    }
    assert!(cni.records().is_empty(), "DEL must forget the attachment");
}

/// STATUS (1.1.0): success with no output where an ADD could work; code 50
/// (not available) for a caller without the privileges ADD needs.
#[test]
fn status_says_whether_an_add_could_work() {
    require_privileges!();
    let cni = Cni::new("cni-status", 1);
    let config = conf(&cni.topo, "1.1.0", &[], None);
    assert_eq!(
        cni.ok("STATUS", 0, &config),
        "",
        "STATUS prints nothing when ready"
    );

    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all",
    ])
    .arg(PORTFWD)
    .env_clear()
    .env("CNI_COMMAND", "STATUS")
    .env("CNI_PATH", "/nonexistent")
    .env("PORTFWD_CNI_STATE_DIR", &cni.state);
    let out = output_in(&cni.topo.host.name, &mut cmd, config.as_bytes());
    let v = assert_cni_error(&out, 50, "STATUS without privileges");
    assert!(
        v["msg"].as_str().unwrap().contains("CAP_NET_ADMIN"),
        "STATUS must say what is missing: {v}"
    );
}

#[test]
fn add_0_4_0_then_del_without_netns_or_prev_result() {
    require_privileges!();
    let cni = Cni::new("cni-040", 1);
    let topo = &cni.topo;
    let server = http_server(&topo.containers[0].name, 80, "ctr0", 1);
    let prev = prev_result(topo, 0, "0.4.0");
    let config = conf(topo, "0.4.0", &[(18081, 80, "tcp")], Some(prev.clone()));
    let result: Value = serde_json::from_str(&cni.ok("ADD", 0, &config)).unwrap();
    assert_eq!(result, prev, "a 0.4.0 result must come back in 0.4.0 shape");
    assert_eq!(
        client_get(topo, 18081).expect("published"),
        format!("ctr0 saw {CLIENT_IP}")
    );
    server.join().unwrap();
    cni.ok("CHECK", 0, &config);

    // A runtime deleting a container whose namespace is already gone.
    let del = conf(topo, "0.4.0", &[(18081, 80, "tcp")], None);
    let out = cni.run("DEL", 0, false, &del);
    ok(out, "DEL without CNI_NETNS and prevResult");
    assert!(client_get(topo, 18081).is_err(), "DEL must unpublish");
    assert!(
        !topo.state_dir().exists(),
        "DEL must detach what ADD attached"
    );
}

#[test]
fn bad_input_is_an_error_json_and_changes_nothing() {
    require_privileges!();
    let cni = Cni::new("cni-bad", 1);
    let topo = &cni.topo;
    let out = cni.run(
        "ADD",
        0,
        true,
        &conf(topo, "1.0.0", &[(18082, 80, "tcp")], None),
    );
    assert_cni_error(&out, 7, "ADD without prevResult");
    let out = cni.run("ADD", 0, true, "{\"cniVersion\": \"1.0.0\", \"name\":");
    assert_cni_error(&out, 6, "ADD with malformed JSON");
    let prev = prev_result(topo, 0, "1.0.0");
    let out = cni.run(
        "ADD",
        0,
        true,
        &conf(topo, "9.9.9", &[(18082, 80, "tcp")], Some(prev.clone())),
    );
    assert_cni_error(&out, 1, "ADD of an unsupported version");
    let out = cni.run(
        "ADD",
        0,
        true,
        &conf(topo, "1.0.0", &[(18082, 80, "sctp")], Some(prev)),
    );
    assert_cni_error(&out, 7, "ADD of an sctp port");
    let out = cni.run("BOGUS", 0, true, "{}");
    assert_cni_error(&out, 4, "an unknown CNI_COMMAND");
    assert!(
        !topo.state_dir().exists(),
        "a refused ADD must attach nothing"
    );
    assert!(
        cni.records().is_empty(),
        "a refused ADD must record nothing"
    );
}

#[test]
fn a_port_already_published_is_refused_whole() {
    require_privileges!();
    let cni = Cni::new("cni-taken", 2);
    let topo = &cni.topo;
    let first = conf(
        topo,
        "1.0.0",
        &[(18083, 80, "tcp")],
        Some(prev_result(topo, 0, "1.0.0")),
    );
    cni.ok("ADD", 0, &first);
    // The second container asks for a free port and the taken one.
    let second = conf(
        topo,
        "1.0.0",
        &[(18084, 80, "tcp"), (18083, 80, "tcp")],
        Some(prev_result(topo, 1, "1.0.0")),
    );
    let out = cni.run("ADD", 1, true, &second);
    let err = assert_cni_error(&out, 101, "ADD of a published host port");
    assert!(
        err["msg"].as_str().unwrap().contains("18083"),
        "the error must name the port: {err}"
    );
    let hosts: Vec<String> = list_json(topo)
        .iter()
        .map(|r| r["host"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        hosts.len(),
        1,
        "the refused ADD must publish nothing: {hosts:?}"
    );
    assert_eq!(
        cni.records().len(),
        1,
        "the refused ADD must record nothing"
    );
    // The first container is still served.
    let server = http_server(&topo.containers[0].name, 80, "ctr0", 1);
    assert_eq!(
        client_get(topo, 18083).expect("still published"),
        format!("ctr0 saw {CLIENT_IP}")
    );
    server.join().unwrap();
    // DEL of the refused container removes nothing of the first's.
    cni.ok("DEL", 1, &second);
    assert_eq!(
        list_json(topo).len(),
        1,
        "DEL of ctr1 must leave ctr0's port"
    );
}

#[test]
fn the_host_may_bind_a_cni_port_but_not_a_cli_one() {
    require_privileges!();
    let cni = Cni::new("cni-bind", 1);
    let topo = &cni.topo;
    let config = conf(
        topo,
        "1.0.0",
        &[(18085, 80, "tcp")],
        Some(prev_result(topo, 0, "1.0.0")),
    );
    cni.ok("ADD", 0, &config);
    let spec = format!("18086={}:80", container_ip(0));
    ok(topo.portfwd(&["add", &spec]), "portfwd add (a CLI mapping)");
    let server = http_server(&topo.containers[0].name, 80, "ctr0", 1);
    let r = hooked(
        topo,
        &topo.host.name,
        &[
            bind_op("0.0.0.0", 18085, "tcp", "ok"),
            bind_op(&HOST_EXT_IP.to_string(), 18085, "tcp", "ok"),
            bind_op("0.0.0.0", 18086, "tcp", "PermissionError"),
            bind_op(&HOST_EXT_IP.to_string(), 18086, "tcp", "PermissionError"),
        ],
    );
    assert_bound(&r[0]);
    assert_bound(&r[1]);
    assert_bind_denied(&r[2]);
    assert_bind_denied(&r[3]);
    // A reservation socket held while the client comes in gets nothing:
    // the datapath forwards before the socket sees the packet.
    let reserved = in_netns(&topo.host.name, || {
        std::net::TcpListener::bind("0.0.0.0:18085")
    })
    .expect("the test itself (outside the hooks' cgroup) binds the port");
    assert_eq!(
        client_get(topo, 18085).expect("forwarded despite the host socket"),
        format!("ctr0 saw {CLIENT_IP}")
    );
    server.join().unwrap();
    reserved.set_nonblocking(true).unwrap();
    assert!(
        reserved.accept().is_err(),
        "the reservation socket must get no connection"
    );
    cni.ok("DEL", 0, &config);
    // The CLI mapping is not the plugin's: it stays, and so does docker0.
    let left = list_json(topo);
    assert_eq!(left.len(), 1, "only the CNI mapping may go: {left:?}");
}

#[test]
fn gc_removes_attachments_the_runtime_no_longer_has() {
    require_privileges!();
    let cni = Cni::new("cni-gc", 2);
    let topo = &cni.topo;
    for i in 0..2 {
        let c = conf(
            topo,
            "1.1.0",
            &[(18087 + i as u16, 80, "tcp")],
            Some(prev_result(topo, i, "1.1.0")),
        );
        cni.ok("ADD", i, &c);
    }
    assert_eq!(list_json(topo).len(), 2);
    let gc = json!({
        "cniVersion": "1.1.0",
        "name": NETWORK,
        "type": "portfwd",
        "cni.dev/valid-attachments": [{"containerID": "ctr1", "ifname": "eth0"}],
    });
    cni.ok("GC", 0, &gc.to_string());
    let left = list_json(topo);
    assert_eq!(
        left.len(),
        1,
        "GC must remove ctr0's mapping only: {left:?}"
    );
    assert_eq!(cni.records().len(), 1, "GC must forget ctr0");
}
