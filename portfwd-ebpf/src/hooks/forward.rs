//! The forward direction, shared by both orchestrators: a packet toward a
//! published port, from a client outside (`ext_ingress`) or a container on
//! the bridge (hairpin, `bridge_ingress`).
//!
//! 1. TCP that is not a new connection and has a live conntrack entry:
//!    follow the entry, even if the mapping has since changed or gone
//!    (established flows drain on the endpoint they started with);
//! 2. look up the mapping (the wildcard if the destination is one of the
//!    host's addresses, else the exact host address); none: untouched;
//! 3. reuse the entry if it still points at that endpoint and is not a
//!    finished or established connection that a new SYN starts over, else
//!    start the flow (a pending step: its two conntrack entries, the
//!    rewrite, the redirect to the bridge).
use portfwd_common::{stat, CtKey, CT_F_ACK, CT_F_CLOSING};

use super::{mtu, Pending, Step};
use crate::{
    conntrack::{self, CtRef},
    family::{Family, Flow, Side},
    mapping,
    pkt::{Drop, Outcome, Packet, Ret, Verdict},
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
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    let new_conn = flow.is_syn();
    if flow.is_tcp() && !new_conn {
        if let Some(e) = entry {
            return follow::<F, P>(p, flow, key, e, pending);
        }
        // A hairpin flow starts with a SYN: its source port is chosen then,
        // and a mid-stream packet cannot know which one it was.
        if hairpin {
            return Ok(Verdict::Pass);
        }
    }

    // UDP follows its mapping's changes at once: a flow checked at the
    // table's current generation has the endpoint a lookup would give it.
    // Read once, before the lookup: a change after it leaves the entry
    // behind.
    let generation = mapping::generation();
    let entry = match entry {
        Some(e) if !flow.is_tcp() && e.get().generation == generation => {
            return follow::<F, P>(p, flow, key, e, pending);
        }
        other => other,
    };
    let Some(m) = mapping::for_packet::<F>(flow.daddr_be, flow.dport_be, flow.proto) else {
        return Ok(Verdict::Pass);
    };
    if let Some(mut e) = entry {
        let ent = e.get();
        let same = ent.nat_addr_be == m.backend.addr_be && ent.nat_port_be == m.backend.port_be;
        // A SYN on a tuple whose connection got past its handshake or ended
        // is a new connection reusing the tuple; a SYN on one still in its
        // handshake is a retransmission.
        let starts_over = new_conn && ent.flags & (CT_F_ACK | CT_F_CLOSING) != 0;
        if same && !starts_over {
            e.get_mut().generation = generation;
            return follow::<F, P>(p, flow, key, e, pending);
        }
        stats::count(stat::CT_REPLACED);
    }
    pending.what = Step::StartFlow;
    pending.matched = m;
    pending.hairpin = hairpin;
    Ok(Verdict::Pending)
}

/// Creates the flow's entries (choosing a hairpin flow's source port
/// first), counts it, rewrites and redirects its first packet; answers
/// instead if it does not fit the bridge. A pending step.
// A subprogram of its own: once per flow, run from the entry point's frame.
#[inline(never)]
pub fn start_flow<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    pending: &mut Pending<F::Addr>,
) -> Ret {
    Ret::of(|| {
        // The mapping is read where it lies in `pending`, not copied: an
        // IPv6 backend's copies would not fit this frame.
        let now = pending.now;
        let ifindex = pending.matched.backend.bridge_ifindex;
        let cut_mtu = match mtu::check::<F, P>(p, flow, ifindex, flow.daddr_be, pending) {
            Ok(cut_mtu) => cut_mtu,
            Err(answer) => return answer,
        };
        let m = &pending.matched;
        let b = &m.backend;
        let snat = if pending.hairpin {
            Some(hairpin::pick::<F, P>(p, flow, b, now).ok_or(Drop(stat::DROP_NO_PORT))?)
        } else {
            None
        };
        let new = conntrack::NewFlow {
            backend: b,
            wildcard: m.wildcard,
            client_ifindex: p.ingress_ifindex(),
            snat,
        };
        conntrack::create::<F>(flow, &new, now)?;
        if pending.hairpin {
            stats::count(stat::HAIRPIN);
        }
        stats::mapping(b.stats_slot, Dir::Forward, flow.l3_len as u64, true);
        let target = dnat::Target {
            to: (b.addr_be, b.port_be),
            snat,
        };
        forward::<F, P>(p, flow, &target, cut_mtu, ifindex, pending)
    })
}

/// Forwards a packet of a flow that has a live forward entry `e`.
#[inline(always)]
fn follow<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &CtKey<F::Addr>,
    mut e: CtRef<F::Addr>,
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    let now = pending.now;
    conntrack::client_still_there::<F>(key, &e);
    conntrack::account::<F>(key, &mut e, flow, now);
    if let Some(outcome) = reset::if_killed::<F, P>(p, flow, e.get_mut(), pending) {
        return outcome;
    }
    let entry = e.get();
    let cut_mtu = match mtu::check::<F, P>(p, flow, entry.ifindex, flow.daddr_be, pending) {
        Ok(cut_mtu) => cut_mtu,
        Err(answer) => return answer,
    };
    stats::mapping(entry.stats_slot, Dir::Forward, flow.l3_len as u64, false);
    let target = dnat::Target::of_entry(entry);
    forward::<F, P>(p, flow, &target, cut_mtu, entry.ifindex, pending)
}

#[inline(always)]
fn forward<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    target: &dnat::Target<F::Addr>,
    cut_mtu: u32,
    bridge_ifindex: u32,
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    dnat::apply::<F, P>(p, flow, target)?;
    if flow.first_fragment {
        stats::count(stat::FRAGMENT_FORWARDED);
    }
    stats::count(stat::DNAT);
    mtu::send::<F, P>(p, cut_mtu, bridge_ifindex, pending)
}

/// A later fragment of a datagram whose flow has the live forward entry `e`:
/// the same address rewrite as its first fragment.
#[inline(always)]
pub fn follow_fragment<F: Family, P: Packet>(
    p: &P,
    f: &Flow<F::Addr>,
    mut e: CtRef<F::Addr>,
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    conntrack::account_fragment(&mut e, f.l3_len);
    let entry = e.get();
    let cut_mtu = match mtu::check::<F, P>(p, f, entry.ifindex, f.daddr_be, pending) {
        Ok(cut_mtu) => cut_mtu,
        Err(answer) => return answer,
    };
    stats::mapping(entry.stats_slot, Dir::Forward, f.l3_len as u64, false);
    let t = dnat::Target::of_entry(entry);
    F::set_l3_addr(p, Side::Dst, f.daddr_be, t.to.0)?;
    if let Some((addr, _)) = t.snat {
        F::set_l3_addr(p, Side::Src, f.saddr_be, addr)?;
    }
    stats::count(stat::FRAGMENT_FORWARDED);
    mtu::send::<F, P>(p, cut_mtu, entry.ifindex, pending)
}
