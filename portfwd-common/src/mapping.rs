//! The mapping table: published host ports and the container endpoints they
//! forward to, per family, and the family-independent port counts for bind.
use crate::addr::{Addr, V4, V6};

/// Key of `pf_map4` / `pf_map6`: a published host port.
///
/// `addr_be` unspecified means "any local address" (the default when SPEC has
/// no HOST_IP). A packet is matched against its exact destination first, then
/// against the wildcard if its destination is one of the host's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MapKey<A> {
    pub addr_be: A,
    pub port_be: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Value of `pf_map4` / `pf_map6`: the container endpoint a host port
/// forwards to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend<A> {
    pub addr_be: A,
    pub port_be: u16,
    /// `BACKEND_F_*` bits.
    pub flags: u16,
    /// The bridge the container sits on; forwarded packets are redirected there.
    pub bridge_ifindex: u32,
    /// The mapping's index in `pf_mstats` (its counters), chosen by
    /// userspace; a flow carries it so that no packet needs a hash lookup to
    /// be counted.
    pub stats_slot: u32,
}

impl<A: Addr> MapKey<A> {
    pub fn new(addr_be: A, port_be: u16, proto: u8) -> Self {
        Self {
            addr_be,
            port_be,
            proto,
            pad: 0,
        }
    }
}

/// A host process may bind the mapping's host port itself: the runtime that
/// published it reserves the port that way (rootful podman's conmon binds
/// the ports it publishes through CNI). The socket gets no traffic: packets
/// to the port are forwarded before they reach it.
pub const BACKEND_F_HOST_MAY_BIND: u16 = 1;

/// The value of `pf_ports` counts the mappings on a port in two halves: the
/// low 16 bits those that refuse host binds (the only ones bind(2) to a
/// wildcard address checks), the high 16 bits those with
/// `BACKEND_F_HOST_MAY_BIND`. A port has far fewer mappings than 65 536 (one
/// per local address of its family, at most).
pub const PORTS_MAY_BIND_SHIFT: u32 = 16;

/// True if a `pf_ports` value counts a mapping that refuses host binds.
#[inline(always)]
pub fn ports_refuse_bind(value: u32) -> bool {
    value & ((1 << PORTS_MAY_BIND_SHIFT) - 1) != 0
}

/// Value of `pf_mstats` (a per-CPU array indexed by `Backend::stats_slot`):
/// what went through one mapping. "fwd" is client -> container, "rev"
/// container -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub rev_packets: u64,
    pub rev_bytes: u64,
    /// Flows created (TCP connections, UDP client address/port pairs).
    pub connections: u64,
}

/// Key of `pf_ports`: a published port and protocol on any address of one
/// family. Its value counts the mappings on it (see `PORTS_MAY_BIND_SHIFT`);
/// bind(2) to a wildcard address checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub port_be: u16,
    pub proto: u8,
    /// `AF_INET` or `AF_INET6`.
    pub af: u8,
}

crate::assert_layout!(MapKey<V4> = V4, u16, u8, u8; 8);
crate::assert_layout!(MapKey<V6> = V6, u16, u8, u8; 20);
crate::assert_layout!(Backend<V4> = V4, u16, u16, u32, u32; 16);
crate::assert_layout!(Backend<V6> = V6, u16, u16, u32, u32; 28);
crate::assert_layout!(MapStats = u64, u64, u64, u64, u64; 40);
crate::assert_layout!(PortKey = u16, u8, u8; 4);

/// `pf_hot`: a bitmap (u64 words in an array) of the ports a packet may be
/// portfwd's on, consulted before any hash lookup so that packets that are
/// not ours cost next to nothing. Bits are set for a mapping's host port
/// (`HOT_HOST`: the destination of packets toward it, the source of its
/// replies as errors quote them) and its container port (`HOT_BACKEND`: the
/// source of the container's replies). Userspace sets them with the mapping
/// and clears them only when neither a mapping nor a live flow uses the port
/// (`portfwd watch`, attach): a port of a removed mapping stays hot while its
/// flows drain, which costs such packets the full lookup, never a wrong
/// answer.
pub const HOT_HOST: u32 = 0;
pub const HOT_BACKEND: u32 = 1;
/// Two sets of two protocols of 65 536 ports, 64 to a word.
pub const HOT_WORDS: u32 = 4 * 1024;

/// The word and bit of `pf_hot` for `port_be` (network order) of `proto`
/// (TCP or UDP) in `set`.
#[inline(always)]
pub fn hot_bit(set: u32, proto: u8, port_be: u16) -> (u32, u64) {
    let port = u16::from_be(port_be) as u32;
    let p = if proto == crate::PROTO_TCP { 0 } else { 1 };
    (((set * 2 + p) << 10) | (port >> 6), 1u64 << (port & 63))
}
