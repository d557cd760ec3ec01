//! IPv4.
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_PSEUDO_HDR},
    maps::{HashMap, LruHashMap, PerCpuHashMap},
};
use portfwd_common::{Backend, CtEntry, CtKey, MapKey, MapStats, PROTO_TCP, PROTO_UDP, V4};

use super::{Family, Flow, Parsed, Side, ETH_HLEN, TCP_CSUM_OFF, TCP_FLAGS_OFF, UDP_CSUM_OFF};
use crate::{
    maps,
    pkt::{Drop, Packet},
};

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// Offsets inside the IPv4 header.
const IP_TOT_LEN_OFF: usize = 2;
const IP_FRAG_OFF: usize = 6;
const IP_PROTO_OFF: usize = 9;
pub const IP_CSUM_OFF: usize = 10;
pub const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;
/// The fixed IPv4 header.
const IP_HLEN: usize = 20;
/// More-fragments flag and fragment offset.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;
/// The longest header with options: the most a parse ever needs in the
/// linear part, with a TCP header after it.
const MAX_HEADERS: u32 = (ETH_HLEN + 60 + 20) as u32;

pub struct Ipv4;

impl Family for Ipv4 {
    type Addr = V4;

    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<CtKey<V4>, CtEntry<V4>> {
        &maps::CONNTRACK4
    }

    #[inline(always)]
    fn mappings() -> &'static HashMap<MapKey<V4>, Backend<V4>> {
        &maps::MAPPINGS4
    }

    #[inline(always)]
    fn mapping_stats() -> &'static PerCpuHashMap<MapKey<V4>, MapStats> {
        &maps::MAPPING_STATS4
    }

    #[inline(always)]
    fn local_addrs() -> &'static HashMap<V4, u32> {
        &maps::LOCAL_ADDRS4
    }

    #[inline(always)]
    fn parse<P: Packet>(p: &P) -> Parsed<V4> {
        match try_parse(p) {
            Some(parsed) => parsed,
            // Headers outside the linear part: pull them in, then try once
            // more (a short packet fails again and is not ours).
            None if p.pull(MAX_HEADERS.min(p.len())) => try_parse(p).unwrap_or(Parsed::Other),
            None => Parsed::Other,
        }
    }

    /// 127.0.0.0/8 (the first octet is the low byte on the little-endian target).
    #[inline(always)]
    fn is_loopback(addr: V4) -> bool {
        addr & 0xff == 127
    }

    #[inline(always)]
    fn sock_tuple(key: &CtKey<V4>) -> (bpf_sock_tuple, u32) {
        // SAFETY: bpf_sock_tuple is plain integers; all zeroes is a valid value.
        let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
        tuple.__bindgen_anon_1.ipv4.saddr = key.saddr_be;
        tuple.__bindgen_anon_1.ipv4.daddr = key.daddr_be;
        tuple.__bindgen_anon_1.ipv4.sport = key.sport_be;
        tuple.__bindgen_anon_1.ipv4.dport = key.dport_be;
        // The IPv4 member of the union: two addresses and two ports.
        (tuple, 12)
    }

    #[inline(always)]
    fn write_addr<P: Packet>(p: &P, side: Side, addr: V4) -> Result<(), Drop> {
        let off = match side {
            Side::Src => IP_SADDR_OFF,
            Side::Dst => IP_DADDR_OFF,
        };
        p.write(ETH_HLEN + off, addr)
    }

    #[inline(always)]
    fn set_addr<P: Packet>(
        p: &P,
        flow: &Flow<V4>,
        side: Side,
        old: V4,
        new: V4,
    ) -> Result<(), Drop> {
        p.l4_csum_replace(
            flow.l4_csum_off(),
            old,
            new,
            flow.l4_csum_flags() | BPF_F_PSEUDO_HDR as u64 | 4,
        )?;
        p.l3_csum_replace(ETH_HLEN + IP_CSUM_OFF, old, new, 4)?;
        Self::write_addr(p, side, new)
    }
}

/// None: a header is not (yet) in the linear part of the packet.
#[inline(always)]
fn try_parse<P: Packet>(p: &P) -> Option<Parsed<V4>> {
    if p.read::<u16>(12)? != ETH_P_IP_BE {
        return Some(Parsed::Other);
    }
    let ver_ihl: u8 = p.read(ETH_HLEN)?;
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < IP_HLEN {
        return Some(Parsed::Other);
    }
    let proto: u8 = p.read(ETH_HLEN + IP_PROTO_OFF)?;
    if proto != PROTO_TCP && proto != PROTO_UDP {
        return Some(Parsed::Other);
    }
    let l3_len = u16::from_be(p.read(ETH_HLEN + IP_TOT_LEN_OFF)?);
    if (l3_len as usize) < ihl {
        return Some(Parsed::Other);
    }
    if u16::from_be(p.read(ETH_HLEN + IP_FRAG_OFF)?) & IP_MF_OFFSET_MASK != 0 {
        return Some(Parsed::Fragment);
    }
    let saddr_be: u32 = p.read(ETH_HLEN + IP_SADDR_OFF)?;
    let daddr_be: u32 = p.read(ETH_HLEN + IP_DADDR_OFF)?;
    let l4_off = ETH_HLEN + ihl;
    let sport_be: u16 = p.read(l4_off + super::L4_SPORT_OFF)?;
    let dport_be: u16 = p.read(l4_off + super::L4_DPORT_OFF)?;
    let tcp_flags = if proto == PROTO_TCP {
        // The checksum is the last field a rewrite touches: make sure the
        // whole fixed TCP header is here before anything is changed.
        p.read::<u16>(l4_off + TCP_CSUM_OFF)?;
        p.read::<u8>(l4_off + TCP_FLAGS_OFF)?
    } else {
        p.read::<u16>(l4_off + UDP_CSUM_OFF)?;
        0
    };
    Some(Parsed::Flow(Flow {
        l4_off,
        saddr_be,
        daddr_be,
        sport_be,
        dport_be,
        proto,
        tcp_flags,
        l3_len,
    }))
}
