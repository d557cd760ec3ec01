//! TC ingress on the external interfaces: packets from outside.
//!
//! Not TCP/UDP of this family, a fragment, or addressed to loopback (a
//! martian on the wire): untouched. A hairpin flow's tuple arriving from
//! outside is not ours to follow or take over. Everything else may be
//! toward a published port (`forward`).
use portfwd_common::stat;

use super::forward;
use crate::{
    conntrack,
    family::{Family, Parsed},
    pkt::{Outcome, Packet, Verdict},
    stats,
};

#[inline(always)]
pub fn run<F: Family, P: Packet>(p: &P) -> Outcome {
    let flow = match F::parse(p) {
        Parsed::Flow(flow) => flow,
        Parsed::Fragment => {
            // Ports are not in every fragment; the host stack gets them as
            // they are (see README, "IP fragments").
            stats::count(stat::FRAGMENT_PASSED);
            return Ok(Verdict::Pass);
        }
        Parsed::Other => return Ok(Verdict::Pass),
    };
    if F::is_loopback(flow.daddr_be) {
        return Ok(Verdict::Pass);
    }
    let now = conntrack::now();
    let key = flow.key();
    let entry = conntrack::lookup::<F>(&key, now).filter(|e| !e.get().is_reply());
    if entry.as_ref().is_some_and(|e| e.get().is_hairpin()) {
        return Ok(Verdict::Pass);
    }
    forward::translate::<F, P>(p, &flow, &key, entry, false, now)
}
