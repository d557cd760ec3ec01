//! The reference plugins' portmap scenarios with portfwd in portmap's place,
//! chained after `ptp` (a routed veth per container, no bridge) with
//! `host-local` addresses, for CNI 0.3.1, 0.4.0 and 1.0.0: TCP through the
//! host's address, through 127.0.0.1 and hairpinned from the container
//! itself; UDP; then a second container taking the same host port once the
//! first is deleted. The plugins run as a runtime runs them, from a private
//! CNI_PATH (ptp, host-local and a `portfwd` symlink), in the host namespace
//! of a test topology, on container namespaces the test creates.
//!
//! Needs Debian's containernetworking-plugins (installed with apt-get if
//! missing).
mod common;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
};

use common::*;
use serde_json::{json, Value};

const PLUGINS: &str = "/usr/lib/cni";
const NETWORK: &str = "pftptp";
const HOST_PORT: u16 = 18091;

/// Installs containernetworking-plugins if ptp or host-local is missing;
/// false (or, under CI=true, a panic) if that fails.
fn plugins_or_skip() -> bool {
    let have = || {
        ["ptp", "host-local"]
            .iter()
            .all(|p| Path::new(PLUGINS).join(p).exists())
    };
    if !have() {
        eprintln!("cni_ptp: installing containernetworking-plugins with apt-get");
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "containernetworking-plugins"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output();
    }
    if have() {
        return true;
    }
    let why = format!("the CNI reference plugins are not in {PLUGINS}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("cni_ptp: cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED cni_ptp: {why}");
    false
}

/// A topology (client, host) plus a private CNI_PATH and plugin data.
struct Rig {
    topo: Topology,
    dir: PathBuf,
    version: &'static str,
    subnet: String,
    containers: Vec<Netns>,
}

impl Rig {
    fn new(tag: &str, version: &'static str, third_octet: u8) -> Self {
        let topo = Topology::new(tag, 0);
        let dir = std::env::temp_dir().join(format!("{}-cni", topo.host.name));
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for p in ["ptp", "host-local"] {
            std::os::unix::fs::symlink(Path::new(PLUGINS).join(p), bin.join(p)).unwrap();
        }
        std::os::unix::fs::symlink(PORTFWD, bin.join("portfwd")).unwrap();
        Self {
            topo,
            dir,
            version,
            subnet: format!("10.77.{third_octet}.0/24"),
            containers: Vec::new(),
        }
    }

    /// A new, empty container namespace; returns its index.
    fn container(&mut self) -> usize {
        let i = self.containers.len();
        let name = format!("{}-p{i}", self.topo.host.name.trim_end_matches("-host"));
        self.containers.push(Netns::new(name));
        i
    }

    /// Runs plugin `plugin` from the private CNI_PATH for container `i`.
    fn plugin(&self, plugin: &str, command: &str, i: usize, conf: &Value) -> std::process::Output {
        let mut cmd = Command::new(self.dir.join("bin").join(plugin));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", format!("ptp{i}"))
            .env(
                "CNI_NETNS",
                format!("/var/run/netns/{}", self.containers[i].name),
            )
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", self.dir.join("bin"))
            .env("PORTFWD_CNI_STATE_DIR", self.dir.join("state"))
            .env(portfwd::persist::DIR_ENV, persist_dir());
        output_in(&self.topo.host.name, &mut cmd, conf.to_string().as_bytes())
    }

    fn ptp_conf(&self) -> Value {
        json!({
            "cniVersion": self.version,
            "name": NETWORK,
            "type": "ptp",
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "subnet": self.subnet,
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": self.dir.join("ipam"),
            },
        })
    }

    fn portfwd_conf(&self, ports: &[(u16, u16, &str)], prev: &Value) -> Value {
        let mappings: Vec<Value> = ports
            .iter()
            .map(|(h, c, p)| json!({"hostPort": h, "containerPort": c, "protocol": p}))
            .collect();
        json!({
            "cniVersion": self.version,
            "name": NETWORK,
            "type": "portfwd",
            "capabilities": {"portMappings": true},
            "cgroup": self.topo.cgroup,
            "runtimeConfig": {"portMappings": mappings},
            "prevResult": prev,
        })
    }

    /// The chain's ADD for container `i`: ptp, then portfwd with ptp's
    /// result. Returns the container's address and the chain's result.
    fn add(&self, i: usize, ports: &[(u16, u16, &str)]) -> (String, Value) {
        let out = ok(self.plugin("ptp", "ADD", i, &self.ptp_conf()), "ptp ADD");
        let prev: Value = serde_json::from_str(&out).expect("ptp prints its result");
        let out = ok(
            self.plugin("portfwd", "ADD", i, &self.portfwd_conf(ports, &prev)),
            "portfwd ADD after ptp",
        );
        let result: Value = serde_json::from_str(&out).expect("portfwd prints the result");
        assert_eq!(result, prev, "portfwd must pass ptp's result on unchanged");
        let addr = prev["ips"][0]["address"].as_str().expect("an address");
        let ip = addr.split('/').next().unwrap().to_string();
        (ip, result)
    }

    /// The chain's DEL for container `i`, in reverse order.
    fn del(&self, i: usize, ports: &[(u16, u16, &str)], prev: &Value) {
        ok(
            self.plugin("portfwd", "DEL", i, &self.portfwd_conf(ports, prev)),
            "portfwd DEL",
        );
        let mut conf = self.ptp_conf();
        conf["prevResult"] = prev.clone();
        ok(self.plugin("ptp", "DEL", i, &conf), "ptp DEL");
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn portmap_scenarios(version: &'static str, third_octet: u8) {
    require_privileges!();
    if !plugins_or_skip() {
        return;
    }
    let mut rig = Rig::new(&format!("ptp{third_octet}"), version, third_octet);
    let ports = [(HOST_PORT, 80, "tcp"), (HOST_PORT, 53, "udp")];
    let first = rig.container();
    let (ip, result) = rig.add(first, &ports);
    let topo = &rig.topo;
    let ns = rig.containers[first].name.clone();
    let veth = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        !tcx_ingress_programs(&topo.host.name, &veth).is_empty(),
        "ADD must attach the host end of ptp's veth ({veth}), found from the routes"
    );

    // TCP through the host's external address, the client's address kept.
    let server = http_server(&ns, 80, "first", 3);
    let body = http_get(&topo.client.name, HOST_EXT_IP, HOST_PORT)
        .expect("TCP to the host's address must reach the container");
    assert_eq!(body, format!("first saw {CLIENT_IP}"));
    // Through 127.0.0.1 from a host process.
    // The host's side of the veth (ptp's gateway) is what the container
    // sees: the socket hooks connect from there.
    let gateway = result["ips"][0]["gateway"]
        .as_str()
        .expect("ptp gives a gateway");
    let r = hooked(topo, &topo.host.name, &[get("127.0.0.1", HOST_PORT)]);
    assert_page(
        &r[0],
        &format!("first saw {gateway}"),
        ("127.0.0.1", HOST_PORT),
    );
    // Hairpin: the container reaches itself through the host's address.
    let body = http_get(&ns, HOST_EXT_IP, HOST_PORT)
        .expect("the container must reach itself through the published port");
    assert!(body.starts_with("first saw "), "hairpin reached {body:?}");
    let peers = server.join().unwrap();
    assert_eq!(
        peers.len(),
        3,
        "three connections must have reached the container"
    );

    // UDP.
    let echo = udp_echo(&ns, std::net::Ipv4Addr::UNSPECIFIED, 53, 1);
    let to = SocketAddr::from((HOST_EXT_IP, HOST_PORT));
    let (reply, from) = udp_exchange(&topo.client.name, to, "ping");
    assert_eq!(
        reply, "echo:ping",
        "the UDP reply must come from the container"
    );
    assert_eq!(
        from, to,
        "the UDP reply must come from the published address"
    );
    assert_eq!(
        echo.join().unwrap()[0].ip(),
        std::net::IpAddr::from(CLIENT_IP)
    );

    // The first container goes; a second takes the same host port.
    rig.del(first, &ports, &result);
    assert!(
        http_get(&rig.topo.client.name, HOST_EXT_IP, HOST_PORT).is_err(),
        "after DEL the port must not be forwarded"
    );
    assert!(
        !rig.topo.state_dir().exists(),
        "DEL must detach the veth ADD attached: nothing may remain"
    );
    let second = rig.container();
    let (ip2, result2) = rig.add(second, &ports);
    assert_ne!(
        ip, ip2,
        "host-local must give the second container its own address"
    );
    let server = http_server(&rig.containers[second].name, 80, "second", 1);
    let body = http_get(&rig.topo.client.name, HOST_EXT_IP, HOST_PORT)
        .expect("the second container must get the freed host port");
    assert_eq!(body, format!("second saw {CLIENT_IP}"));
    server.join().unwrap();
    rig.del(second, &ports, &result2);
    assert!(
        !rig.topo.state_dir().exists(),
        "nothing may remain after the last DEL"
    );
}

#[test]
fn portmap_scenarios_after_ptp_cni_0_3_1() {
    portmap_scenarios("0.3.1", 31);
}

#[test]
fn portmap_scenarios_after_ptp_cni_0_4_0() {
    portmap_scenarios("0.4.0", 40);
}

#[test]
fn portmap_scenarios_after_ptp_cni_1_0_0() {
    portmap_scenarios("1.0.0", 100);
}
