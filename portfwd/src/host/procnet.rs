//! Who holds a port: the listening TCP and bound UDP sockets of the current
//! network namespace, asked of the kernel through NETLINK_SOCK_DIAG with a
//! state filter (so the cost follows the number of listeners, not of every
//! connection and TIME_WAIT socket as /proc/net/tcp would), and the
//! processes that own them.
use std::net::Ipv4Addr;

use crate::spec::{HostPort, Proto};

struct Socket {
    addr: Option<Ipv4Addr>,
    port: u16,
    inode: u64,
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
                Some(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
            } else if src.iter().all(|b| *b == 0) {
                // "::" also takes IPv4 on a dual-stack socket.
                Some(Ipv4Addr::UNSPECIFIED)
            } else if src[..10].iter().all(|b| *b == 0) && src[10] == 0xff && src[11] == 0xff {
                Some(Ipv4Addr::new(src[12], src[13], src[14], src[15]))
            } else {
                None
            };
            let inode = u32::from_ne_bytes(msg[MSG_INODE..MSG_INODE + 4].try_into().unwrap());
            if let Some(addr) = addr {
                out.push(Socket {
                    addr: (!addr.is_unspecified()).then_some(addr),
                    port,
                    inode: inode.into(),
                });
            }
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
/// protocol, overlapping address), with who holds it.
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
        let held = socks.iter().find(|s| {
            s.port == host.port && (s.addr.is_none() || host.addr.is_none() || s.addr == host.addr)
        });
        if let Some(s) = held {
            let who = owner(s.inode).unwrap_or_else(|| format!("a socket (inode {})", s.inode));
            return Some((*host, who));
        }
    }
    None
}
