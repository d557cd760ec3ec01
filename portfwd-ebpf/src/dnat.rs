//! The DNAT path: a packet from outside to a published host port is
//! rewritten to the container endpoint and redirected to the bridge.
//!
//! Order of decisions, per packet arriving on an external interface:
//! 1. not IPv4 TCP/UDP, or a fragment: untouched (TC_ACT_OK);
//! 2. TCP that is not a new connection and has a live conntrack entry:
//!    follow the entry, even if the mapping has since changed or gone
//!    (established flows drain on the endpoint they started with);
//! 3. look up the mapping (exact host address first, then the wildcard if the
//!    destination is one of the host's addresses); no mapping: untouched;
//! 4. reuse the entry if it still points at that endpoint, else create the
//!    flow's two conntrack entries; rewrite; redirect to the bridge.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use portfwd_common::{stat, Backend, MapKey, CT_F_CLOSING};

use crate::{
    conntrack,
    maps::{LOCAL_ADDRS, MAPPINGS},
    nat::{self, Side},
    parse::{self, Flow, Parsed, TCP_ACK, TCP_SYN},
    stats,
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
    let now = conntrack::now();
    let key = conntrack::key_of(&flow);
    let new_conn = flow.is_tcp() && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN;
    let entry = conntrack::lookup(&key, now).filter(|e| !conntrack::is_reply(*e));

    if flow.is_tcp() && !new_conn {
        if let Some(e) = entry {
            conntrack::account(&key, e, &flow, now);
            // SAFETY: pointer from `conntrack::lookup` in this program run.
            let (addr, port, ifindex) = unsafe { ((*e).nat_addr_be, (*e).nat_port_be, (*e).ifindex) };
            return forward(ctx, &flow, addr, port, ifindex);
        }
    }

    let Some(backend) = lookup_mapping(&flow) else {
        return TC_ACT_OK as i32;
    };

    if let Some(e) = entry {
        // SAFETY: pointer from `conntrack::lookup` in this program run.
        let (addr, port, flags) = unsafe { ((*e).nat_addr_be, (*e).nat_port_be, (*e).flags) };
        let same = addr == backend.addr_be && port == backend.port_be;
        if same && !(new_conn && flags & CT_F_CLOSING != 0) {
            conntrack::account(&key, e, &flow, now);
            return forward(ctx, &flow, backend.addr_be, backend.port_be, backend.bridge_ifindex);
        }
    }

    if let Err(reason) = conntrack::create(&flow, &backend, ifindex(ctx), now) {
        return stats::drop(reason);
    }
    forward(ctx, &flow, backend.addr_be, backend.port_be, backend.bridge_ifindex)
}

#[inline(always)]
fn lookup_mapping(flow: &Flow) -> Option<Backend> {
    let mut key = MapKey {
        addr_be: 0,
        port_be: flow.dport_be,
        proto: flow.proto,
        pad: 0,
    };
    // A host port is published either on every local address or on specific
    // ones, never both (userspace refuses the overlap), so the order of these
    // lookups cannot change the answer.
    // SAFETY: map values are plain integers and only read here.
    if let Some(backend) = unsafe { MAPPINGS.get(&key) } {
        // SAFETY: as above.
        if unsafe { LOCAL_ADDRS.get(&flow.daddr_be) }.is_some() {
            return Some(*backend);
        }
        return None;
    }
    key.addr_be = flow.daddr_be;
    // SAFETY: as above.
    unsafe { MAPPINGS.get(&key) }.copied()
}

#[inline(always)]
fn forward(ctx: &TcContext, flow: &Flow, addr_be: u32, port_be: u16, bridge_ifindex: u32) -> i32 {
    if let Err(reason) = nat::rewrite(ctx, flow, Side::Dst, addr_be, port_be) {
        return stats::drop(reason);
    }
    stats::count(stat::DNAT);
    nat::redirect_neigh(bridge_ifindex)
}

#[inline(always)]
fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `ctx.skb.skb` is the program's context pointer, valid for the
    // whole run; `ifindex` is a readable __sk_buff field.
    unsafe { (*ctx.skb.skb).ifindex }
}
