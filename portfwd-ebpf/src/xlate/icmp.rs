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
use portfwd_common::{stat, CtEntry, IcmpRate, ICMP_RATE_BURST, ICMP_RATE_PER_SEC, PROTO_UDP};

use crate::{
    csum::{self, Sum},
    family::{Family, Flow, IcmpError, Side, ETH_HLEN, L4_DPORT_OFF, L4_SPORT_OFF},
    pkt::{Drop, Packet, Ret},
    stats,
};

/// The longest ICMP message whose checksum is verified (errors are at most
/// 576 bytes for IPv4 and 1280 for IPv6 by the RFCs).
const MAX_CHECKED: usize = 1280;

/// Per-CPU token bucket for the errors portfwd sends.
#[map(name = "pf_icmprl")]
static ICMP_RATE: PerCpuArray<IcmpRate> = PerCpuArray::with_max_entries(1, 0);

/// Which way a translated error goes (see `translate`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Toward {
    /// From outside, about a reply portfwd sent: to the container.
    Container,
    /// From a container, about a packet portfwd delivered: to the client
    /// (for a hairpin flow, the other container).
    Client,
}

/// True if the ICMP checksum of `e` verifies.
#[inline(always)]
pub fn verifies<F: Family, P: Packet>(p: &P, e: &IcmpError) -> bool {
    let Some(mut s) = crate::pkt::sum_range::<MAX_CHECKED, P>(p, e.icmp_off(), e.icmp_len()) else {
        return false;
    };
    if F::ICMP_PSEUDO {
        // The ICMPv6 pseudo-header: both outer addresses, the length and
        // the next header.
        let (Some(saddr), Some(daddr)) = (
            p.read::<F::Addr>(ETH_HLEN + F::SADDR_OFF),
            p.read::<F::Addr>(ETH_HLEN + F::DADDR_OFF),
        ) else {
            return false;
        };
        s = s
            .add_addr(saddr)
            .add_addr(daddr)
            .add32((e.icmp_len() as u32).to_be())
            .add32((portfwd_common::PROTO_ICMPV6 as u32).to_be());
    }
    s.fold() == 0xffff
}

/// Translates the error `e` quoting `inner` for the flow whose entry (for
/// the quoted packet's direction) is `ent`: toward the container, the quoted
/// source and the outer destination become the container's; toward the
/// client, the quoted destination and the outer source become the host
/// address it used, and for a hairpin flow the quoted source and the outer
/// destination the other container's. New addresses are read where they lie
/// in the entry (copies of IPv6 addresses would not fit the stack). On
/// failure the packet may be half rewritten: the caller drops it.
#[inline(always)]
pub fn translate<F: Family, P: Packet>(
    p: &P,
    inner: &Flow<F::Addr>,
    e: &IcmpError,
    ent: &CtEntry<F::Addr>,
    toward: Toward,
) -> Result<(), Drop> {
    let bad = Drop(stat::DROP_STORE);
    let hairpin = toward == Toward::Client && ent.is_hairpin();
    // The quoted addresses' change (which the quoted IP header's checksum
    // and the quoted L4 pseudo-header cover) and the ports' (the L4 header).
    let mut d = Diff::default();
    if toward == Toward::Container {
        d = quoted::<F, P>(p, inner, e, Side::Src, &ent.nat_addr_be, ent.nat_port_be, d)?;
    } else {
        d = quoted::<F, P>(p, inner, e, Side::Dst, &ent.nat_addr_be, ent.nat_port_be, d)?;
        if hairpin {
            d = quoted::<F, P>(
                p,
                inner,
                e,
                Side::Src,
                &ent.peer_addr_be,
                ent.peer_port_be,
                d,
            )?;
        }
    }
    // The ICMP checksum covers all of the quote: every word changed in it.
    let quote = Sum(d.addrs.0 + d.ports.0);
    let mut icmp = quote;
    if let Some(off) = F::L3_CSUM_OFF {
        let off = e.inner_l3_off() + off;
        let c: u16 = p.read(off).ok_or(bad)?;
        let c2 = csum::apply(c, d.addrs);
        p.write(off, c2)?;
        icmp = icmp.diff16(c, c2);
    }
    // The quoted L4 checksum, when the quote holds it; a UDP checksum of 0
    // means none and stays 0.
    let csum_off = e.inner_csum_off();
    if csum_off != 0 {
        let c: u16 = p.read(csum_off).ok_or(bad)?;
        if c != 0 || inner.proto != PROTO_UDP {
            let mut c2 = csum::apply(c, quote);
            if c2 == 0 && inner.proto == PROTO_UDP {
                c2 = 0xffff;
            }
            p.write(csum_off, c2)?;
            icmp = icmp.diff16(c, c2);
        }
    }

    let mut outer = if toward == Toward::Container {
        outer_addr::<F, P>(p, F::DADDR_OFF, &ent.nat_addr_be, Sum::default())?
    } else {
        outer_addr::<F, P>(p, F::SADDR_OFF, &ent.nat_addr_be, Sum::default())?
    };
    if hairpin {
        outer = outer_addr::<F, P>(p, F::DADDR_OFF, &ent.peer_addr_be, outer)?;
    }
    if let Some(off) = F::L3_CSUM_OFF {
        let off = ETH_HLEN + off;
        let c: u16 = p.read(off).ok_or(bad)?;
        p.write(off, csum::apply(c, outer))?;
    }
    if F::ICMP_PSEUDO {
        // ICMPv6: the outer addresses are in the checksum's pseudo-header.
        icmp = Sum(icmp.0 + outer.0);
    }
    let off = e.icmp_off() + F::ICMP_CSUM_OFF;
    let c: u16 = p.read(off).ok_or(bad)?;
    p.write(off, csum::apply(c, icmp))
}

/// The changes to a quote, summed (see `csum::Sum::diff16`).
#[derive(Clone, Copy, Default)]
struct Diff {
    addrs: Sum,
    ports: Sum,
}

/// Rewrites the quoted packet's address and port at `side` to `addr:port`;
/// returns `d` with the changes added.
#[inline(always)]
fn quoted<F: Family, P: Packet>(
    p: &P,
    inner: &Flow<F::Addr>,
    e: &IcmpError,
    side: Side,
    addr: &F::Addr,
    port: u16,
    d: Diff,
) -> Result<Diff, Drop> {
    let (old_addr, old_port, addr_off, port_off) = match side {
        Side::Src => (inner.saddr_be, inner.sport_be, F::SADDR_OFF, L4_SPORT_OFF),
        Side::Dst => (inner.daddr_be, inner.dport_be, F::DADDR_OFF, L4_DPORT_OFF),
    };
    p.write(e.inner_l3_off() + addr_off, *addr)?;
    p.write(inner.l4_off() + port_off, port)?;
    Ok(Diff {
        addrs: d.addrs.diff_addr(old_addr, *addr),
        ports: d.ports.diff16(old_port, port),
    })
}

/// Rewrites the outer address at `off` to `addr`; returns `diff` with the
/// change added.
#[inline(always)]
fn outer_addr<F: Family, P: Packet>(
    p: &P,
    off: usize,
    addr: &F::Addr,
    diff: Sum,
) -> Result<Sum, Drop> {
    let old: F::Addr = p.read(ETH_HLEN + off).ok_or(Drop(stat::DROP_STORE))?;
    p.write(ETH_HLEN + off, *addr)?;
    Ok(diff.diff_addr(old, *addr))
}

/// Answers a packet that is too big for the next link (MTU `mtu`) and may
/// not be fragmented with the family's "fragmentation needed" error from
/// `from`, back out of the interface it came in on; rate-limited per CPU.
// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
pub fn send_too_big<F: Family, P: Packet>(p: &P, from: F::Addr, mtu: u32, now: u64) -> Ret {
    Ret::of(|| {
        if !take_token(now) {
            stats::count(stat::ICMP_RATE_LIMITED);
            return Err(Drop(stat::DROP_TOO_BIG));
        }
        F::into_too_big(p, from, mtu)?;
        stats::count(stat::ICMP_FRAG_NEEDED_SENT);
        p.redirect(p.ingress_ifindex())
    })
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
