//! Looking up a published port, for packets (TC) and sockets (cgroup hooks).
use portfwd_common::{Addr, Backend, MapKey};

use crate::family::Family;

/// A matched mapping: the endpoint, and whether the match was the wildcard
/// (with the host port and protocol, that names the mapping's counters).
#[derive(Clone, Copy, Default)]
pub struct Matched<A> {
    pub backend: Backend<A>,
    pub wildcard: bool,
}

impl<A: Addr> Matched<A> {
    /// The key of the matched mapping for a packet to `daddr_be:dport_be`.
    #[inline(always)]
    pub fn key(&self, daddr_be: A, dport_be: u16, proto: u8) -> MapKey<A> {
        let addr = if self.wildcard {
            A::default()
        } else {
            daddr_be
        };
        MapKey::new(addr, dport_be, proto)
    }
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
#[inline(always)]
pub fn lookup<F: Family>(daddr_be: F::Addr, dport_be: u16, proto: u8) -> Option<Matched<F::Addr>> {
    let mut key = MapKey::new(F::Addr::default(), dport_be, proto);
    // SAFETY: map values are plain integers, copied out at once.
    if let Some(backend) = unsafe { F::mappings().get(&key) } {
        return Some(Matched {
            backend: *backend,
            wildcard: true,
        });
    }
    key.addr_be = daddr_be;
    // SAFETY: as above.
    let backend = unsafe { F::mappings().get(&key) }?;
    Some(Matched {
        backend: *backend,
        wildcard: false,
    })
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
