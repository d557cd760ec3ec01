//! Looking up a published port, for packets (TC) and sockets (cgroup hooks).
use portfwd_common::{Backend, MapKey};

use crate::maps::{LOCAL_ADDRS, MAPPINGS};

/// A matched mapping: the endpoint and the host address of its key (0 for
/// the wildcard), which names its counters.
pub struct Matched {
    pub backend: Backend,
    pub map_addr_be: u32,
}

/// True for 127.0.0.0/8 (addresses in network byte order, read on a
/// little-endian target: the first octet is the low byte).
#[inline(always)]
pub fn is_loopback(addr_be: u32) -> bool {
    addr_be & 0xff == 127
}

#[inline(always)]
pub fn is_local(addr_be: u32) -> bool {
    // SAFETY: the value is a plain integer and only its presence is used.
    unsafe { LOCAL_ADDRS.get(&addr_be) }.is_some()
}

/// The mapping for destination `daddr_be:dport_be`, which the caller has
/// established is one of the host's addresses (or loopback, for the host's
/// own sockets). An exact host-address mapping wins over the wildcard; both
/// never exist for one port (userspace refuses the overlap).
#[inline(always)]
pub fn lookup(daddr_be: u32, dport_be: u16, proto: u8) -> Option<Matched> {
    let mut key = MapKey {
        addr_be: 0,
        port_be: dport_be,
        proto,
        pad: 0,
    };
    // SAFETY: map values are plain integers, copied out at once.
    if let Some(backend) = unsafe { MAPPINGS.get(&key) } {
        return Some(Matched {
            backend: *backend,
            map_addr_be: 0,
        });
    }
    key.addr_be = daddr_be;
    // SAFETY: as above.
    let backend = unsafe { MAPPINGS.get(&key) }?;
    Some(Matched {
        backend: *backend,
        map_addr_be: daddr_be,
    })
}
