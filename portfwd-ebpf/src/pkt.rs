//! Packet access behind one small trait, so that the same program logic
//! builds for TC (`TcPacket`) and, later, XDP contexts.
//!
//! Reads and writes go straight to packet memory (direct packet access): every
//! access checks its own bounds against `data_end` right before it, which is
//! what the verifier needs to see. Checksum updates go through the context,
//! because on TC the kernel helpers also keep `skb->csum` right for
//! CHECKSUM_COMPLETE packets; those helpers may move packet data, so no
//! pointer is kept across a call (each access re-derives its own).
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT},
    helpers::{
        bpf_redirect, bpf_redirect_neigh, bpf_sk_lookup_udp, bpf_sk_release, bpf_skb_pull_data,
        bpf_skc_lookup_tcp,
    },
    programs::TcContext,
    EbpfContext as _,
};
use portfwd_common::stat;

/// A drop reason (a `portfwd_common::stat` code). Every dropped packet has one.
#[derive(Clone, Copy)]
pub struct Drop(pub u32);

/// What the program does with the packet, apart from dropping it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Hand it on unchanged (or changed in place) to the kernel.
    Pass,
    /// A redirect helper succeeded: the kernel sends it where we said.
    Redirect,
}

pub type Outcome = Result<Verdict, Drop>;

pub trait Packet {
    /// The program's return code for each outcome.
    const PASS: i32;
    const DROP: i32;
    const REDIRECT: i32;

    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length (data beyond `data_end` included).
    fn len(&self) -> u32;
    /// The interface the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// Makes the first `len` bytes directly accessible, if the packet has them.
    fn pull(&self, len: u32) -> bool;

    /// Replaces `from` by `to` (`size` 2 or 4 bytes, or 0 with `to` a
    /// checksum difference) in the 16-bit one's complement checksum at `off`.
    fn l3_csum_replace(&self, off: usize, from: u32, to: u32, size: u64) -> Result<(), Drop>;
    /// The same for an L4 checksum; `flags` are the helper's (pseudo-header,
    /// mangled-0, IPv6).
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Drop>;

    /// True if a socket of this network namespace matches `tuple` (of
    /// `size` bytes: the IPv4 or IPv6 member).
    fn has_socket(&self, tcp: bool, tuple: &mut bpf_sock_tuple, size: u32) -> bool;

    /// Sends the packet out of `ifindex`, the kernel filling in the L2
    /// addresses from its neighbour table.
    fn redirect_neigh(&self, ifindex: u32) -> Outcome;
    /// Sends the packet out of `ifindex` as it is.
    fn redirect(&self, ifindex: u32) -> Outcome;

    /// A pointer to a `T` at `off`, if the packet holds all of it.
    #[inline(always)]
    fn ptr<T>(&self, off: usize) -> Option<*mut T> {
        let start = self.data();
        let end = self.data_end();
        if start + off + core::mem::size_of::<T>() > end {
            return None;
        }
        Some((start + off) as *mut T)
    }

    /// Reads a `T` at `off` (any alignment).
    #[inline(always)]
    fn read<T: Copy>(&self, off: usize) -> Option<T> {
        let p = self.ptr::<T>(off)?;
        // SAFETY: `ptr` checked that the packet holds size_of::<T>() bytes at
        // `p`; packet memory has no alignment guarantee, hence unaligned.
        Some(unsafe { p.read_unaligned() })
    }

    /// Writes `v` at `off`; the caller fixes the checksums that cover it.
    #[inline(always)]
    fn write<T: Copy>(&self, off: usize, v: T) -> Result<(), Drop> {
        let p = self.ptr::<T>(off).ok_or(Drop(stat::DROP_STORE))?;
        // SAFETY: as in `read`; TC and XDP programs may write packet data.
        unsafe { p.write_unaligned(v) };
        Ok(())
    }
}

/// A TC (sched_cls) packet.
pub struct TcPacket<'a>(pub &'a TcContext);

impl TcPacket<'_> {
    #[inline(always)]
    fn skb(&self) -> *mut aya_ebpf::bindings::__sk_buff {
        self.0.skb.skb
    }
}

impl Packet for TcPacket<'_> {
    const PASS: i32 = TC_ACT_OK;
    const DROP: i32 = TC_ACT_SHOT;
    const REDIRECT: i32 = TC_ACT_REDIRECT;

    #[inline(always)]
    fn data(&self) -> usize {
        // SAFETY: the context pointer is valid for the program run. A
        // volatile read keeps LLVM from merging the two context loads into
        // one select, which the verifier cannot follow.
        unsafe { core::ptr::addr_of!((*self.skb()).data).read_volatile() as usize }
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        // SAFETY: as in `data`.
        unsafe { core::ptr::addr_of!((*self.skb()).data_end).read_volatile() as usize }
    }

    #[inline(always)]
    fn len(&self) -> u32 {
        // SAFETY: as in `data`.
        unsafe { core::ptr::addr_of!((*self.skb()).len).read_volatile() }
    }

    #[inline(always)]
    fn ingress_ifindex(&self) -> u32 {
        // SAFETY: as in `data`; `ifindex` is the device the skb is on, which
        // at ingress is the one it arrived on.
        unsafe { core::ptr::addr_of!((*self.skb()).ifindex).read_volatile() }
    }

    #[inline(always)]
    fn pull(&self, len: u32) -> bool {
        // SAFETY: the helper takes the program's own context.
        len <= self.len() && unsafe { bpf_skb_pull_data(self.0.as_ptr() as *mut _, len) } == 0
    }

    #[inline(always)]
    fn l3_csum_replace(&self, off: usize, from: u32, to: u32, size: u64) -> Result<(), Drop> {
        self.0
            .l3_csum_replace(off, from as u64, to as u64, size)
            .map_err(|_| Drop(stat::DROP_CSUM_L3))
    }

    #[inline(always)]
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Drop> {
        self.0
            .l4_csum_replace(off, from as u64, to as u64, flags)
            .map_err(|_| Drop(stat::DROP_CSUM_L4))
    }

    #[inline(always)]
    fn has_socket(&self, tcp: bool, tuple: &mut bpf_sock_tuple, size: u32) -> bool {
        let netns = BPF_F_CURRENT_NETNS as u64;
        // SAFETY: the context is the program's own and `tuple` lives on the
        // caller's stack for the call, `size` covering the member used.
        let sk = unsafe {
            if tcp {
                bpf_skc_lookup_tcp(self.0.as_ptr(), tuple, size, netns, 0)
            } else {
                bpf_sk_lookup_udp(self.0.as_ptr(), tuple, size, netns, 0)
            }
        };
        if sk.is_null() {
            return false;
        }
        // SAFETY: `sk` is the non-NULL reference the lookup returned; it must
        // be released exactly once.
        unsafe { bpf_sk_release(sk as *mut _) };
        true
    }

    #[inline(always)]
    fn redirect_neigh(&self, ifindex: u32) -> Outcome {
        // SAFETY: a NULL params pointer with length 0 asks the helper for a
        // route lookup on the packet's own destination.
        let ret = unsafe { bpf_redirect_neigh(ifindex, core::ptr::null_mut(), 0, 0) };
        if ret == TC_ACT_REDIRECT as i64 {
            Ok(Verdict::Redirect)
        } else {
            Err(Drop(stat::DROP_REDIRECT))
        }
    }

    #[inline(always)]
    fn redirect(&self, ifindex: u32) -> Outcome {
        // SAFETY: bpf_redirect has no memory arguments.
        let ret = unsafe { bpf_redirect(ifindex, 0) };
        if ret == TC_ACT_REDIRECT as i64 {
            Ok(Verdict::Redirect)
        } else {
            Err(Drop(stat::DROP_REDIRECT))
        }
    }
}

/// The program's return code for `outcome`, counting the drop reason.
#[inline(always)]
pub fn finish<P: Packet>(outcome: Outcome) -> i32 {
    match outcome {
        Ok(Verdict::Pass) => P::PASS,
        Ok(Verdict::Redirect) => P::REDIRECT,
        Err(Drop(reason)) => {
            crate::stats::count(reason);
            P::DROP
        }
    }
}
