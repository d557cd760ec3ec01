//! Who holds a port: the listening TCP and bound UDP sockets of the current
//! network namespace (/proc/thread-self/net) and the processes that own them.
use std::net::Ipv4Addr;

use crate::spec::{HostPort, Proto};

struct Socket {
    addr: Option<Ipv4Addr>,
    port: u16,
    inode: u64,
}

fn sockets(proto: Proto) -> Vec<Socket> {
    let (files, listen_state): (&[&str], &str) = match proto {
        // 0A = TCP_LISTEN; 07 = TCP_CLOSE, the state of a bound UDP socket.
        Proto::Tcp => (&["tcp", "tcp6"], "0A"),
        Proto::Udp => (&["udp", "udp6"], "07"),
    };
    let mut out = Vec::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 || f[3] != listen_state {
                continue;
            }
            let Some((addr_hex, port_hex)) = f[1].split_once(':') else { continue };
            let Ok(port) = u16::from_str_radix(port_hex, 16) else { continue };
            let addr = match addr_hex.len() {
                8 => u32::from_str_radix(addr_hex, 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes())),
                // IPv6 sockets: "::" (dual stack, also takes IPv4) or a v4-mapped address.
                32 if addr_hex.chars().all(|c| c == '0') => Some(Ipv4Addr::UNSPECIFIED),
                32 if addr_hex.starts_with("0000000000000000FFFF0000") => {
                    u32::from_str_radix(&addr_hex[24..], 16).ok().map(|v| Ipv4Addr::from(v.to_ne_bytes()))
                }
                _ => None,
            };
            let Ok(inode) = f[9].parse() else { continue };
            out.push(Socket {
                addr: addr.filter(|a| !a.is_unspecified()),
                port,
                inode,
            });
        }
    }
    out
}

/// The process holding a socket inode, as "NAME (pid N)".
fn owner(inode: u64) -> Option<String> {
    let target = format!("socket:[{inode}]");
    for proc_entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = proc_entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(proc_entry.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == target.as_str()) {
                let comm = std::fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("{} (pid {pid})", comm.trim()));
            }
        }
    }
    None
}

/// The first of `hosts` that a socket in this namespace holds (same port and
/// protocol, overlapping address), with who holds it.
pub fn first_held<'a>(hosts: impl IntoIterator<Item = &'a HostPort>) -> Option<(HostPort, String)> {
    let tcp = sockets(Proto::Tcp);
    let udp = sockets(Proto::Udp);
    for host in hosts {
        let socks = if host.proto == Proto::Tcp { &tcp } else { &udp };
        let held = socks
            .iter()
            .find(|s| s.port == host.port && (s.addr.is_none() || host.addr.is_none() || s.addr == host.addr));
        if let Some(s) = held {
            let who = owner(s.inode).unwrap_or_else(|| format!("a socket (inode {})", s.inode));
            return Some((*host, who));
        }
    }
    None
}
