//! Every map's name (as in the eBPF object and as its pin file name), key and
//! value size and capacity: one table, read by the loader to check pinned
//! state and by the tests to check the object.
use core::mem::size_of;

use crate::{
    addr::{V4, V6},
    Backend, CtEntry, CtKey, FragEntry, FragKey, FragQueued, MapKey, MapStats, PortKey, SockRevKey,
    SockRevValue,
};

pub const MAPPINGS_MAX: u32 = 65_536;
pub const CONNTRACK_MAX: u32 = 131_072;
pub const LOCAL_ADDRS_MAX: u32 = 1_024;
pub const STATS_MAX: u32 = 256;
pub const SOCK_REVERSE_MAX: u32 = 65_536;
/// Datagrams whose fragments are being tracked at once.
pub const FRAG_MAX: u32 = 8_192;
/// Early fragments waiting for their first one, over all datagrams.
pub const FRAG_QUEUE_MAX: u32 = 512;

/// Bump when a map's meaning changes without its sizes changing; pinned
/// state written under another version is refused (see `pf_meta`). 4: the
/// IPv6 maps, which state pinned by version 3 lacks. 5: conntrack entries
/// carry the table generation they were checked at. 6: `Backend::flags` and
/// the two halves of `pf_ports` values.
pub const LAYOUT_VERSION: u64 = 6;
/// Index of the layout version in `pf_meta`.
pub const META_LAYOUT: u32 = 0;
/// Index in `pf_meta` of where userspace looks for the next free stats slot:
/// slots are handed out round the array, so that a removed mapping's slot,
/// still counted into by its draining flows, is not given out again soon.
pub const META_SLOT_HINT: u32 = 2;
pub const META_NETNS_INO: u32 = 1; // index of the netns inode (st_ino of /proc/self/ns/net)
/// Index in `pf_meta` of the mapping table's generation: userspace adds one
/// after every change to the mappings or the host's addresses, so that the
/// datapath knows when a flow's endpoint must be looked up again.
pub const META_GENERATION: u32 = 3;
pub const META_MAX: u32 = 4;

/// Names are at most 15 characters (the kernel's BPF_OBJ_NAME_LEN - 1).
pub const MAP_META: &str = "pf_meta";
pub const MAP_MAPPINGS4: &str = "pf_map4";
pub const MAP_CONNTRACK4: &str = "pf_ct4";
pub const MAP_LOCAL_ADDRS4: &str = "pf_local4";
/// Per-mapping counters, by slot: one array for both families.
pub const MAP_MAPPING_STATS: &str = "pf_mstats";
/// Which slots of `pf_mstats` mappings hold (a bitmap of u64 words).
pub const MAP_SLOTS: &str = "pf_slots";
pub const SLOT_WORDS: u32 = MAPPINGS_MAX / 64;
pub const MAP_SOCK_REVERSE4: &str = "pf_sockrev4";
pub const MAP_MAPPINGS6: &str = "pf_map6";
pub const MAP_CONNTRACK6: &str = "pf_ct6";
pub const MAP_LOCAL_ADDRS6: &str = "pf_local6";
pub const MAP_SOCK_REVERSE6: &str = "pf_sockrev6";
pub const MAP_FRAG6: &str = "pf_frag6";
pub const MAP_FRAG_QUEUE6: &str = "pf_fragq6";
pub const MAP_STATS: &str = "pf_stats";
pub const MAP_PORTS: &str = "pf_ports";
pub const MAP_HOT: &str = "pf_hot";
pub const MAP_FRAG4: &str = "pf_frag4";
pub const MAP_FRAG_QUEUE4: &str = "pf_fragq4";
/// Per-CPU token bucket for the ICMP errors portfwd itself sends.
pub const MAP_ICMP_RATE: &str = "pf_icmprl";
/// Not pinned: room to cut a datagram into fragments, one entry per
/// possible CPU (the loader sizes it).
pub const MAP_CUT4: &str = "pf_cut4";

/// One map of the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapSpec {
    pub name: &'static str,
    pub key_size: usize,
    pub value_size: usize,
    pub max_entries: u32,
}

const fn spec(name: &'static str, key_size: usize, value_size: usize, max: u32) -> MapSpec {
    assert!(name.len() <= 15);
    MapSpec {
        name,
        key_size,
        value_size,
        max_entries: max,
    }
}

pub const MAPS: &[MapSpec] = &[
    spec(MAP_META, 4, 8, META_MAX),
    spec(
        MAP_MAPPINGS4,
        size_of::<MapKey<V4>>(),
        size_of::<Backend<V4>>(),
        MAPPINGS_MAX,
    ),
    spec(
        MAP_CONNTRACK4,
        size_of::<CtKey<V4>>(),
        size_of::<CtEntry<V4>>(),
        CONNTRACK_MAX,
    ),
    spec(MAP_LOCAL_ADDRS4, 4, 4, LOCAL_ADDRS_MAX),
    spec(MAP_MAPPING_STATS, 4, size_of::<MapStats>(), MAPPINGS_MAX),
    spec(MAP_SLOTS, 4, 8, SLOT_WORDS),
    spec(
        MAP_SOCK_REVERSE4,
        size_of::<SockRevKey<V4>>(),
        size_of::<SockRevValue<V4>>(),
        SOCK_REVERSE_MAX,
    ),
    spec(MAP_STATS, 4, 8, STATS_MAX),
    spec(MAP_PORTS, size_of::<PortKey>(), 4, MAPPINGS_MAX),
    spec(MAP_HOT, 4, 8, crate::HOT_WORDS),
    spec(
        MAP_FRAG4,
        size_of::<FragKey<V4>>(),
        size_of::<FragEntry>(),
        FRAG_MAX,
    ),
    spec(
        MAP_FRAG_QUEUE4,
        size_of::<FragKey<V4>>(),
        size_of::<FragQueued>(),
        FRAG_QUEUE_MAX,
    ),
    spec(MAP_ICMP_RATE, 4, size_of::<IcmpRate>(), 1),
    spec(
        MAP_MAPPINGS6,
        size_of::<MapKey<V6>>(),
        size_of::<Backend<V6>>(),
        MAPPINGS_MAX,
    ),
    spec(
        MAP_CONNTRACK6,
        size_of::<CtKey<V6>>(),
        size_of::<CtEntry<V6>>(),
        CONNTRACK_MAX,
    ),
    spec(MAP_LOCAL_ADDRS6, 16, 4, LOCAL_ADDRS_MAX),
    spec(
        MAP_SOCK_REVERSE6,
        size_of::<SockRevKey<V6>>(),
        size_of::<SockRevValue<V6>>(),
        SOCK_REVERSE_MAX,
    ),
    spec(
        MAP_FRAG6,
        size_of::<FragKey<V6>>(),
        size_of::<FragEntry>(),
        FRAG_MAX,
    ),
    spec(
        MAP_FRAG_QUEUE6,
        size_of::<FragKey<V6>>(),
        size_of::<FragQueued>(),
        FRAG_QUEUE_MAX,
    ),
];

/// Value of `pf_icmprl` (per-CPU): tokens left and when they were counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpRate {
    pub last_ns: u64,
    pub tokens: u64,
}
/// ICMP errors portfwd sends, per CPU: a burst of this many, refilled at
/// `ICMP_RATE_PER_SEC`.
pub const ICMP_RATE_BURST: u64 = 50;
pub const ICMP_RATE_PER_SEC: u64 = 1_000;

crate::assert_layout!(IcmpRate = u64, u64; 16);

/// The entry of `MAPS` named `name`.
pub fn find(name: &str) -> Option<&'static MapSpec> {
    let mut i = 0;
    while i < MAPS.len() {
        if str_eq(MAPS[i].name, name) {
            return Some(&MAPS[i]);
        }
        i += 1;
    }
    None
}

fn str_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes() == b.as_bytes()
}
