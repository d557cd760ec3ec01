//! Looking up a published port, for packets (TC) and sockets (cgroup hooks).
use aya_ebpf::{macros::map, maps::Array};
use portfwd_common::{hot_bit, Backend, MapKey, HOT_WORDS, META_GENERATION};

use crate::{family::Family, maps::META};

/// The ports packets may be portfwd's on (see `portfwd_common::HOT_HOST`).
/// An array: the verifier turns its lookup into an index check and a load.
#[map(name = "pf_hot")]
static HOT: Array<u64> = Array::with_max_entries(HOT_WORDS, 0);

/// True if `port_be` of `proto` is in `set` of `pf_hot`.
#[inline(always)]
pub fn hot(set: u32, proto: u8, port_be: u16) -> bool {
    let (word, bit) = hot_bit(set, proto, port_be);
    HOT.get(word).is_some_and(|w| *w & bit != 0)
}

/// A matched mapping: the endpoint (with its counters' slot), and whether
/// the match was the wildcard.
#[derive(Clone, Copy, Default)]
pub struct Matched<A> {
    pub backend: Backend<A>,
    pub wildcard: bool,
}

/// The mapping table's generation: userspace adds one after every change
/// to the mappings or the host's addresses (`META_GENERATION`). A flow
/// whose entry was checked at the current generation still has the
/// endpoint a lookup would give it.
#[inline(always)]
pub fn generation() -> u32 {
    META.get(META_GENERATION).map_or(0, |g| *g as u32)
}

#[inline(always)]
pub fn is_local<F: Family>(addr: F::Addr) -> bool {
    // SAFETY: the value is a plain integer and only its presence is used.
    unsafe { F::local_addrs().get(&addr) }.is_some()
}

/// The mapping for destination `daddr_be:dport_be`, which the caller has
/// established is one of the host's addresses (or loopback, for the host's
/// own sockets). An exact host-address mapping wins over the wildcard; both
/// never exist for one port (userspace refuses the overlap).
///
/// A mapping whose container address is the unspecified one is held: its
/// port stays reserved (the bind hook still finds the entry) but it forwards
/// nowhere, so the packet or socket gets the host's own answer (nothing
/// listens there: a TCP RST, an ICMP port unreachable, ECONNREFUSED).
/// `portfwd watch` holds the mappings of a named container that stopped.
#[inline(always)]
pub fn lookup<F: Family>(daddr_be: F::Addr, dport_be: u16, proto: u8) -> Option<Matched<F::Addr>> {
    let mut key = MapKey::new(F::Addr::default(), dport_be, proto);
    // SAFETY: map values are plain integers, copied out at once.
    let (backend, wildcard) = match unsafe { F::mappings().get(&key) } {
        Some(backend) => (*backend, true),
        None => {
            key.addr_be = daddr_be;
            // SAFETY: as above.
            (*unsafe { F::mappings().get(&key) }?, false)
        }
    };
    if backend.addr_be == F::Addr::default() {
        return None;
    }
    Some(Matched { backend, wildcard })
}

/// The mapping for a packet from outside or from a container: the wildcard
/// applies only to the host's own addresses; an exact-address mapping names
/// its address itself.
#[inline(always)]
pub fn for_packet<F: Family>(
    daddr_be: F::Addr,
    dport_be: u16,
    proto: u8,
) -> Option<Matched<F::Addr>> {
    let m = lookup::<F>(daddr_be, dport_be, proto)?;
    if m.wildcard && !is_local::<F>(daddr_be) {
        return None;
    }
    Some(m)
}
