//! Address families behind one trait: header parsing, address rewrite with
//! its checksum updates, and the family's maps. NAT, conntrack and mapping
//! logic is written once over `Family`; `v4` (and later `v6`) implement it.
pub mod v4;

use aya_ebpf::{
    bindings::bpf_sock_tuple,
    maps::{HashMap, LruHashMap, PerCpuHashMap},
};
use portfwd_common::{Addr, Backend, CtEntry, CtKey, MapKey, MapStats};

use crate::pkt::{Drop, Packet};

pub const ETH_HLEN: usize = 14;

/// Offsets inside the TCP / UDP header.
pub const L4_SPORT_OFF: usize = 0;
pub const L4_DPORT_OFF: usize = 2;
pub const TCP_FLAGS_OFF: usize = 13;
pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP or UDP packet, addresses and ports as on the wire.
#[derive(Clone, Copy)]
pub struct Flow<A> {
    /// Offset of the L4 header from the start of the frame.
    pub l4_off: usize,
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// The L3 packet's length, for byte counters.
    pub l3_len: u16,
}

impl<A: Addr> Flow<A> {
    #[inline(always)]
    pub fn is_tcp(&self) -> bool {
        self.proto == portfwd_common::PROTO_TCP
    }

    /// A TCP SYN without ACK: the first packet of a connection.
    #[inline(always)]
    pub fn is_syn(&self) -> bool {
        self.is_tcp() && self.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.is_tcp() {
            self.l4_off + TCP_CSUM_OFF
        } else {
            self.l4_off + UDP_CSUM_OFF
        }
    }

    /// Flags for the L4 checksum helper. UDP: a zero checksum means "none"
    /// and must stay zero, a computed zero must become 0xffff;
    /// BPF_F_MARK_MANGLED_0 does both.
    #[inline(always)]
    pub fn l4_csum_flags(&self) -> u64 {
        if self.is_tcp() {
            0
        } else {
            aya_ebpf::bindings::BPF_F_MARK_MANGLED_0 as u64
        }
    }

    /// The conntrack key of the packet as it is on the wire.
    #[inline(always)]
    pub fn key(&self) -> CtKey<A> {
        CtKey::new(
            self.saddr_be,
            self.daddr_be,
            self.sport_be,
            self.dport_be,
            self.proto,
        )
    }
}

pub enum Parsed<A> {
    Flow(Flow<A>),
    /// A fragment: its ports are not in this packet (or not all of it).
    Fragment,
    /// Anything else: another family or protocol, truncated or malformed.
    Other,
}

/// Which end of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

pub trait Family: 'static {
    type Addr: Addr;

    fn conntrack() -> &'static LruHashMap<CtKey<Self::Addr>, CtEntry<Self::Addr>>;
    fn mappings() -> &'static HashMap<MapKey<Self::Addr>, Backend<Self::Addr>>;
    fn mapping_stats() -> &'static PerCpuHashMap<MapKey<Self::Addr>, MapStats>;
    /// The host's own addresses (value: ifindex).
    fn local_addrs() -> &'static HashMap<Self::Addr, u32>;

    /// The packet's TCP/UDP flow, if it is one of this family.
    fn parse<P: Packet>(p: &P) -> Parsed<Self::Addr>;

    fn is_loopback(addr: Self::Addr) -> bool;

    /// The socket-lookup tuple for `key` and its size.
    fn sock_tuple(key: &CtKey<Self::Addr>) -> (bpf_sock_tuple, u32);

    /// Writes the address at `side` of the packet, checksums untouched.
    fn write_addr<P: Packet>(p: &P, side: Side, addr: Self::Addr) -> Result<(), Drop>;

    /// Rewrites the address at `side` of `flow` from `old` to `new` and
    /// updates every checksum that covers it (the L4 pseudo-header, and the
    /// IPv4 header's own). On failure the packet may be half rewritten: the
    /// caller drops it.
    fn set_addr<P: Packet>(
        p: &P,
        flow: &Flow<Self::Addr>,
        side: Side,
        old: Self::Addr,
        new: Self::Addr,
    ) -> Result<(), Drop>;
}
