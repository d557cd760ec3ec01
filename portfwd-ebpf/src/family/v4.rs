//! IPv4.
use core::marker::PhantomData;

use aya_ebpf::{
    bindings::{bpf_fib_lookup, bpf_sock_tuple, BPF_FIB_LOOKUP_OUTPUT, BPF_F_PSEUDO_HDR},
    cty::c_void,
    helpers::bpf_get_smp_processor_id,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use portfwd_common::{stat, Backend, CtEntry, CtKey, MapKey, PROTO_ICMP, PROTO_TCP, PROTO_UDP, V4};

use super::{
    Family, Flow, Kind, Parsed, Side, ETH_HLEN, L4_DPORT_OFF, L4_SPORT_OFF, TCP_CSUM_OFF,
    TCP_FLAGS_OFF, UDP_CSUM_OFF,
};
use crate::{
    csum::Sum,
    maps,
    pkt::{Drop, Outcome, Packet, Ret},
    stats,
};

const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// Offsets inside the IPv4 header.
const IP_TOT_LEN_OFF: usize = 2;
const IP_ID_OFF: usize = 4;
const IP_FRAG_OFF: usize = 6;
const IP_PROTO_OFF: usize = 9;
pub const IP_CSUM_OFF: usize = 10;
pub const IP_SADDR_OFF: usize = 12;
pub const IP_DADDR_OFF: usize = 16;
/// The fixed IPv4 header.
const IP_HLEN: usize = 20;
/// More-fragments flag and fragment offset.
const IP_MF_OFFSET_MASK: u16 = 0x3fff;
const IP_OFFSET_MASK: u16 = 0x1fff;
const IP_MF: u16 = 0x2000;
const IP_DF: u16 = 0x4000;

const ICMP_HLEN: usize = 8;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETERPROB: u8 = 12;
/// Destination unreachable code: fragmentation needed and DF set.
const ICMP_FRAG_NEEDED: u8 = 4;
/// The longest header with options: the most a parse ever needs in the
/// linear part, with a TCP header after it.
const MAX_HEADERS: u32 = (ETH_HLEN + 60 + 20) as u32;

pub struct Ipv4;

impl Family for Ipv4 {
    type Addr = V4;
    const SADDR_OFF: usize = IP_SADDR_OFF;
    const DADDR_OFF: usize = IP_DADDR_OFF;
    const L3_CSUM_OFF: Option<usize> = Some(IP_CSUM_OFF);
    const ICMP_PSEUDO: bool = false;
    const MIN_MTU: u32 = 576;

    #[inline(always)]
    fn conntrack() -> &'static LruHashMap<CtKey<V4>, CtEntry<V4>> {
        &maps::CONNTRACK4
    }

    #[inline(always)]
    fn ct_scratch() -> &'static PerCpuArray<CtEntry<V4>> {
        &maps::CT_SCRATCH4
    }

    #[inline(always)]
    fn mappings() -> &'static HashMap<MapKey<V4>, Backend<V4>> {
        &maps::MAPPINGS4
    }

    #[inline(always)]
    fn local_addrs() -> &'static HashMap<V4, u32> {
        &maps::LOCAL_ADDRS4
    }

    #[inline(always)]
    fn is_family<P: Packet>(p: &P) -> bool {
        p.read::<u16>(12) == Some(ETH_P_IP_BE)
    }

    // A subprogram of its own, writing into the caller's `out`: its
    // header-reading state never adds to the frames of what comes after.
    #[inline(never)]
    fn parse<P: Packet>(p: &P, out: &mut Parsed<V4>) {
        if try_parse(p, out).is_none() {
            // Headers outside the linear part: pull them in, then try once
            // more (a short packet fails again and is not ours).
            out.kind = Kind::Other;
            if p.pull(MAX_HEADERS.min(p.len())) && try_parse(p, out).is_none() {
                out.kind = Kind::Other;
            }
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
    fn dont_fragment<P: Packet>(p: &P) -> bool {
        p.read::<u16>(ETH_HLEN + IP_FRAG_OFF)
            .is_some_and(|f| u16::from_be(f) & IP_DF != 0)
    }

    #[inline(always)]
    fn into_too_big<P: Packet>(p: &P, from: V4, mtu: u32) -> Result<(), Drop> {
        into_too_big(p, from, mtu)
    }

    // A subprogram of its own: a rare path, kept off the hot path's stack.
    #[inline(never)]
    fn can_cut<P: Packet>(p: &P, mtu: u32) -> bool {
        can_cut(p, mtu).unwrap_or(false)
    }

    // A subprogram of its own: a rare path, kept off the hot path's stack.
    #[inline(never)]
    fn cut<P: Packet>(p: &P, mtu: u32, ifindex: u32) -> Ret {
        Ret::of(|| cut(p, mtu, ifindex))
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
        // The IPv4 header checksum is never left to an offload: plain
        // arithmetic, no helper call.
        Self::set_l3_addr(p, side, old, new)
    }
}

/// None: a header is not (yet) in the linear part of the packet.
#[inline(always)]
fn try_parse<P: Packet>(p: &P, out: &mut Parsed<V4>) -> Option<()> {
    if p.read::<u16>(12)? != ETH_P_IP_BE {
        return Some(());
    }
    let Some(h) = header(p, ETH_HLEN)? else {
        return Some(());
    };
    match h.proto {
        PROTO_TCP | PROTO_UDP => {}
        PROTO_ICMP if h.frag & IP_MF_OFFSET_MASK == 0 => {
            if icmp_error(p, &h, out).is_some() {
                out.kind = Kind::Icmp;
            }
            return Some(());
        }
        _ => return Some(()),
    }
    out.flow.saddr_be = h.saddr_be;
    out.flow.daddr_be = h.daddr_be;
    out.flow.proto = h.proto;
    out.flow.l3_len = h.l3_len;
    out.flow.frag_id_be = h.id_be as u32;
    if h.frag & IP_OFFSET_MASK != 0 {
        out.kind = Kind::Fragment;
        return Some(());
    }
    ports(p, ETH_HLEN + h.ihl, &mut out.flow)?;
    out.flow.first_fragment = h.frag & IP_MF != 0;
    out.kind = Kind::Flow;
    Some(())
}

/// The fields of an IPv4 header the program uses.
struct Header {
    ihl: usize,
    l3_len: u16,
    id_be: u16,
    /// Flags and fragment offset, host order.
    frag: u16,
    proto: u8,
    saddr_be: V4,
    daddr_be: V4,
}

/// The IPv4 header at `off`: None if it is not (yet) in the linear part,
/// Some(None) if it is no valid IPv4 header.
#[inline(always)]
fn header<P: Packet>(p: &P, off: usize) -> Option<Option<Header>> {
    // With the TOS byte: see `icmp_error` on one-byte reads.
    let ver_ihl = p.read::<[u8; 2]>(off)?[0];
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ver_ihl >> 4 != 4 || ihl < IP_HLEN {
        return Some(None);
    }
    let l3_len = u16::from_be(p.read(off + IP_TOT_LEN_OFF)?);
    if (l3_len as usize) < ihl {
        return Some(None);
    }
    Some(Some(Header {
        ihl,
        l3_len,
        id_be: p.read(off + IP_ID_OFF)?,
        frag: u16::from_be(p.read(off + IP_FRAG_OFF)?),
        proto: p.read(off + IP_PROTO_OFF)?,
        saddr_be: p.read(off + IP_SADDR_OFF)?,
        daddr_be: p.read(off + IP_DADDR_OFF)?,
    }))
}

/// Fills in the ports (and TCP flags) of `flow`, whose L4 header is at
/// `l4_off`.
#[inline(always)]
fn ports<P: Packet>(p: &P, l4_off: usize, flow: &mut Flow<V4>) -> Option<()> {
    flow.l4_off = l4_off as u16;
    flow.sport_be = p.read(l4_off + L4_SPORT_OFF)?;
    flow.dport_be = p.read(l4_off + L4_DPORT_OFF)?;
    flow.tcp_flags = if flow.proto == PROTO_TCP {
        // The checksum is the last field a rewrite touches: make sure the
        // whole fixed TCP header is here before anything is changed.
        p.read::<u16>(l4_off + TCP_CSUM_OFF)?;
        p.read::<u8>(l4_off + TCP_FLAGS_OFF)?
    } else {
        p.read::<u16>(l4_off + UDP_CSUM_OFF)?;
        0
    };
    Some(())
}

/// Fills in `out` if the packet with outer header `h` is an ICMP error that
/// quotes a TCP or UDP packet with its ports. An error quoting an ICMP
/// message is not one (errors are never sent about errors).
#[inline(always)]
fn icmp_error<P: Packet>(p: &P, h: &Header, out: &mut Parsed<V4>) -> Option<()> {
    let icmp_off = ETH_HLEN + h.ihl;
    let icmp_len = h.l3_len as usize - h.ihl;
    // Type and code together: a one-byte read at a variable offset gets its
    // bounds check folded into a form the verifier cannot use (see
    // `Packet::ptr`).
    let ty = p.read::<[u8; 2]>(icmp_off)?[0];
    if !matches!(
        ty,
        ICMP_DEST_UNREACH | ICMP_SOURCE_QUENCH | ICMP_TIME_EXCEEDED | ICMP_PARAMETERPROB
    ) {
        return None;
    }
    let inner_l3_off = icmp_off + ICMP_HLEN;
    let inner = header(p, inner_l3_off)??;
    if inner.proto != PROTO_TCP && inner.proto != PROTO_UDP || inner.frag & IP_OFFSET_MASK != 0 {
        return None;
    }
    let inner_l4_off = inner_l3_off + inner.ihl;
    // The ports, and 8 bytes of L4 in all, inside the ICMP message.
    let end = icmp_off + icmp_len;
    if inner_l4_off + 8 > end {
        return None;
    }
    out.flow.saddr_be = inner.saddr_be;
    out.flow.daddr_be = inner.daddr_be;
    out.flow.proto = inner.proto;
    out.flow.l3_len = inner.l3_len;
    out.flow.l4_off = inner_l4_off as u16;
    out.flow.sport_be = p.read(inner_l4_off + L4_SPORT_OFF)?;
    out.flow.dport_be = p.read(inner_l4_off + L4_DPORT_OFF)?;
    let csum_off = inner_l4_off
        + if inner.proto == PROTO_TCP {
            TCP_CSUM_OFF
        } else {
            UDP_CSUM_OFF
        };
    if csum_off + 2 <= end && p.read::<u16>(csum_off).is_some() {
        out.icmp.inner_csum_off = csum_off as u16;
    }
    out.icmp.icmp_off = icmp_off as u16;
    out.icmp.icmp_len = icmp_len as u16;
    out.icmp.inner_l3_off = inner_l3_off as u16;
    Some(())
}

/// A "fragmentation needed" error: new IPv4 and ICMP headers, then the
/// first `TOO_BIG_QUOTE` bytes of the packet it is about (its IP header,
/// options included, and at least 8 bytes of L4, as RFC 792 asks).
const TOO_BIG_QUOTE: usize = 68;
const TOO_BIG_HDRS: usize = IP_HLEN + ICMP_HLEN;

#[inline(always)]
fn into_too_big<P: Packet>(p: &P, from: V4, mtu: u32) -> Result<(), Drop> {
    let bad = Drop(stat::DROP_TOO_BIG);
    let dst: V4 = p.read(ETH_HLEN + IP_SADDR_OFF).ok_or(bad)?;
    let tos = p.read::<[u8; 2]>(ETH_HLEN).ok_or(bad)?[1];
    let macs: [u8; 12] = p.read(0).ok_or(bad)?;
    // Keep the quote where it is and put the new headers before it.
    p.resize((ETH_HLEN + TOO_BIG_QUOTE) as u32)?;
    p.grow_l3(TOO_BIG_HDRS as u32)?;
    if !p.pull((ETH_HLEN + TOO_BIG_HDRS + TOO_BIG_QUOTE) as u32) {
        return Err(bad);
    }
    let quote =
        crate::pkt::sum_range::<TOO_BIG_QUOTE, P>(p, ETH_HLEN + TOO_BIG_HDRS, TOO_BIG_QUOTE)
            .ok_or(bad)?;

    let mut h = [0u8; TOO_BIG_HDRS];
    h[0] = 0x45;
    // As the kernel's own ICMP errors: the original TOS, internetwork
    // control precedence.
    h[1] = (tos & 0x1e) | 0xc0;
    h[2..4].copy_from_slice(&((TOO_BIG_HDRS + TOO_BIG_QUOTE) as u16).to_be_bytes());
    h[8] = 64;
    h[9] = PROTO_ICMP;
    h[12..16].copy_from_slice(&from.to_ne_bytes());
    h[16..20].copy_from_slice(&dst.to_ne_bytes());
    let icmp = IP_HLEN;
    h[icmp] = ICMP_DEST_UNREACH;
    h[icmp + 1] = ICMP_FRAG_NEEDED;
    h[icmp + 6..icmp + 8].copy_from_slice(&(mtu.min(0xffff) as u16).to_be_bytes());
    let ip_csum = !words(&h, 0, IP_HLEN, Sum::default()).fold();
    h[IP_CSUM_OFF..IP_CSUM_OFF + 2].copy_from_slice(&ip_csum.to_ne_bytes());
    let icmp_csum = !words(&h, icmp, TOO_BIG_HDRS, quote).fold();
    h[icmp + 2..icmp + 4].copy_from_slice(&icmp_csum.to_ne_bytes());
    p.store_bytes(ETH_HLEN, &h)?;
    // Back to the sender: the Ethernet addresses swap.
    let mut swapped = [0u8; 12];
    swapped[..6].copy_from_slice(&macs[6..]);
    swapped[6..].copy_from_slice(&macs[..6]);
    p.write(0, swapped)
}

/// `s` plus the one's complement sum of `buf[from..to]` as 16-bit words.
#[inline(always)]
fn words(buf: &[u8; TOO_BIG_HDRS], from: usize, to: usize, mut s: Sum) -> Sum {
    let mut i = from;
    while i + 1 < to {
        s = s.add16(u16::from_ne_bytes([buf[i], buf[i + 1]]));
        i += 2;
    }
    s
}

/// The longest L3 payload `cut` cuts: any IPv4 datagram's.
const CUT_MAX: usize = 65_516;
/// The longest piece's payload (an MTU of 9216 and a bit: jumbo frames).
const PIECE_MAX: usize = 9216;
/// The most fragments one packet is cut into.
const CUT_PIECES: usize = 64;

/// A packet's header and L4 bytes while `cut` cuts it (room for a piece
/// past the last byte: see `Packet::store_from_at`).
#[repr(C)]
pub struct CutBuf {
    hdr: [u8; 60],
    data: [u8; CUT_MAX + PIECE_MAX],
}

/// One `CutBuf` per CPU, indexed by CPU number: too big for a per-CPU map's
/// value. Userspace sizes it to the possible CPUs when it loads the object.
#[map(name = "pf_cut4")]
static CUT_BUF: Array<CutBuf> = Array::with_max_entries(1, 0);

/// This CPU's `CutBuf`.
#[inline(always)]
fn cut_buf() -> Option<&'static mut CutBuf> {
    // SAFETY: bpf_get_smp_processor_id has no preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let buf = CUT_BUF.get_ptr_mut(cpu)?;
    // SAFETY: an array value from a successful lookup, valid for the program
    // run; TC programs run with migration disabled, so no other program
    // uses this CPU's value meanwhile.
    Some(unsafe { &mut *buf })
}

#[inline(always)]
fn can_cut<P: Packet>(p: &P, mtu: u32) -> Option<bool> {
    if p.is_gso() {
        return Some(false);
    }
    let h = header(p, ETH_HLEN)??;
    let payload = h.l3_len as usize - h.ihl;
    let chunk = (mtu as usize).saturating_sub(h.ihl) & !7;
    if payload > CUT_MAX || chunk == 0 || chunk > PIECE_MAX || payload > chunk * CUT_PIECES {
        return Some(false);
    }
    if h.frag & IP_MF_OFFSET_MASK != 0 {
        // Already a fragment: its sender made the checksum whole.
        return Some(true);
    }
    let l4 = ETH_HLEN + h.ihl;
    if h.proto == PROTO_UDP && p.read::<u16>(l4 + UDP_CSUM_OFF)? == 0 {
        return Some(true);
    }
    // A whole datagram: on the bridge, typically one its sender fragmented
    // and the host's bridge netfilter reassembled (Docker turns it on), which
    // the kernel's forwarding would fragment again. Its L4 checksum may
    // instead be one an offload is still to fill in (CHECKSUM_PARTIAL, which
    // BPF cannot see), which its fragments would keep unfilled: it is cut
    // only if its checksum verifies, summed here from a copy.
    let buf = cut_buf()?;
    p.load_into(l4, &mut buf.data, payload).ok()?;
    let pseudo = Sum::default()
        .add_addr(h.saddr_be)
        .add_addr(h.daddr_be)
        .add16((h.proto as u16).to_be())
        .add16((payload as u16).to_be());
    Some(crate::csum::sum_buf(&buf.data, payload, pseudo)?.fold() == 0xffff)
}

/// Cuts the packet (its L3 payload a multiple of 8 per piece) and sends the
/// pieces out of `ifindex`, the L2 addresses from the kernel's FIB and
/// neighbour table.
#[inline(always)]
fn cut<P: Packet>(p: &P, mtu: u32, ifindex: u32) -> Outcome {
    let bad = Drop(stat::DROP_TOO_BIG);
    let h = header(p, ETH_HLEN).flatten().ok_or(bad)?;
    let ihl = h.ihl;
    let payload = h.l3_len as usize - ihl;
    let chunk = (mtu as usize).saturating_sub(ihl) & !7;
    if chunk == 0 || chunk > PIECE_MAX || payload <= chunk || payload > CUT_MAX {
        return Err(bad);
    }
    let base = (h.frag & IP_OFFSET_MASK) as usize * 8;
    let more = h.frag & IP_MF != 0;

    // SAFETY: bpf_fib_lookup is plain integers; all zeroes is a valid value.
    let mut fib: bpf_fib_lookup = unsafe { core::mem::zeroed() };
    fib.family = portfwd_common::AF_INET;
    fib.l4_protocol = h.proto;
    fib.ifindex = ifindex;
    fib.__bindgen_anon_3.ipv4_src = h.saddr_be;
    fib.__bindgen_anon_4.ipv4_dst = h.daddr_be;
    // The length of a piece: without one the helper measures the packet
    // itself against the device, and it is too big, which is why it is cut.
    fib.__bindgen_anon_1.tot_len = (ihl + chunk) as u16;
    if !p.fib_lookup(&mut fib, BPF_FIB_LOOKUP_OUTPUT) {
        return Err(bad);
    }
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&fib.dmac);
    macs[6..].copy_from_slice(&fib.smac);
    p.write(0, macs)?;

    let buf = cut_buf().ok_or(bad)?;
    p.load_into(ETH_HLEN, &mut buf.hdr, ihl)?;
    p.load_into(ETH_HLEN + ihl + chunk, &mut buf.data, payload - chunk)?;

    p.resize((ETH_HLEN + ihl + chunk) as u32)?;
    set_piece(p, ihl + chunk, base, true)?;
    p.clone_to(ifindex)?;
    let mut pieces = Pieces::<P> {
        raw: p.raw(),
        ifindex,
        ihl,
        chunk,
        payload,
        base,
        more,
        done: chunk,
        end: None,
        packet: PhantomData,
    };
    crate::pkt::repeat(CUT_PIECES as u32 - 1, &mut pieces).ok_or(bad)?;
    match pieces.end {
        Some(Ok(())) => {
            stats::count(stat::FRAGMENTED);
            p.redirect(ifindex)
        }
        Some(Err(drop)) => Err(drop),
        None => Err(bad),
    }
}

/// `cut`'s loop: each iteration sends one piece after the first, the last
/// one left in the packet for the caller to redirect.
struct Pieces<P> {
    raw: *mut c_void,
    ifindex: u32,
    ihl: usize,
    chunk: usize,
    payload: usize,
    /// The packet's own fragment offset, and whether more follow it.
    base: usize,
    more: bool,
    /// The L3 payload bytes sent so far.
    done: usize,
    /// Set when the loop ends: the last piece is ready, or why not.
    end: Option<Result<(), Drop>>,
    packet: PhantomData<P>,
}

impl<P: Packet> Pieces<P> {
    /// Makes the packet the next piece; Ok(true) once that is the last.
    #[inline(always)]
    fn piece(&mut self, p: &P) -> Result<bool, Drop> {
        let bad = Drop(stat::DROP_TOO_BIG);
        let (ihl, chunk, done) = (self.ihl, self.chunk, self.done);
        if ihl > 60 || chunk > PIECE_MAX || done < chunk || done >= self.payload {
            return Err(bad);
        }
        let buf = cut_buf().ok_or(bad)?;
        let len = (self.payload - done).min(chunk);
        let last = done + len >= self.payload;
        p.resize((ETH_HLEN + ihl + len) as u32)?;
        p.store_from(ETH_HLEN, &buf.hdr, ihl)?;
        p.store_from_at::<{ CUT_MAX + PIECE_MAX }, PIECE_MAX>(
            ETH_HLEN + ihl,
            &buf.data,
            done - chunk,
            len,
        )?;
        set_piece(p, ihl + len, self.base + done, !last || self.more)?;
        if last {
            return Ok(true);
        }
        p.clone_to(self.ifindex)?;
        self.done = crate::pkt::forget_below(done + len, CUT_MAX).ok_or(bad)?;
        Ok(false)
    }
}

impl<P: Packet> crate::pkt::Repeat for Pieces<P> {
    #[inline(always)]
    fn step(&mut self, _: u32) -> bool {
        // SAFETY: `raw` is the context pointer of the packet `cut` cuts, in
        // this program run.
        let r = unsafe { P::with_raw(self.raw, |p| self.piece(p)) };
        match r {
            Ok(false) => true,
            Ok(true) => {
                self.end = Some(Ok(()));
                false
            }
            Err(drop) => {
                self.end = Some(Err(drop));
                false
            }
        }
    }
}

/// Makes the IPv4 header at the start of the packet that of a piece of
/// `l3_len` bytes at byte offset `offset`, with MF if `more`.
#[inline(always)]
fn set_piece<P: Packet>(p: &P, l3_len: usize, offset: usize, more: bool) -> Result<(), Drop> {
    let bad = Drop(stat::DROP_STORE);
    let old_len: u16 = p.read(ETH_HLEN + IP_TOT_LEN_OFF).ok_or(bad)?;
    let old_frag: u16 = p.read(ETH_HLEN + IP_FRAG_OFF).ok_or(bad)?;
    let keep = u16::from_be(old_frag) & IP_DF;
    let new_len = (l3_len as u16).to_be();
    let new_frag = (keep | if more { IP_MF } else { 0 } | (offset / 8) as u16).to_be();
    let c: u16 = p.read(ETH_HLEN + IP_CSUM_OFF).ok_or(bad)?;
    let c = crate::csum::replace(
        c,
        Sum::default().add16(old_len).add16(old_frag),
        Sum::default().add16(new_len).add16(new_frag),
    );
    p.write(ETH_HLEN + IP_TOT_LEN_OFF, new_len)?;
    p.write(ETH_HLEN + IP_FRAG_OFF, new_frag)?;
    p.write(ETH_HLEN + IP_CSUM_OFF, c)
}
