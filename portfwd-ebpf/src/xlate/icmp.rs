//! ICMP errors about portfwd flows, translated as the kernel's nf_nat does,
//! and the "fragmentation needed" errors portfwd itself sends.
//!
//! An error quotes the start of the packet it is about. Translating it
//! rewrites the quoted addresses and ports (with the quoted IP header's
//! checksum and the quoted L4 checksum where the quote holds it; a UDP
//! checksum of 0 stays 0), the outer addresses (with the outer header's
//! checksum), and the ICMP checksum, which covers all of the quote. Every
//! field is rewritten in place and every checksum updated from the words that
//! changed (RFC 1624); since the ICMP checksum then still makes the message
//! sum to zero, the packet's own checksum state (skb->csum) stays right too.
use aya_ebpf::{macros::map, maps::PerCpuArray};
use portfwd_common::{stat, IcmpRate, ICMP_RATE_BURST, ICMP_RATE_PER_SEC, PROTO_UDP};

use crate::{
    csum::{self, Sum},
    family::{Family, Flow, IcmpError, ETH_HLEN, L4_DPORT_OFF, L4_SPORT_OFF},
    pkt::{Drop, Outcome, Packet},
    stats,
};

/// The longest ICMP message whose checksum is verified (errors are at most
/// 576 bytes for IPv4 and 1280 for IPv6 by the RFCs).
const MAX_CHECKED: usize = 1280;

/// Per-CPU token bucket for the errors portfwd sends.
#[map(name = "pf_icmprl")]
static ICMP_RATE: PerCpuArray<IcmpRate> = PerCpuArray::with_max_entries(1, 0);

/// What the translation of an error changes: the quoted packet's source
/// and destination (address, port) and the outer packet's.
pub struct Rewrite<A> {
    pub inner_src: Option<(A, u16)>,
    pub inner_dst: Option<(A, u16)>,
    pub outer_src: Option<A>,
    pub outer_dst: Option<A>,
}

/// True if the ICMP checksum of `e` verifies.
#[inline(always)]
pub fn verifies<F: Family, P: Packet>(p: &P, e: &IcmpError<F::Addr>) -> bool {
    let Some(mut s) = crate::pkt::sum_range::<MAX_CHECKED, P>(p, e.icmp_off, e.icmp_len) else {
        return false;
    };
    if F::ICMP_PSEUDO {
        s = pseudo::<F>(s, e.saddr_be, e.daddr_be, e.icmp_len);
    }
    s.fold() == 0xffff
}

/// The ICMPv6 pseudo-header's part of the checksum.
#[inline(always)]
fn pseudo<F: Family>(s: Sum, saddr: F::Addr, daddr: F::Addr, len: usize) -> Sum {
    s.add_addr(saddr)
        .add_addr(daddr)
        .add32((len as u32).to_be())
        .add32((portfwd_common::PROTO_ICMPV6 as u32).to_be())
}

/// Applies `rw` to the error `e` quoting `inner`. On failure the packet may be half
/// rewritten: the caller drops it.
#[inline(always)]
pub fn translate<F: Family, P: Packet>(
    p: &P,
    inner: &Flow<F::Addr>,
    e: &IcmpError<F::Addr>,
    rw: &Rewrite<F::Addr>,
) -> Result<(), Drop> {
    // What the ICMP checksum covers that changes, before and after.
    let mut old = Sum::default();
    let mut new = Sum::default();
    let csum_off = e.inner_csum_off;
    let quoted_csum: u16 = if csum_off != 0 {
        p.read(csum_off).ok_or(Drop(stat::DROP_STORE))?
    } else {
        0
    };
    // The quoted L4 checksum covers the quoted addresses (pseudo-header) and
    // ports; a UDP checksum of 0 means none and stays 0.
    let l4_live = csum_off != 0 && (quoted_csum != 0 || inner.proto != PROTO_UDP);
    let mut l4_old = Sum::default();
    let mut l4_new = Sum::default();
    let mut l3_old = Sum::default();
    let mut l3_new = Sum::default();

    for (side, to) in [(0u8, rw.inner_src), (1u8, rw.inner_dst)] {
        let Some((addr, port)) = to else { continue };
        let (old_addr, old_port, addr_off, port_off) = if side == 0 {
            (inner.saddr_be, inner.sport_be, F::SADDR_OFF, L4_SPORT_OFF)
        } else {
            (inner.daddr_be, inner.dport_be, F::DADDR_OFF, L4_DPORT_OFF)
        };
        p.write(e.inner_l3_off + addr_off, addr)?;
        p.write(inner.l4_off + port_off, port)?;
        old = old.add_addr(old_addr).add16(old_port);
        new = new.add_addr(addr).add16(port);
        l3_old = l3_old.add_addr(old_addr);
        l3_new = l3_new.add_addr(addr);
        l4_old = l4_old.add_addr(old_addr).add16(old_port);
        l4_new = l4_new.add_addr(addr).add16(port);
    }
    if let Some(off) = F::L3_CSUM_OFF {
        let off = e.inner_l3_off + off;
        let c: u16 = p.read(off).ok_or(Drop(stat::DROP_STORE))?;
        let c2 = csum::replace(c, l3_old, l3_new);
        p.write(off, c2)?;
        old = old.add16(c);
        new = new.add16(c2);
    }
    if l4_live {
        let mut c2 = csum::replace(quoted_csum, l4_old, l4_new);
        if c2 == 0 && inner.proto == PROTO_UDP {
            c2 = 0xffff;
        }
        p.write(csum_off, c2)?;
        old = old.add16(quoted_csum);
        new = new.add16(c2);
    }

    let mut o_old = Sum::default();
    let mut o_new = Sum::default();
    for (off, from, to) in [
        (F::SADDR_OFF, e.saddr_be, rw.outer_src),
        (F::DADDR_OFF, e.daddr_be, rw.outer_dst),
    ] {
        let Some(to) = to else { continue };
        p.write(ETH_HLEN + off, to)?;
        o_old = o_old.add_addr(from);
        o_new = o_new.add_addr(to);
    }
    if let Some(off) = F::L3_CSUM_OFF {
        let off = ETH_HLEN + off;
        let c: u16 = p.read(off).ok_or(Drop(stat::DROP_STORE))?;
        p.write(off, csum::replace(c, o_old, o_new))?;
    }
    if F::ICMP_PSEUDO {
        // ICMPv6: the outer addresses are in the checksum's pseudo-header.
        old = Sum(old.0 + o_old.0);
        new = Sum(new.0 + o_new.0);
    }
    let off = e.icmp_off + F::ICMP_CSUM_OFF;
    let c: u16 = p.read(off).ok_or(Drop(stat::DROP_STORE))?;
    p.write(off, csum::replace(c, old, new))
}

/// Answers a packet that is too big for the next link (MTU `mtu`) and may
/// not be fragmented with the family's "fragmentation needed" error from
/// `from`, back out of the interface it came in on; rate-limited per CPU.
// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
pub fn send_too_big<F: Family, P: Packet>(p: &P, from: F::Addr, mtu: u32, now: u64) -> Outcome {
    if !take_token(now) {
        stats::count(stat::ICMP_RATE_LIMITED);
        return Err(Drop(stat::DROP_TOO_BIG));
    }
    F::into_too_big(p, from, mtu)?;
    stats::count(stat::ICMP_FRAG_NEEDED_SENT);
    p.redirect(p.ingress_ifindex())
}

#[inline(always)]
fn take_token(now: u64) -> bool {
    let Some(b) = ICMP_RATE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: a per-CPU array value from a successful lookup: valid for the
    // program run and written only by this CPU.
    let b = unsafe { &mut *b };
    let refill =
        (now.saturating_sub(b.last_ns) / (1_000_000_000 / ICMP_RATE_PER_SEC)).min(ICMP_RATE_BURST);
    if refill > 0 {
        b.tokens = (b.tokens + refill).min(ICMP_RATE_BURST);
        b.last_ns = now;
    }
    if b.tokens == 0 {
        return false;
    }
    b.tokens -= 1;
    true
}
