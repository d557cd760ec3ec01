//! The maps the shared pieces use, declared once (a leaf transform's own
//! maps live with it: `xlate::frag`, `xlate::icmp`). Layouts, names and
//! sizes live in `portfwd-common` (`maps::MAPS`, the pinned ones); the
//! datapath tests check the built object against that table.
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use portfwd_common::{
    Backend, CtEntry, CtKey, MapKey, MapStats, PortKey, SockRevKey, SockRevValue, CONNTRACK_MAX,
    LOCAL_ADDRS_MAX, MAPPINGS_MAX, META_MAX, SLOT_WORDS, SOCK_REVERSE_MAX, STATS_MAX, V4, V6,
};

/// Facts about the pinned state itself (its layout version), and the
/// mapping table's generation, which the datapath reads (`mapping`).
#[map(name = "pf_meta")]
pub static META: Array<u64> = Array::with_max_entries(META_MAX, 0);

/// Which slots of `pf_mstats` mappings hold; userspace only (kept here so
/// that the loader creates and pins it with the rest).
#[map(name = "pf_slots")]
pub static SLOTS: Array<u64> = Array::with_max_entries(SLOT_WORDS, 0);

/// Published host ports -> container endpoints. Written by userspace only.
#[map(name = "pf_map4")]
pub static MAPPINGS4: HashMap<MapKey<V4>, Backend<V4>> = HashMap::with_max_entries(MAPPINGS_MAX, 0);

/// Published ports on any address (value: number of mappings), for bind.
#[map(name = "pf_ports")]
pub static PORTS: HashMap<PortKey, u32> = HashMap::with_max_entries(MAPPINGS_MAX, 0);

/// Per-mapping traffic counters, by the slot userspace gave the mapping
/// (`Backend::stats_slot`), for both families.
#[map(name = "pf_mstats")]
pub static MAPPING_STATS: PerCpuArray<MapStats> = PerCpuArray::with_max_entries(MAPPINGS_MAX, 0);

/// Two entries per flow, one per direction (see `CtEntry`).
#[map(name = "pf_ct4")]
pub static CONNTRACK4: LruHashMap<CtKey<V4>, CtEntry<V4>> =
    LruHashMap::with_max_entries(CONNTRACK_MAX, 0);

/// Where a new flow's entries are built (off the 512-byte stack).
#[map(name = "pf_ctnew4")]
pub static CT_SCRATCH4: PerCpuArray<CtEntry<V4>> = PerCpuArray::with_max_entries(1, 0);

/// The host's own IPv4 addresses (key: address, value: ifindex). A wildcard
/// mapping applies only to packets addressed to one of these.
#[map(name = "pf_local4")]
pub static LOCAL_ADDRS4: HashMap<V4, u32> = HashMap::with_max_entries(LOCAL_ADDRS_MAX, 0);

/// Per-CPU counters indexed by `portfwd_common::stat` codes.
#[map(name = "pf_stats")]
pub static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STATS_MAX, 0);

/// Socket hooks: (socket, container endpoint) -> the address the application
/// used, to show it again in recvmsg and getpeername.
#[map(name = "pf_sockrev4")]
pub static SOCK_REVERSE4: LruHashMap<SockRevKey<V4>, SockRevValue<V4>> =
    LruHashMap::with_max_entries(SOCK_REVERSE_MAX, 0);

/// The IPv6 counterparts of the maps above (see each for what it holds).
#[map(name = "pf_map6")]
pub static MAPPINGS6: HashMap<MapKey<V6>, Backend<V6>> = HashMap::with_max_entries(MAPPINGS_MAX, 0);

#[map(name = "pf_ct6")]
pub static CONNTRACK6: LruHashMap<CtKey<V6>, CtEntry<V6>> =
    LruHashMap::with_max_entries(CONNTRACK_MAX, 0);

#[map(name = "pf_ctnew6")]
pub static CT_SCRATCH6: PerCpuArray<CtEntry<V6>> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "pf_local6")]
pub static LOCAL_ADDRS6: HashMap<V6, u32> = HashMap::with_max_entries(LOCAL_ADDRS_MAX, 0);

#[map(name = "pf_sockrev6")]
pub static SOCK_REVERSE6: LruHashMap<SockRevKey<V6>, SockRevValue<V6>> =
    LruHashMap::with_max_entries(SOCK_REVERSE_MAX, 0);
