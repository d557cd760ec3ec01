//! Internet checksum arithmetic (RFC 1071, RFC 1624), for checksum fields the
//! program recomputes itself rather than through a kernel helper.
//!
//! The one's complement sum is byte-order independent: words are read and
//! written as they lie in memory (little-endian loads of network-order
//! bytes), and a checksum computed over such words is stored the same way.
use aya_ebpf::helpers::bpf_csum_diff;
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

/// The bytes one `bpf_csum_diff` call sums at most.
const CSUM_DIFF_MAX: usize = 512;

/// `s` plus the sum of the first `len` bytes of `buf` (map memory: the
/// helper sums 512 bytes a call). None if `len` is beyond `buf`.
#[inline(always)]
pub fn sum_buf<const N: usize>(buf: &[u8; N], len: usize, s: Sum) -> Option<Sum> {
    if len > N || N < CSUM_DIFF_MAX {
        return None;
    }
    let whole = len & !3;
    let mut body = SumBody {
        buf,
        whole,
        done: 0,
        s,
    };
    crate::pkt::repeat(N.div_ceil(CSUM_DIFF_MAX) as u32, &mut body)?;
    if body.done != whole {
        return None;
    }
    let mut s = body.s;
    // The last one to three bytes, as 16-bit words from an even offset,
    // an odd last byte padded with zero.
    let mut i = whole;
    for _ in 0..2 {
        if i >= len || i >= N {
            break;
        }
        let hi = if i + 1 < len && i + 1 < N {
            buf[i + 1]
        } else {
            0
        };
        s = s.add16(u16::from_ne_bytes([buf[i], hi]));
        i += 2;
    }
    Some(s)
}

/// `sum_buf`'s loop: 512 bytes an iteration.
struct SumBody<'a, const N: usize> {
    buf: &'a [u8; N],
    /// The bytes to sum, a multiple of 4.
    whole: usize,
    done: usize,
    s: Sum,
}

impl<const N: usize> crate::pkt::Repeat for SumBody<'_, N> {
    #[inline(always)]
    fn step(&mut self, _: u32) -> bool {
        let off = self.done;
        if off >= self.whole || off > N - CSUM_DIFF_MAX {
            return false;
        }
        let n = (self.whole - off).min(CSUM_DIFF_MAX);
        // SAFETY: `buf[off..off + n]` is within the array (off <= N - 512,
        // n <= 512); the helper only reads it.
        let ret = unsafe {
            bpf_csum_diff(
                core::ptr::null_mut(),
                0,
                self.buf.as_ptr().add(off) as *mut u32,
                n as u32,
                0,
            )
        };
        if ret < 0 {
            return false;
        }
        // The running values, folded and forgotten each time: the same range
        // at every iteration, so that the verifier's check of the body
        // converges.
        let (Some(s), Some(done)) = (
            crate::pkt::forget_below(self.s.add32(ret as u32).fold() as usize, 0xffff),
            crate::pkt::forget_below(off + n, N),
        ) else {
            return false;
        };
        self.s = Sum(s as u64);
        self.done = done;
        true
    }
}
