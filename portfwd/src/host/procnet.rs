//! Who holds a port: the listening TCP and bound UDP sockets of the current
//! network namespace, asked of the kernel through NETLINK_SOCK_DIAG with a
//! state filter (so the cost follows the number of listeners, not of every
//! connection and TIME_WAIT socket as /proc/net/tcp would), and the
//! processes that own them.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::spec::{HostPort, Proto};

struct Socket {
    /// The address it is bound to, as a host port's: an IPv4-mapped one as
    /// IPv4. `::` may also take IPv4 (a dual-stack socket): it holds
    /// `0.0.0.0` as well.
    addr: IpAddr,
    port: u16,
    inode: u64,
}

impl Socket {
    fn holds(&self, host: &HostPort) -> bool {
        let dual = self.addr == IpAddr::V6(Ipv6Addr::UNSPECIFIED) && host.addr.is_ipv4();
        self.port == host.port
            && (dual
                || (self.addr.is_ipv4() == host.addr.is_ipv4()
                    && (self.addr.is_unspecified()
                        || host.is_wildcard()
                        || self.addr == host.addr)))
    }
}

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const TCP_LISTEN: u32 = 10;
/// A bound, unconnected UDP socket is in TCP_CLOSE.
const UDP_UNCONNECTED: u32 = 7;
/// Offsets in struct inet_diag_msg: sockid starts at 4 (sport at 4, src at 8);
/// the inode follows sockid (48 bytes) and expires/rqueue/wqueue/uid.
const MSG_SPORT: usize = 4;
const MSG_SRC: usize = 8;
const MSG_INODE: usize = 4 + 48 + 16;

fn sockets(proto: Proto) -> Vec<Socket> {
    let (ipproto, state) = match proto {
        Proto::Tcp => (libc::IPPROTO_TCP as u8, TCP_LISTEN),
        Proto::Udp => (libc::IPPROTO_UDP as u8, UDP_UNCONNECTED),
    };
    let mut out = Vec::new();
    for family in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let _ = dump(family, ipproto, 1 << state, &mut out);
    }
    out
}

fn dump(family: u8, ipproto: u8, states: u32, out: &mut Vec<Socket>) -> std::io::Result<()> {
    // inet_diag_req_v2 (56 bytes): family, protocol, ext, pad, states, id.
    let mut req = [0u8; 56];
    req[0] = family;
    req[1] = ipproto;
    req[4..8].copy_from_slice(&states.to_ne_bytes());
    crate::host::netlink::dump(
        libc::NETLINK_SOCK_DIAG,
        SOCK_DIAG_BY_FAMILY,
        &req,
        |_, msg| {
            if msg.len() < MSG_INODE + 4 {
                return;
            }
            let port = u16::from_be_bytes([msg[MSG_SPORT], msg[MSG_SPORT + 1]]);
            let src = &msg[MSG_SRC..MSG_SRC + 16];
            let addr = if family == libc::AF_INET as u8 {
                IpAddr::V4(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
            } else {
                let v6 = Ipv6Addr::from(<[u8; 16]>::try_from(src).unwrap());
                v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
            };
            let inode = u32::from_ne_bytes(msg[MSG_INODE..MSG_INODE + 4].try_into().unwrap());
            out.push(Socket {
                addr,
                port,
                inode: inode.into(),
            });
        },
    )
}

/// The process holding a socket inode, as "NAME (pid N)".
fn owner(inode: u64) -> Option<String> {
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let comm =
                    std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("{} (pid {pid})", comm.trim()));
            }
        }
    }
    None
}

/// The first of `hosts` that a socket in this namespace holds (same port and
/// protocol, overlapping address of the family), with who holds it.
pub fn first_held<'a>(hosts: impl IntoIterator<Item = &'a HostPort>) -> Option<(HostPort, String)> {
    let hosts: Vec<&HostPort> = hosts.into_iter().collect();
    // Dump only the protocols asked about.
    let dump_if = |p: Proto| {
        if hosts.iter().any(|h| h.proto == p) {
            sockets(p)
        } else {
            Vec::new()
        }
    };
    let (tcp, udp) = (dump_if(Proto::Tcp), dump_if(Proto::Udp));
    for host in hosts {
        let socks = if host.proto == Proto::Tcp { &tcp } else { &udp };
        let held = socks.iter().find(|s| s.holds(host));
        if let Some(s) = held {
            let who = owner(s.inode).unwrap_or_else(|| format!("a socket (inode {})", s.inode));
            return Some((*host, who));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(addr: &str) -> Socket {
        Socket {
            addr: addr.parse().unwrap(),
            port: 80,
            inode: 1,
        }
    }

    fn host(spec: &str) -> HostPort {
        let spec: crate::spec::Spec = spec.parse().unwrap();
        spec.mappings[0].host
    }

    #[test]
    fn sockets_hold_ports_of_their_family() {
        let v4_any = host("80=10.0.0.2:80");
        let v6_any = host("80=[fd00::2]:80");
        let v6_lo = host("[::1]:80=[fd00::2]:80");
        let v4_lo = host("127.0.0.1:80=10.0.0.2:80");
        assert!(sock("0.0.0.0").holds(&v4_any) && sock("0.0.0.0").holds(&v4_lo));
        assert!(!sock("0.0.0.0").holds(&v6_any));
        // A dual-stack wildcard holds both families.
        assert!(sock("::").holds(&v4_any) && sock("::").holds(&v6_lo));
        assert!(sock("::1").holds(&v6_lo) && sock("::1").holds(&v6_any));
        assert!(!sock("::1").holds(&v4_any));
        assert!(!sock("fd00::9").holds(&v6_lo));
        // An IPv4-mapped address is read as IPv4 (see `dump`).
        assert!(sock("127.0.0.1").holds(&v4_lo) && !sock("127.0.0.1").holds(&v6_lo));
    }
}
