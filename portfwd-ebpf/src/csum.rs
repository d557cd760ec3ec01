//! Internet checksum arithmetic (RFC 1071, RFC 1624), for checksum fields the
//! program recomputes itself rather than through a kernel helper.
//!
//! The one's complement sum is byte-order independent: words are read and
//! written as they lie in memory (little-endian loads of network-order
//! bytes), and a checksum computed over such words is stored the same way.
use portfwd_common::Addr;

/// A running one's complement sum, folded only at the end.
#[derive(Clone, Copy, Default)]
pub struct Sum(pub u64);

impl Sum {
    #[inline(always)]
    pub fn add16(self, w: u16) -> Self {
        Self(self.0 + w as u64)
    }

    #[inline(always)]
    pub fn add32(self, w: u32) -> Self {
        Self(self.0 + (w & 0xffff) as u64 + (w >> 16) as u64)
    }

    #[inline(always)]
    pub fn add_addr<A: AddrWords>(self, a: A) -> Self {
        a.sum_into(self)
    }

    /// The 16-bit folded sum.
    #[inline(always)]
    pub fn fold(self) -> u16 {
        let mut s = self.0;
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s = (s & 0xffff) + (s >> 16);
        s as u16
    }
}

impl Sum {
    /// Adds the change of a 16-bit word from `old` to `new` (RFC 1624: the
    /// new word plus the complement of the old).
    #[inline(always)]
    pub fn diff16(self, old: u16, new: u16) -> Self {
        self.add16(!old).add16(new)
    }

    /// Adds the change of an address from `old` to `new`.
    #[inline(always)]
    pub fn diff_addr<A: AddrWords>(self, old: A, new: A) -> Self {
        new.sum_into(old.complement().sum_into(self))
    }
}

/// The checksum field `csum` after the changes summed in `diff` (see
/// `Sum::diff16`).
#[inline(always)]
pub fn apply(csum: u16, diff: Sum) -> u16 {
    !Sum((!csum) as u64 + diff.0).fold()
}

/// RFC 1624 eqn. 3: the checksum field `csum` after the words summed in
/// `old` became those summed in `new`.
#[inline(always)]
pub fn replace(csum: u16, old: Sum, new: Sum) -> u16 {
    !Sum((!csum) as u64)
        .add16(!old.fold())
        .add16(new.fold())
        .fold()
}

/// Summing an address's 16-bit words.
pub trait AddrWords: Addr {
    fn sum_into(self, s: Sum) -> Sum;
    /// Every bit inverted.
    fn complement(self) -> Self;
}

impl AddrWords for u32 {
    #[inline(always)]
    fn sum_into(self, s: Sum) -> Sum {
        s.add32(self)
    }

    #[inline(always)]
    fn complement(self) -> Self {
        !self
    }
}

impl AddrWords for [u32; 4] {
    #[inline(always)]
    fn sum_into(self, s: Sum) -> Sum {
        s.add32(self[0])
            .add32(self[1])
            .add32(self[2])
            .add32(self[3])
    }

    #[inline(always)]
    fn complement(self) -> Self {
        [!self[0], !self[1], !self[2], !self[3]]
    }
}
