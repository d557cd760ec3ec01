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
    Ok(by_address(&ipv4_networks()?))
}

/// Address -> interface index, the form `pf_local` holds.
pub fn by_address(networks: &[Network]) -> BTreeMap<Ipv4Addr, u32> {
    networks.iter().map(|n| (n.addr, n.ifindex)).collect()
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

/// Every IPv4 address in the namespace with its netmask and interface: one
/// RTM_GETADDR dump for AF_INET (getifaddrs would also dump every link with
/// its statistics, and each if_nametoindex costs a socket and an ioctl).
pub fn ipv4_networks() -> Result<Vec<Network>> {
    const RTM_GETADDR: u16 = 22;
    const RTM_NEWADDR: u16 = 20;
    const IFA_ADDRESS: u16 = 1;
    const IFA_LOCAL: u16 = 2;
    const IFADDRMSG: usize = 8;
    // ifaddrmsg { family = AF_INET, the rest 0 }.
    let mut req = [0u8; IFADDRMSG];
    req[0] = libc::AF_INET as u8;
    let mut out = Vec::new();
    crate::host::netlink::dump(libc::NETLINK_ROUTE, RTM_GETADDR, &req, |kind, msg| {
        if kind != RTM_NEWADDR || msg.len() < IFADDRMSG {
            return;
        }
        let prefix = u32::from(msg[1]).min(32);
        let ifindex = u32::from_ne_bytes(msg[4..8].try_into().unwrap());
        // IFA_LOCAL is the interface's own address (it differs from
        // IFA_ADDRESS, the peer, on point-to-point links).
        let (mut local, mut address) = (None, None);
        let mut a = IFADDRMSG;
        while a + 4 <= msg.len() {
            let alen = u16::from_ne_bytes(msg[a..a + 2].try_into().unwrap()) as usize;
            let atype = u16::from_ne_bytes(msg[a + 2..a + 4].try_into().unwrap());
            if alen < 4 || a + alen > msg.len() {
                break;
            }
            if alen == 8 {
                let ip = Ipv4Addr::new(msg[a + 4], msg[a + 5], msg[a + 6], msg[a + 7]);
                match atype {
                    IFA_LOCAL => local = Some(ip),
                    IFA_ADDRESS => address = Some(ip),
                    _ => {}
                }
            }
            a += (alen + 3) & !3;
        }
        if let Some(addr) = local.or(address) {
            let mask = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - prefix)
            };
            out.push(Network {
                addr,
                netmask: Ipv4Addr::from(mask),
                ifindex,
            });
        }
    })
    .map_err(|e| Error::io("RTM_GETADDR", e))?;
    Ok(out)
}
