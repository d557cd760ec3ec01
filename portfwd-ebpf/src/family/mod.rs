//! Address families behind one trait: header parsing, address rewrite with
//! its checksum updates, and the family's maps. NAT, conntrack and mapping
//! logic is written once over `Family`; `v4` and `v6` implement it.
pub mod v4;
pub mod v6;

use aya_ebpf::{
    bindings::bpf_sock_tuple,
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use portfwd_common::{Addr, Backend, CtEntry, CtKey, MapKey};

use crate::pkt::{Drop, Packet, Ret};

pub const ETH_HLEN: usize = 14;

/// Offsets inside the TCP / UDP header.
pub const L4_SPORT_OFF: usize = 0;
pub const L4_DPORT_OFF: usize = 2;
/// The byte whose high nibble is the TCP header's length in 32-bit words.
pub const TCP_DOFF_OFF: usize = 12;
pub const TCP_FLAGS_OFF: usize = 13;
pub const TCP_CSUM_OFF: usize = 16;
pub const UDP_CSUM_OFF: usize = 6;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// A TCP or UDP packet, addresses and ports as on the wire.
#[derive(Clone, Copy, Default)]
pub struct Flow<A> {
    /// Offset of the L4 header from the start of the frame (16 bits: these
    /// structures live on the 512-byte stack; see `Flow::l4_off()`).
    pub l4_off: u16,
    pub saddr_be: A,
    pub daddr_be: A,
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub tcp_flags: u8,
    /// The L3 packet's length, for byte counters.
    pub l3_len: u16,
    /// The first fragment of a fragmented datagram has `first_fragment`
    /// set; every fragment has its IP identification in `frag_id_be`
    /// (plain fields rather than an Option, as for `Parsed`).
    pub first_fragment: bool,
    pub frag_id_be: u32,
}

/// A fragmented datagram's identity, as on the wire.
#[derive(Clone, Copy)]
pub struct FragId<A> {
    pub saddr_be: A,
    pub daddr_be: A,
    pub id_be: u32,
    pub proto: u8,
}

impl<A: Addr> FragId<A> {
    #[inline(always)]
    pub fn key(&self, slot: u8) -> portfwd_common::FragKey<A> {
        portfwd_common::FragKey {
            saddr_be: self.saddr_be,
            daddr_be: self.daddr_be,
            id_be: self.id_be,
            proto: self.proto,
            slot,
            pad: 0,
        }
    }
}

/// An ICMP error (IPv4 destination unreachable, source quench, time
/// exceeded, parameter problem; ICMPv6 the same and packet too big) quoting a
/// TCP or UDP packet whose ports are in the quote. The quoted packet itself
/// is `Parsed::flow` (its `l4_off` the quoted L4 header's offset).
/// (The outer addresses are read from the packet where they are needed.)
#[derive(Clone, Copy, Default)]
pub struct IcmpError {
    /// Offset of the ICMP header, and the ICMP message's length.
    pub icmp_off: u16,
    pub icmp_len: u16,
    /// Offset of the quoted L3 header.
    pub inner_l3_off: u16,
    /// Offset of the quoted L4 checksum when the quote holds it, else 0
    /// (TCP's may be cut off: a quote need only hold 8 bytes of L4).
    pub inner_csum_off: u16,
}

impl IcmpError {
    #[inline(always)]
    pub fn icmp_off(&self) -> usize {
        self.icmp_off as usize
    }

    #[inline(always)]
    pub fn icmp_len(&self) -> usize {
        self.icmp_len as usize
    }

    #[inline(always)]
    pub fn inner_l3_off(&self) -> usize {
        self.inner_l3_off as usize
    }

    #[inline(always)]
    pub fn inner_csum_off(&self) -> usize {
        self.inner_csum_off as usize
    }
}

impl<A: Addr> Flow<A> {
    #[inline(always)]
    pub fn l4_off(&self) -> usize {
        self.l4_off as usize
    }

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
            self.l4_off() + TCP_CSUM_OFF
        } else {
            self.l4_off() + UDP_CSUM_OFF
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

    /// The identity of the datagram this fragment belongs to.
    #[inline(always)]
    pub fn frag_id(&self) -> FragId<A> {
        FragId {
            saddr_be: self.saddr_be,
            daddr_be: self.daddr_be,
            id_be: self.frag_id_be,
            proto: self.proto,
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

/// What a packet is.
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub enum Kind {
    /// Anything else: another family or protocol, truncated or malformed.
    #[default]
    Other,
    /// TCP or UDP with its ports (a whole datagram or its first fragment).
    Flow,
    /// A later fragment of a TCP or UDP datagram: `flow` has its addresses,
    /// protocol, length and IP id, no ports.
    Fragment,
    /// An ICMP error about a TCP or UDP packet: `flow` is the quoted packet.
    Icmp,
}

/// A parsed packet. A struct with every field set on every path rather than
/// an enum with payloads: LLVM may fill the bytes of an absent payload from
/// any register, a packet pointer included, and the verifier refuses the
/// bit operations that packing them takes.
#[derive(Clone, Copy, Default)]
pub struct Parsed<A> {
    pub kind: Kind,
    pub flow: Flow<A>,
    pub icmp: IcmpError,
}

/// Which end of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

pub trait Family: 'static {
    type Addr: crate::csum::AddrWords;
    /// Offsets of the source and destination address from the L3 header.
    const SADDR_OFF: usize;
    const DADDR_OFF: usize;
    /// Offset of the L3 header checksum (IPv4 only).
    const L3_CSUM_OFF: Option<usize>;
    /// Offset of the checksum in the ICMP header, and whether the ICMP
    /// checksum covers a pseudo-header (ICMPv6 does).
    const ICMP_CSUM_OFF: usize = 2;
    const ICMP_PSEUDO: bool;
    /// The smallest MTU the family allows: packets up to this size (plus the
    /// Ethernet header) fit every device and need no MTU check.
    const MIN_MTU: u32;

    fn conntrack() -> &'static LruHashMap<CtKey<Self::Addr>, CtEntry<Self::Addr>>;
    /// Per-CPU room for building a conntrack entry off the stack.
    fn ct_scratch() -> &'static PerCpuArray<CtEntry<Self::Addr>>;
    fn mappings() -> &'static HashMap<MapKey<Self::Addr>, Backend<Self::Addr>>;
    /// The host's own addresses (value: ifindex).
    fn local_addrs() -> &'static HashMap<Self::Addr, u32>;

    /// True if the frame's ethertype is this family's: one load, before
    /// anything else is spent on the packet.
    fn is_family<P: Packet>(p: &P) -> bool;

    /// Parses the packet into `out` (which starts as `Parsed::default()`);
    /// an out-parameter, so that the result is built in place rather than
    /// copied through the stack.
    fn parse<P: Packet>(p: &P, out: &mut Parsed<Self::Addr>);

    fn is_loopback(addr: Self::Addr) -> bool;

    /// The socket-lookup tuple for `key` and its size.
    fn sock_tuple(key: &CtKey<Self::Addr>) -> (bpf_sock_tuple, u32);

    /// Writes the address at `side` of the packet, checksums untouched.
    fn write_addr<P: Packet>(p: &P, side: Side, addr: Self::Addr) -> Result<(), Drop> {
        let off = match side {
            Side::Src => Self::SADDR_OFF,
            Side::Dst => Self::DADDR_OFF,
        };
        p.write(ETH_HLEN + off, addr)
    }

    /// Rewrites the address at `side` of the L3 header from `old` to `new`
    /// with the header's own checksum: for fragments without an L4 header.
    fn set_l3_addr<P: Packet>(
        p: &P,
        side: Side,
        old: Self::Addr,
        new: Self::Addr,
    ) -> Result<(), Drop> {
        if let Some(off) = Self::L3_CSUM_OFF {
            let off = ETH_HLEN + off;
            let c: u16 = p.read(off).ok_or(Drop(portfwd_common::stat::DROP_STORE))?;
            let c2 = crate::csum::replace(
                c,
                crate::csum::Sum::default().add_addr(old),
                crate::csum::Sum::default().add_addr(new),
            );
            p.write(off, c2)?;
        }
        Self::write_addr(p, side, new)
    }

    /// True if the packet may not be fragmented on its way (IPv4 DF; every
    /// IPv6 packet, since IPv6 routers never fragment).
    fn dont_fragment<P: Packet>(p: &P) -> bool;

    /// True if the packet, too big for an MTU of `mtu` and without DF, can
    /// be cut into fragments by `cut` (IPv4: it is a fragment already, or a
    /// UDP datagram without checksum; no GSO packet; not too long to keep in
    /// the meantime).
    fn can_cut<P: Packet>(p: &P, mtu: u32) -> bool;

    /// Cuts the (rewritten) packet into fragments of at most `mtu` and sends
    /// them out of `ifindex`.
    fn cut<P: Packet>(p: &P, mtu: u32, ifindex: u32) -> Ret;

    /// Turns the packet, which is too big for an MTU of `mtu`, into the
    /// family's "fragmentation needed" / "packet too big" error back to its
    /// sender, from `from`, quoting its start.
    fn into_too_big<P: Packet>(p: &P, from: Self::Addr, mtu: u32) -> Result<(), Drop>;

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
