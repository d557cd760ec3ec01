//! BPF conntrack: two LRU entries per flow, one per direction.
//!
//! An entry is live until `expires_ns`. Every packet pushes that forward by
//! the lifetime of the flow's state (see `portfwd_common::CT_LIFETIME_*`):
//! TCP gets a short life until both sides have spoken, a long one once
//! established, and a short final one after both FINs or a RST; UDP gets a
//! fixed idle timeout. Expired entries are ignored and overwritten; the LRU
//! evicts the oldest when the map is full.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_ns};
use portfwd_common::{
    stat, Backend, CtEntry, CtKey, CT_DIR_FORWARD, CT_DIR_REPLY, CT_F_ACK, CT_F_CLOSING, CT_F_FIN,
    CT_F_RST, CT_F_SYN, CT_LIFETIME_CLOSE_NS, CT_LIFETIME_TCP_NS, CT_LIFETIME_TCP_SYN_NS,
    CT_LIFETIME_UDP_NS,
};

use crate::{
    maps::CONNTRACK,
    parse::{Flow, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    stats,
};

#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: bpf_ktime_get_ns has no preconditions.
    unsafe { bpf_ktime_get_ns() }
}

/// The key of a packet as it is on the wire.
#[inline(always)]
pub fn key_of(flow: &Flow) -> CtKey {
    CtKey {
        saddr_be: flow.saddr_be,
        daddr_be: flow.daddr_be,
        sport_be: flow.sport_be,
        dport_be: flow.dport_be,
        proto: flow.proto,
        pad: [0; 3],
    }
}

/// A live entry for `key`, or None if there is none or it has expired.
#[inline(always)]
pub fn lookup(key: &CtKey, now: u64) -> Option<*mut CtEntry> {
    let entry = CONNTRACK.get_ptr_mut(key)?;
    // SAFETY: the pointer comes from a successful map lookup and stays valid
    // for the rest of this program run (RCU).
    if unsafe { (*entry).expires_ns } <= now {
        stats::count(stat::CT_EXPIRED);
        return None;
    }
    Some(entry)
}

/// Creates (or overwrites) both entries of a flow whose forward packet is
/// `flow`, arriving on `client_ifindex` and going to `backend` through the
/// mapping whose key has host address `map_addr_be`. A hairpin flow also has
/// its source rewritten to `snat` (address, port).
#[inline(always)]
pub fn create(
    flow: &Flow,
    backend: &Backend,
    map_addr_be: u32,
    client_ifindex: u32,
    snat: Option<(u32, u16)>,
    now: u64,
) -> Result<(), u32> {
    let flags = tcp_flags(flow);
    let lifetime = lifetime_for(flow.is_tcp(), flags);
    // Where the container's replies go: the client, or the SNAT address.
    let (reply_to_addr, reply_to_port) = snat.unwrap_or((flow.saddr_be, flow.sport_be));
    let (fwd_peer, rep_peer) = match snat {
        Some(s) => (s, (flow.saddr_be, flow.sport_be)),
        None => ((0, 0), (0, 0)),
    };
    let forward = CtEntry {
        expires_ns: now + lifetime,
        created_ns: now,
        packets: 1,
        bytes: flow.ip_len as u64,
        nat_addr_be: backend.addr_be,
        nat_port_be: backend.port_be,
        dir: CT_DIR_FORWARD,
        flags,
        ifindex: backend.bridge_ifindex,
        map_addr_be,
        peer_addr_be: fwd_peer.0,
        peer_port_be: fwd_peer.1,
        pad: 0,
    };
    let reply_key = CtKey {
        saddr_be: backend.addr_be,
        daddr_be: reply_to_addr,
        sport_be: backend.port_be,
        dport_be: reply_to_port,
        proto: flow.proto,
        pad: [0; 3],
    };
    let reply = CtEntry {
        expires_ns: now + lifetime,
        created_ns: now,
        packets: 0,
        bytes: 0,
        nat_addr_be: flow.daddr_be,
        nat_port_be: flow.dport_be,
        dir: CT_DIR_REPLY,
        flags: 0,
        ifindex: client_ifindex,
        map_addr_be,
        peer_addr_be: rep_peer.0,
        peer_port_be: rep_peer.1,
        pad: 0,
    };
    // Reply entry first: once the forward entry exists, a reply can come.
    if snat.is_some() {
        // The port was free when chosen; another CPU may have taken it since.
        // BPF_NOEXIST settles that race; an entry that exists but is dead or
        // is this client's own earlier flow may be overwritten.
        if CONNTRACK
            .insert(&reply_key, &reply, BPF_NOEXIST as u64)
            .is_err()
        {
            if let Some(e) = lookup(&reply_key, now) {
                // SAFETY: pointer from `lookup` in this program run.
                let e = unsafe { &*e };
                if !e.is_reply_to(flow.saddr_be, flow.sport_be) {
                    return Err(stat::DROP_NO_PORT);
                }
            }
            CONNTRACK
                .insert(&reply_key, &reply, 0)
                .map_err(|_| stat::DROP_CT_CREATE)?;
        }
    } else {
        CONNTRACK
            .insert(&reply_key, &reply, 0)
            .map_err(|_| stat::DROP_CT_CREATE)?;
    }
    CONNTRACK
        .insert(&key_of(flow), &forward, 0)
        .map_err(|_| stat::DROP_CT_CREATE)?;
    stats::count(stat::CT_NEW);
    Ok(())
}

/// Counts `flow`'s packet on `entry` (stored at `key`) and extends its life
/// according to the TCP flags it carries.
#[inline(always)]
pub fn account(key: &CtKey, entry: *mut CtEntry, flow: &Flow, now: u64) {
    // SAFETY: `entry` comes from `lookup` in this program run. The BPF target
    // has no atomic read-modify-write in `core`, so fields are updated with
    // plain writes: one flow's packets are normally handled on one CPU (RSS
    // steers by flow hash), and a lost race costs one counted packet or
    // delays a state change to the next packet, never a wrong rewrite.
    let e = unsafe { &mut *entry };
    e.packets += 1;
    e.bytes += flow.ip_len as u64;
    if !flow.is_tcp() {
        e.expires_ns = now + CT_LIFETIME_UDP_NS;
        return;
    }
    let seen = tcp_flags(flow);
    if seen & !e.flags != 0 {
        e.flags |= seen;
    }
    if e.flags & CT_F_CLOSING != 0 {
        return;
    }
    if seen & (CT_F_RST | CT_F_FIN) != 0 {
        let skey = e.sibling_key(key);
        let sibling = CONNTRACK.get_ptr_mut(&skey);
        // SAFETY: pointer from a successful lookup, as above.
        let sibling_fin = sibling.is_some_and(|s| unsafe { (*s).flags } & CT_F_FIN != 0);
        if seen & CT_F_RST != 0 || sibling_fin {
            if let Some(s) = sibling {
                // SAFETY: as above.
                let s = unsafe { &mut *s };
                s.flags |= CT_F_CLOSING;
                s.expires_ns = now + CT_LIFETIME_CLOSE_NS;
            }
            e.flags |= CT_F_CLOSING;
            e.expires_ns = now + CT_LIFETIME_CLOSE_NS;
            return;
        }
    }
    e.expires_ns = now + lifetime_for(true, e.flags);
}

#[inline(always)]
fn tcp_flags(flow: &Flow) -> u8 {
    if !flow.is_tcp() {
        return 0;
    }
    let f = flow.tcp_flags;
    let mut out = 0;
    if f & TCP_SYN != 0 {
        out |= CT_F_SYN;
    }
    if f & TCP_FIN != 0 {
        out |= CT_F_FIN;
    }
    if f & TCP_RST != 0 {
        out |= CT_F_RST;
    }
    if f & TCP_ACK != 0 {
        out |= CT_F_ACK;
    }
    out
}

#[inline(always)]
fn lifetime_for(tcp: bool, flags: u8) -> u64 {
    if !tcp {
        CT_LIFETIME_UDP_NS
    } else if flags & CT_F_ACK != 0 {
        CT_LIFETIME_TCP_NS
    } else {
        CT_LIFETIME_TCP_SYN_NS
    }
}

/// The host port of the flow `entry` (stored at `key`) belongs to: the
/// destination port of a forward entry, the NAT port of a reply entry.
#[inline(always)]
pub fn host_port(key: &CtKey, entry: &CtEntry) -> u16 {
    if entry.dir == CT_DIR_FORWARD {
        key.dport_be
    } else {
        entry.nat_port_be
    }
}

/// True if `entry` is a reply entry.
#[inline(always)]
pub fn is_reply(entry: *const CtEntry) -> bool {
    // SAFETY: pointer from `lookup` in this program run.
    unsafe { (*entry).dir == CT_DIR_REPLY }
}

/// True if `entry` belongs to a hairpin (source-NATed) flow.
#[inline(always)]
pub fn is_hairpin(entry: *const CtEntry) -> bool {
    // SAFETY: pointer from `lookup` in this program run.
    unsafe { (*entry).is_hairpin() }
}
