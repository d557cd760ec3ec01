//! The one definition of every map key and value shared by portfwd's eBPF
//! programs and its userspace loader, one file per concern.
//!
//! Conventions:
//! - every type is `#[repr(C)]`, made of integers only, with explicit `pad`
//!   fields so that no byte is left uninitialised;
//! - a field that holds network byte order says so in its name (`addr_be`,
//!   `port_be`): its in-memory bytes are the bytes on the wire;
//! - layouts that carry addresses are generic over the family ([`Addr`]) and
//!   their sizes are asserted for both families at compile time, so a layout
//!   change is a build error on both sides at once.
#![no_std]

pub mod addr;
pub mod conntrack;
pub mod frag;
pub mod mapping;
pub mod maps;
pub mod sock;
pub mod stat;

pub use addr::{Addr, AF_INET, AF_INET6, V4, V6};
pub use conntrack::*;
pub use frag::*;
pub use mapping::*;
pub use maps::*;
pub use sock::*;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_ICMPV6: u8 = 58;

/// Load-time global: the cookie of the network namespace portfwd is attached
/// in (the "host"). The socket hooks run for every namespace and use it to
/// tell the host's own sockets from containers'.
pub const GLOBAL_HOST_NETNS: &str = "HOST_NETNS";

/// Program names (the entry point function names), at most 15 characters.
pub const PROG_EXTERNAL_INGRESS: &str = "pf_ext_in";
pub const PROG_BRIDGE_INGRESS: &str = "pf_br_in";
/// cgroup sock_addr programs for clients on the host and in containers.
pub const PROG_CONNECT4: &str = "pf_connect4";
pub const PROG_SENDMSG4: &str = "pf_sendmsg4";
pub const PROG_RECVMSG4: &str = "pf_recvmsg4";
pub const PROG_GETPEERNAME4: &str = "pf_getpeer4";
/// cgroup bind4: keeps host processes off published ports.
pub const PROG_BIND4: &str = "pf_bind4";
/// The same for IPv6 sockets (dual-stack sockets going to an IPv4-mapped
/// address included: the kernel runs connect6 for them).
pub const PROG_CONNECT6: &str = "pf_connect6";
pub const PROG_SENDMSG6: &str = "pf_sendmsg6";
pub const PROG_RECVMSG6: &str = "pf_recvmsg6";
pub const PROG_GETPEERNAME6: &str = "pf_getpeer6";
pub const PROG_BIND6: &str = "pf_bind6";

/// Asserts at compile time that a layout's size is `size` and equals the sum
/// of its fields' sizes (listed in order): no implicit padding anywhere, so
/// every byte a map holds is one the code wrote. The type must be one that
/// is also `Pod` below.
#[macro_export]
macro_rules! assert_layout {
    ($t:ty = $($f:ty),+; $size:literal) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        const _: () = assert!(0 $(+ core::mem::size_of::<$f>())+ == $size);
    };
}

#[cfg(feature = "user")]
mod user {
    use crate::addr::Addr;

    // SAFETY: each type is #[repr(C)] and made of integers only; its size
    // equals the sum of its fields' for both address types (the only two:
    // `Addr` is sealed), asserted next to each definition, so it has no
    // padding and every bit pattern is valid.
    unsafe impl<A: Addr> aya::Pod for crate::MapKey<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for crate::Backend<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for crate::CtKey<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for crate::CtEntry<A> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::MapStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::PortKey {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for crate::SockRevKey<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for crate::SockRevValue<A> {}
    // SAFETY: as above.
    unsafe impl<A: Addr> aya::Pod for crate::FragKey<A> {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::FragEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for crate::FragQueued {}
}
