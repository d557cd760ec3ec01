//! BPF conntrack: two LRU entries per flow, one per direction, written once
//! for both families.
//!
//! An entry is live until `expires_ns`. Every packet pushes that forward by
//! the lifetime of the flow's state (see `portfwd_common::CT_LIFETIME_*`):
//! TCP gets a short life until both sides have spoken, a long one once
//! established, and a short final one after both FINs or a RST; UDP gets a
//! fixed idle timeout. Expired entries are ignored and overwritten; the LRU
//! evicts the oldest when the map is full.
use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns};
use portfwd_common::{
    stat, Addr, Backend, CtEntry, CtKey, CT_DIR_FORWARD, CT_DIR_REPLY, CT_F_ACK, CT_F_CLOSING,
    CT_F_DONE, CT_F_FIN, CT_F_RST, CT_F_SYN, CT_LIFETIME_CLOSE_NS, CT_LIFETIME_TCP_NS,
    CT_LIFETIME_TCP_SYN_NS, CT_LIFETIME_UDP_NS, CT_M_WILDCARD,
};

use crate::{
    family::{Family, Flow, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    pkt::Drop,
    stats,
};

/// CLOCK_MONOTONIC at tick resolution: lifetimes are seconds long, and the
/// coarse clock is a plain read where the precise one reads the clocksource.
/// Userspace compares `expires_ns` against CLOCK_MONOTONIC too.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: bpf_ktime_get_coarse_ns has no preconditions.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A live conntrack entry found by lookup in this program run.
pub struct CtRef<A: 'static>(*mut CtEntry<A>);

impl<A: Addr> CtRef<A> {
    #[inline(always)]
    pub fn get(&self) -> &CtEntry<A> {
        // SAFETY: the pointer comes from a successful map lookup and stays
        // valid for the rest of this program run (RCU); the BPF target has
        // no other thread of this program run to alias it.
        unsafe { &*self.0 }
    }

    #[inline(always)]
    pub fn get_mut(&mut self) -> &mut CtEntry<A> {
        // SAFETY: as in `get`; `&mut self` keeps this the only reference
        // made through this handle. Another CPU may write the same entry:
        // see `account` for why that is tolerated.
        unsafe { &mut *self.0 }
    }
}

/// A live entry for `key`, or None if there is none or it has expired.
#[inline(always)]
pub fn lookup<F: Family>(key: &CtKey<F::Addr>, now: u64) -> Option<CtRef<F::Addr>> {
    let entry = CtRef(F::conntrack().get_ptr_mut(key)?);
    if entry.get().expires_ns <= now {
        stats::count(stat::CT_EXPIRED);
        return None;
    }
    Some(entry)
}

/// What a new flow's entries are made of, beside its first packet.
pub struct NewFlow<'a, A> {
    /// The container endpoint.
    pub backend: &'a Backend<A>,
    /// The flow came in through the wildcard mapping.
    pub wildcard: bool,
    /// The interface the client's packets arrive on.
    pub client_ifindex: u32,
    /// For a hairpin flow, the source (address, port) its packets get.
    pub snat: Option<(A, u16)>,
}

/// Creates (or overwrites) both entries of a flow whose forward packet is
/// `flow` (see `NewFlow`).
#[inline(always)]
pub fn create<F: Family>(
    flow: &Flow<F::Addr>,
    new: &NewFlow<F::Addr>,
    now: u64,
) -> Result<(), Drop> {
    let backend = new.backend;
    let snat = new.snat;
    let wildcard = new.wildcard;
    let client_ifindex = new.client_ifindex;
    let flags = tcp_flags(flow);
    let lifetime = lifetime_for(flow.is_tcp(), flags);
    let mflags = if wildcard { CT_M_WILDCARD } else { 0 };
    let client = (flow.saddr_be, flow.sport_be);
    // Where the container's replies go: the client, or the SNAT address.
    let reply_to = snat.unwrap_or(client);
    let none = (F::Addr::default(), 0);
    let (fwd_peer, rep_peer) = match snat {
        Some(s) => (s, client),
        None => (none, none),
    };
    let reply_key = CtKey::new(
        backend.addr_be,
        reply_to.0,
        backend.port_be,
        reply_to.1,
        flow.proto,
    );
    // One entry, built in per-CPU scratch memory rather than on the stack:
    // filled for the reply direction, then changed into the forward one.
    let entry = F::ct_scratch()
        .get_ptr_mut(0)
        .ok_or(Drop(stat::DROP_CT_CREATE))?;
    // SAFETY: a per-CPU array value from a successful lookup: valid for the
    // program run and used only by this CPU.
    let entry = unsafe { &mut *entry };
    *entry = CtEntry {
        expires_ns: now + lifetime,
        created_ns: now,
        packets: 0,
        bytes: 0,
        nat_addr_be: flow.daddr_be,
        peer_addr_be: rep_peer.0,
        ifindex: client_ifindex,
        nat_port_be: flow.dport_be,
        peer_port_be: rep_peer.1,
        dir: CT_DIR_REPLY,
        flags: 0,
        mflags,
        pad: 0,
        stats_slot: backend.stats_slot,
        // Never a current generation (userspace skips 0): the table may
        // have changed since the mapping was looked up, so the flow's next
        // packet checks its endpoint once (see `hooks::forward`). Carrying
        // the lookup's generation here instead costs the deepest call
        // chain the stack it does not have.
        generation: 0,
        pad2: 0,
    };
    let ct = F::conntrack();
    // Reply entry first: once the forward entry exists, a reply can come.
    if snat.is_some() {
        // The port was free when chosen; another CPU may have taken it since.
        // BPF_NOEXIST settles that race; an entry that exists but is dead or
        // is this client's own earlier flow may be overwritten.
        if ct.insert(&reply_key, &*entry, BPF_NOEXIST as u64).is_err() {
            if let Some(e) = lookup::<F>(&reply_key, now) {
                if !e.get().is_reply_to(client.0, client.1) {
                    return Err(Drop(stat::DROP_NO_PORT));
                }
            }
            ct.insert(&reply_key, &*entry, 0)
                .map_err(|_| Drop(stat::DROP_CT_CREATE))?;
        }
    } else {
        ct.insert(&reply_key, &*entry, 0)
            .map_err(|_| Drop(stat::DROP_CT_CREATE))?;
    }
    entry.packets = 1;
    entry.bytes = flow.l3_len as u64;
    entry.nat_addr_be = backend.addr_be;
    entry.peer_addr_be = fwd_peer.0;
    entry.ifindex = backend.bridge_ifindex;
    entry.nat_port_be = backend.port_be;
    entry.peer_port_be = fwd_peer.1;
    entry.dir = CT_DIR_FORWARD;
    entry.flags = flags;
    ct.insert(&flow.key(), &*entry, 0)
        .map_err(|_| Drop(stat::DROP_CT_CREATE))?;
    stats::count(stat::CT_NEW);
    Ok(())
}

/// Forgets both entries of the flow that `entry` (stored at `key`) is one of.
#[inline(always)]
pub fn remove<F: Family>(key: &CtKey<F::Addr>, entry: &CtEntry<F::Addr>) {
    let _ = F::conntrack().remove(&entry.sibling_key(key));
    let _ = F::conntrack().remove(key);
}

/// Counts a later fragment (no L4 header, no flags) of the flow on `entry`.
#[inline(always)]
pub fn account_fragment<A: Addr>(entry: &mut CtRef<A>, l3_len: u16) {
    let e = entry.get_mut();
    e.packets += 1;
    e.bytes += l3_len as u64;
}

/// On the reply path: true if `flow`, from the container on reply entry
/// `entry`, is no longer this flow's: both ends have closed and the
/// container's last ACK went out already (see `CT_F_DONE`). That last ACK
/// itself (the container's first bare ACK once the flow is closing after its
/// own FIN) marks the entry.
#[inline(always)]
pub fn after_close<A: Addr>(entry: &mut CtRef<A>, flow: &Flow<A>) -> bool {
    let e = entry.get_mut();
    if !flow.is_tcp() || e.flags & (CT_F_CLOSING | CT_F_FIN) != CT_F_CLOSING | CT_F_FIN {
        return false;
    }
    if e.flags & CT_F_DONE != 0 {
        return true;
    }
    if flow.tcp_flags == TCP_ACK {
        e.flags |= CT_F_DONE;
    }
    false
}

/// On the forward path: a client packet on a closing flow means the client
/// is still there (it sends its FIN again if the container's last ACK was
/// lost), so the container's next answer is this flow's again.
#[inline(always)]
pub fn client_still_there<F: Family>(key: &CtKey<F::Addr>, entry: &CtRef<F::Addr>) {
    let e = entry.get();
    if e.flags & CT_F_CLOSING == 0 {
        return;
    }
    if let Some(s) = F::conntrack().get_ptr_mut(&e.sibling_key(key)) {
        // SAFETY: a pointer from a successful lookup in this program run,
        // written once (see `account` on races).
        unsafe { (*s).flags &= !CT_F_DONE };
    }
}

/// Counts `flow`'s packet on `entry` (stored at `key`) and extends its life
/// according to the TCP flags it carries.
#[inline(always)]
pub fn account<F: Family>(
    key: &CtKey<F::Addr>,
    entry: &mut CtRef<F::Addr>,
    flow: &Flow<F::Addr>,
    now: u64,
) {
    // The BPF target has no atomic read-modify-write in `core`, so fields
    // are updated with plain writes: one flow's packets are normally handled
    // on one CPU (RSS steers by flow hash), and a lost race costs one counted
    // packet or delays a state change to the next packet, never a wrong
    // rewrite.
    let e = entry.get_mut();
    e.packets += 1;
    e.bytes += flow.l3_len as u64;
    if !flow.is_tcp() {
        e.expires_ns = now + CT_LIFETIME_UDP_NS;
        return;
    }
    let seen = tcp_flags(flow);
    if seen & !e.flags != 0 {
        e.flags |= seen;
    }
    if e.flags & CT_F_CLOSING != 0 {
        return;
    }
    if seen & (CT_F_RST | CT_F_FIN) != 0 {
        let skey = e.sibling_key(key);
        let sibling = F::conntrack().get_ptr_mut(&skey).map(CtRef);
        if sibling.is_none() {
            stats::count(stat::CT_SIBLING_LOST);
        }
        let sibling_fin = sibling
            .as_ref()
            .is_some_and(|s| s.get().flags & CT_F_FIN != 0);
        if seen & CT_F_RST != 0 || sibling_fin {
            if let Some(mut s) = sibling {
                let s = s.get_mut();
                s.flags |= CT_F_CLOSING;
                s.expires_ns = now + CT_LIFETIME_CLOSE_NS;
            }
            e.flags |= CT_F_CLOSING;
            e.expires_ns = now + CT_LIFETIME_CLOSE_NS;
            return;
        }
    }
    e.expires_ns = now + lifetime_for(true, e.flags);
}

#[inline(always)]
fn tcp_flags<A: Addr>(flow: &Flow<A>) -> u8 {
    if !flow.is_tcp() {
        return 0;
    }
    let f = flow.tcp_flags;
    let mut out = 0;
    if f & TCP_SYN != 0 {
        out |= CT_F_SYN;
    }
    if f & TCP_FIN != 0 {
        out |= CT_F_FIN;
    }
    if f & TCP_RST != 0 {
        out |= CT_F_RST;
    }
    if f & TCP_ACK != 0 {
        out |= CT_F_ACK;
    }
    out
}

#[inline(always)]
fn lifetime_for(tcp: bool, flags: u8) -> u64 {
    if !tcp {
        CT_LIFETIME_UDP_NS
    } else if flags & CT_F_ACK != 0 {
        CT_LIFETIME_TCP_NS
    } else {
        CT_LIFETIME_TCP_SYN_NS
    }
}
