//! Layouts of the socket hooks (cgroup sock_addr programs).
use crate::addr::{V4, V6};

/// Key of `pf_sockrev4` / `pf_sockrev6`: a socket (by cookie) and the
/// container endpoint the socket hooks sent it to.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SockRevKey<A> {
    /// The socket cookie as two 32-bit halves (low first), so that the key
    /// has 4-byte alignment and no tail padding in either family.
    pub cookie: [u32; 2],
    pub addr_be: A,
    pub port_be: u16,
    pub pad: u16,
}

impl<A> SockRevKey<A> {
    #[inline(always)]
    pub fn new(cookie: u64, addr_be: A, port_be: u16) -> Self {
        Self {
            cookie: [cookie as u32, (cookie >> 32) as u32],
            addr_be,
            port_be,
            pad: 0,
        }
    }
}

/// Value of `pf_sockrev4` / `pf_sockrev6`: the address the application asked
/// for, restored in recvmsg(2) and getpeername(2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockRevValue<A> {
    pub addr_be: A,
    pub port_be: u16,
    pub pad: u16,
}

crate::assert_layout!(SockRevKey<V4> = [u32; 2], V4, u16, u16; 16);
crate::assert_layout!(SockRevKey<V6> = [u32; 2], V6, u16, u16; 28);
crate::assert_layout!(SockRevValue<V4> = V4, u16, u16; 8);
crate::assert_layout!(SockRevValue<V6> = V6, u16, u16; 20);
