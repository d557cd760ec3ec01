//! Per-CPU event and drop-reason counters, and per-mapping traffic counters.
use portfwd_common::MapStats;

use crate::maps::{MAPPING_STATS, STATS};

#[inline(always)]
pub fn count(code: u32) {
    if let Some(slot) = STATS.get_ptr_mut(code) {
        // SAFETY: the pointer comes from a successful lookup in a per-CPU
        // array, so it is valid and only this CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// Direction of a packet through a mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to container.
    Forward,
    /// Container to client.
    Reverse,
}

/// Adds a packet of `bytes` to the counters of the mapping in `slot` of
/// `pf_mstats`; `new_flow` also counts a connection. A per-CPU array: the
/// lookup is an index check and a load, no hash.
#[inline(always)]
pub fn mapping(slot: u32, dir: Dir, bytes: u64, new_flow: bool) {
    let Some(s) = MAPPING_STATS.get_ptr_mut(slot) else {
        return;
    };
    // SAFETY: a per-CPU array value from a successful lookup: valid for this
    // program run and written only by this CPU.
    let s: &mut MapStats = unsafe { &mut *s };
    match dir {
        Dir::Forward => {
            s.fwd_packets += 1;
            s.fwd_bytes += bytes;
        }
        Dir::Reverse => {
            s.rev_packets += 1;
            s.rev_bytes += bytes;
        }
    }
    if new_flow {
        s.connections += 1;
    }
}
