//! The DNAT path: a packet from outside to a published host port is
//! rewritten to the container endpoint and redirected to the bridge.
//!
//! Order of decisions, per packet arriving on an external interface:
//! 1. not IPv4 TCP/UDP, a fragment, or addressed to 127.0.0.0/8 (a martian
//!    on the wire): untouched (TC_ACT_OK);
//! 2. TCP that is not a new connection and has a live conntrack entry:
//!    follow the entry, even if the mapping has since changed or gone
//!    (established flows drain on the endpoint they started with);
//! 3. look up the mapping (the wildcard if the destination is one of the
//!    host's addresses, else the exact host address); none: untouched;
//! 4. reuse the entry if it still points at that endpoint, else create the
//!    flow's two conntrack entries; rewrite; redirect to the bridge.
//!
//! Hairpin packets (from a container on the bridge to a published port on a
//! host address) take the same path from step 2, entered from `rnat` for
//! whatever is not a reply, and also get a new source (see `snat`).
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use portfwd_common::{stat, CtEntry, CtKey, CT_F_CLOSING};

use crate::{
    conntrack, mapping,
    nat::{self, Side},
    parse::{self, Flow, Parsed, TCP_ACK, TCP_SYN},
    reset, snat,
    stats::{self, Dir},
};

#[inline(always)]
pub fn from_external(ctx: &TcContext) -> i32 {
    let flow = match parse::ipv4(ctx) {
        Parsed::Flow(flow) => flow,
        Parsed::Fragment => {
            // Ports are not in every fragment; the host stack gets them as
            // they are (see README, "IP fragments").
            stats::count(stat::FRAGMENT_PASSED);
            return TC_ACT_OK as i32;
        }
        Parsed::Other => return TC_ACT_OK as i32,
    };
    if mapping::is_loopback(flow.daddr_be) {
        return TC_ACT_OK as i32;
    }
    let now = conntrack::now();
    let key = conntrack::key_of(&flow);
    let entry = conntrack::lookup(&key, now).filter(|e| !conntrack::is_reply(*e));
    if entry.is_some_and(|e| conntrack::is_hairpin(e)) {
        // A hairpin flow's tuple arriving from outside: not ours to follow
        // or to take over.
        return TC_ACT_OK as i32;
    }
    translate(ctx, &flow, &key, entry, false, now)
}

/// Hairpin: a packet from the bridge that is not a reply (the caller has
/// checked), addressed to a published port on one of the host's addresses.
/// `entry` is the live conntrack entry for its tuple, if any.
#[inline(always)]
pub fn from_bridge(
    ctx: &TcContext,
    flow: &Flow,
    key: &CtKey,
    entry: Option<*mut CtEntry>,
    now: u64,
) -> i32 {
    if entry.is_some_and(|e| !conntrack::is_hairpin(e)) {
        // An outside client's tuple arriving from the bridge: left alone.
        return TC_ACT_OK as i32;
    }
    if entry.is_none() {
        // Most of what containers send is neither: the rest of their TCP
        // flows (only a SYN starts a hairpin flow) and traffic to other
        // hosts. Checked cheapest first.
        let syn = flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
        if flow.is_tcp() && !syn || !mapping::is_local(flow.daddr_be) {
            return TC_ACT_OK as i32;
        }
    }
    translate(ctx, flow, key, entry, true, now)
}

/// Steps 2-4 above, for a client outside (`hairpin` false) or on the bridge
/// (`hairpin` true: the source is rewritten as well, see `snat`).
#[inline(always)]
fn translate(
    ctx: &TcContext,
    flow: &Flow,
    key: &CtKey,
    entry: Option<*mut CtEntry>,
    hairpin: bool,
    now: u64,
) -> i32 {
    let new_conn = flow.is_tcp() && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    if flow.is_tcp() && !new_conn {
        if let Some(e) = entry {
            return follow(ctx, flow, key, e, now);
        }
        // A hairpin flow starts with a SYN: its source port is chosen then,
        // and a mid-stream packet cannot know which one it was.
        if hairpin {
            return TC_ACT_OK as i32;
        }
    }

    let Some(m) = lookup_mapping(flow) else {
        return TC_ACT_OK as i32;
    };
    let b = m.backend;

    if let Some(e) = entry {
        // SAFETY: pointer from `conntrack::lookup` in this program run.
        let (addr, port, flags) = unsafe { ((*e).nat_addr_be, (*e).nat_port_be, (*e).flags) };
        let same = addr == b.addr_be && port == b.port_be;
        if same && !(new_conn && flags & CT_F_CLOSING != 0) {
            return follow(ctx, flow, key, e, now);
        }
    }

    let snat = if hairpin {
        match snat::pick(ctx, flow, &b, now) {
            Some(s) => Some(s),
            None => return stats::drop(stat::DROP_NO_PORT),
        }
    } else {
        None
    };
    if let Err(reason) = conntrack::create(flow, &b, m.map_addr_be, ingress_ifindex(ctx), snat, now)
    {
        return stats::drop(reason);
    }
    if hairpin {
        stats::count(stat::HAIRPIN);
    }
    stats::mapping(
        m.map_addr_be,
        flow.dport_be,
        flow.proto,
        Dir::Forward,
        flow.ip_len as u64,
        true,
    );
    forward(ctx, flow, b.addr_be, b.port_be, snat, b.bridge_ifindex)
}

/// Forwards a packet of a flow that has a live forward entry `e`.
#[inline(always)]
fn follow(ctx: &TcContext, flow: &Flow, key: &CtKey, e: *mut CtEntry, now: u64) -> i32 {
    conntrack::account(key, e, flow, now);
    // SAFETY: pointer from `conntrack::lookup` in this program run.
    let entry: &mut CtEntry = unsafe { &mut *e };
    if let Some(verdict) = reset::if_killed(ctx, flow, entry, now) {
        return verdict;
    }
    stats::mapping(
        entry.map_addr_be,
        flow.dport_be,
        flow.proto,
        Dir::Forward,
        flow.ip_len as u64,
        false,
    );
    let snat = if entry.is_hairpin() {
        Some((entry.peer_addr_be, entry.peer_port_be))
    } else {
        None
    };
    forward(
        ctx,
        flow,
        entry.nat_addr_be,
        entry.nat_port_be,
        snat,
        entry.ifindex,
    )
}

/// The mapping for a packet: the wildcard applies only to the host's own
/// addresses; an exact-address mapping names its address itself.
#[inline(always)]
fn lookup_mapping(flow: &Flow) -> Option<mapping::Matched> {
    let m = mapping::lookup(flow.daddr_be, flow.dport_be, flow.proto)?;
    if m.map_addr_be == 0 && !mapping::is_local(flow.daddr_be) {
        return None;
    }
    Some(m)
}

#[inline(always)]
fn forward(
    ctx: &TcContext,
    flow: &Flow,
    addr_be: u32,
    port_be: u16,
    snat: Option<(u32, u16)>,
    bridge_ifindex: u32,
) -> i32 {
    if let Err(reason) = nat::rewrite(ctx, flow, Side::Dst, addr_be, port_be) {
        return stats::drop(reason);
    }
    if let Some((saddr_be, sport_be)) = snat {
        if let Err(reason) = nat::rewrite(ctx, flow, Side::Src, saddr_be, sport_be) {
            return stats::drop(reason);
        }
    }
    stats::count(stat::DNAT);
    nat::redirect_neigh(bridge_ifindex)
}

#[inline(always)]
pub fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `ctx.skb.skb` is the program's context pointer, valid for the
    // whole run; `ifindex` is a readable __sk_buff field.
    unsafe { (*ctx.skb.skb).ifindex }
}
