//! Addresses as the maps hold them: the bytes on the wire, read as integers
//! on the little-endian BPF target and host (hence `_be` on field names).
//!
//! Every map layout that carries an address is generic over [`Addr`], with
//! one instantiation per family: `u32` for IPv4, `[u32; 4]` for IPv6. The two
//! are the only implementations, so each layout's explicit padding is checked
//! for both by the size asserts next to it.

/// An IPv4 (`u32`) or IPv6 (`[u32; 4]`) address in network byte order.
pub trait Addr:
    Copy + Default + PartialEq + Eq + core::fmt::Debug + 'static + sealed::Sealed
{
    /// `AF_INET` or `AF_INET6`.
    const AF: u8;
    /// Address length in bytes.
    const LEN: usize;

    fn is_unspecified(&self) -> bool;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for u32 {}
    impl Sealed for [u32; 4] {}
}

pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 10;

impl Addr for u32 {
    const AF: u8 = AF_INET;
    const LEN: usize = 4;

    #[inline(always)]
    fn is_unspecified(&self) -> bool {
        *self == 0
    }
}

impl Addr for [u32; 4] {
    const AF: u8 = AF_INET6;
    const LEN: usize = 16;

    #[inline(always)]
    fn is_unspecified(&self) -> bool {
        self[0] | self[1] | self[2] | self[3] == 0
    }
}

/// IPv4 addresses.
pub type V4 = u32;
/// IPv6 addresses.
pub type V6 = [u32; 4];
