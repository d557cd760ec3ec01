//! Address and port rewriting with incremental checksum updates.
//!
//! The kernel helpers do the arithmetic and keep `skb->csum` right for
//! CHECKSUM_COMPLETE packets and the pseudo-header sum right for
//! CHECKSUM_PARTIAL ones (veth, TSO), so nothing is recomputed from scratch.
use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR},
    programs::TcContext,
};
use portfwd_common::stat;

use crate::parse::{
    Flow, ETH_HLEN, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_OFF, L4_SPORT_OFF,
};

/// Which end of the packet to rewrite.
#[derive(Clone, Copy)]
pub enum Side {
    /// Destination: client -> host port becomes client -> container (DNAT).
    Dst,
    /// Source: container -> client becomes host port -> client (reverse NAT).
    Src,
}

/// Rewrites one address and port of `flow` to `addr_be:port_be`.
/// Returns the drop reason on failure; the caller must then drop the packet,
/// which may be half rewritten.
#[inline(always)]
pub fn rewrite(
    ctx: &TcContext,
    flow: &Flow,
    side: Side,
    addr_be: u32,
    port_be: u16,
) -> Result<(), u32> {
    let (old_addr, old_port, addr_off, port_off) = match side {
        Side::Dst => (flow.daddr_be, flow.dport_be, IP_DADDR_OFF, L4_DPORT_OFF),
        Side::Src => (flow.saddr_be, flow.sport_be, IP_SADDR_OFF, L4_SPORT_OFF),
    };
    // UDP: a zero checksum means "none" and must stay zero; a computed zero
    // must become 0xffff. BPF_F_MARK_MANGLED_0 does both.
    let l4_flags = if flow.is_tcp() {
        0
    } else {
        BPF_F_MARK_MANGLED_0 as u64
    };
    let csum_off = flow.l4_csum_off();

    if old_addr != addr_be {
        ctx.l4_csum_replace(
            csum_off,
            old_addr as u64,
            addr_be as u64,
            l4_flags | BPF_F_PSEUDO_HDR as u64 | 4,
        )
        .map_err(|_| stat::DROP_CSUM_L4)?;
        ctx.l3_csum_replace(ETH_HLEN + IP_CSUM_OFF, old_addr as u64, addr_be as u64, 4)
            .map_err(|_| stat::DROP_CSUM_L3)?;
        ctx.store(ETH_HLEN + addr_off, &addr_be, 0)
            .map_err(|_| stat::DROP_STORE)?;
    }
    if old_port != port_be {
        ctx.l4_csum_replace(csum_off, old_port as u64, port_be as u64, l4_flags | 2)
            .map_err(|_| stat::DROP_CSUM_L4)?;
        ctx.store(flow.l4_off + port_off, &port_be, 0)
            .map_err(|_| stat::DROP_STORE)?;
    }
    Ok(())
}

/// Redirects the packet out of `ifindex`, letting the kernel fill in the L2
/// addresses from its neighbour table (resolving them if needed). This sends
/// the packet without the host's forwarding path, so it works with
/// `ip_forward=0` and a FORWARD policy of DROP.
#[inline(always)]
pub fn redirect_neigh(ifindex: u32) -> i32 {
    // SAFETY: a NULL params pointer with length 0 is the documented way to ask
    // the helper for a route lookup on the packet's own destination.
    let ret =
        unsafe { aya_ebpf::helpers::bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
    if ret == aya_ebpf::bindings::TC_ACT_REDIRECT as i64 {
        ret as i32
    } else {
        crate::stats::drop(stat::DROP_REDIRECT)
    }
}
