//! The forward direction, shared by both orchestrators: a packet toward a
//! published port, from a client outside (`ext_ingress`) or a container on
//! the bridge (hairpin, `bridge_ingress`).
//!
//! 1. TCP that is not a new connection and has a live conntrack entry:
//!    follow the entry, even if the mapping has since changed or gone
//!    (established flows drain on the endpoint they started with);
//! 2. look up the mapping (the wildcard if the destination is one of the
//!    host's addresses, else the exact host address); none: untouched;
//! 3. reuse the entry if it still points at that endpoint, else create the
//!    flow's two conntrack entries; rewrite; redirect to the bridge.
use portfwd_common::{stat, CtKey, CT_F_CLOSING};

use crate::{
    conntrack::{self, CtRef},
    family::{Family, Flow},
    mapping,
    pkt::{Drop, Outcome, Packet, Verdict},
    stats::{self, Dir},
    xlate::{dnat, hairpin, reset},
};

/// Steps 1-3, for a client outside (`hairpin` false) or on the bridge
/// (`hairpin` true: the source is rewritten as well). `entry` is the live
/// forward entry for the packet's tuple, if any.
#[inline(always)]
pub fn translate<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &CtKey<F::Addr>,
    entry: Option<CtRef<F::Addr>>,
    hairpin: bool,
    now: u64,
) -> Outcome {
    let new_conn = flow.is_syn();
    if flow.is_tcp() && !new_conn {
        if let Some(e) = entry {
            return follow::<F, P>(p, flow, key, e, now);
        }
        // A hairpin flow starts with a SYN: its source port is chosen then,
        // and a mid-stream packet cannot know which one it was.
        if hairpin {
            return Ok(Verdict::Pass);
        }
    }

    let Some(m) = mapping::for_packet::<F>(flow.daddr_be, flow.dport_be, flow.proto) else {
        return Ok(Verdict::Pass);
    };
    let b = m.backend;

    if let Some(e) = entry {
        let ent = e.get();
        let same = ent.nat_addr_be == b.addr_be && ent.nat_port_be == b.port_be;
        if same && !(new_conn && ent.flags & CT_F_CLOSING != 0) {
            return follow::<F, P>(p, flow, key, e, now);
        }
    }

    let snat = if hairpin {
        Some(hairpin::pick::<F, P>(p, flow, &b, now).ok_or(Drop(stat::DROP_NO_PORT))?)
    } else {
        None
    };
    conntrack::create::<F>(flow, &b, m.wildcard, p.ingress_ifindex(), snat, now)?;
    if hairpin {
        stats::count(stat::HAIRPIN);
    }
    let mkey = m.key(flow.daddr_be, flow.dport_be, flow.proto);
    stats::mapping::<F>(&mkey, Dir::Forward, flow.l3_len as u64, true);
    let target = dnat::Target {
        to: (b.addr_be, b.port_be),
        snat,
    };
    forward::<F, P>(p, flow, &target, b.bridge_ifindex)
}

/// Forwards a packet of a flow that has a live forward entry `e`.
#[inline(always)]
fn follow<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &CtKey<F::Addr>,
    mut e: CtRef<F::Addr>,
    now: u64,
) -> Outcome {
    conntrack::account::<F>(key, &mut e, flow, now);
    if let Some(outcome) = reset::if_killed::<F, P>(p, flow, e.get_mut(), now) {
        return outcome;
    }
    let entry = e.get();
    stats::mapping::<F>(
        &entry.mapping_key(key),
        Dir::Forward,
        flow.l3_len as u64,
        false,
    );
    forward::<F, P>(p, flow, &dnat::Target::of_entry(entry), entry.ifindex)
}

#[inline(always)]
fn forward<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    target: &dnat::Target<F::Addr>,
    bridge_ifindex: u32,
) -> Outcome {
    dnat::apply::<F, P>(p, flow, target)?;
    stats::count(stat::DNAT);
    p.redirect_neigh(bridge_ifindex)
}
