//! TC ingress on the external interfaces: packets from outside.
//!
//! - TCP/UDP addressed to loopback (a martian on the wire): untouched. A
//!   hairpin flow's tuple arriving from outside is not ours to follow or take
//!   over. Everything else may be toward a published port (`forward`); a
//!   first fragment also records its ports for the rest of its datagram.
//! - A later fragment follows its first one's flow; one that came first
//!   waits for it (see `xlate::frag`).
//! - An ICMP error about a reply portfwd sent (a router on the way to the
//!   client, or the client itself) is translated for the container.
//! - Anything else: untouched.
use portfwd_common::{stat, CtKey, HOT_HOST};

use super::{
    forward, settle,
    state::{Home, State},
    Pending, Step,
};
use crate::{
    conntrack,
    family::{Family, Flow, IcmpError, Kind},
    mapping,
    pkt::{Drop, Packet, Ret, Verdict},
    stats,
    xlate::{frag, icmp},
};

/// A packet of family `F` (the entry point has looked at its ethertype).
// A subprogram per family: the two families' states would otherwise both
// sit in the entry point's frame.
#[inline(never)]
pub fn run<F: Home, P: Packet>(p: &P) -> Ret
where
    F::Addr: frag::FragMaps,
{
    Ret::of(|| {
        F::with_state(|st| {
            let State { parsed, pending } = st;
            F::parse(p, parsed);
            let q = &parsed.flow;
            // Toward a published host port; an error quotes a reply from one. A
            // first fragment records its ports whatever they are, or its datagram's
            // later fragments would wait for it in vain.
            let hot = match parsed.kind {
                Kind::Flow => q.first_fragment || mapping::hot(HOT_HOST, q.proto, q.dport_be),
                Kind::Icmp => mapping::hot(HOT_HOST, q.proto, q.sport_be),
                Kind::Fragment => true,
                Kind::Other => false,
            };
            if !hot {
                return Ok(Verdict::Pass);
            }
            *pending = Pending::new(conntrack::now());
            let outcome = match parsed.kind {
                Kind::Flow => flow_in::<F, P>(p, &parsed.flow, pending).outcome(),
                Kind::Fragment => later_fragment::<F, P>(p, &parsed.flow, pending).outcome(),
                _ => icmp_in::<F, P>(p, &parsed.flow, &parsed.icmp).outcome(),
            };
            settle::<F, P>(p, &parsed.flow, pending, outcome)
        })
    })
}

// A subprogram of its own: parsing stays in the entry point's frame and the
// flow's handling gets a frame of its own, which keeps the deepest call chain
// (through `start_flow` or `send_too_big`) under the 512-byte stack.
#[inline(never)]
fn flow_in<F: Family, P: Packet>(p: &P, flow: &Flow<F::Addr>, pending: &mut Pending<F::Addr>) -> Ret
where
    F::Addr: frag::FragMaps,
{
    Ret::of(|| {
        if F::is_loopback(flow.daddr_be) {
            return Ok(Verdict::Pass);
        }
        let now = pending.now;
        if flow.first_fragment {
            let id = &flow.frag_id();
            if mapping::is_local::<F>(flow.daddr_be) {
                let waiting = frag::record(id, flow.sport_be, flow.dport_be, now);
                if waiting > 0 {
                    pending.what = Step::Replay;
                    pending.waiting = waiting;
                    return Ok(Verdict::Pending);
                }
            }
        }
        let key = flow.key();
        let entry = conntrack::lookup::<F>(&key, now).filter(|e| !e.get().is_reply());
        if entry.as_ref().is_some_and(|e| e.get().is_hairpin()) {
            return Ok(Verdict::Pass);
        }
        forward::translate::<F, P>(p, flow, &key, entry, false, pending)
    })
}

// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
fn later_fragment<F: Family, P: Packet>(
    p: &P,
    f: &Flow<F::Addr>,
    pending: &mut Pending<F::Addr>,
) -> Ret
where
    F::Addr: frag::FragMaps,
{
    Ret::of(|| {
        let now = pending.now;
        let id = &f.frag_id();
        let Some((sport, dport)) = frag::ports(id, now) else {
            if mapping::is_local::<F>(id.daddr_be) {
                return frag::queue(p, id, f.l3_len, now).outcome();
            }
            return Ok(Verdict::Pass);
        };
        let key = CtKey::new(id.saddr_be, id.daddr_be, sport, dport, id.proto);
        match conntrack::lookup::<F>(&key, now) {
            Some(e) if !e.get().is_reply() && !e.get().is_hairpin() => {
                forward::follow_fragment::<F, P>(p, f, e, pending)
            }
            _ => {
                stats::count(stat::FRAGMENT_PASSED);
                Ok(Verdict::Pass)
            }
        }
    })
}

/// An error quotes the reply portfwd sent (host address:port -> client);
/// the flow's forward entry is that tuple reversed.
// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
fn icmp_in<F: Family, P: Packet>(p: &P, q: &Flow<F::Addr>, e: &IcmpError) -> Ret {
    Ret::of(|| {
        let key = CtKey::new(q.daddr_be, q.saddr_be, q.dport_be, q.sport_be, q.proto);
        let now = conntrack::now();
        let Some(entry) = conntrack::lookup::<F>(&key, now) else {
            return Ok(Verdict::Pass);
        };
        let ent = entry.get();
        if ent.is_reply() || ent.is_hairpin() {
            return Ok(Verdict::Pass);
        }
        if !icmp::verifies::<F, P>(p, e) {
            return Err(Drop(stat::DROP_ICMP_CSUM));
        }
        icmp::translate::<F, P>(p, q, e, ent, icmp::Toward::Container)?;
        stats::count(stat::ICMP_TO_CONTAINER);
        p.redirect_neigh(ent.ifindex)
    })
}
