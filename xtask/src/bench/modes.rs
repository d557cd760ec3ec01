//! The ways to reach the container that the bench compares, one type each:
//! where clients connect and how the mode is set up on the rig.
use std::{fmt::Write as _, path::PathBuf, process::Command};

use anyhow::{anyhow, Result};

use super::rig::{output, wait_port, Rig, BRIDGE, HOST_IP, HOST_IP6, WEB_IP, WEB_IP6};
use crate::cmd::which;

/// (address, http port, iperf3 port) a client connects to.
pub type Target = (&'static str, u16, u16);

/// The backend ports a mode forwards to in the container.
#[derive(Clone, Copy, Debug)]
pub struct Backend {
    pub http: u16,
    pub iperf: u16,
}

/// One way to reach the container.
pub trait Forwarder: Sync {
    /// The mode's name in `--modes`, the results and the report.
    fn name(&self) -> &'static str;
    /// Where a remote client connects.
    fn remote(&self) -> Target;
    /// Where a client on the host connects; None if the mode has no local
    /// path.
    fn local(&self) -> Option<Target> {
        let (_, http, iperf) = self.remote();
        Some(("127.0.0.1", http, iperf))
    }
    /// Whether the mode forwards UDP.
    fn udp(&self) -> bool {
        true
    }
    /// Whether the mode publishes ports on the host (whose readiness the
    /// bench waits for once every mode is set up).
    fn publishes(&self) -> bool {
        true
    }
    /// Whether the mode's clients and container speak IPv6 (its rows are
    /// reported in tables of their own, against the IPv6 peers).
    fn ipv6(&self) -> bool {
        false
    }
    /// Publishes the mode's ports on the rig, forwarding to `to`.
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()>;
}

/// The modes a family's portfwd figures are compared with, by name.
pub struct Peers {
    pub portfwd: &'static str,
    pub direct: &'static str,
    pub netfilter: &'static str,
}

pub const PEERS_V4: Peers = Peers {
    portfwd: "portfwd",
    direct: "direct",
    netfilter: "iptables",
};
pub const PEERS_V6: Peers = Peers {
    portfwd: "portfwd6",
    direct: "direct6",
    netfilter: "ip6tables",
};

/// A way to reach the container: where remote and host-local clients connect.
///
/// Each mode forwards to its own backend ports (nginx on 80+i, iperf3 on
/// 5201+i for the i-th mode): the client reuses its source ports quickly, and
/// with one backend port for all modes a new connection through one mode would
/// land on the container's TIME_WAIT socket of another mode's earlier
/// connection, whose TCP timestamps (offset per destination address) it fails
/// PAWS against: SYNs lost, one-second retransmits, a benchmark of the
/// collision rather than of the forwarder.
#[derive(Clone, Copy)]
pub struct Mode {
    /// Index into MODES: the mode's backend ports are 80+i and 5201+i.
    pub index: u16,
    pub fwd: &'static dyn Forwarder,
}

pub const MODES: [Mode; 10] = [
    Mode {
        index: 0,
        fwd: &Direct,
    },
    Mode {
        index: 1,
        fwd: &Portfwd,
    },
    Mode {
        index: 2,
        fwd: &Iptables,
    },
    Mode {
        index: 3,
        fwd: &Nftables,
    },
    Mode {
        index: 4,
        fwd: &DockerProxy,
    },
    Mode {
        index: 5,
        fwd: &Socat,
    },
    Mode {
        index: 6,
        fwd: &DockerPortfwd,
    },
    Mode {
        index: DIRECT6,
        fwd: &Direct6,
    },
    Mode {
        index: 8,
        fwd: &Portfwd6,
    },
    Mode {
        index: 9,
        fwd: &Ip6tables,
    },
];

/// The index of the IPv6 direct mode, whose target is its own backend.
const DIRECT6: u16 = 7;

impl Mode {
    pub fn name(&self) -> &'static str {
        self.fwd.name()
    }
    pub fn backend(&self) -> Backend {
        Backend {
            http: 80 + self.index,
            iperf: 5201 + self.index,
        }
    }

    /// The modes named in a comma-separated list (all of them for None).
    pub fn parse_list(list: Option<&str>) -> Result<Vec<Mode>> {
        let Some(list) = list else {
            return Ok(MODES.to_vec());
        };
        list.split(',')
            .map(|n| {
                MODES
                    .iter()
                    .find(|m| m.name() == n.trim())
                    .copied()
                    .ok_or_else(|| anyhow!("unknown mode {n}"))
            })
            .collect()
    }
}

/// Sets every mode up, then waits until each published port accepts.
pub fn setup_all(rig: &mut Rig, modes: &[Mode]) -> Result<()> {
    for m in modes {
        m.fwd.setup(rig, m.backend())?;
    }
    for m in modes {
        if m.fwd.publishes() {
            let (addr, http, _) = m.fwd.remote();
            wait_port(&rig.client, addr, http)?;
        }
    }
    Ok(())
}

/// The routed path to the container's own address: the limit.
pub struct Direct;

impl Forwarder for Direct {
    fn name(&self) -> &'static str {
        "direct"
    }
    fn remote(&self) -> Target {
        (WEB_IP, 80, 5201)
    }
    fn local(&self) -> Option<Target> {
        Some((WEB_IP, 80, 5201))
    }
    fn publishes(&self) -> bool {
        false
    }
    fn setup(&self, _rig: &mut Rig, _to: Backend) -> Result<()> {
        Ok(())
    }
}

/// `portfwd attach` with the socket hooks on the bench cgroup.
pub struct Portfwd;

/// portfwd's host ports on the rig (TCP http and iperf3, UDP iperf3).
pub const PORTFWD_HTTP: u16 = 8080;
pub const PORTFWD_IPERF: u16 = 8201;

impl Forwarder for Portfwd {
    fn name(&self) -> &'static str {
        "portfwd"
    }
    fn remote(&self) -> Target {
        (HOST_IP, PORTFWD_HTTP, PORTFWD_IPERF)
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        rig.publish_portfwd(&portfwd_maps(WEB_IP, to))
    }
}

/// The routed IPv6 path to the container's own address.
pub struct Direct6;

impl Forwarder for Direct6 {
    fn name(&self) -> &'static str {
        "direct6"
    }
    fn remote(&self) -> Target {
        (WEB_IP6, 80 + DIRECT6, 5201 + DIRECT6)
    }
    fn local(&self) -> Option<Target> {
        Some(self.remote())
    }
    fn publishes(&self) -> bool {
        false
    }
    fn ipv6(&self) -> bool {
        true
    }
    fn setup(&self, _rig: &mut Rig, _to: Backend) -> Result<()> {
        Ok(())
    }
}

/// portfwd's IPv6 mappings: the same host ports as its IPv4 ones (one port
/// per family, as `docker run -p` publishes on 0.0.0.0 and [::]).
pub struct Portfwd6;

impl Forwarder for Portfwd6 {
    fn name(&self) -> &'static str {
        "portfwd6"
    }
    fn remote(&self) -> Target {
        (HOST_IP6, PORTFWD_HTTP, PORTFWD_IPERF)
    }
    /// The host's IPv6 address, as for ip6tables (which cannot DNAT [::1]).
    fn local(&self) -> Option<Target> {
        Some(self.remote())
    }
    fn ipv6(&self) -> bool {
        true
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        rig.publish_portfwd(&portfwd_maps(&format!("[{WEB_IP6}]"), to))
    }
}

/// `--map` values publishing the portfwd modes' host ports onto `to` at
/// `container` (an IPv4 address or a bracketed IPv6 one).
fn portfwd_maps(container: &str, to: Backend) -> Vec<String> {
    let (h, i) = (to.http, to.iperf);
    vec![
        format!("{PORTFWD_HTTP}={container}:{h}"),
        format!("{PORTFWD_IPERF}={container}:{i}"),
        format!("{PORTFWD_IPERF}={container}:{i}/udp"),
    ]
}

/// iptables DNAT as Docker writes it, with hairpin MASQUERADE.
pub struct Iptables;

impl Forwarder for Iptables {
    fn name(&self) -> &'static str {
        "iptables"
    }
    fn remote(&self) -> Target {
        (HOST_IP, 9080, 9201)
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        rig.host_sh(&netfilter_rules(
            "iptables",
            (HOST_IP, "127.0.0.1"),
            WEB_IP,
            "172.29.0.0/16",
            to,
        ))
    }
}

/// ip6tables DNAT as Docker writes it for IPv6 (no rule for [::1]: the
/// kernel does not route a packet from ::1 off the host, which is why Docker
/// keeps docker-proxy for it; host-local clients use the host's address).
pub struct Ip6tables;

impl Forwarder for Ip6tables {
    fn name(&self) -> &'static str {
        "ip6tables"
    }
    fn remote(&self) -> Target {
        (HOST_IP6, 9080, 9201)
    }
    fn local(&self) -> Option<Target> {
        Some(self.remote())
    }
    fn ipv6(&self) -> bool {
        true
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        rig.host_sh(&netfilter_rules(
            "ip6tables",
            (HOST_IP6, HOST_IP6),
            &format!("[{WEB_IP6}]"),
            "fd29::/64",
            to,
        ))
    }
}

/// The DNAT rules of the (ip|ip6)tables modes, from host ports 9080 (http)
/// and 9201 (iperf3) onto `to` at `container`: PREROUTING for `remote`, OUTPUT
/// for `local` (host-local clients), MASQUERADE for host-sourced and hairpin
/// (a container of `bridge_net` through the host address: the container's
/// reply must come back through the host, as with portfwd's source NAT).
fn netfilter_rules(
    cmd: &str,
    (remote, local): (&str, &str),
    container: &str,
    bridge_net: &str,
    to: Backend,
) -> String {
    let mut s = String::new();
    for (from, to) in [(9080, to.http), (9201, to.iperf)] {
        for proto in ["tcp", "udp"] {
            for (chain, dst) in [("PREROUTING", remote), ("OUTPUT", local)] {
                let _ = write!(s, "{cmd} -t nat -A {chain} -d {dst} -p {proto} --dport {from} -j DNAT --to-destination {container}:{to} && ");
            }
        }
    }
    let _ = write!(
        s,
        "{cmd} -t nat -A POSTROUTING -o {BRIDGE} -m addrtype --src-type LOCAL -j MASQUERADE && "
    );
    let _ = write!(s, "{cmd} -t nat -A POSTROUTING -o {BRIDGE} -s {bridge_net} -m conntrack --ctstate DNAT -j MASQUERADE && {cmd} -P FORWARD ACCEPT");
    s
}

/// nftables DNAT, the same rules as the iptables mode.
pub struct Nftables;

impl Forwarder for Nftables {
    fn name(&self) -> &'static str {
        "nftables"
    }
    fn remote(&self) -> Target {
        (HOST_IP, 10080, 10201)
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        let (h, i) = (to.http, to.iperf);
        let rules = format!(
            "table ip pfbench {{\n chain pre {{ type nat hook prerouting priority -100; ip daddr {HOST_IP} tcp dport 10080 dnat to {WEB_IP}:{h}; ip daddr {HOST_IP} tcp dport 10201 dnat to {WEB_IP}:{i}; ip daddr {HOST_IP} udp dport 10201 dnat to {WEB_IP}:{i}; }}\n\
             chain out {{ type nat hook output priority -100; ip daddr 127.0.0.1 tcp dport 10080 dnat to {WEB_IP}:{h}; ip daddr 127.0.0.1 tcp dport 10201 dnat to {WEB_IP}:{i}; ip daddr 127.0.0.1 udp dport 10201 dnat to {WEB_IP}:{i}; }}\n\
             chain post {{ type nat hook postrouting priority 100; oifname \"docker0\" fib saddr type local masquerade; oifname \"docker0\" ip saddr 172.29.0.0/16 ct status dnat masquerade; }}\n}}\n"
        );
        let f = rig.tmp.join("rules.nft");
        std::fs::write(&f, rules)?;
        rig.host_sh(&format!("nft -f {}", f.display()))
    }
}

/// Debian's docker.io docker-proxy, one process per port and protocol.
pub struct DockerProxy;

/// Where docker-proxy is, if it is installed.
pub fn docker_proxy_bin() -> Option<PathBuf> {
    which("docker-proxy")
        .or_else(|| Some(PathBuf::from("/usr/sbin/docker-proxy")).filter(|p| p.exists()))
}

impl Forwarder for DockerProxy {
    fn name(&self) -> &'static str {
        "docker-proxy"
    }
    fn remote(&self) -> Target {
        (HOST_IP, 12080, 12201)
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        let bin = docker_proxy_bin().ok_or_else(|| {
            anyhow!("docker-proxy not found (Debian's docker.io ships /usr/sbin/docker-proxy)")
        })?;
        proxy_per_port(rig, &bin, self.remote(), to)
    }
}

/// One Docker-style proxy process per port and protocol: `at`'s http port
/// (TCP) and iperf3 port (TCP and UDP) onto `to`.
fn proxy_per_port(rig: &mut Rig, bin: &std::path::Path, at: Target, to: Backend) -> Result<()> {
    let (_, http, iperf) = at;
    for (proto, from, to) in [
        ("tcp", http, to.http),
        ("tcp", iperf, to.iperf),
        ("udp", iperf, to.iperf),
    ] {
        rig.docker_proxy(bin, proto, from, to)?;
    }
    Ok(())
}

/// "docker -p through portfwd": portfwd-docker-proxy started as dockerd
/// starts its userland proxy (beside "docker -p with docker-proxy" above),
/// publishing through the datapath.
pub struct DockerPortfwd;

/// portfwd-docker-proxy, built next to the portfwd binary.
pub fn portfwd_docker_proxy_bin(portfwd: &std::path::Path) -> PathBuf {
    portfwd.with_file_name("portfwd-docker-proxy")
}

impl Forwarder for DockerPortfwd {
    fn name(&self) -> &'static str {
        "docker-p-portfwd"
    }
    fn remote(&self) -> Target {
        (HOST_IP, 13080, 13201)
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        let bin = portfwd_docker_proxy_bin(&rig.portfwd);
        proxy_per_port(rig, &bin, self.remote(), to)
    }
}

/// socat, forking a process per connection (TCP only).
pub struct Socat;

impl Forwarder for Socat {
    fn name(&self) -> &'static str {
        "socat"
    }
    fn remote(&self) -> Target {
        (HOST_IP, 11080, 11201)
    }
    fn udp(&self) -> bool {
        false
    }
    fn setup(&self, rig: &mut Rig, to: Backend) -> Result<()> {
        for (from, to) in [(11080, to.http), (11201, to.iperf)] {
            let mut c = Command::new("socat");
            c.args([
                format!("TCP-LISTEN:{from},fork,reuseaddr,backlog=4096"),
                format!("TCP:{WEB_IP}:{to}"),
            ]);
            let host = rig.host.clone();
            rig.spawn(c, &host)?;
        }
        Ok(())
    }
}

impl Rig {
    /// `PORTFWD -n HOST attach docker0 --cgroup BENCH` with the portfwd
    /// mode's IPv4 mappings onto `to`.
    pub fn attach_portfwd(&mut self, portfwd: &std::path::Path, to: Backend) -> Result<()> {
        self.attach_portfwd_maps(portfwd, &portfwd_maps(WEB_IP, to))
    }

    /// Publishes `maps` with the rig's portfwd: attaching with them if it is
    /// not attached yet, else adding them.
    pub fn publish_portfwd(&mut self, maps: &[String]) -> Result<()> {
        let Some(portfwd) = self.attached.clone() else {
            return self.attach_portfwd_maps(&self.portfwd.clone(), maps);
        };
        let mut c = Command::new(portfwd);
        c.args(["-n", &self.host, "add"]).args(maps);
        output(c, "portfwd add").map(drop)
    }

    fn attach_portfwd_maps(&mut self, portfwd: &std::path::Path, maps: &[String]) -> Result<()> {
        let cg = self.cgroup.to_str().unwrap().to_string();
        let mut c = Command::new(portfwd);
        c.args(["-n", &self.host, "attach", BRIDGE, "--cgroup", &cg]);
        for m in maps {
            c.args(["--map", m]);
        }
        output(c, "portfwd attach")?;
        self.attached = Some(portfwd.to_owned());
        Ok(())
    }
}
