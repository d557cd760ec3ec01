//! Address and port rewriting with incremental checksum updates, written once
//! for both families (the family rewrites its addresses, ports are common).
use portfwd_common::Addr;

use crate::{
    family::{Family, Flow, Side, L4_DPORT_OFF, L4_SPORT_OFF},
    pkt::{Drop, Packet},
};

/// Rewrites the address and port at `side` of `flow` to `addr_be:port_be`.
/// On failure the packet may be half rewritten: the caller drops it.
#[inline(always)]
pub fn rewrite<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    side: Side,
    addr_be: F::Addr,
    port_be: u16,
) -> Result<(), Drop> {
    let (old_addr, old_port, port_off) = match side {
        Side::Dst => (flow.daddr_be, flow.dport_be, L4_DPORT_OFF),
        Side::Src => (flow.saddr_be, flow.sport_be, L4_SPORT_OFF),
    };
    if old_addr != addr_be {
        F::set_addr(p, flow, side, old_addr, addr_be)?;
    }
    if old_port != port_be {
        set_port(p, flow, flow.l4_off() + port_off, old_port, port_be)?;
    }
    Ok(())
}

/// Rewrites the 16-bit port at `off` (inside `flow`'s L4 header) and its
/// checksum.
#[inline(always)]
pub fn set_port<A: Addr, P: Packet>(
    p: &P,
    flow: &Flow<A>,
    off: usize,
    old_be: u16,
    new_be: u16,
) -> Result<(), Drop> {
    p.l4_csum_replace(
        flow.l4_csum_off(),
        old_be as u32,
        new_be as u32,
        flow.l4_csum_flags() | 2,
    )?;
    p.write(off, new_be)
}
