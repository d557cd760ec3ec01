//! Interfaces and addresses of the current network namespace. Everything here
//! asks the kernel through sockets or /proc/thread-self, never /sys, because
//! /sys shows the namespace that mounted it, not the one we entered.
use std::{collections::BTreeMap, ffi::CString, net::IpAddr, os::fd::AsRawFd as _};

use crate::{
    error::{Error, Result},
    family::Af,
};

/// The index of `name`, or NoSuchInterface.
pub fn ifindex(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| Error::NoSuchInterface(name.to_string()))?;
    // SAFETY: if_nametoindex reads a valid C string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(Error::NoSuchInterface(name.to_string()))
    } else {
        Ok(idx)
    }
}

/// The name of interface `index`, if it exists.
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// The interface request `request` (an SIOCGIF* ioctl) for `name`, or
/// NoSuchInterface if the kernel does not answer it.
fn ifreq(name: &str, request: libc::Ioctl) -> Result<libc::ifreq> {
    // SAFETY: plain socket(2), closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is a valid initial state.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    // The last byte stays NUL.
    for (dst, src) in req.ifr_name[..libc::IFNAMSIZ - 1]
        .iter_mut()
        .zip(name.bytes())
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: the SIOCGIF* requests fill the union of the ifreq they are
    // given for the named interface.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request, &mut req) } != 0 {
        return Err(Error::NoSuchInterface(name.to_string()));
    }
    Ok(req)
}

/// Fails unless `name` exists and carries Ethernet frames (the datapath reads
/// a 14-byte Ethernet header before the IP header).
pub fn require_ethernet(name: &str) -> Result<u32> {
    let index = ifindex(name)?;
    let req = ifreq(name, libc::SIOCGIFHWADDR)?;
    // SAFETY: SIOCGIFHWADDR initialised the hwaddr member of the union.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    if family != libc::ARPHRD_ETHER {
        return Err(Error::NotEthernet(name.to_string()));
    }
    Ok(index)
}

/// The MTU of interface `name`.
pub fn mtu(name: &str) -> Result<u32> {
    let req = ifreq(name, libc::SIOCGIFMTU)?;
    // SAFETY: SIOCGIFMTU initialised the mtu member of the union.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(mtu.max(0) as u32)
}

/// True if `name` is a loopback interface (IFF_LOOPBACK).
pub fn is_loopback(name: &str) -> Result<bool> {
    let req = ifreq(name, libc::SIOCGIFFLAGS)?;
    // SAFETY: SIOCGIFFLAGS initialised the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    Ok(flags as i32 & libc::IFF_LOOPBACK != 0)
}

/// The Ethernet interfaces that hold a host address (IPv6 link-local ones
/// do not count), loopback and `except` left out, by index: where clients
/// from outside can arrive, as Docker's `-p` on 0.0.0.0 serves them.
/// Containers' veths hold no host address, so they are not among them.
pub fn host_address_interfaces(except: &[u32]) -> Result<Vec<(String, u32)>> {
    let mut indices: Vec<u32> = networks()?.iter().map(|n| n.ifindex).collect();
    indices.sort_unstable();
    indices.dedup();
    let mut out = Vec::new();
    for index in indices.into_iter().filter(|i| !except.contains(i)) {
        let Some(name) = ifname(index) else { continue };
        // Gone since the dump, a loopback, or no Ethernet header (tun,
        // WireGuard): not an interface the datapath can serve.
        if is_loopback(&name).unwrap_or(true) || require_ethernet(&name).is_err() {
            continue;
        }
        out.push((name, index));
    }
    Ok(out)
}

/// Interfaces that carry a default route, in route-table order: IPv4's
/// first, then IPv6's (reject routes and the loopback left out).
pub fn default_route_interfaces() -> Result<Vec<String>> {
    let read = |path: &str| {
        std::fs::read_to_string(path).map_err(|e| Error::io(format!("reading {path}"), e))
    };
    let mut out: Vec<String> = Vec::new();
    let mut push = |name: &str| {
        if !out.iter().any(|o| o == name) {
            out.push(name.to_string());
        }
    };
    for line in read("/proc/thread-self/net/route")?.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            push(f[0]);
        }
    }
    // Absent when the kernel has no IPv6.
    if let Ok(table) = read("/proc/thread-self/net/ipv6_route") {
        for line in table.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            // Destination PrefixLen Source SrcPrefixLen NextHop Metric RefCnt Use Flags Iface
            const RTF_REJECT: u32 = 0x0200;
            let flags = f.get(8).and_then(|v| u32::from_str_radix(v, 16).ok());
            if f.len() > 9
                && f[0].bytes().all(|b| b == b'0')
                && f[1] == "00"
                && flags.is_some_and(|fl| fl & RTF_REJECT == 0)
                && f[9] != "lo"
            {
                push(f[9]);
            }
        }
    }
    Ok(out)
}

/// Every address in the namespace that `pf_local4` / `pf_local6` hold, with
/// the index of its interface (see `networks`).
pub fn local_addresses() -> Result<BTreeMap<IpAddr, u32>> {
    Ok(by_address(&networks()?))
}

/// Address -> interface index, the form `pf_local4` and `pf_local6` hold.
pub fn by_address(networks: &[Network]) -> BTreeMap<IpAddr, u32> {
    networks.iter().map(|n| (n.addr, n.ifindex)).collect()
}

/// An address with its prefix length and interface.
#[derive(Clone, Copy, Debug)]
pub struct Network {
    pub addr: IpAddr,
    pub prefix: u8,
    pub ifindex: u32,
}

impl Network {
    /// True if `ip` is in this network's subnet (and family).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| -> u128 {
            match a {
                IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
                IpAddr::V6(v6) => u128::from(v6),
            }
        };
        if Af::of(ip) != Af::of(self.addr) {
            return false;
        }
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let prefix = u32::from(self.prefix).min(width);
        let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
        bits(self.addr) & mask == bits(ip) & mask
    }
}

/// True for IPv6 link-local addresses (fe80::/10): every interface has one,
/// they need a scope to be reached, and portfwd leaves them alone.
pub fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// Every IPv4 and IPv6 address in the namespace with its prefix and
/// interface, IPv6 link-local ones left out: one RTM_GETADDR dump for both
/// families (getifaddrs would also dump every link with its statistics, and
/// each if_nametoindex costs a socket and an ioctl).
pub fn networks() -> Result<Vec<Network>> {
    const RTM_GETADDR: u16 = 22;
    const RTM_NEWADDR: u16 = 20;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const IFADDRMSG: usize = 8;
    // ifaddrmsg { family = AF_UNSPEC: every family, the rest 0 }.
    let req = [0u8; IFADDRMSG];
    let mut out = Vec::new();
    crate::host::netlink::dump(libc::NETLINK_ROUTE, RTM_GETADDR, &req, |kind, msg| {
        if kind != RTM_NEWADDR || msg.len() < IFADDRMSG {
            return;
        }
        let family = i32::from(msg[0]);
        let prefix = msg[1];
        let ifindex = u32::from_ne_bytes(msg[4..8].try_into().unwrap());
        // IFA_LOCAL is the interface's own address (it differs from
        // IFA_ADDRESS, the peer, on point-to-point links; IPv6 has only
        // IFA_ADDRESS unless there is a peer).
        let (mut local, mut address) = (None, None);
        for (atype, data) in super::netlink::attributes(msg, IFADDRMSG) {
            let ip = match (family, data.len()) {
                (libc::AF_INET, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(data).unwrap())),
                (libc::AF_INET6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(data).unwrap())),
                _ => None,
            };
            match (atype, ip) {
                (IFA_LOCAL, Some(ip)) => local = Some(ip),
                (IFA_ADDRESS, Some(ip)) => address = Some(ip),
                _ => {}
            }
        }
        if let Some(addr) = local.or(address).filter(|ip| !is_link_local(*ip)) {
            out.push(Network {
                addr,
                prefix,
                ifindex,
            });
        }
    })
    .map_err(|e| Error::io("RTM_GETADDR", e))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(cidr: &str) -> Network {
        let (addr, prefix) = cidr.split_once('/').unwrap();
        Network {
            addr: addr.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            ifindex: 1,
        }
    }

    #[test]
    fn subnets_of_both_families() {
        let v4 = net("172.30.0.1/16");
        assert!(v4.contains("172.30.9.9".parse().unwrap()));
        assert!(!v4.contains("172.31.0.1".parse().unwrap()));
        assert!(!v4.contains("::ffff:172.30.0.2".parse().unwrap()));
        let v6 = net("fd00:30::1/64");
        assert!(v6.contains("fd00:30::15".parse().unwrap()));
        assert!(!v6.contains("fd00:31::15".parse().unwrap()));
        assert!(!v6.contains("172.30.0.2".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("1.2.3.4".parse().unwrap()));
        assert!(net("::/0").contains("2001:db8::1".parse().unwrap()));
        assert!(net("fd00::1/128").contains("fd00::1".parse().unwrap()));
    }

    #[test]
    fn link_local_is_recognised() {
        assert!(is_link_local("fe80::1".parse().unwrap()));
        assert!(is_link_local("febf::1".parse().unwrap()));
        assert!(!is_link_local("fec0::1".parse().unwrap()));
        assert!(!is_link_local("::1".parse().unwrap()));
        assert!(!is_link_local("169.254.0.1".parse().unwrap()));
    }
}
