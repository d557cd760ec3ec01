//! One orchestrator per attach point: it parses, consults conntrack and the
//! mapping table, and decides which leaf transform (`xlate`) applies.
//! `forward` is the decision both orchestrators share: a packet toward a
//! published port; `mtu` the check before every redirect.
//!
//! Stack: BPF programs have 512 bytes over the whole call chain. Parsing and
//! each orchestrator's handling are subprograms of their own, and the rare,
//! stack-hungry steps (starting a flow, answering "fragmentation needed",
//! cutting a packet into fragments) are not called from deep inside the
//! handling: it leaves them in a `Pending` in the entry point's frame, and
//! `settle` runs them from there, one call deep.
pub mod bridge_ingress;
pub mod ext_ingress;
mod forward;
mod mtu;

use portfwd_common::{stat, Addr};

use crate::{
    family::{Family, Flow},
    mapping::Matched,
    pkt::{Drop, Outcome, Packet, Verdict},
    xlate::icmp,
};

/// What `Pending::what` asks for.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
#[repr(u32)]
pub enum Step {
    #[default]
    Nothing,
    /// Start a new flow through `matched` (see `forward::start_flow`).
    StartFlow,
    /// Answer with "fragmentation needed" for `mtu`, from `from`.
    TooBig,
    /// Cut the (rewritten) packet into fragments of at most `mtu` and send
    /// them out of `ifindex`.
    Cut,
}

/// A step left for the entry point's frame (see the module's comment), with
/// what it needs. Every field set (as `Parsed`): it lives in memory.
#[derive(Clone, Copy, Default)]
pub struct Pending<A> {
    pub what: Step,
    pub mtu: u32,
    pub ifindex: u32,
    pub hairpin: bool,
    pub from: A,
    pub matched: Matched<A>,
    pub now: u64,
}

/// Runs the steps an orchestrator's `outcome` (Verdict::Pending) left in
/// `pending` until an outcome is final: starting a flow may leave a cut.
#[inline(always)]
pub fn settle<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    pending: &mut Pending<F::Addr>,
    mut outcome: Outcome,
) -> Outcome {
    for _ in 0..2 {
        if !matches!(outcome, Ok(Verdict::Pending)) {
            return outcome;
        }
        let what = pending.what;
        pending.what = Step::Nothing;
        outcome = match what {
            Step::StartFlow => forward::start_flow::<F, P>(p, flow, pending),
            Step::TooBig => icmp::send_too_big::<F, P>(p, pending.from, pending.mtu, pending.now),
            Step::Cut => F::cut(p, pending.mtu, pending.ifindex),
            Step::Nothing => break,
        };
    }
    match outcome {
        // A step that left another one behind it: not a state the code
        // reaches, and never handed to the kernel as a verdict.
        Ok(Verdict::Pending) => Err(Drop(stat::DROP_STORE)),
        other => other,
    }
}

impl<A: Addr> Pending<A> {
    #[inline(always)]
    pub fn new(now: u64) -> Self {
        Self {
            now,
            ..Self::default()
        }
    }
}
