//! Interfaces and addresses of the current network namespace. Everything here
//! asks the kernel through sockets or /proc/thread-self, never /sys, because
//! /sys shows the namespace that mounted it, not the one we entered.
use std::{collections::BTreeMap, ffi::CString, net::Ipv4Addr, os::fd::AsRawFd as _};

use crate::error::{Error, Result};

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

/// Fails unless `name` exists and carries Ethernet frames (the datapath reads
/// a 14-byte Ethernet header before the IP header).
pub fn require_ethernet(name: &str) -> Result<u32> {
    let index = ifindex(name)?;
    // SAFETY: plain socket(2), closed by OwnedFd.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zero is a valid initial state.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR fills req.ifr_ifru.ifru_hwaddr for the named interface.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } != 0 {
        return Err(Error::NoSuchInterface(name.to_string()));
    }
    // SAFETY: the ioctl above initialised the hwaddr member of the union.
    let family = unsafe { req.ifr_ifru.ifru_hwaddr.sa_family };
    if family != libc::ARPHRD_ETHER {
        return Err(Error::NotEthernet(name.to_string()));
    }
    Ok(index)
}

/// Interfaces that carry an IPv4 default route, in route-table order.
pub fn default_route_interfaces() -> Result<Vec<String>> {
    let table = std::fs::read_to_string("/proc/thread-self/net/route")
        .map_err(|e| Error::io("reading /proc/thread-self/net/route", e))?;
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        // Iface Destination Gateway Flags RefCnt Use Metric Mask ...
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" && !out.iter().any(|o| o == f[0])
        {
            out.push(f[0].to_string());
        }
    }
    Ok(out)
}

/// Every IPv4 address in the namespace, with the index of its interface.
pub fn local_ipv4_addresses() -> Result<BTreeMap<Ipv4Addr, u32>> {
    Ok(ipv4_networks()?
        .into_iter()
        .map(|n| (n.addr, n.ifindex))
        .collect())
}

/// An IPv4 address with its prefix and interface.
#[derive(Clone, Copy, Debug)]
pub struct Network {
    pub addr: Ipv4Addr,
    pub netmask: Ipv4Addr,
    pub ifindex: u32,
}

impl Network {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let m = u32::from(self.netmask);
        u32::from(self.addr) & m == u32::from(ip) & m
    }
}

/// Every IPv4 address in the namespace with its netmask and interface.
pub fn ipv4_networks() -> Result<Vec<Network>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs allocates a list we free below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(Error::io("getifaddrs", std::io::Error::last_os_error()));
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is a node of the list getifaddrs returned.
        let ifa = unsafe { &*cur };
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family says
        // its real type; AF_INET means sockaddr_in.
        if !ifa.ifa_addr.is_null() && unsafe { (*ifa.ifa_addr).sa_family } == libc::AF_INET as u16 {
            // SAFETY: family checked above.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            let addr = Ipv4Addr::from(sin.sin_addr.s_addr.to_ne_bytes());
            let netmask = if ifa.ifa_netmask.is_null() {
                Ipv4Addr::BROADCAST
            } else {
                // SAFETY: for an AF_INET entry the netmask is a sockaddr_in.
                let m = unsafe { &*(ifa.ifa_netmask as *const libc::sockaddr_in) };
                Ipv4Addr::from(m.sin_addr.s_addr.to_ne_bytes())
            };
            // SAFETY: ifa_name is a valid C string for the life of the list.
            let ifindex = unsafe { libc::if_nametoindex(ifa.ifa_name) };
            out.push(Network {
                addr,
                netmask,
                ifindex,
            });
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}
