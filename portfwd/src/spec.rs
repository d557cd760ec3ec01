//! Mapping specifications: `[HOST_IP:]HOST_PORT[-END]=CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp]`.
use std::{fmt, net::Ipv4Addr, str::FromStr};

use portfwd_common::{Backend, MapKey, PROTO_TCP, PROTO_UDP, V4};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => PROTO_TCP,
            Self::Udp => PROTO_UDP,
        }
    }

    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            PROTO_TCP => Some(Self::Tcp),
            PROTO_UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// The host side of a mapping: address (None = every local address), port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub proto: Proto,
    pub addr: Option<Ipv4Addr>,
    pub port: u16,
}

impl HostPort {
    pub fn key(&self) -> MapKey<V4> {
        MapKey {
            addr_be: self.addr.map_or(0, |a| u32::from_ne_bytes(a.octets())),
            port_be: self.port.to_be(),
            proto: self.proto.number(),
            pad: 0,
        }
    }

    pub fn from_key(key: &MapKey<V4>) -> Option<Self> {
        Some(Self {
            proto: Proto::from_number(key.proto)?,
            addr: (key.addr_be != 0).then(|| Ipv4Addr::from(key.addr_be.to_ne_bytes())),
            port: u16::from_be(key.port_be),
        })
    }

    /// Two host ports collide if a packet could match both: same protocol and
    /// port, and the same address or either one on every address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.proto == other.proto
            && self.port == other.port
            && (self.addr.is_none() || other.addr.is_none() || self.addr == other.addr)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let addr = self.addr.unwrap_or(Ipv4Addr::UNSPECIFIED);
        write!(f, "{addr}:{}/{}", self.port, self.proto)
    }
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub host: HostPort,
    pub container_ip: Ipv4Addr,
    pub container_port: u16,
}

impl Mapping {
    /// The table's value for this mapping on `bridge_ifindex`, counted in
    /// `stats_slot`.
    pub fn backend(&self, bridge_ifindex: u32, stats_slot: u32) -> Backend<V4> {
        Backend {
            addr_be: u32::from_ne_bytes(self.container_ip.octets()),
            port_be: self.container_port.to_be(),
            pad: 0,
            bridge_ifindex,
            stats_slot,
        }
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}:{}",
            self.host, self.container_ip, self.container_port
        )
    }
}

/// A parsed SPEC: one mapping, or several for a port range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub text: String,
    pub mappings: Vec<Mapping>,
}

/// Parses a SPEC whose container side is an IPv4 address; a container name
/// is refused here (parse a `SpecTemplate` to accept one).
impl FromStr for Spec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let template: SpecTemplate = text.parse()?;
        match &template.container {
            Container::Ip(ip) => template.resolve(*ip),
            Container::Name(name) => {
                Err(bad_spec(text, &format!("'{name}' is not an IPv4 address")))
            }
        }
    }
}

/// The container side of a SPEC as written: an address, or the name (or id)
/// of a Docker container whose address is looked up later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Container {
    Ip(Ipv4Addr),
    Name(String),
}

/// A SPEC parsed and validated in everything but the container's address,
/// which may still be a container name. Parsing touches nothing outside the
/// string; `resolve` turns it into a `Spec` once the address is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecTemplate {
    pub text: String,
    pub proto: Proto,
    /// None: every local address.
    pub host_addr: Option<Ipv4Addr>,
    pub host_ports: std::ops::RangeInclusive<u16>,
    pub container: Container,
    /// As long as `host_ports`.
    pub container_ports: std::ops::RangeInclusive<u16>,
}

impl SpecTemplate {
    /// The container name to look up, if the SPEC names one.
    pub fn container_name(&self) -> Option<&str> {
        match &self.container {
            Container::Ip(_) => None,
            Container::Name(name) => Some(name),
        }
    }

    /// The host side of every mapping the SPEC makes (known before the
    /// container's address is).
    pub fn host_ports(&self) -> impl Iterator<Item = HostPort> + '_ {
        self.host_ports.clone().map(|port| HostPort {
            proto: self.proto,
            addr: self.host_addr,
            port,
        })
    }

    /// The SPEC's mappings, to `container_ip` (the SPEC's own address, or the
    /// one its container name resolved to).
    pub fn resolve(&self, container_ip: Ipv4Addr) -> Result<Spec> {
        check_container_ip(&self.text, container_ip)?;
        let mappings = self
            .host_ports()
            .zip(self.container_ports.clone())
            .map(|(host, container_port)| Mapping {
                host,
                container_ip,
                container_port,
            })
            .collect();
        Ok(Spec {
            text: self.text.clone(),
            mappings,
        })
    }
}

impl FromStr for SpecTemplate {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| bad_spec(text, why);
        let (body, proto) = split_proto(text)?;
        let (host, container) = body
            .split_once('=')
            .ok_or_else(|| bad("expected [HOST_IP:]HOST_PORT=CONTAINER_IP:CONTAINER_PORT"))?;
        let (host_ip, host_ports) = match host.rsplit_once(':') {
            Some((ip, ports)) => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad(&format!("'{ip}' is not an IPv4 address")))?;
                (if ip.is_unspecified() { None } else { Some(ip) }, ports)
            }
            None => (None, host),
        };
        let (target, container_ports) = container
            .rsplit_once(':')
            .ok_or_else(|| bad("the container side needs CONTAINER_IP:CONTAINER_PORT"))?;
        let container = parse_container(target).map_err(|why| bad(&why))?;
        if let Container::Ip(ip) = container {
            check_container_ip(text, ip)?;
        }
        let (h_start, h_end) = port_range(host_ports).map_err(|why| bad(&why))?;
        let (c_start, c_end) = port_range(container_ports).map_err(|why| bad(&why))?;
        if h_end - h_start != c_end - c_start {
            return Err(bad("host and container port ranges differ in length"));
        }
        Ok(Self {
            text: text.to_string(),
            proto,
            host_addr: host_ip,
            host_ports: h_start..=h_end,
            container,
            container_ports: c_start..=c_end,
        })
    }
}

/// An IPv4 address, or else a Docker container name or id: an ASCII letter
/// or digit, then letters, digits, `_`, `.` or `-` (Docker's own rule, with
/// one character allowed for an id prefix). Digits and dots alone are a
/// mistyped address, not a name.
fn parse_container(text: &str) -> std::result::Result<Container, String> {
    if let Ok(ip) = text.parse::<Ipv4Addr>() {
        return Ok(Container::Ip(ip));
    }
    let looks_numeric = text.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let valid_name = text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if looks_numeric || text.is_empty() {
        Err(format!("'{text}' is not an IPv4 address"))
    } else if valid_name {
        Ok(Container::Name(text.to_string()))
    } else {
        Err(format!(
            "'{text}' is neither an IPv4 address nor a container name"
        ))
    }
}

/// Refuses container addresses no container can be reached at: loopback
/// (127.0.0.0/8 is the host's own, and the datapath redirects to the bridge,
/// where no such address answers), unspecified, broadcast and multicast.
fn check_container_ip(text: &str, ip: Ipv4Addr) -> Result<()> {
    if ip.is_loopback() {
        return Err(bad_spec(
            text,
            &format!("{ip} is a loopback address, which no container can be reached at"),
        ));
    }
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(bad_spec(
            text,
            &format!("{ip} cannot be a container address"),
        ));
    }
    Ok(())
}

/// A `del` argument: `[HOST_IP:]HOST_PORT[-END][/tcp|/udp]`. Without HOST_IP
/// it names the port on whatever address it is published.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSelector {
    pub proto: Proto,
    pub addr: Option<Ipv4Addr>,
    pub ports: std::ops::RangeInclusive<u16>,
}

impl PortSelector {
    pub fn matches(&self, host: &HostPort) -> bool {
        host.proto == self.proto
            && self.ports.contains(&host.port)
            && (self.addr.is_none() || self.addr == host.addr)
    }
}

impl FromStr for PortSelector {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| bad_spec(text, why);
        let (body, proto) = split_proto(text)?;
        let (addr, ports) = match body.rsplit_once(':') {
            Some((ip, ports)) => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| bad(&format!("'{ip}' is not an IPv4 address")))?;
                (Some(ip), ports)
            }
            None => (None, body),
        };
        let (start, end) = port_range(ports).map_err(|why| bad(&why))?;
        Ok(Self {
            proto,
            addr: addr.filter(|a| !a.is_unspecified()),
            ports: start..=end,
        })
    }
}

fn bad_spec(text: &str, why: &str) -> Error {
    Error::BadSpec {
        spec: text.to_string(),
        why: why.to_string(),
    }
}

/// Splits an optional `/tcp` or `/udp` suffix off (tcp when absent).
fn split_proto(text: &str) -> Result<(&str, Proto)> {
    match text.rsplit_once('/') {
        Some((body, "tcp")) => Ok((body, Proto::Tcp)),
        Some((body, "udp")) => Ok((body, Proto::Udp)),
        Some((_, other)) => Err(bad_spec(
            text,
            &format!("unknown protocol '{other}' (tcp or udp)"),
        )),
        None => Ok((text, Proto::Tcp)),
    }
}

fn port_range(text: &str) -> std::result::Result<(u16, u16), String> {
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(text)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!("port range {text} ends before it starts"));
    }
    Ok((start, end))
}

fn port(text: &str) -> std::result::Result<u16, String> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("'{text}' is not a port number"));
    }
    match text.parse::<u32>() {
        Ok(0) => Err("port 0 is not a valid port".into()),
        Ok(p) if p <= 65_535 => Ok(p as u16),
        _ => Err(format!("port {text} is out of range (1-65535)")),
    }
}

/// Refuses two mappings for the same host port within `mappings` (same
/// protocol and port, and the same address or either on every address).
/// Linear in the number of mappings: a range can hold tens of thousands.
pub fn check_unique(mappings: &[Mapping]) -> Result<()> {
    check_unique_hosts(mappings.iter().map(|m| m.host))
}

/// `check_unique` on host ports alone (before container names resolve).
pub fn check_unique_hosts(hosts: impl IntoIterator<Item = HostPort>) -> Result<()> {
    use std::collections::{HashMap, HashSet};
    // Per (protocol, port): whether the wildcard is taken, and which addresses.
    let mut seen: HashMap<(Proto, u16), (bool, HashSet<Ipv4Addr>)> = HashMap::new();
    for host in hosts {
        let (wildcard, addrs) = seen.entry((host.proto, host.port)).or_default();
        let clash = match host.addr {
            None => *wildcard || !addrs.is_empty(),
            Some(a) => *wildcard || !addrs.insert(a),
        };
        if clash {
            return Err(Error::DuplicatePort(host.to_string()));
        }
        if host.addr.is_none() {
            *wildcard = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Mapping {
        let spec: Spec = text.parse().unwrap();
        assert_eq!(spec.mappings.len(), 1, "{text}");
        spec.mappings[0]
    }

    #[test]
    fn parses_the_documented_forms() {
        let m = one("80=172.17.0.15:8080");
        assert_eq!(
            m.host,
            HostPort {
                proto: Proto::Tcp,
                addr: None,
                port: 80
            }
        );
        assert_eq!(m.container_ip, Ipv4Addr::new(172, 17, 0, 15));
        assert_eq!(m.container_port, 8080);
        let m = one("127.0.0.1:53=172.17.0.2:53/udp");
        assert_eq!(m.host.addr, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(m.host.proto, Proto::Udp);
        assert_eq!(one("0.0.0.0:80=10.0.0.1:80/tcp").host.addr, None);
    }

    #[test]
    fn parses_ranges() {
        let spec: Spec = "8000-8002=172.17.0.15:9000-9002".parse().unwrap();
        let pairs: Vec<_> = spec
            .mappings
            .iter()
            .map(|m| (m.host.port, m.container_port))
            .collect();
        assert_eq!(pairs, [(8000, 9000), (8001, 9001), (8002, 9002)]);
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in [
            "",
            "80",
            "80=",
            "=1.2.3.4:80",
            "80=1.2.3.4",
            "0=1.2.3.4:80",
            "80=1.2.3.4:0",
            "65536=1.2.3.4:80",
            "80=1.2.3.4:99999",
            "80=1.2.3:80",
            "x:80=1.2.3.4:80",
            "80=1.2.3.4:80/sctp",
            "80-79=1.2.3.4:80-79",
            "80-81=1.2.3.4:80",
            "+80=1.2.3.4:80",
            "80=0.0.0.0:80",
            "80=1.2.3.4:-1",
        ] {
            assert!(bad.parse::<Spec>().is_err(), "accepted {bad:?}");
            assert!(
                bad.parse::<SpecTemplate>().is_err(),
                "accepted {bad:?} as a template"
            );
        }
    }

    fn template(text: &str) -> SpecTemplate {
        text.parse().unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn container_names_parse_unresolved() {
        let t = template("8080=web:80");
        assert_eq!(t.container, Container::Name("web".into()));
        assert_eq!(t.container_name(), Some("web"));
        assert_eq!((t.proto, t.host_addr), (Proto::Tcp, None));
        assert_eq!(
            (t.host_ports.clone(), t.container_ports.clone()),
            (8080..=8080, 80..=80)
        );
        let t = template("127.0.0.1:53=dns_1.internal-x:5353/udp");
        assert_eq!(t.container_name(), Some("dns_1.internal-x"));
        assert_eq!(
            (t.proto, t.host_addr),
            (Proto::Udp, Some(Ipv4Addr::LOCALHOST))
        );
        // A container id (or a prefix of one) is a name too.
        assert_eq!(
            template("80=3f4e5a6b7c8d:80").container_name(),
            Some("3f4e5a6b7c8d")
        );
        assert_eq!(template("80=a:80").container_name(), Some("a"));
    }

    #[test]
    fn a_named_range_resolves_to_one_address() {
        let t = template("8000-8001=web:9000-9001");
        assert_eq!(t.container_name(), Some("web"));
        let hosts: Vec<u16> = t.host_ports().map(|h| h.port).collect();
        assert_eq!(hosts, [8000, 8001]);
        let ip = Ipv4Addr::new(172, 17, 0, 2);
        let spec = t.resolve(ip).unwrap();
        assert_eq!(spec.text, "8000-8001=web:9000-9001");
        let got: Vec<_> = spec
            .mappings
            .iter()
            .map(|m| (m.host.port, m.container_ip, m.container_port))
            .collect();
        assert_eq!(got, [(8000, ip, 9000), (8001, ip, 9001)]);
        // Up to the last port without overflowing.
        let top = template("65534-65535=web:65534-65535").resolve(ip).unwrap();
        assert_eq!(top.mappings.last().unwrap().container_port, 65_535);
    }

    #[test]
    fn ip_templates_match_specs() {
        for text in [
            "80=172.17.0.15:8080",
            "127.0.0.1:53=172.17.0.2:53/udp",
            "8000-8002=10.0.0.1:9000-9002",
        ] {
            let t = template(text);
            assert_eq!(t.container_name(), None, "{text}");
            let Container::Ip(ip) = t.container else {
                panic!("{text}: not an address")
            };
            assert_eq!(
                t.resolve(ip).unwrap(),
                text.parse::<Spec>().unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn plain_specs_refuse_names() {
        let err = "8080=web:80".parse::<Spec>().unwrap_err().to_string();
        assert!(err.contains("'web' is not an IPv4 address"), "{err}");
    }

    #[test]
    fn rejects_bad_container_names() {
        for bad in [
            "80=-web:80",
            "80=_web:80",
            "80=.web:80",
            "80=we b:80",
            "80=web!:80",
            "80=:80",
            "80=w@b:80",
        ] {
            let err = bad.parse::<SpecTemplate>().expect_err(bad).to_string();
            assert!(
                err.contains("neither an IPv4 address nor a container name")
                    || err.contains("IPv4"),
                "{bad}: {err}"
            );
        }
        // Digits and dots alone are a mistyped address, not a name.
        let err = "80=10.0.0:80"
            .parse::<SpecTemplate>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("'10.0.0' is not an IPv4 address"), "{err}");
        let err = "80=1234:80"
            .parse::<SpecTemplate>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an IPv4 address"), "{err}");
        // Ports and range lengths are checked before any lookup.
        assert!("80-81=web:80".parse::<SpecTemplate>().is_err());
        assert!("0=web:80".parse::<SpecTemplate>().is_err());
    }

    #[test]
    fn addresses_no_container_can_have_are_refused() {
        for ip in [
            "127.0.0.1",
            "127.1.2.3",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
        ] {
            let text = format!("8089={ip}:80");
            let err = text.parse::<Spec>().expect_err(&text).to_string();
            assert!(err.contains(&format!("invalid mapping '{text}'")), "{err}");
            assert!(err.contains(ip), "{text}: {err}");
            assert!(text.parse::<SpecTemplate>().is_err(), "accepted {text}");
            // A container name that resolves there is refused too.
            let addr: Ipv4Addr = ip.parse().unwrap();
            assert!(template("8089=web:80").resolve(addr).is_err(), "{ip}");
        }
        let err = "8089=127.0.0.1:80".parse::<Spec>().unwrap_err().to_string();
        assert!(err.contains("loopback"), "{err}");
        // The host side may be a loopback address: that is a host address.
        assert!("127.0.0.1:8089=172.17.0.2:80".parse::<Spec>().is_ok());
    }

    #[test]
    fn resolved_addresses_are_checked() {
        let t = template("80=web:80");
        for ip in [
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
        ] {
            assert!(t.resolve(ip).is_err(), "accepted {ip}");
        }
    }

    #[test]
    fn duplicate_host_ports_are_found_before_resolution() {
        let a = template("80=web:80");
        let b = template("80=db:8080");
        let c = template("80=web:80/udp");
        assert!(check_unique_hosts(a.host_ports().chain(b.host_ports())).is_err());
        assert!(check_unique_hosts(a.host_ports().chain(c.host_ports())).is_ok());
        let range = template("8000-8005=web:8000-8005");
        assert!(check_unique_hosts(
            range
                .host_ports()
                .chain(template("8003=1.1.1.1:1").host_ports())
        )
        .is_err());
    }

    #[test]
    fn overlap_rules() {
        let any = one("80=1.1.1.1:80").host;
        let lo = one("127.0.0.1:80=1.1.1.1:80").host;
        let other = one("10.0.0.1:80=1.1.1.1:80").host;
        let udp = one("80=1.1.1.1:80/udp").host;
        assert!(any.overlaps(&lo) && lo.overlaps(&any));
        assert!(!lo.overlaps(&other));
        assert!(!any.overlaps(&udp));
        assert!(check_unique(&[one("80=1.1.1.1:80"), one("127.0.0.1:80=1.1.1.2:80")]).is_err());
        assert!(check_unique(&[one("80=1.1.1.1:80"), one("80=1.1.1.1:80/udp")]).is_ok());
    }

    #[test]
    fn parses_port_selectors() {
        let s: PortSelector = "8000-8002/udp".parse().unwrap();
        assert_eq!(
            (s.proto, s.addr, s.ports.clone()),
            (Proto::Udp, None, 8000..=8002)
        );
        let s: PortSelector = "127.0.0.1:80".parse().unwrap();
        assert!(s.matches(&one("127.0.0.1:80=1.1.1.1:80").host));
        assert!(!s.matches(&one("80=1.1.1.1:80").host));
        let any: PortSelector = "80".parse().unwrap();
        assert!(any.matches(&one("127.0.0.1:80=1.1.1.1:80").host));
        assert!(!any.matches(&one("80=1.1.1.1:80/udp").host));
        for bad in ["", "0", "x", "80/sctp", "1.2.3:80", "81-80"] {
            assert!(bad.parse::<PortSelector>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn key_round_trips() {
        let h = one("192.168.1.2:8080=1.1.1.1:80/udp").host;
        let k = h.key();
        assert_eq!(k.port_be, 8080u16.to_be());
        assert_eq!(k.addr_be.to_ne_bytes(), [192, 168, 1, 2]);
        assert_eq!(HostPort::from_key(&k), Some(h));
    }
}
