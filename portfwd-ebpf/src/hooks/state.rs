//! Where an orchestrator keeps a packet's parse and the step it leaves
//! pending (`State`): IPv4's on the stack; IPv6's, whose addresses are four
//! times as long, in per-CPU map memory, since on the stack they would take
//! the deepest call chain (through `start_flow`) past 512 bytes.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use portfwd_common::{stat, V6};

use super::Pending;
use crate::{
    family::{v4::Ipv4, v6::Ipv6, Family, Parsed},
    pkt::{Drop, Outcome},
};

/// A packet's parse and its pending step.
#[derive(Clone, Copy, Default)]
pub struct State<A> {
    pub parsed: Parsed<A>,
    pub pending: Pending<A>,
}

pub trait Home: Family {
    /// Runs `f` over a `State` whose `parsed` is `Parsed::default()` (its
    /// `pending` is for `f` to set).
    fn with_state(f: impl FnOnce(&mut State<Self::Addr>) -> Outcome) -> Outcome;
}

impl Home for Ipv4 {
    #[inline(always)]
    fn with_state(f: impl FnOnce(&mut State<u32>) -> Outcome) -> Outcome {
        f(&mut State::default())
    }
}

#[map(name = "pf_state6")]
static STATE6: PerCpuArray<State<V6>> = PerCpuArray::with_max_entries(1, 0);

impl Home for Ipv6 {
    #[inline(always)]
    fn with_state(f: impl FnOnce(&mut State<V6>) -> Outcome) -> Outcome {
        let st = STATE6.get_ptr_mut(0).ok_or(Drop(stat::DROP_STORE))?;
        // SAFETY: a per-CPU array value from a successful lookup: valid for
        // the program run and used only by this CPU (a program run is not
        // preempted by another on the same CPU for the same hook).
        let st = unsafe { &mut *st };
        st.parsed = Parsed::default();
        f(st)
    }
}
