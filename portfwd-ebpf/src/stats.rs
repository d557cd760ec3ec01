//! Per-CPU event and drop-reason counters.
use crate::maps::STATS;

#[inline(always)]
pub fn count(code: u32) {
    if let Some(slot) = STATS.get_ptr_mut(code) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it is valid and only this CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Counts a drop reason and returns TC_ACT_SHOT.
#[inline(always)]
pub fn drop(reason: u32) -> i32 {
    count(reason);
    aya_ebpf::bindings::TC_ACT_SHOT as i32
}
