//! IP fragments of datagrams to and from published ports.
//!
//! The ports are only in a datagram's first fragment. The first fragment of a
//! datagram to a host address (or from a container) records them, keyed by
//! the datagram's identity; a later fragment looks them up, finds the flow's
//! conntrack entry, and gets the same address rewrite (it has no L4 header to
//! rewrite). A later fragment that arrives from outside before its first one
//! waits in `pf_fragq4` / `pf_fragq6` (a copy; the packet itself is consumed); when the
//! first comes, it and the waiting ones are sent through the program again,
//! in order, and then follow the recorded ports like any later fragment.
use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, PerCpuArray},
};
use portfwd_common::{
    stat, Addr, FragEntry, FragKey, FragQueued, FRAG_LIFETIME_NS, FRAG_MAX, FRAG_PORTS,
    FRAG_QUEUED, FRAG_QUEUE_BYTES, FRAG_QUEUE_MAX, FRAG_QUEUE_SLOTS, V4, V6,
};

use crate::{
    family::{FragId, ETH_HLEN},
    pkt::{Drop, Packet, Ret, Verdict},
    stats,
};

/// Datagrams being tracked: their first fragment's ports.
#[map(name = "pf_frag4")]
pub static FRAG4: LruHashMap<FragKey<V4>, FragEntry> = LruHashMap::with_max_entries(FRAG_MAX, 0);

/// Fragments waiting for their datagram's first one.
#[map(name = "pf_fragq4")]
pub static FRAG_QUEUE4: LruHashMap<FragKey<V4>, FragQueued> =
    LruHashMap::with_max_entries(FRAG_QUEUE_MAX, 0);

#[map(name = "pf_frag6")]
pub static FRAG6: LruHashMap<FragKey<V6>, FragEntry> = LruHashMap::with_max_entries(FRAG_MAX, 0);

#[map(name = "pf_fragq6")]
pub static FRAG_QUEUE6: LruHashMap<FragKey<V6>, FragQueued> =
    LruHashMap::with_max_entries(FRAG_QUEUE_MAX, 0);

/// Where a fragment is copied before it is queued (too big for the stack).
#[map(name = "pf_fragtmp")]
static SCRATCH: PerCpuArray<FragQueued> = PerCpuArray::with_max_entries(1, 0);

/// The maps of one family.
pub trait FragMaps: Addr {
    fn entries() -> &'static LruHashMap<FragKey<Self>, FragEntry>;
    fn queue() -> &'static LruHashMap<FragKey<Self>, FragQueued>;
}

impl FragMaps for V4 {
    #[inline(always)]
    fn entries() -> &'static LruHashMap<FragKey<V4>, FragEntry> {
        &FRAG4
    }

    #[inline(always)]
    fn queue() -> &'static LruHashMap<FragKey<V4>, FragQueued> {
        &FRAG_QUEUE4
    }
}

impl FragMaps for V6 {
    #[inline(always)]
    fn entries() -> &'static LruHashMap<FragKey<V6>, FragEntry> {
        &FRAG6
    }

    #[inline(always)]
    fn queue() -> &'static LruHashMap<FragKey<V6>, FragQueued> {
        &FRAG_QUEUE6
    }
}

/// The ports recorded for the datagram `id`, if its first fragment came.
#[inline(always)]
pub fn ports<A: FragMaps>(id: &FragId<A>, now: u64) -> Option<(u16, u16)> {
    // SAFETY: plain integers copied out at once.
    let e = unsafe { A::entries().get(&id.key(0)) }?;
    (e.state == FRAG_PORTS && e.expires_ns > now).then_some((e.sport_be, e.dport_be))
}

/// Records the ports of the datagram whose first fragment is `id`. Returns
/// how many of its fragments came earlier and wait to be replayed.
#[inline(always)]
pub fn record<A: FragMaps>(id: &FragId<A>, sport_be: u16, dport_be: u16, now: u64) -> u8 {
    let key = id.key(0);
    // SAFETY: plain integers copied out at once.
    let waiting = match unsafe { A::entries().get(&key) } {
        Some(e) if e.state == FRAG_QUEUED && e.expires_ns > now => e.queued,
        _ => 0,
    };
    let entry = FragEntry {
        expires_ns: now + FRAG_LIFETIME_NS,
        sport_be,
        dport_be,
        state: FRAG_PORTS,
        queued: 0,
        pad: 0,
    };
    // Best effort: without it the later fragments go to the host unchanged.
    let _ = A::entries().insert(&key, &entry, 0);
    waiting
}

/// Keeps a copy of a later fragment whose first one has not come yet, and
/// consumes the packet. Passes it on unchanged if it cannot wait (too many
/// of its datagram waiting already, or too long to keep).
// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
pub fn queue<A: FragMaps, P: Packet>(p: &P, id: &FragId<A>, l3_len: u16, now: u64) -> Ret {
    Ret::of(|| {
        let key = id.key(0);
        // SAFETY: plain integers copied out at once.
        let mut entry = match unsafe { A::entries().get(&key) } {
            Some(e) if e.state == FRAG_QUEUED && e.expires_ns > now => *e,
            _ => FragEntry {
                expires_ns: 0,
                sport_be: 0,
                dport_be: 0,
                state: FRAG_QUEUED,
                queued: 0,
                pad: 0,
            },
        };
        let len = l3_len as usize;
        if entry.queued >= FRAG_QUEUE_SLOTS || len > FRAG_QUEUE_BYTES {
            stats::count(stat::FRAGMENT_PASSED);
            return Ok(Verdict::Pass);
        }
        let scratch = SCRATCH.get_ptr_mut(0).ok_or(Drop(stat::DROP_FRAG))?;
        // SAFETY: a per-CPU array value from a successful lookup: valid for the
        // program run and used only by this CPU.
        let scratch = unsafe { &mut *scratch };
        p.load_into(ETH_HLEN, &mut scratch.data, len)?;
        scratch.len = len as u16;
        entry.queued += 1;
        entry.expires_ns = now + FRAG_LIFETIME_NS;
        A::queue()
            .insert(&id.key(entry.queued), scratch, 0)
            .map_err(|_| Drop(stat::DROP_FRAG))?;
        A::entries()
            .insert(&key, &entry, 0)
            .map_err(|_| Drop(stat::DROP_FRAG))?;
        stats::count(stat::FRAGMENT_QUEUED);
        Ok(Verdict::Stolen)
    })
}

/// Sends the first fragment (the packet, as it came) and then the `waiting`
/// fragments of its datagram that came before it through the ingress of the
/// interface it arrived on again, in that order, and consumes the packet.
// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
pub fn replay<A: FragMaps, P: Packet>(p: &P, id: &FragId<A>, waiting: u8) -> Ret {
    Ret::of(|| {
        let ifindex = p.ingress_ifindex();
        p.clone_to_ingress(ifindex)?;
        for slot in 1..=FRAG_QUEUE_SLOTS {
            if slot > waiting {
                break;
            }
            let key = id.key(slot);
            let Some(q) = A::queue().get_ptr(&key) else {
                continue;
            };
            // SAFETY: a map value from a successful lookup, valid for the
            // program run; only read.
            let q = unsafe { &*q };
            let len = q.len as usize;
            if len <= FRAG_QUEUE_BYTES {
                p.resize((ETH_HLEN + len) as u32)?;
                p.store_from(ETH_HLEN, &q.data, len)?;
                p.clone_to_ingress(ifindex)?;
                stats::count(stat::FRAGMENT_REPLAYED);
            }
            let _ = A::queue().remove(&key);
        }
        Ok(Verdict::Stolen)
    })
}
