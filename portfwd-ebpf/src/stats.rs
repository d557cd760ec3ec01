//! Per-CPU event and drop-reason counters, and per-mapping traffic counters.
use portfwd_common::{MapKey, MapStats};

use crate::maps::{MAPPING_STATS, STATS};

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

/// Direction of a packet through a mapping.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    Forward,
    Reverse,
}

/// Adds a packet of `bytes` to the counters of mapping
/// (`map_addr_be`, `port_be`, `proto`); `new_flow` also counts a connection.
/// The counters entry is created by userspace with the mapping; a packet of a
/// mapping that has been removed (a draining flow) is not counted.
#[inline(always)]
pub fn mapping(map_addr_be: u32, port_be: u16, proto: u8, dir: Dir, bytes: u64, new_flow: bool) {
    let key = MapKey {
        addr_be: map_addr_be,
        port_be,
        proto,
        pad: 0,
    };
    let Some(s) = MAPPING_STATS.get_ptr_mut(&key) else {
        return;
    };
    // SAFETY: a per-CPU hash value from a successful lookup: valid for this
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
