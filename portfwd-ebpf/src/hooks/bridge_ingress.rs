//! TC ingress on the bridge: packets from the containers.
//!
//! - A reply that matches a conntrack reply entry gets its source set back
//!   to the host address and port the client used, and is redirected out of
//!   the interface the client came in on (a hairpin reply also gets its
//!   destination set back to the client). A SYN-ACK that answers no SYN
//!   portfwd forwarded belongs to another path (Docker's own DNAT, plain
//!   routing) that reuses a stale flow's tuple: the stale entries go and the
//!   packet is left to the kernel. Likewise, once a flow has closed and the
//!   container's last ACK went out, what the container sends on the tuple
//!   (its TIME_WAIT answering such a SYN) is left to the kernel.
//! - Anything else may be a container reaching a published port through a
//!   host address (hairpin, `forward`).
//! - Later fragments follow their first one's flow; ICMP errors from a
//!   container about a portfwd flow are translated for the client.
//! - What is none of these is left to the host.
use portfwd_common::{stat, CtKey, CT_F_ACK, CT_F_CLOSING, HOT_BACKEND, HOT_HOST};

use super::{
    forward, mtu, settle,
    state::{Home, State},
    Pending,
};
use crate::{
    conntrack::{self, CtRef},
    family::{Family, Flow, IcmpError, Kind, Side, TCP_ACK, TCP_SYN},
    mapping,
    pkt::{Drop, Outcome, Packet, Ret, Verdict},
    stats::{self, Dir},
    xlate::{frag, icmp, reset, rnat},
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
            // A reply comes from a container port; a hairpin packet goes to a
            // published host port; an error quotes what portfwd delivered to a
            // container port.
            let hot = match parsed.kind {
                Kind::Flow => {
                    mapping::hot(HOT_BACKEND, q.proto, q.sport_be)
                        || mapping::hot(HOT_HOST, q.proto, q.dport_be)
                }
                Kind::Icmp => mapping::hot(HOT_BACKEND, q.proto, q.dport_be),
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
        let now = pending.now;
        if flow.first_fragment {
            let id = &flow.frag_id();
            // A container sends a datagram's fragments in order.
            frag::record(id, flow.sport_be, flow.dport_be, now);
        }
        let key = flow.key();
        match conntrack::lookup::<F>(&key, now) {
            Some(e) if e.get().is_reply() => reply::<F, P>(p, flow, &key, e, pending),
            entry => hairpin::<F, P>(p, flow, &key, entry, pending),
        }
    })
}

/// A container's reply on a flow portfwd created.
#[inline(always)]
fn reply<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &CtKey<F::Addr>,
    mut e: CtRef<F::Addr>,
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    let now = pending.now;
    if flow.is_tcp()
        && flow.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
        && foreign::<F>(key, &e, now)
    {
        conntrack::remove::<F>(key, e.get());
        stats::count(stat::CT_FOREIGN);
        return Ok(Verdict::Pass);
    }
    if conntrack::after_close(&mut e, flow) {
        stats::count(stat::CT_FOREIGN);
        return Ok(Verdict::Pass);
    }
    conntrack::account::<F>(key, &mut e, flow, now);
    if let Some(outcome) = reset::if_killed::<F, P>(p, flow, e.get_mut(), pending) {
        return outcome;
    }
    let entry = e.get();
    let cut_mtu = match mtu::check::<F, P>(p, flow, entry.ifindex, entry.nat_addr_be, pending) {
        Ok(cut_mtu) => cut_mtu,
        Err(answer) => return answer,
    };
    stats::mapping(entry.stats_slot, Dir::Reverse, flow.l3_len as u64, false);
    rnat::apply::<F, P>(p, flow, entry)?;
    stats::count(stat::REVERSE_NAT);
    mtu::send::<F, P>(p, cut_mtu, entry.ifindex, pending)
}

/// True if a SYN-ACK on reply entry `e` (stored at `key`) answers a SYN
/// portfwd did not forward: the flow's forward entry is gone, finished, or
/// past its handshake (a SYN from the client on such a tuple would have
/// replaced both entries).
#[inline(always)]
fn foreign<F: Family>(key: &CtKey<F::Addr>, e: &CtRef<F::Addr>, now: u64) -> bool {
    let Some(fwd) = conntrack::lookup::<F>(&e.get().sibling_key(key), now) else {
        return true;
    };
    (fwd.get().flags | e.get().flags) & CT_F_CLOSING != 0 || fwd.get().flags & CT_F_ACK != 0
}

/// Not a reply: perhaps a container reaching a published port on one of the
/// host's addresses. `entry` is the live (forward) entry for its tuple.
#[inline(always)]
fn hairpin<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &CtKey<F::Addr>,
    entry: Option<CtRef<F::Addr>>,
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    match &entry {
        // An outside client's tuple arriving from the bridge: left alone.
        Some(e) if !e.get().is_hairpin() => return Ok(Verdict::Pass),
        Some(_) => {}
        None => {
            // Most of what containers send is neither: the rest of their TCP
            // flows (only a SYN starts a hairpin flow) and traffic to other
            // hosts. Checked cheapest first.
            if flow.is_tcp() && !flow.is_syn() || !mapping::is_local::<F>(flow.daddr_be) {
                return Ok(Verdict::Pass);
            }
        }
    }
    forward::translate::<F, P>(p, flow, key, entry, true, pending)
}

/// A later fragment from a container: a reply's, or a hairpin datagram's.
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
            return Ok(Verdict::Pass);
        };
        let key = CtKey::new(id.saddr_be, id.daddr_be, sport, dport, id.proto);
        let Some(mut e) = conntrack::lookup::<F>(&key, now) else {
            return Ok(Verdict::Pass);
        };
        if !e.get().is_reply() {
            if !e.get().is_hairpin() {
                return Ok(Verdict::Pass);
            }
            return forward::follow_fragment::<F, P>(p, f, e, pending);
        }
        conntrack::account_fragment(&mut e, f.l3_len);
        let entry = e.get();
        let cut_mtu = match mtu::check::<F, P>(p, f, entry.ifindex, entry.nat_addr_be, pending) {
            Ok(cut_mtu) => cut_mtu,
            Err(answer) => return answer,
        };
        stats::mapping(entry.stats_slot, Dir::Reverse, f.l3_len as u64, false);
        F::set_l3_addr(p, Side::Src, id.saddr_be, entry.nat_addr_be)?;
        if entry.is_hairpin() {
            F::set_l3_addr(p, Side::Dst, id.daddr_be, entry.peer_addr_be)?;
        }
        stats::count(stat::FRAGMENT_FORWARDED);
        mtu::send::<F, P>(p, cut_mtu, entry.ifindex, pending)
    })
}

/// An error from a container quotes the packet portfwd delivered to it
/// (client -> container); the flow's reply entry is that tuple reversed.
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
        if !ent.is_reply() {
            return Ok(Verdict::Pass);
        }
        if !icmp::verifies::<F, P>(p, e) {
            return Err(Drop(stat::DROP_ICMP_CSUM));
        }
        icmp::translate::<F, P>(p, q, e, ent, icmp::Toward::Client)?;
        stats::count(stat::ICMP_TO_CLIENT);
        p.redirect_neigh(ent.ifindex)
    })
}
