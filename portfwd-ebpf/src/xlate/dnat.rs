//! DNAT: a packet toward a published port gets the container endpoint as its
//! destination (and, for hairpin flows, the host address as its source).
use portfwd_common::{Addr, CtEntry};

use crate::{
    family::{Family, Flow, Side},
    nat,
    pkt::{Drop, Packet},
};

/// Where a packet toward a container goes: the endpoint, and for hairpin
/// flows the source it takes.
pub struct Target<A> {
    pub to: (A, u16),
    pub snat: Option<(A, u16)>,
}

impl<A: Addr> Target<A> {
    /// What a flow's forward entry says.
    #[inline(always)]
    pub fn of_entry(e: &CtEntry<A>) -> Self {
        Self {
            to: (e.nat_addr_be, e.nat_port_be),
            snat: e.is_hairpin().then_some((e.peer_addr_be, e.peer_port_be)),
        }
    }
}

#[inline(always)]
pub fn apply<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    t: &Target<F::Addr>,
) -> Result<(), Drop> {
    nat::rewrite::<F, P>(p, flow, Side::Dst, t.to.0, t.to.1)?;
    if let Some((addr, port)) = t.snat {
        nat::rewrite::<F, P>(p, flow, Side::Src, addr, port)?;
    }
    Ok(())
}
