//! The reverse path: a container's reply that matches a conntrack reply entry
//! gets its source set back to the host address and port the client used, and
//! is redirected out of the interface the client came in on. Everything else
//! from the bridge is left to the host.
use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use portfwd_common::stat;

use crate::{
    conntrack,
    nat::{self, Side},
    parse::{self, Parsed},
    stats,
};

#[inline(always)]
pub fn from_bridge(ctx: &TcContext) -> i32 {
    let Parsed::Flow(flow) = parse::ipv4(ctx) else {
        return TC_ACT_OK as i32;
    };
    let now = conntrack::now();
    let key = conntrack::key_of(&flow);
    let Some(entry) = conntrack::lookup(&key, now) else {
        return TC_ACT_OK as i32;
    };
    if !conntrack::is_reply(entry) {
        return TC_ACT_OK as i32;
    }
    conntrack::account(&key, entry, &flow, now);
    // SAFETY: pointer from `conntrack::lookup` in this program run.
    let (addr, port, ifindex) = unsafe { ((*entry).nat_addr_be, (*entry).nat_port_be, (*entry).ifindex) };
    if let Err(reason) = nat::rewrite(ctx, &flow, Side::Src, addr, port) {
        return stats::drop(reason);
    }
    stats::count(stat::REVERSE_NAT);
    nat::redirect_neigh(ifindex)
}
