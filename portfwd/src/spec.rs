//! Mapping specifications: `[HOST_IP:]HOST_PORT[-END]=CONTAINER_IP:CONTAINER_PORT[-END][/tcp|/udp]`,
//! IPv6 addresses in brackets as Docker writes them (`[::1]:8080=[fd00::2]:80`).
//! Both sides of a SPEC are one family: there is no NAT between families.
use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use portfwd_common::{Backend, MapKey, PROTO_TCP, PROTO_UDP};

use crate::{
    error::{Error, Result},
    family::{endpoint, Af, Family},
};

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

/// The host side of a mapping: address (the family's unspecified address =
/// every local address of that family), port, protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPort {
    pub proto: Proto,
    pub addr: IpAddr,
    pub port: u16,
}

impl HostPort {
    pub fn af(&self) -> Af {
        Af::of(self.addr)
    }

    /// True if the mapping is on every local address of its family.
    pub fn is_wildcard(&self) -> bool {
        self.addr.is_unspecified()
    }

    /// The same port on every address of its family.
    pub fn wildcard(&self) -> Self {
        Self {
            addr: self.af().unspecified(),
            ..*self
        }
    }

    /// The key in family `A`'s table, or None if the port is the other
    /// family's.
    pub fn key<A: Family>(&self) -> Option<MapKey<A>> {
        Some(MapKey::new(
            A::from_ip(self.addr)?,
            self.port.to_be(),
            self.proto.number(),
        ))
    }

    pub fn from_key<A: Family>(key: &MapKey<A>) -> Option<Self> {
        Some(Self {
            proto: Proto::from_number(key.proto)?,
            addr: key.addr_be.to_ip(),
            port: u16::from_be(key.port_be),
        })
    }

    /// Two host ports collide if a packet could match both: same family,
    /// protocol and port, and the same address or either one on every
    /// address.
    pub fn overlaps(&self, other: &Self) -> bool {
        self.proto == other.proto
            && self.port == other.port
            && self.af() == other.af()
            && (self.is_wildcard() || other.is_wildcard() || self.addr == other.addr)
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", endpoint(self.addr, self.port), self.proto)
    }
}

/// One published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub host: HostPort,
    /// Of the host side's family.
    pub container_ip: IpAddr,
    pub container_port: u16,
}

impl Mapping {
    /// The table's value for this mapping on `bridge_ifindex`, counted in
    /// `stats_slot`, in family `A`'s table (None: the other family's).
    pub fn backend<A: Family>(&self, bridge_ifindex: u32, stats_slot: u32) -> Option<Backend<A>> {
        Some(Backend {
            addr_be: A::from_ip(self.container_ip)?,
            port_be: self.container_port.to_be(),
            flags: 0,
            bridge_ifindex,
            stats_slot,
        })
    }
}

impl fmt::Display for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {}",
            self.host,
            endpoint(self.container_ip, self.container_port)
        )
    }
}

/// A parsed SPEC: one mapping, or several for a port range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub text: String,
    pub mappings: Vec<Mapping>,
}

/// Parses a SPEC whose container side is an address; a container name is
/// refused here (parse a `SpecTemplate` to accept one).
impl FromStr for Spec {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let template: SpecTemplate = text.parse()?;
        match &template.container {
            Container::Ip(ip) => template.resolve(&[*ip]),
            Container::Name(name) => Err(bad_spec(text, &format!("'{name}' is not an IP address"))),
        }
    }
}

/// The container side of a SPEC as written: an address, or the name (or id)
/// of a Docker container whose addresses are looked up later.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Container {
    Ip(IpAddr),
    Name(String),
}

/// A SPEC parsed and validated in everything but the container's address,
/// which may still be a container name. Parsing touches nothing outside the
/// string; `resolve` turns it into a `Spec` once the addresses are known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecTemplate {
    pub text: String,
    pub proto: Proto,
    /// As written; None: every local address of the container's family
    /// (of each of its families, for a container name).
    pub host_addr: Option<IpAddr>,
    pub host_ports: std::ops::RangeInclusive<u16>,
    pub container: Container,
    /// As long as `host_ports`.
    pub container_ports: std::ops::RangeInclusive<u16>,
}

impl SpecTemplate {
    /// The container address, if the SPEC gives one.
    pub fn container_ip(&self) -> Option<IpAddr> {
        match self.container {
            Container::Ip(ip) => Some(ip),
            Container::Name(_) => None,
        }
    }

    /// The container name to look up, if the SPEC names one.
    pub fn container_name(&self) -> Option<&str> {
        match &self.container {
            Container::Ip(_) => None,
            Container::Name(name) => Some(name),
        }
    }

    /// The family the SPEC is bound to before any lookup: its host
    /// address's or its container address's. None for a container name
    /// without a host address, which publishes each family the container
    /// has.
    pub fn af(&self) -> Option<Af> {
        match (self.host_addr, &self.container) {
            (Some(ip), _) | (None, &Container::Ip(ip)) => Some(Af::of(ip)),
            (None, Container::Name(_)) => None,
        }
    }

    /// The host side of every mapping the SPEC makes in family `af`.
    pub fn host_ports_in(&self, af: Af) -> impl Iterator<Item = HostPort> + '_ {
        let addr = self.host_addr.unwrap_or(af.unspecified());
        self.host_ports.clone().map(move |port| HostPort {
            proto: self.proto,
            addr,
            port,
        })
    }

    /// The host side of every mapping the SPEC makes, where the family is
    /// known before the container's addresses are (see `af`).
    pub fn host_ports(&self) -> impl Iterator<Item = HostPort> + '_ {
        self.af().into_iter().flat_map(|af| self.host_ports_in(af))
    }

    /// The SPEC's mappings to the container's addresses `container_ips`
    /// (the SPEC's own address, or what its container name resolved to: at
    /// most one per family). Addresses of a family other than the host
    /// address's are passed over; none left is an error.
    pub fn resolve(&self, container_ips: &[IpAddr]) -> Result<Spec> {
        let wanted = self.af();
        let ips: Vec<IpAddr> = container_ips
            .iter()
            .copied()
            .filter(|ip| wanted.is_none_or(|af| Af::of(*ip) == af))
            .collect();
        if ips.is_empty() {
            let af = wanted.map_or("IP", Af::name);
            let what = self.container_name().unwrap_or("the container");
            return Err(bad_spec(
                &self.text,
                &format!("{what} has no {af} address (there is no NAT between IPv4 and IPv6)"),
            ));
        }
        let mut mappings = Vec::new();
        for ip in ips {
            check_container_ip(&self.text, ip)?;
            mappings.extend(
                self.host_ports_in(Af::of(ip))
                    .zip(self.container_ports.clone())
                    .map(|(host, container_port)| Mapping {
                        host,
                        container_ip: ip,
                        container_port,
                    }),
            );
        }
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
        let (host_ip, host_ports) = match split_addr(host).map_err(|why| bad(&why))? {
            (Some(ip), ports) => (Some(parse_ip(ip).map_err(|why| bad(&why))?), ports),
            (None, ports) => (None, ports),
        };
        let (Some(target), container_ports) = split_addr(container).map_err(|why| bad(&why))?
        else {
            return Err(bad("the container side needs CONTAINER_IP:CONTAINER_PORT"));
        };
        let container = parse_container(target).map_err(|why| bad(&why))?;
        if let Container::Ip(ip) = container {
            check_container_ip(text, ip)?;
            if let Some(host) = host_ip.filter(|h| Af::of(*h) != Af::of(ip)) {
                return Err(bad(&format!(
                    "{host} is {} and {ip} is {}: both sides must be one family (there is no \
                     NAT between IPv4 and IPv6)",
                    Af::of(host).name(),
                    Af::of(ip).name()
                )));
            }
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

/// Splits `ADDR:PORTS` (`[IPV6]:PORTS` for IPv6) into the address as
/// written (without brackets; `[` kept as the first character so that
/// `parse_ip` knows it was bracketed) and the ports; no colon: ports alone.
fn split_addr(text: &str) -> std::result::Result<(Option<&str>, &str), String> {
    if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("'{text}' has no closing ']'"))?;
        let ports = after
            .strip_prefix(':')
            .ok_or_else(|| format!("'[{inner}]' must be followed by :PORT"))?;
        return Ok((Some(&text[..inner.len() + 1]), ports));
    }
    match text.rsplit_once(':') {
        Some((addr, _)) if addr.contains(':') => Err(format!(
            "'{addr}' looks like an IPv6 address: write it in brackets, [{addr}]:PORT"
        )),
        Some((addr, ports)) => Ok((Some(addr), ports)),
        None => Ok((None, text)),
    }
}

/// An address from `split_addr`: `[IPV6` (bracketed) or IPv4.
fn parse_ip(text: &str) -> std::result::Result<IpAddr, String> {
    match text.strip_prefix('[') {
        Some(v6) => v6
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| format!("'{v6}' is not an IPv6 address")),
        None => text
            .parse::<std::net::Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| format!("'{text}' is not an IP address")),
    }
}

/// An address, or else a Docker container name or id: an ASCII letter or
/// digit, then letters, digits, `_`, `.` or `-` (Docker's own rule, with one
/// character allowed for an id prefix). Digits and dots alone are a mistyped
/// address, not a name.
fn parse_container(text: &str) -> std::result::Result<Container, String> {
    if text.starts_with('[') {
        return parse_ip(text).map(Container::Ip);
    }
    if let Ok(ip) = parse_ip(text) {
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
        Err(format!("'{text}' is not an IP address"))
    } else if valid_name {
        Ok(Container::Name(text.to_string()))
    } else {
        Err(format!(
            "'{text}' is neither an IP address nor a container name"
        ))
    }
}

/// Refuses container addresses no container can be reached at: loopback
/// (the host's own, and the datapath redirects to the bridge, where no such
/// address answers), unspecified, broadcast, multicast, and IPv6 link-local
/// (which needs a scope portfwd does not keep) and IPv4-mapped (an IPv4
/// container is written as IPv4).
fn check_container_ip(text: &str, ip: IpAddr) -> Result<()> {
    if ip.is_loopback() {
        return Err(bad_spec(
            text,
            &format!("{ip} is a loopback address, which no container can be reached at"),
        ));
    }
    let unusable = match ip {
        IpAddr::V4(v4) => v4.is_broadcast(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80 || v6.to_ipv4_mapped().is_some(),
    };
    if ip.is_unspecified() || ip.is_multicast() || unusable {
        return Err(bad_spec(
            text,
            &format!("{ip} cannot be a container address"),
        ));
    }
    Ok(())
}

/// A `del` argument: `[HOST_IP:]HOST_PORT[-END][/tcp|/udp]`. Without HOST_IP
/// it names the port on whatever address of either family it is published;
/// `0.0.0.0:PORT` and `[::]:PORT` on whatever address of that family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortSelector {
    pub proto: Proto,
    /// An address or a family's unspecified address, as written.
    pub addr: Option<IpAddr>,
    pub ports: std::ops::RangeInclusive<u16>,
}

impl PortSelector {
    pub fn matches(&self, host: &HostPort) -> bool {
        host.proto == self.proto
            && self.ports.contains(&host.port)
            && self
                .addr
                .is_none_or(|a| a == host.addr || (a.is_unspecified() && Af::of(a) == host.af()))
    }

    /// The one host port the selector names at `port`, if it gives an
    /// address other than a family's unspecified one.
    pub fn exact(&self, port: u16) -> Option<HostPort> {
        let addr = self.addr.filter(|a| !a.is_unspecified())?;
        Some(HostPort {
            proto: self.proto,
            addr,
            port,
        })
    }
}

impl fmt::Display for PortSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let port = if self.ports.start() == self.ports.end() {
            self.ports.start().to_string()
        } else {
            format!("{}-{}", self.ports.start(), self.ports.end())
        };
        match self.addr {
            Some(IpAddr::V6(a)) => write!(f, "[{a}]:{port}/{}", self.proto),
            Some(a) => write!(f, "{a}:{port}/{}", self.proto),
            None => write!(f, "{port}/{}", self.proto),
        }
    }
}

impl FromStr for PortSelector {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |why: &str| bad_spec(text, why);
        let (body, proto) = split_proto(text)?;
        let (addr, ports) = match split_addr(body).map_err(|why| bad(&why))? {
            (Some(ip), ports) => (Some(parse_ip(ip).map_err(|why| bad(&why))?), ports),
            (None, ports) => (None, ports),
        };
        let (start, end) = port_range(ports).map_err(|why| bad(&why))?;
        Ok(Self {
            proto,
            addr,
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
/// family, protocol and port, and the same address or either on every
/// address). Linear in the number of mappings: a range can hold tens of
/// thousands.
pub fn check_unique(mappings: &[Mapping]) -> Result<()> {
    check_unique_hosts(mappings.iter().map(|m| m.host))
}

/// `check_unique` on host ports alone (before container names resolve).
pub fn check_unique_hosts(hosts: impl IntoIterator<Item = HostPort>) -> Result<()> {
    use std::collections::{HashMap, HashSet};
    // Per (family, protocol, port): whether the wildcard is taken, and
    // which addresses.
    let mut seen: HashMap<(Af, Proto, u16), (bool, HashSet<IpAddr>)> = HashMap::new();
    for host in hosts {
        let (wildcard, addrs) = seen.entry((host.af(), host.proto, host.port)).or_default();
        let clash = if host.is_wildcard() {
            *wildcard || !addrs.is_empty()
        } else {
            *wildcard || !addrs.insert(host.addr)
        };
        if clash {
            return Err(Error::DuplicatePort(host.to_string()));
        }
        if host.is_wildcard() {
            *wildcard = true;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use portfwd_common::{V4, V6};

    use super::*;

    fn any4() -> IpAddr {
        Af::V4.unspecified()
    }

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
                addr: any4(),
                port: 80
            }
        );
        assert!(m.host.is_wildcard());
        assert_eq!(m.container_ip, Ipv4Addr::new(172, 17, 0, 15));
        assert_eq!(m.container_port, 8080);
        let m = one("127.0.0.1:53=172.17.0.2:53/udp");
        assert_eq!(m.host.addr, Ipv4Addr::LOCALHOST);
        assert_eq!(m.host.proto, Proto::Udp);
        assert_eq!(one("0.0.0.0:80=10.0.0.1:80/tcp").host.addr, any4());
    }

    #[test]
    fn parses_ipv6_in_brackets() {
        let m = one("8080=[fd00:17::15]:80");
        assert_eq!(m.host.addr, Af::V6.unspecified());
        assert!(m.host.is_wildcard());
        assert_eq!(m.container_ip, "fd00:17::15".parse::<IpAddr>().unwrap());
        assert_eq!(m.to_string(), "[::]:8080/tcp -> [fd00:17::15]:80");
        let m = one("[2001:db8::1]:8080=[fd00:17::15]:80/udp");
        assert_eq!(m.host.addr, "2001:db8::1".parse::<IpAddr>().unwrap());
        assert_eq!(m.host.proto, Proto::Udp);
        assert_eq!(m.host.to_string(), "[2001:db8::1]:8080/udp");
        assert!(one("[::]:80=[fd00::2]:80").host.is_wildcard());
        assert_eq!(one("[::1]:80=[fd00::2]:80").host.addr, Ipv6Addr::LOCALHOST);
        let spec: Spec = "[::]:8000-8001=[fd00::2]:9000-9001".parse().unwrap();
        assert_eq!(spec.mappings.len(), 2);
    }

    #[test]
    fn families_do_not_mix() {
        for bad in [
            "[2001:db8::1]:8080=172.17.0.15:80",
            "[::]:8080=172.17.0.15:80",
            "10.0.0.1:8080=[fd00::2]:80",
            "0.0.0.0:8080=[fd00::2]:80",
        ] {
            let err = bad.parse::<SpecTemplate>().expect_err(bad).to_string();
            assert!(err.contains("no NAT between IPv4 and IPv6"), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        // A host address names the family a container name publishes.
        let t = template("[::]:8080=web:80");
        assert_eq!(t.af(), Some(Af::V6));
        let v4: IpAddr = "172.17.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        let spec = t.resolve(&[v4, v6]).unwrap();
        assert_eq!(spec.mappings.len(), 1);
        assert_eq!(spec.mappings[0].container_ip, v6);
        let err = template("0.0.0.0:8080=web:80")
            .resolve(&[v6])
            .unwrap_err()
            .to_string();
        assert!(err.contains("web has no IPv4 address"), "{err}");
    }

    #[test]
    fn a_name_publishes_each_family_it_has() {
        let t = template("8080=web:80");
        assert_eq!(t.af(), None);
        assert_eq!(t.host_ports().count(), 0, "no family known before lookup");
        let v4: IpAddr = "172.17.0.2".parse().unwrap();
        let v6: IpAddr = "fd00::2".parse().unwrap();
        let spec = t.resolve(&[v4, v6]).unwrap();
        let got: Vec<String> = spec.mappings.iter().map(|m| m.to_string()).collect();
        assert_eq!(
            got,
            [
                "0.0.0.0:8080/tcp -> 172.17.0.2:80",
                "[::]:8080/tcp -> [fd00::2]:80"
            ]
        );
        assert!(
            check_unique(&spec.mappings).is_ok(),
            "one port once per family"
        );
        assert_eq!(t.resolve(&[v6]).unwrap().mappings.len(), 1);
        assert!(t.resolve(&[]).is_err());
    }

    #[test]
    fn rejects_malformed_ipv6() {
        for (bad, why) in [
            ("8080=fd00::2:80", "in brackets"),
            ("::1:8080=[fd00::2]:80", "in brackets"),
            ("8080=[fd00::2:80", "closing"),
            ("8080=[fd00::2]80", "followed by :PORT"),
            ("8080=[fd00::zz]:80", "not an IPv6 address"),
            ("8080=[172.17.0.2]:80", "not an IPv6 address"),
            ("[10.0.0.1]:8080=172.17.0.2:80", "not an IPv6 address"),
            ("8080=[::1]:80", "loopback"),
            ("8080=[::]:80", "cannot be a container address"),
            ("8080=[fe80::1]:80", "cannot be a container address"),
            ("8080=[ff02::1]:80", "cannot be a container address"),
            (
                "8080=[::ffff:172.17.0.2]:80",
                "cannot be a container address",
            ),
        ] {
            let err = bad.parse::<SpecTemplate>().expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
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
            "[::1]:80=1.2.3.4:80",
            "80=[fd00::1]",
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
            (Proto::Udp, Some(IpAddr::V4(Ipv4Addr::LOCALHOST)))
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
        let hosts: Vec<u16> = t.host_ports_in(Af::V4).map(|h| h.port).collect();
        assert_eq!(hosts, [8000, 8001]);
        let ip = IpAddr::V4(Ipv4Addr::new(172, 17, 0, 2));
        let spec = t.resolve(&[ip]).unwrap();
        assert_eq!(spec.text, "8000-8001=web:9000-9001");
        let got: Vec<_> = spec
            .mappings
            .iter()
            .map(|m| (m.host.port, m.container_ip, m.container_port))
            .collect();
        assert_eq!(got, [(8000, ip, 9000), (8001, ip, 9001)]);
        // Up to the last port without overflowing.
        let top = template("65534-65535=web:65534-65535")
            .resolve(&[ip])
            .unwrap();
        assert_eq!(top.mappings.last().unwrap().container_port, 65_535);
    }

    #[test]
    fn ip_templates_match_specs() {
        for text in [
            "80=172.17.0.15:8080",
            "127.0.0.1:53=172.17.0.2:53/udp",
            "8000-8002=10.0.0.1:9000-9002",
            "[2001:db8::1]:8080=[fd00:17::15]:80/udp",
        ] {
            let t = template(text);
            assert_eq!(t.container_name(), None, "{text}");
            let Container::Ip(ip) = t.container else {
                panic!("{text}: not an address")
            };
            assert_eq!(
                t.resolve(&[ip]).unwrap(),
                text.parse::<Spec>().unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn plain_specs_refuse_names() {
        let err = "8080=web:80".parse::<Spec>().unwrap_err().to_string();
        assert!(err.contains("'web' is not an IP address"), "{err}");
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
                err.contains("neither an IP address nor a container name")
                    || err.contains("IP address"),
                "{bad}: {err}"
            );
        }
        // Digits and dots alone are a mistyped address, not a name.
        let err = "80=10.0.0:80"
            .parse::<SpecTemplate>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("'10.0.0' is not an IP address"), "{err}");
        let err = "80=1234:80"
            .parse::<SpecTemplate>()
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not an IP address"), "{err}");
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
            let addr: IpAddr = ip.parse().unwrap();
            assert!(template("8089=web:80").resolve(&[addr]).is_err(), "{ip}");
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
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V4(Ipv4Addr::new(224, 0, 0, 1)),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            "fe80::2".parse().unwrap(),
        ] {
            assert!(t.resolve(&[ip]).is_err(), "accepted {ip}");
        }
    }

    #[test]
    fn duplicate_host_ports_are_found_before_resolution() {
        // Where the family is known before any lookup.
        let a = template("0.0.0.0:80=web:80");
        let b = template("80=10.0.0.2:8080");
        let c = template("0.0.0.0:80=web:80/udp");
        let d = template("80=[fd00::2]:80");
        assert!(check_unique_hosts(a.host_ports().chain(b.host_ports())).is_err());
        assert!(check_unique_hosts(a.host_ports().chain(c.host_ports())).is_ok());
        assert!(check_unique_hosts(a.host_ports().chain(d.host_ports())).is_ok());
        let range = template("10.0.0.1:8000-8005=web:8000-8005");
        assert!(check_unique_hosts(
            range
                .host_ports()
                .chain(template("8003=1.1.1.1:1").host_ports())
        )
        .is_err());
        // A bare name's families are known once it resolves: its mappings
        // are checked then (`check_unique`).
        let web = template("80=web:80");
        assert_eq!(web.host_ports().count(), 0);
        let v4: IpAddr = "172.17.0.2".parse().unwrap();
        let both = [
            web.resolve(&[v4]).unwrap().mappings,
            b.resolve(&[b.container_ip().unwrap()]).unwrap().mappings,
        ]
        .concat();
        assert!(check_unique(&both).is_err());
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
        // One port once per family.
        let v6 = one("80=[fd00::2]:80").host;
        assert!(!any.overlaps(&v6) && !v6.overlaps(&lo));
        assert!(check_unique(&[one("80=1.1.1.1:80"), one("80=[fd00::2]:80")]).is_ok());
        assert!(check_unique(&[one("80=[fd00::2]:80"), one("[::1]:80=[fd00::3]:80")]).is_err());
    }

    #[test]
    fn parses_port_selectors() {
        let s: PortSelector = "8000-8002/udp".parse().unwrap();
        assert_eq!(
            (s.proto, s.addr, s.ports.clone()),
            (Proto::Udp, None, 8000..=8002)
        );
        let v4 = one("80=1.1.1.1:80").host;
        let v6 = one("80=[fd00::2]:80").host;
        let v6_lo = one("[::1]:80=[fd00::2]:80").host;
        let both: PortSelector = "80".parse().unwrap();
        assert!(both.matches(&v4) && both.matches(&v6) && both.matches(&v6_lo));
        // A family's unspecified address: every address of that family.
        let only6: PortSelector = "[::]:80".parse().unwrap();
        assert!(!only6.matches(&v4) && only6.matches(&v6) && only6.matches(&v6_lo));
        let only4: PortSelector = "0.0.0.0:80".parse().unwrap();
        assert!(only4.matches(&v4) && !only4.matches(&v6));
        let exact6: PortSelector = "[::1]:80".parse().unwrap();
        assert!(exact6.matches(&v6_lo) && !exact6.matches(&v6));
        assert_eq!(exact6.to_string(), "[::1]:80/tcp");
        assert_eq!(exact6.exact(80), Some(v6_lo));
        assert_eq!(only6.exact(80), None);
        let s: PortSelector = "127.0.0.1:80".parse().unwrap();
        assert!(s.matches(&one("127.0.0.1:80=1.1.1.1:80").host));
        assert!(!s.matches(&one("80=1.1.1.1:80").host));
        let any: PortSelector = "80".parse().unwrap();
        assert!(any.matches(&one("127.0.0.1:80=1.1.1.1:80").host));
        assert!(!any.matches(&one("80=1.1.1.1:80/udp").host));
        for bad in [
            "", "0", "x", "80/sctp", "1.2.3:80", "81-80", "::1:80", "[::1]80",
        ] {
            assert!(bad.parse::<PortSelector>().is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn key_round_trips() {
        let h = one("192.168.1.2:8080=1.1.1.1:80/udp").host;
        let k = h.key::<V4>().unwrap();
        assert_eq!(k.port_be, 8080u16.to_be());
        assert_eq!(k.addr_be.to_ne_bytes(), [192, 168, 1, 2]);
        assert_eq!(HostPort::from_key(&k), Some(h));
        assert!(h.key::<V6>().is_none());
        let h6 = one("[2001:db8::1]:8080=[fd00::2]:80").host;
        let k6 = h6.key::<V6>().unwrap();
        assert_eq!(HostPort::from_key(&k6), Some(h6));
        assert!(h6.key::<V4>().is_none());
        let wild = one("8080=[fd00::2]:80").host.key::<V6>().unwrap();
        assert_eq!(wild.addr_be, [0; 4]);
    }
}
