//! TC ingress on the bridge: packets from the containers.
//!
//! A reply that matches a conntrack reply entry gets its source set back to
//! the host address and port the client used, and is redirected out of the
//! interface the client came in on (a hairpin reply also gets its
//! destination set back to the client). Anything else may be a container
//! reaching a published port through a host address (hairpin, `forward`);
//! what is neither is left to the host.
use portfwd_common::stat;

use super::forward;
use crate::{
    conntrack::{self, CtRef},
    family::{Family, Flow, Parsed},
    mapping,
    pkt::{Outcome, Packet, Verdict},
    stats::{self, Dir},
    xlate::{reset, rnat},
};

#[inline(always)]
pub fn run<F: Family, P: Packet>(p: &P) -> Outcome {
    let Parsed::Flow(flow) = F::parse(p) else {
        return Ok(Verdict::Pass);
    };
    let now = conntrack::now();
    let key = flow.key();
    match conntrack::lookup::<F>(&key, now) {
        Some(e) if e.get().is_reply() => reply::<F, P>(p, &flow, &key, e, now),
        entry => hairpin::<F, P>(p, &flow, &key, entry, now),
    }
}

/// A container's reply on a flow portfwd created.
#[inline(always)]
fn reply<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &portfwd_common::CtKey<F::Addr>,
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
        Dir::Reverse,
        flow.l3_len as u64,
        false,
    );
    rnat::apply::<F, P>(p, flow, entry)?;
    stats::count(stat::REVERSE_NAT);
    p.redirect_neigh(entry.ifindex)
}

/// Not a reply: perhaps a container reaching a published port on one of the
/// host's addresses. `entry` is the live (forward) entry for its tuple.
#[inline(always)]
fn hairpin<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    key: &portfwd_common::CtKey<F::Addr>,
    entry: Option<CtRef<F::Addr>>,
    now: u64,
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
    forward::translate::<F, P>(p, flow, key, entry, true, now)
}
