//! The one definition of every map key and value shared by portfwd's eBPF
//! programs and its userspace loader.
//!
//! Conventions:
//! - every type is `#[repr(C)]`, made of integers only, with explicit `pad`
//!   fields so that no byte is left uninitialised;
//! - a field that holds network byte order says so in its name (`addr_be`,
//!   `port_be`): its in-memory bytes are the bytes on the wire;
//! - sizes are asserted at compile time, so a layout change is a build error on
//!   both sides at once.
#![no_std]

use bytemuck::{Pod, Zeroable};

pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// Map names, as they appear in the eBPF object and as pin file names.
/// Each is at most 15 characters (the kernel's BPF_OBJ_NAME_LEN - 1).
pub const MAP_MAPPINGS: &str = "pf_map";
pub const MAP_CONNTRACK: &str = "pf_ct";
pub const MAP_LOCAL_ADDRS: &str = "pf_local";
pub const MAP_STATS: &str = "pf_stats";
pub const MAP_MAPPING_STATS: &str = "pf_mstats";
pub const MAP_PORTS: &str = "pf_ports";
pub const MAP_SOCK_REVERSE: &str = "pf_sockrev";
pub const ALL_MAPS: [&str; 7] = [
    MAP_MAPPINGS,
    MAP_CONNTRACK,
    MAP_LOCAL_ADDRS,
    MAP_STATS,
    MAP_MAPPING_STATS,
    MAP_PORTS,
    MAP_SOCK_REVERSE,
];

/// Load-time global: the cookie of the network namespace portfwd is attached
/// in (the "host"). The socket hooks run for every namespace and use it to
/// tell the host's own sockets from containers'.
pub const GLOBAL_HOST_NETNS: &str = "HOST_NETNS";

/// Program names (the `#[classifier]` function names).
pub const PROG_EXTERNAL_INGRESS: &str = "pf_ext_in";
pub const PROG_BRIDGE_INGRESS: &str = "pf_br_in";
/// cgroup sock_addr programs for clients on the host and in containers.
pub const PROG_CONNECT4: &str = "pf_connect4";
pub const PROG_SENDMSG4: &str = "pf_sendmsg4";
pub const PROG_RECVMSG4: &str = "pf_recvmsg4";
pub const PROG_GETPEERNAME4: &str = "pf_getpeer4";
/// cgroup bind4: keeps host processes off published ports.
pub const PROG_BIND4: &str = "pf_bind4";

pub const MAPPINGS_MAX: u32 = 65_536;
pub const CONNTRACK_MAX: u32 = 131_072;
pub const LOCAL_ADDRS_MAX: u32 = 1_024;
pub const STATS_MAX: u32 = 256;
pub const SOCK_REVERSE_MAX: u32 = 65_536;

/// Key of `pf_map`: a published host port.
///
/// `addr_be == 0` means "any local address" (the default when SPEC has no
/// HOST_IP). A packet is matched against its exact destination first, then
/// against the wildcard if its destination is one of the host's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct MapKey {
    pub addr_be: u32,
    pub port_be: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Value of `pf_map`: the container endpoint a host port forwards to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Backend {
    pub addr_be: u32,
    pub port_be: u16,
    pub pad: u16,
    /// The bridge the container sits on; forwarded packets are redirected there.
    pub bridge_ifindex: u32,
}

/// Key of `pf_ct`: a 5-tuple as seen on the wire in one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct CtKey {
    pub saddr_be: u32,
    pub daddr_be: u32,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub pad: [u8; 3],
}

/// `CtEntry::dir`: the entry for packets from the client toward the host port.
pub const CT_DIR_FORWARD: u8 = 1;
/// `CtEntry::dir`: the entry for replies from the container toward the client.
pub const CT_DIR_REPLY: u8 = 2;

/// `CtEntry::flags` bits.
pub const CT_F_SYN: u8 = 1 << 0;
pub const CT_F_FIN: u8 = 1 << 1;
pub const CT_F_RST: u8 = 1 << 2;
pub const CT_F_ACK: u8 = 1 << 3;
/// Set by `portfwd del --kill`: the flow is to be reset.
pub const CT_F_KILL: u8 = 1 << 5;
/// A killed flow's packet in this entry's direction was already turned into
/// a RST for its receiver; later ones are bounced back to their sender as RSTs.
pub const CT_F_KILL_SENT: u8 = 1 << 6;
/// Both FINs or a RST were seen: the entry's lifetime is no longer extended.
pub const CT_F_CLOSING: u8 = 1 << 7;

/// Conntrack lifetimes (nanoseconds, measured from the last packet).
/// TCP before the handshake completes.
pub const CT_LIFETIME_TCP_SYN_NS: u64 = 60 * 1_000_000_000;
/// TCP once both sides have spoken (as Cilium: 6 hours).
pub const CT_LIFETIME_TCP_NS: u64 = 21_600 * 1_000_000_000;
/// TCP after both FINs or a RST.
pub const CT_LIFETIME_CLOSE_NS: u64 = 10 * 1_000_000_000;
/// UDP, refreshed by a datagram in either direction.
pub const CT_LIFETIME_UDP_NS: u64 = 60 * 1_000_000_000;

/// Value of `pf_ct`. A flow has two entries, one per direction; each knows
/// enough to find its sibling:
/// - forward entry (key client -> host:port): `nat_*` is the container
///   endpoint the destination is rewritten to, `ifindex` the bridge;
/// - reply entry (key container -> `peer` or client): `nat_*` is the host
///   address and port the source is rewritten back to, `ifindex` the
///   interface the client came in on.
///
/// Hairpin flows (a container on the bridge reaching a published port
/// through a host address) are source-NATed as well, since the container's
/// reply would otherwise go straight back over the bridge. For them `peer_*`
/// is non-zero: on the forward entry it is the source the packet is
/// rewritten to (the host address the client used, with a free port), on the
/// reply entry the client's own address and port the destination is
/// rewritten back to. Other flows have `peer_addr_be == 0`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CtEntry {
    /// `bpf_ktime_get_ns()` after which the entry is dead.
    pub expires_ns: u64,
    pub created_ns: u64,
    /// Packets and bytes (L3 length) seen in this entry's direction.
    pub packets: u64,
    pub bytes: u64,
    pub nat_addr_be: u32,
    pub nat_port_be: u16,
    pub dir: u8,
    pub flags: u8,
    pub ifindex: u32,
    /// Host address of the mapping the flow came in through (0: the
    /// wildcard): with the host port and protocol it names the mapping's
    /// `pf_mstats` entry.
    pub map_addr_be: u32,
    /// Hairpin flows only, else 0 (see above).
    pub peer_addr_be: u32,
    pub peer_port_be: u16,
    pub pad: u16,
}

impl CtEntry {
    /// True for the entries of a hairpin flow (source-NATed too).
    pub fn is_hairpin(&self) -> bool {
        self.peer_addr_be != 0
    }

    /// True if this is the reply entry of a hairpin flow from client
    /// `addr_be:port_be`: that client starting over on the same tuple may
    /// take the entry's source port again.
    pub fn is_reply_to(&self, addr_be: u32, port_be: u16) -> bool {
        self.dir == CT_DIR_REPLY && self.peer_addr_be == addr_be && self.peer_port_be == port_be
    }

    /// The key of the other direction of the flow this entry (stored at
    /// `key`) belongs to: forward client -> host:port pairs with reply
    /// container -> client (container -> peer for hairpin flows), and the
    /// reverse.
    pub fn sibling_key(&self, key: &CtKey) -> CtKey {
        let hairpin = self.is_hairpin();
        if self.dir == CT_DIR_FORWARD {
            CtKey {
                saddr_be: self.nat_addr_be,
                daddr_be: if hairpin {
                    self.peer_addr_be
                } else {
                    key.saddr_be
                },
                sport_be: self.nat_port_be,
                dport_be: if hairpin {
                    self.peer_port_be
                } else {
                    key.sport_be
                },
                proto: key.proto,
                pad: [0; 3],
            }
        } else {
            CtKey {
                saddr_be: if hairpin {
                    self.peer_addr_be
                } else {
                    key.daddr_be
                },
                daddr_be: self.nat_addr_be,
                sport_be: if hairpin {
                    self.peer_port_be
                } else {
                    key.dport_be
                },
                dport_be: self.nat_port_be,
                proto: key.proto,
                pad: [0; 3],
            }
        }
    }
}

/// Value of `pf_mstats` (per-CPU hash keyed by `MapKey`): what went through
/// one mapping. "fwd" is client -> container, "rev" container -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MapStats {
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub rev_packets: u64,
    pub rev_bytes: u64,
    /// Flows created (TCP connections, UDP client address/port pairs).
    pub connections: u64,
}

/// Key of `pf_ports`: a published port and protocol on any address. Its value
/// counts the mappings on it; bind(2) to the wildcard address checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct PortKey {
    pub port_be: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Key of `pf_sockrev`: a socket (by cookie) and the container endpoint the
/// socket hooks sent it to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct SockRevKey {
    pub cookie: u64,
    pub addr_be: u32,
    pub port_be: u16,
    pub pad: u16,
}

/// Value of `pf_sockrev`: the address the application asked for, restored in
/// recvmsg(2) and getpeername(2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SockRevValue {
    pub addr_be: u32,
    pub port_be: u16,
    pub pad: u16,
}

/// Indices of `pf_stats` (a per-CPU array of u64 counters).
///
/// Events are numbered from 1; drop reasons from 130 up, a code set disjoint
/// from TC verdicts (TC_ACT_* are -1..=8), so a reason can never be mistaken
/// for a verdict.
pub mod stat {
    pub const DNAT: u32 = 1;
    pub const REVERSE_NAT: u32 = 2;
    pub const CT_NEW: u32 = 3;
    pub const FRAGMENT_PASSED: u32 = 4;
    pub const CT_EXPIRED: u32 = 5;
    pub const KILL_RST_FORWARDED: u32 = 6;
    pub const KILL_RST_REFLECTED: u32 = 7;
    pub const SOCK_REWRITTEN: u32 = 8;
    pub const BIND_REFUSED: u32 = 9;
    pub const HAIRPIN: u32 = 10;
    /// A hairpin flow took another source port: the client's own was in use.
    pub const HAIRPIN_PORT_MOVED: u32 = 11;

    pub const DROP_CSUM_L3: u32 = 130;
    pub const DROP_CSUM_L4: u32 = 131;
    pub const DROP_STORE: u32 = 132;
    pub const DROP_CT_CREATE: u32 = 133;
    pub const DROP_REDIRECT: u32 = 134;
    /// No free source port for a hairpin flow.
    pub const DROP_NO_PORT: u32 = 135;

    /// (code, name) for every counter, for userspace reports.
    pub const NAMES: [(u32, &str); 17] = [
        (DNAT, "dnat"),
        (REVERSE_NAT, "reverse_nat"),
        (CT_NEW, "ct_new"),
        (FRAGMENT_PASSED, "fragment_passed"),
        (CT_EXPIRED, "ct_expired"),
        (KILL_RST_FORWARDED, "kill_rst_forwarded"),
        (KILL_RST_REFLECTED, "kill_rst_reflected"),
        (SOCK_REWRITTEN, "sock_rewritten"),
        (BIND_REFUSED, "bind_refused"),
        (HAIRPIN, "hairpin"),
        (HAIRPIN_PORT_MOVED, "hairpin_port_moved"),
        (DROP_CSUM_L3, "drop_csum_l3"),
        (DROP_CSUM_L4, "drop_csum_l4"),
        (DROP_STORE, "drop_store"),
        (DROP_CT_CREATE, "drop_ct_create"),
        (DROP_REDIRECT, "drop_redirect"),
        (DROP_NO_PORT, "drop_no_port"),
    ];
}

const _: () = assert!(core::mem::size_of::<MapKey>() == 8);
const _: () = assert!(core::mem::size_of::<Backend>() == 12);
const _: () = assert!(core::mem::size_of::<CtKey>() == 16);
const _: () = assert!(core::mem::size_of::<CtEntry>() == 56);
const _: () = assert!(core::mem::size_of::<MapStats>() == 40);
const _: () = assert!(core::mem::size_of::<PortKey>() == 4);
const _: () = assert!(core::mem::size_of::<SockRevKey>() == 16);
const _: () = assert!(core::mem::size_of::<SockRevValue>() == 8);
const _: () = assert!(stat::DROP_NO_PORT < STATS_MAX);

#[cfg(feature = "user")]
mod user {
    // SAFETY: each type is #[repr(C)], integers only, with explicit padding
    // (bytemuck's Pod derive checks there are no implicit padding bytes).
    unsafe impl aya::Pod for super::MapKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MapStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PortKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockRevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SockRevValue {}
}
