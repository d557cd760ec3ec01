//! The maps, declared once. Layouts live in `portfwd-common`.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use portfwd_common::{
    Backend, CtEntry, CtKey, MapKey, CONNTRACK_MAX, LOCAL_ADDRS_MAX, MAPPINGS_MAX, STATS_MAX,
};

/// Published host ports -> container endpoints. Written by userspace only.
#[map(name = "pf_map")]
pub static MAPPINGS: HashMap<MapKey, Backend> = HashMap::with_max_entries(MAPPINGS_MAX, 0);

/// Two entries per flow, one per direction (see `CtEntry`).
#[map(name = "pf_ct")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry> = LruHashMap::with_max_entries(CONNTRACK_MAX, 0);

/// The host's own IPv4 addresses (key: address, value: ifindex). A wildcard
/// mapping applies only to packets addressed to one of these.
#[map(name = "pf_local")]
pub static LOCAL_ADDRS: HashMap<u32, u32> = HashMap::with_max_entries(LOCAL_ADDRS_MAX, 0);

/// Per-CPU counters indexed by `portfwd_common::stat` codes.
#[map(name = "pf_stats")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_MAX, 0);
