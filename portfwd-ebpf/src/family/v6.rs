//! IPv6.
//!
//! Extension headers (hop-by-hop, routing, destination options, fragment)
//! are walked, a bounded number of them, to the TCP/UDP header; any other
//! next header (ESP, AH, mobility, ...) makes the packet not ours. ICMPv6
//! errors (destination unreachable, packet too big, time exceeded, parameter
//! problem) about TCP/UDP are parsed like IPv4's; neighbour discovery, router
//! solicitation and advertisement, echo and the rest are not ours, nor is
//! anything from or to a link-local address. There is
//! no header checksum; the L4 and ICMPv6 checksums cover a pseudo-header with
//! both 128-bit addresses. IPv6 routers never fragment: a packet too big for
//! the next link gets "packet too big", always.
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_PSEUDO_HDR},
    maps::{HashMap, LruHashMap, PerCpuArray},
};
use portfwd_common::{
    stat, Backend, CtEntry, CtKey, MapKey, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, V6,
};

use super::{
    Family, Flow, Kind, Parsed, Side, ETH_HLEN, L4_DPORT_OFF, L4_SPORT_OFF, TCP_CSUM_OFF,
    TCP_FLAGS_OFF, UDP_CSUM_OFF,
};
use crate::{
    csum::Sum,
    maps,
    pkt::{Drop, Packet, Ret},
};

const ETH_P_IPV6_BE: u16 = 0x86ddu16.to_be();
/// Offsets inside the IPv6 header.
const IP6_PAYLOAD_LEN_OFF: usize = 4;
const IP6_NEXT_OFF: usize = 6;
pub const IP6_SADDR_OFF: usize = 8;
pub const IP6_DADDR_OFF: usize = 24;
const IP6_HLEN: usize = 40;

const NEXT_HOP_BY_HOP: u8 = 0;
const NEXT_ROUTING: u8 = 43;
const NEXT_FRAGMENT: u8 = 44;
const NEXT_DEST_OPTS: u8 = 60;
/// The most extension headers walked before the L4 header.
const MAX_EXT_HEADERS: usize = 4;
/// Fragment header: offset (8-byte units, top 13 bits) and M (bit 0).
const FRAG_OFFSET_MASK: u16 = 0xfff8;
const FRAG_MORE: u16 = 0x0001;

const ICMP6_HLEN: usize = 8;
const ICMP6_DEST_UNREACH: u8 = 1;
const ICMP6_PACKET_TOO_BIG: u8 = 2;
const ICMP6_TIME_EXCEEDED: u8 = 3;
const ICMP6_PARAM_PROB: u8 = 4;

/// The kernel's flag for bpf_l4_csum_replace on IPv6 (6.16 and later): the
/// address change is not compensated by a header checksum, which matters for
/// CHECKSUM_COMPLETE packets' skb->csum. The bindings predate it.
const BPF_F_IPV6: u64 = 0x80;

/// The most a parse needs in the linear part: the header, the extension
/// headers walked (hop-by-hop options are the long ones), a TCP header.
const MAX_HEADERS: u32 = (ETH_HLEN + IP6_HLEN + 4 * 64 + 20) as u32;

pub struct Ipv6;

impl Family for Ipv6 {
    type Addr = V6;
    const SADDR_OFF: usize = IP6_SADDR_OFF;
    const DADDR_OFF: usize = IP6_DADDR_OFF;
    const L3_CSUM_OFF: Option<usize> = None;
    const ICMP_PSEUDO: bool = true;
    const MIN_MTU: u32 = 1280;

    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<CtKey<V6>, CtEntry<V6>> {
        &maps::CONNTRACK6
    }

    #[inline(always)]
    fn ct_scratch() -> &'static PerCpuArray<CtEntry<V6>> {
        &maps::CT_SCRATCH6
    }

    #[inline(always)]
    fn mappings() -> &'static HashMap<MapKey<V6>, Backend<V6>> {
        &maps::MAPPINGS6
    }

    #[inline(always)]
    fn local_addrs() -> &'static HashMap<V6, u32> {
        &maps::LOCAL_ADDRS6
    }

    #[inline(always)]
    fn is_family<P: Packet>(p: &P) -> bool {
        p.read::<u16>(12) == Some(ETH_P_IPV6_BE)
    }

    // A subprogram of its own, writing into the caller's `out` (as IPv4's).
    #[inline(never)]
    fn parse<P: Packet>(p: &P, out: &mut Parsed<V6>) {
        if try_parse(p, out).is_none() {
            out.kind = Kind::Other;
            if p.pull(MAX_HEADERS.min(p.len())) && try_parse(p, out).is_none() {
                out.kind = Kind::Other;
            }
        }
    }

    /// ::1 (the last byte is the high byte of the last word on the
    /// little-endian target).
    #[inline(always)]
    fn is_loopback(addr: V6) -> bool {
        addr == [0, 0, 0, 1u32.to_be()]
    }

    #[inline(always)]
    fn sock_tuple(key: &CtKey<V6>) -> (bpf_sock_tuple, u32) {
        // SAFETY: bpf_sock_tuple is plain integers; all zeroes is a valid value.
        let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
        tuple.__bindgen_anon_1.ipv6.saddr = key.saddr_be;
        tuple.__bindgen_anon_1.ipv6.daddr = key.daddr_be;
        tuple.__bindgen_anon_1.ipv6.sport = key.sport_be;
        tuple.__bindgen_anon_1.ipv6.dport = key.dport_be;
        // The IPv6 member of the union: two addresses and two ports.
        (tuple, 36)
    }

    /// IPv6 routers never fragment.
    #[inline(always)]
    fn dont_fragment<P: Packet>(_p: &P) -> bool {
        true
    }

    #[inline(always)]
    fn into_too_big<P: Packet>(p: &P, from: V6, mtu: u32) -> Result<(), Drop> {
        into_too_big(p, from, mtu)
    }

    #[inline(always)]
    fn can_cut<P: Packet>(_p: &P, _mtu: u32) -> bool {
        false
    }

    #[inline(always)]
    fn cut<P: Packet>(_p: &P, _mtu: u32, _ifindex: u32) -> Ret {
        Ret::of(|| Err(Drop(stat::DROP_TOO_BIG)))
    }

    #[inline(always)]
    fn set_addr<P: Packet>(
        p: &P,
        flow: &Flow<V6>,
        side: Side,
        old: V6,
        new: V6,
    ) -> Result<(), Drop> {
        // The change as one checksum difference: the new words less the old.
        let mut d = Sum::default().add_addr(new);
        for w in old {
            d = d.add32(!w);
        }
        let diff = d.fold() as u32;
        let flags = flow.l4_csum_flags() | BPF_F_PSEUDO_HDR as u64;
        let csum_off = flow.l4_csum_off();
        if p.l4_csum_replace(csum_off, 0, diff, flags | BPF_F_IPV6)
            .is_err()
        {
            // A kernel older than the flag: the checksum is right all the
            // same, only a CHECKSUM_COMPLETE packet's skb->csum is not.
            p.l4_csum_replace(csum_off, 0, diff, flags)?;
        }
        Self::write_addr(p, side, new)
    }
}

/// None: a header is not (yet) in the linear part of the packet.
#[inline(always)]
fn try_parse<P: Packet>(p: &P, out: &mut Parsed<V6>) -> Option<()> {
    if p.read::<u16>(12)? != ETH_P_IPV6_BE {
        return Some(());
    }
    if p.read::<[u8; 2]>(ETH_HLEN)?[0] >> 4 != 6 {
        return Some(());
    }
    let payload = u16::from_be(p.read(ETH_HLEN + IP6_PAYLOAD_LEN_OFF)?) as usize;
    let saddr_be: V6 = p.read(ETH_HLEN + IP6_SADDR_OFF)?;
    let daddr_be: V6 = p.read(ETH_HLEN + IP6_DADDR_OFF)?;
    // Link-local addresses are the link's: a packet from or to one is never
    // forwarded off it (RFC 4291, 2.5.6), so never translated.
    if is_link_local(&saddr_be) || is_link_local(&daddr_be) {
        return Some(());
    }
    let first_next = p.read::<[u8; 2]>(ETH_HLEN + IP6_NEXT_OFF)?[0];
    let Some(h) = walk(p, ETH_HLEN, first_next)? else {
        return Some(());
    };
    out.flow.saddr_be = saddr_be;
    out.flow.daddr_be = daddr_be;
    out.flow.l3_len = (IP6_HLEN + payload) as u16;
    out.flow.proto = h.next;
    out.flow.frag_id_be = h.frag_id_be;
    match h.next {
        PROTO_TCP | PROTO_UDP => {}
        PROTO_ICMPV6 if !h.fragment => {
            if icmp_error(p, h.l4_off, IP6_HLEN + payload, out).is_some() {
                out.kind = Kind::Icmp;
            }
            return Some(());
        }
        _ => return Some(()),
    }
    if h.later_fragment {
        out.kind = Kind::Fragment;
        return Some(());
    }
    if !ports(p, h.l4_off, &mut out.flow)? {
        return Some(());
    }
    out.flow.first_fragment = h.fragment;
    out.kind = Kind::Flow;
    Some(())
}

/// fe80::/10.
#[inline(always)]
fn is_link_local(addr: &V6) -> bool {
    u32::from_be(addr[0]) & 0xffc0_0000 == 0xfe80_0000
}

/// Where the extension headers after the IPv6 header at `l3_off` lead.
struct Headers {
    /// The upper-layer protocol, and the offset of its header.
    next: u8,
    l4_off: usize,
    /// A fragment header was seen, and it is not the first fragment's.
    fragment: bool,
    later_fragment: bool,
    frag_id_be: u32,
}

/// Walks at most `MAX_EXT_HEADERS` extension headers from `next`. None: not
/// (yet) in the linear part; Some(None): a header portfwd does not walk.
#[inline(always)]
fn walk<P: Packet>(p: &P, l3_off: usize, next: u8) -> Option<Option<Headers>> {
    let mut h = Headers {
        next,
        l4_off: l3_off + IP6_HLEN,
        fragment: false,
        later_fragment: false,
        frag_id_be: 0,
    };
    // Each header walked gives the L4 offset another range, and the verifier
    // would follow every combination through the rest of the program (past
    // its million instructions): the offset is forgotten after each.
    for _ in 0..MAX_EXT_HEADERS {
        match h.next {
            NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS => {
                // Next header and length (in 8 bytes, not counting the first
                // 8), read together (see `Packet::ptr` on one-byte reads).
                let [next, len] = p.read::<[u8; 2]>(h.l4_off)?;
                h.next = next;
                h.l4_off = crate::pkt::forget(h.l4_off + (len as usize + 1) * 8)?;
            }
            NEXT_FRAGMENT => {
                let [next, _] = p.read::<[u8; 2]>(h.l4_off)?;
                let word = u16::from_be(p.read(h.l4_off + 2)?);
                h.frag_id_be = p.read(h.l4_off + 4)?;
                h.fragment = word & (FRAG_OFFSET_MASK | FRAG_MORE) != 0;
                h.later_fragment = word & FRAG_OFFSET_MASK != 0;
                h.next = next;
                h.l4_off = crate::pkt::forget(h.l4_off + 8)?;
            }
            _ => return Some(Some(h)),
        }
    }
    match h.next {
        NEXT_HOP_BY_HOP | NEXT_ROUTING | NEXT_DEST_OPTS | NEXT_FRAGMENT => Some(None),
        _ => Some(Some(h)),
    }
}

/// Fills in the ports (and TCP flags) of `flow`, whose L4 header is at
/// `l4_off`. Some(false): a UDP checksum of zero, which IPv6 forbids (RFC
/// 8200, 8.1): not a datagram to translate (the kernel discards it), and
/// one that would keep its zero through the rewrite.
#[inline(always)]
fn ports<P: Packet>(p: &P, l4_off: usize, flow: &mut Flow<V6>) -> Option<bool> {
    flow.l4_off = l4_off as u16;
    flow.sport_be = p.read(l4_off + L4_SPORT_OFF)?;
    flow.dport_be = p.read(l4_off + L4_DPORT_OFF)?;
    flow.tcp_flags = if flow.proto == PROTO_TCP {
        p.read::<u16>(l4_off + TCP_CSUM_OFF)?;
        p.read::<[u8; 2]>(l4_off + TCP_FLAGS_OFF - 1)?[1]
    } else {
        if p.read::<u16>(l4_off + UDP_CSUM_OFF)? == 0 {
            return Some(false);
        }
        0
    };
    Some(true)
}

/// Fills in `out` if the ICMPv6 message at `icmp_off` (the L3 packet being
/// `l3_len` long) is an error quoting a TCP or UDP packet with its ports.
#[inline(always)]
fn icmp_error<P: Packet>(
    p: &P,
    icmp_off: usize,
    l3_len: usize,
    out: &mut Parsed<V6>,
) -> Option<()> {
    let ty = p.read::<[u8; 2]>(icmp_off)?[0];
    if !matches!(
        ty,
        ICMP6_DEST_UNREACH | ICMP6_PACKET_TOO_BIG | ICMP6_TIME_EXCEEDED | ICMP6_PARAM_PROB
    ) {
        return None;
    }
    let end = ETH_HLEN + l3_len;
    let inner_l3_off = icmp_off + ICMP6_HLEN;
    if p.read::<[u8; 2]>(inner_l3_off)?[0] >> 4 != 6 {
        return None;
    }
    let inner_next = p.read::<[u8; 2]>(inner_l3_off + IP6_NEXT_OFF)?[0];
    let h = walk(p, inner_l3_off, inner_next)??;
    if h.later_fragment || h.next != PROTO_TCP && h.next != PROTO_UDP || h.l4_off + 8 > end {
        return None;
    }
    out.flow.saddr_be = p.read(inner_l3_off + IP6_SADDR_OFF)?;
    out.flow.daddr_be = p.read(inner_l3_off + IP6_DADDR_OFF)?;
    out.flow.proto = h.next;
    out.flow.l3_len = IP6_HLEN as u16 + u16::from_be(p.read(inner_l3_off + IP6_PAYLOAD_LEN_OFF)?);
    out.flow.l4_off = h.l4_off as u16;
    out.flow.sport_be = p.read(h.l4_off + L4_SPORT_OFF)?;
    out.flow.dport_be = p.read(h.l4_off + L4_DPORT_OFF)?;
    let csum_off = h.l4_off
        + if h.next == PROTO_TCP {
            TCP_CSUM_OFF
        } else {
            UDP_CSUM_OFF
        };
    if csum_off + 2 <= end && p.read::<u16>(csum_off).is_some() {
        out.icmp.inner_csum_off = csum_off as u16;
    }
    out.icmp.icmp_off = icmp_off as u16;
    out.icmp.icmp_len = (end - icmp_off) as u16;
    out.icmp.inner_l3_off = inner_l3_off as u16;
    Some(())
}

/// "Packet too big": new IPv6 and ICMPv6 headers, then as much of the packet
/// it is about as fits in the minimum MTU (RFC 4443).
const TOO_BIG_HDRS: usize = IP6_HLEN + ICMP6_HLEN;
const TOO_BIG_QUOTE: usize = 1280 - TOO_BIG_HDRS;

#[inline(always)]
fn into_too_big<P: Packet>(p: &P, from: V6, mtu: u32) -> Result<(), Drop> {
    let bad = Drop(stat::DROP_TOO_BIG);
    let dst: V6 = p.read(ETH_HLEN + IP6_SADDR_OFF).ok_or(bad)?;
    let macs: [u8; 12] = p.read(0).ok_or(bad)?;
    // The packet is longer than the minimum MTU: the quote is all of it
    // that fits, and stays where it is, the new headers put before it.
    p.resize((ETH_HLEN + TOO_BIG_QUOTE) as u32)?;
    p.grow_l3(TOO_BIG_HDRS as u32)?;
    if !p.pull((ETH_HLEN + TOO_BIG_HDRS + TOO_BIG_QUOTE) as u32) {
        return Err(bad);
    }
    let quote =
        crate::pkt::sum_range::<TOO_BIG_QUOTE, P>(p, ETH_HLEN + TOO_BIG_HDRS, TOO_BIG_QUOTE)
            .ok_or(bad)?;
    let len = (ICMP6_HLEN + TOO_BIG_QUOTE) as u16;
    let mut h = [0u8; TOO_BIG_HDRS];
    h[0] = 0x60;
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6] = PROTO_ICMPV6;
    h[7] = 64;
    for i in 0..4 {
        h[8 + 4 * i..12 + 4 * i].copy_from_slice(&from[i].to_ne_bytes());
        h[24 + 4 * i..28 + 4 * i].copy_from_slice(&dst[i].to_ne_bytes());
    }
    let icmp = IP6_HLEN;
    h[icmp] = ICMP6_PACKET_TOO_BIG;
    h[icmp + 4..icmp + 8].copy_from_slice(&mtu.to_be_bytes());
    let mut s = quote
        .add_addr(from)
        .add_addr(dst)
        .add32((len as u32).to_be())
        .add32((PROTO_ICMPV6 as u32).to_be());
    let mut i = icmp;
    while i + 1 < TOO_BIG_HDRS {
        s = s.add16(u16::from_ne_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    let c = !s.fold();
    h[icmp + 2..icmp + 4].copy_from_slice(&c.to_ne_bytes());
    p.store_bytes(ETH_HLEN, &h)?;
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    p.write(0, swapped)
}
