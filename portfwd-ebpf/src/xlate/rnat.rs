//! Reverse NAT: a container's reply gets the host address and port the
//! client used as its source (and, for hairpin flows, the client's own
//! address back as its destination), as the flow's reply entry says.
use portfwd_common::CtEntry;

use crate::{
    family::{Family, Flow, Side},
    nat,
    pkt::{Drop, Packet},
};

#[inline(always)]
pub fn apply<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    e: &CtEntry<F::Addr>,
) -> Result<(), Drop> {
    nat::rewrite::<F, P>(p, flow, Side::Src, e.nat_addr_be, e.nat_port_be)?;
    if e.is_hairpin() {
        nat::rewrite::<F, P>(p, flow, Side::Dst, e.peer_addr_be, e.peer_port_be)?;
    }
    Ok(())
}
