//! The reverse path: a container's reply that matches a conntrack reply entry
//! gets its source set back to the host address and port the client used, and
//! is redirected out of the interface the client came in on (a hairpin
//! reply also gets its destination set back to the client). Anything else
//! from the bridge may be a hairpin packet (`dnat::from_bridge`); what is not
//! is left to the host.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use portfwd_common::{stat, CtEntry};

use crate::{
    conntrack, dnat,
    nat::{self, Side},
    parse::{self, Parsed},
    reset,
    stats::{self, Dir},
};

#[inline(always)]
pub fn from_bridge(ctx: &TcContext) -> i32 {
    let Parsed::Flow(flow) = parse::ipv4(ctx) else {
        return TC_ACT_OK as i32;
    };
    let now = conntrack::now();
    let key = conntrack::key_of(&flow);
    let entry = conntrack::lookup(&key, now);
    let Some(e) = entry.filter(|e| conntrack::is_reply(*e)) else {
        return dnat::from_bridge(ctx, &flow, &key, entry, now);
    };
    conntrack::account(&key, e, &flow, now);
    // SAFETY: pointer from `conntrack::lookup` in this program run.
    let entry: &mut CtEntry = unsafe { &mut *e };
    if let Some(verdict) = reset::if_killed(ctx, &flow, entry, now) {
        return verdict;
    }
    let port = conntrack::host_port(&key, entry);
    stats::mapping(
        entry.map_addr_be,
        port,
        flow.proto,
        Dir::Reverse,
        flow.ip_len as u64,
        false,
    );
    if let Err(reason) = nat::rewrite(ctx, &flow, Side::Src, entry.nat_addr_be, entry.nat_port_be) {
        return stats::drop(reason);
    }
    if entry.is_hairpin() {
        if let Err(reason) = nat::rewrite(
            ctx,
            &flow,
            Side::Dst,
            entry.peer_addr_be,
            entry.peer_port_be,
        ) {
            return stats::drop(reason);
        }
    }
    stats::count(stat::REVERSE_NAT);
    nat::redirect_neigh(entry.ifindex)
}
