//! The maps, declared once. Layouts live in `portfwd-common`.
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use portfwd_common::{
    Backend, CtEntry, CtKey, MapKey, MapStats, PortKey, SockRevKey, SockRevValue, CONNTRACK_MAX,
    LOCAL_ADDRS_MAX, MAPPINGS_MAX, SOCK_REVERSE_MAX, STATS_MAX,
};

/// Published host ports -> container endpoints. Written by userspace only.
#[map(name = "pf_map")]
pub static MAPPINGS: HashMap<MapKey, Backend> = HashMap::with_max_entries(MAPPINGS_MAX, 0);

/// Published ports on any address (value: number of mappings), for bind4.
#[map(name = "pf_ports")]
pub static PORTS: HashMap<PortKey, u32> = HashMap::with_max_entries(MAPPINGS_MAX, 0);

/// Per-mapping traffic counters, created by userspace with the mapping.
#[map(name = "pf_mstats")]
pub static MAPPING_STATS: PerCpuHashMap<MapKey, MapStats> =
    PerCpuHashMap::with_max_entries(MAPPINGS_MAX, 0);

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

/// Socket hooks: (socket, container endpoint) -> the address the application
/// used, to show it again in recvmsg and getpeername.
#[map(name = "pf_sockrev")]
pub static SOCK_REVERSE: LruHashMap<SockRevKey, SockRevValue> =
    LruHashMap::with_max_entries(SOCK_REVERSE_MAX, 0);
