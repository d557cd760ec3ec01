//! The mapping table: published host ports and the container endpoints they
//! forward to, per family, and the family-independent port counts for bind.
use crate::addr::{Addr, V4, V6};

/// Key of `pf_map4` / `pf_map6`: a published host port.
///
/// `addr_be` unspecified means "any local address" (the default when SPEC has
/// no HOST_IP). A packet is matched against its exact destination first, then
/// against the wildcard if its destination is one of the host's addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MapKey<A> {
    pub addr_be: A,
    pub port_be: u16,
    pub proto: u8,
    pub pad: u8,
}

/// Value of `pf_map4` / `pf_map6`: the container endpoint a host port
/// forwards to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backend<A> {
    pub addr_be: A,
    pub port_be: u16,
    pub pad: u16,
    /// The bridge the container sits on; forwarded packets are redirected there.
    pub bridge_ifindex: u32,
}

impl<A: Addr> MapKey<A> {
    pub fn new(addr_be: A, port_be: u16, proto: u8) -> Self {
        Self {
            addr_be,
            port_be,
            proto,
            pad: 0,
        }
    }
}

/// Value of `pf_mstats4` / `pf_mstats6` (per-CPU hash keyed by `MapKey`):
/// what went through one mapping. "fwd" is client -> container, "rev"
/// container -> client.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapStats {
    pub fwd_packets: u64,
    pub fwd_bytes: u64,
    pub rev_packets: u64,
    pub rev_bytes: u64,
    /// Flows created (TCP connections, UDP client address/port pairs).
    pub connections: u64,
}

/// Key of `pf_ports`: a published port and protocol on any address of one
/// family. Its value counts the mappings on it; bind(2) to a wildcard
/// address checks it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PortKey {
    pub port_be: u16,
    pub proto: u8,
    /// `AF_INET` or `AF_INET6`.
    pub af: u8,
}

crate::assert_layout!(MapKey<V4> = V4, u16, u8, u8; 8);
crate::assert_layout!(MapKey<V6> = V6, u16, u8, u8; 20);
crate::assert_layout!(Backend<V4> = V4, u16, u16, u32; 12);
crate::assert_layout!(Backend<V6> = V6, u16, u16, u32; 24);
crate::assert_layout!(MapStats = u64, u64, u64, u64, u64; 40);
crate::assert_layout!(PortKey = u16, u8, u8; 4);
