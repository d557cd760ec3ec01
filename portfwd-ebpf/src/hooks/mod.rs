//! One orchestrator per attach point: it parses, consults conntrack and the
//! mapping table, and decides which leaf transform (`xlate`) applies.
//! `forward` is the decision both orchestrators share: a packet toward a
//! published port; `mtu` the check before every redirect.
//!
//! Stack: BPF programs have 512 bytes over the whole call chain. Parsing and
//! each orchestrator's handling are subprograms of their own, and the rare,
//! stack-hungry steps (starting a flow, answering "fragmentation needed",
//! cutting a packet into fragments, replaying fragments that waited,
//! bouncing a killed flow's RST) are not called from deep inside the
//! handling: it leaves them in a `Pending` in the entry point's frame, and
//! `settle` runs them from there, one call deep.
pub mod bridge_ingress;
pub mod ext_ingress;
mod forward;
mod mtu;
mod state;

use portfwd_common::{stat, Addr};

use crate::{
    family::{v4::Ipv4, v6::Ipv6, Family, Flow},
    mapping::Matched,
    pkt::{Drop, Outcome, Packet, Ret, Verdict},
    xlate::{frag, icmp, reset},
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
    /// Send the packet, a first fragment, on with the `waiting` fragments of
    /// its datagram that came before it (see `frag::replay`).
    Replay,
    /// Bounce the packet of a killed flow back to its sender as a RST (see
    /// `reset::reflect`).
    Reflect,
}

/// A step left for the entry point's frame (see the module's comment), with
/// what it needs. Every field set (as `Parsed`): it lives in memory.
#[derive(Clone, Copy, Default)]
pub struct Pending<A> {
    pub what: Step,
    pub mtu: u32,
    pub ifindex: u32,
    pub hairpin: bool,
    pub waiting: u8,
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
) -> Outcome
where
    F::Addr: frag::FragMaps,
{
    for _ in 0..2 {
        if !matches!(outcome, Ok(Verdict::Pending)) {
            return outcome;
        }
        let what = pending.what;
        pending.what = Step::Nothing;
        outcome = match what {
            Step::StartFlow => forward::start_flow::<F, P>(p, flow, pending).outcome(),
            Step::TooBig => {
                icmp::send_too_big::<F, P>(p, pending.from, pending.mtu, pending.now).outcome()
            }
            Step::Cut => F::cut(p, pending.mtu, pending.ifindex).outcome(),
            Step::Replay => frag::replay(p, &flow.frag_id(), pending.waiting).outcome(),
            Step::Reflect => reset::reflect::<F, P>(p, flow).outcome(),
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

/// Runs `v4` or `v6` for a packet of that family; passes any other.
#[inline(always)]
pub fn by_family<P: Packet>(
    p: &P,
    v4: impl FnOnce(&P) -> Ret,
    v6: impl FnOnce(&P) -> Ret,
) -> Outcome {
    if Ipv4::is_family(p) {
        v4(p).outcome()
    } else if Ipv6::is_family(p) {
        v6(p).outcome()
    } else {
        Ok(Verdict::Pass)
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
