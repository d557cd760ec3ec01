//! Which host interface reaches an address: the interface of the main
//! table's most specific unicast route to it, from one RTM_GETROUTE dump of
//! its family. A container on a bridge is reached through the bridge's
//! subnet route; one behind a routed point-to-point veth (the CNI `ptp`
//! plugin, Calico, Cilium) through the host route to its /32 or /128 on the
//! veth's host end.
use std::net::IpAddr;

use crate::error::{Error, Result};

const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
/// Size of struct rtmsg.
const RTMSG: usize = 12;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const RT_TABLE_MAIN: u32 = 254;
const RTN_UNICAST: u8 = 1;

/// One route of the main table: destination prefix, metric and interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    dst: IpAddr,
    prefix: u8,
    metric: u32,
    oif: u32,
}

impl Route {
    fn covers(&self, ip: IpAddr) -> bool {
        crate::host::ifaces::Network {
            addr: self.dst,
            prefix: self.prefix,
            ifindex: self.oif,
        }
        .contains(ip)
    }
}

/// The index of the interface through which the current namespace reaches
/// `ip`, or None if no unicast route of the main table but a default one
/// leads there (a container is never behind the way out).
pub fn interface_to(ip: IpAddr) -> Result<Option<u32>> {
    let routes = main_routes(ip)?;
    Ok(best(&routes, ip).filter(|r| r.prefix > 0).map(|r| r.oif))
}

/// The most specific route covering `ip`, the lowest metric among equals.
fn best(routes: &[Route], ip: IpAddr) -> Option<Route> {
    routes
        .iter()
        .filter(|r| r.oif != 0 && r.covers(ip))
        .min_by_key(|r| (std::cmp::Reverse(r.prefix), r.metric))
        .copied()
}

/// The unicast routes of the main table in `ip`'s family.
fn main_routes(ip: IpAddr) -> Result<Vec<Route>> {
    let family = if ip.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // rtmsg { family, the rest 0 }: every route of the family.
    let mut req = [0u8; RTMSG];
    req[0] = family as u8;
    let mut out = Vec::new();
    crate::host::netlink::dump(libc::NETLINK_ROUTE, RTM_GETROUTE, &req, |kind, msg| {
        if kind == RTM_NEWROUTE {
            out.extend(parse(family, msg));
        }
    })
    .map_err(|e| Error::io("RTM_GETROUTE", e))?;
    Ok(out)
}

/// A route message, if it is a unicast route of the main table.
fn parse(family: i32, msg: &[u8]) -> Option<Route> {
    if msg.len() < RTMSG || i32::from(msg[0]) != family || msg[7] != RTN_UNICAST {
        return None;
    }
    let prefix = msg[1];
    let mut table = u32::from(msg[4]);
    let mut route = Route {
        dst: if family == libc::AF_INET {
            IpAddr::from([0u8; 4])
        } else {
            IpAddr::from([0u8; 16])
        },
        prefix,
        metric: 0,
        oif: 0,
    };
    for (atype, data) in super::netlink::attributes(msg, RTMSG) {
        let word = || data.try_into().ok().map(u32::from_ne_bytes);
        match atype {
            RTA_DST => match data.len() {
                4 => route.dst = IpAddr::from(<[u8; 4]>::try_from(data).ok()?),
                16 => route.dst = IpAddr::from(<[u8; 16]>::try_from(data).ok()?),
                _ => return None,
            },
            RTA_OIF => route.oif = word()?,
            RTA_PRIORITY => route.metric = word()?,
            RTA_TABLE => table = word()?,
            _ => {}
        }
    }
    (table == RT_TABLE_MAIN).then_some(route)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(cidr: &str, metric: u32, oif: u32) -> Route {
        let (dst, prefix) = cidr.split_once('/').unwrap();
        Route {
            dst: dst.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            metric,
            oif,
        }
    }

    #[test]
    fn the_most_specific_route_wins_then_the_lowest_metric() {
        let routes = [
            route("0.0.0.0/0", 0, 2),
            route("10.88.0.0/16", 0, 5),
            route("10.88.0.7/32", 0, 9),
            route("10.89.0.0/16", 100, 6),
            route("10.89.0.0/16", 50, 7),
        ];
        let to = |ip: &str| best(&routes, ip.parse().unwrap()).map(|r| r.oif);
        assert_eq!(
            to("10.88.0.7"),
            Some(9),
            "a ptp host route beats the subnet"
        );
        assert_eq!(to("10.88.0.8"), Some(5));
        assert_eq!(to("10.89.0.8"), Some(7), "equal prefixes: lowest metric");
        assert_eq!(to("192.0.2.1"), Some(2), "the default route");
        assert_eq!(to("fd00::1"), None, "no route of the other family");
    }
}
