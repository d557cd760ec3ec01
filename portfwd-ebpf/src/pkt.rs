//! Packet access behind one small trait, so that the same program logic
//! builds for TC (`TcPacket`) and, later, XDP contexts.
//!
//! Reads and writes go straight to packet memory (direct packet access): every
//! access checks its own bounds against `data_end` right before it, which is
//! what the verifier needs to see. Checksum updates go through the context,
//! because on TC the kernel helpers also keep `skb->csum` right for
//! CHECKSUM_COMPLETE packets; those helpers may move packet data, so no
//! pointer is kept across a call (each access re-derives its own). IPv4
//! header and ICMP checksums, never offloaded, are plain arithmetic
//! (`csum`).
use aya_ebpf::cty::c_void;
use aya_ebpf::{
    bindings::{bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_check_mtu_flags::BPF_MTU_CHK_SEGS},
    bindings::{
        bpf_fib_lookup, bpf_sock_tuple, BPF_F_CURRENT_NETNS, BPF_F_INGRESS, BPF_F_RECOMPUTE_CSUM,
        TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_STOLEN,
    },
    helpers::{
        bpf_check_mtu, bpf_clone_redirect, bpf_csum_diff, bpf_loop, bpf_redirect,
        bpf_redirect_neigh, bpf_sk_lookup_udp, bpf_sk_release, bpf_skb_adjust_room,
        bpf_skb_change_tail, bpf_skb_load_bytes, bpf_skb_pull_data, bpf_skb_store_bytes,
        bpf_skc_lookup_tcp,
    },
    macros::map,
    maps::PerCpuArray,
    programs::TcContext,
    EbpfContext as _,
};
use portfwd_common::stat;

use crate::csum::Sum;

/// A drop reason (a `portfwd_common::stat` code). Every dropped packet has one.
#[derive(Clone, Copy)]
pub struct Drop(pub u32);

/// What the program does with the packet, apart from dropping it.
///
/// 32 bits wide like `Drop`, so that both variants of an `Outcome` fill all
/// of it: LLVM fills the bytes a variant leaves unset from whatever register
/// is at hand, a pointer included, which the verifier refuses.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Verdict {
    /// Hand it on unchanged (or changed in place) to the kernel.
    Pass,
    /// The program consumed it (a copy was kept or sent on).
    Stolen,
    /// Not final: the orchestrator left a step for the entry point's frame
    /// (`hooks::settle`); never returned to the kernel.
    Pending,
    /// A redirect helper succeeded: the kernel sends it where we said.
    Redirect,
}

pub type Outcome = Result<Verdict, Drop>;

/// An `Outcome` as one integer: what subprograms return. rustc returns any
/// aggregate (a `Result` is one) from a BPF function through a pointer the
/// caller passes, and leaves r0 holding whatever was last in it; the
/// verifier refuses a subprogram that exits with a stack pointer there.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Ret(u64);

const RET_DROP: u64 = 1 << 32;

impl Ret {
    /// Runs `f` and packs what it returns: the body of a subprogram.
    #[inline(always)]
    pub fn of(f: impl FnOnce() -> Outcome) -> Self {
        match f() {
            Ok(v) => Self(v as u32 as u64),
            Err(Drop(code)) => Self(RET_DROP | code as u64),
        }
    }

    #[inline(always)]
    pub fn outcome(self) -> Outcome {
        if self.0 & RET_DROP != 0 {
            return Err(Drop(self.0 as u32));
        }
        Ok(match self.0 as u32 {
            v if v == Verdict::Pass as u32 => Verdict::Pass,
            v if v == Verdict::Stolen as u32 => Verdict::Stolen,
            v if v == Verdict::Pending as u32 => Verdict::Pending,
            _ => Verdict::Redirect,
        })
    }
}

pub trait Packet: Sized {
    /// The program's return code for each outcome.
    const PASS: i32;
    const DROP: i32;
    const REDIRECT: i32;
    const STOLEN: i32;

    fn data(&self) -> usize;
    fn data_end(&self) -> usize;
    /// The whole packet's length (data beyond `data_end` included).
    fn len(&self) -> u32;
    /// The interface the packet arrived on.
    fn ingress_ifindex(&self) -> u32;
    /// Makes the first `len` bytes directly accessible, if the packet has them.
    fn pull(&self, len: u32) -> bool;
    /// The context pointer, for a `Repeat` body that needs the packet.
    fn raw(&self) -> *mut c_void;
    /// Runs `f` over the packet whose context pointer is `raw`.
    ///
    /// # Safety
    /// `raw` is `Self::raw` of a packet of the program run in progress.
    unsafe fn with_raw<T>(raw: *mut c_void, f: impl FnOnce(&Self) -> T) -> T;

    /// Replaces `from` by `to` (`flags`' low bits: 2 or 4 bytes, or 0 with
    /// `to` a checksum difference) in the L4 checksum at `off`; the helper's
    /// other flags say whether the change is in the pseudo-header, whether a
    /// zero UDP checksum stays zero, and IPv6. Through the kernel helper
    /// because it also keeps CHECKSUM_COMPLETE and CHECKSUM_PARTIAL packets
    /// right, which BPF cannot tell apart.
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Drop>;

    /// Cuts or grows the packet to `len` bytes (Ethernet header included).
    fn resize(&self, len: u32) -> Result<(), Drop>;
    /// Inserts `len` zero bytes between the L2 and L3 headers.
    fn grow_l3(&self, len: u32) -> Result<(), Drop>;
    /// Copies `bytes` into the packet at `off`, keeping the packet's own
    /// checksum state (skb->csum) right.
    fn store_bytes<const N: usize>(&self, off: usize, bytes: &[u8; N]) -> Result<(), Drop>;

    /// Copies `len` (at most N) bytes of the packet from `off` into `dst`.
    fn load_into<const N: usize>(
        &self,
        off: usize,
        dst: &mut [u8; N],
        len: usize,
    ) -> Result<(), Drop>;
    /// Copies the first `len` (at most N) bytes of `src` into the packet at
    /// `off`, keeping the packet's own checksum state right.
    fn store_from<const N: usize>(&self, off: usize, src: &[u8; N], len: usize)
        -> Result<(), Drop>;
    /// Copies `len` bytes (at most MAX) of `src` from `src_off` (at most
    /// N - MAX: the verifier bounds the two apart and cannot relate them, so
    /// their sum must fit by their bounds alone) into the packet at `off`,
    /// keeping the packet's own checksum state right.
    fn store_from_at<const N: usize, const MAX: usize>(
        &self,
        off: usize,
        src: &[u8; N],
        src_off: usize,
        len: usize,
    ) -> Result<(), Drop>;
    /// Sends a copy of the packet, as it is now, into the ingress of `ifindex`.
    fn clone_to_ingress(&self, ifindex: u32) -> Result<(), Drop>;
    /// Sends a copy of the packet, as it is now, out of `ifindex`.
    fn clone_to(&self, ifindex: u32) -> Result<(), Drop>;
    /// The payload bytes of each segment of a GSO packet (several segments
    /// the stack cuts later); 0 for a packet that is not one.
    fn gso_size(&self) -> u32;
    /// True for a GSO packet.
    #[inline(always)]
    fn is_gso(&self) -> bool {
        self.gso_size() != 0
    }
    /// The kernel's route and neighbour lookup (bpf_fib_lookup); true on
    /// success, `params` then holding the L2 addresses.
    fn fib_lookup(&self, params: &mut bpf_fib_lookup, flags: u32) -> bool;

    /// True if a socket of this network namespace matches `tuple` (of
    /// `size` bytes: the IPv4 or IPv6 member).
    fn has_socket(&self, tcp: bool, tuple: &mut bpf_sock_tuple, size: u32) -> bool;

    /// The MTU of `ifindex` if the packet (or, for a GSO packet, one of
    /// its segments) is too big for it; None if it fits or cannot be told.
    fn too_big_for(&self, ifindex: u32) -> Option<u32>;
    /// The MTU of `ifindex`; None if there is no such device.
    fn device_mtu(&self, ifindex: u32) -> Option<u32>;

    /// Sends the packet out of `ifindex`, the kernel filling in the L2
    /// addresses from its neighbour table.
    fn redirect_neigh(&self, ifindex: u32) -> Outcome;
    /// Sends the packet out of `ifindex` as it is.
    fn redirect(&self, ifindex: u32) -> Outcome;

    /// A pointer to a `T` at `off`, if the packet holds all of it.
    ///
    /// Verifier trap: for a one-byte `T` LLVM folds `start + off + 1 > end`
    /// into `start + off >= end`, and the verifier learns nothing from that
    /// form when `off` is variable; read such bytes with a neighbour.
    #[inline(always)]
    fn ptr<T>(&self, off: usize) -> Option<*mut T> {
        let start = self.data();
        let end = self.data_end();
        // The bound tells the verifier, which loses the bounds of an offset
        // that went through memory (a parsed field) and refuses packet
        // arithmetic with an unbounded one; it must stay below 64 KiB with
        // the access added for the verifier to learn a range from the check
        // below. LLVM drops the bound where it can prove it, and then so can
        // the verifier.
        if off > MAX_OFF {
            return None;
        }
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

impl<'a> Packet for TcPacket<'a> {
    const PASS: i32 = TC_ACT_OK;

    const DROP: i32 = TC_ACT_SHOT;
    const REDIRECT: i32 = TC_ACT_REDIRECT;
    const STOLEN: i32 = TC_ACT_STOLEN;

    #[inline(always)]
    fn raw(&self) -> *mut c_void {
        self.skb() as *mut c_void
    }

    #[inline(always)]
    unsafe fn with_raw<T>(raw: *mut c_void, f: impl FnOnce(&Self) -> T) -> T {
        let ctx = TcContext::new(raw as *mut aya_ebpf::bindings::__sk_buff);
        // SAFETY: the borrow lives only as long as `f` runs, while `ctx` is
        // alive; `f` is given no way to keep it (it gets `&Self` only).
        let ctx: &'a TcContext = unsafe { &*(&ctx as *const TcContext) };
        f(&TcPacket(ctx))
    }

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
    fn l4_csum_replace(&self, off: usize, from: u32, to: u32, flags: u64) -> Result<(), Drop> {
        self.0
            .l4_csum_replace(off, from as u64, to as u64, flags)
            .map_err(|_| Drop(stat::DROP_CSUM_L4))
    }

    #[inline(always)]
    fn resize(&self, len: u32) -> Result<(), Drop> {
        // SAFETY: the helper takes the program's own context.
        match unsafe { bpf_skb_change_tail(self.skb(), len, 0) } {
            0 => Ok(()),
            _ => Err(Drop(stat::DROP_STORE)),
        }
    }

    #[inline(always)]
    fn grow_l3(&self, len: u32) -> Result<(), Drop> {
        // SAFETY: the helper takes the program's own context.
        let ret = unsafe { bpf_skb_adjust_room(self.skb(), len as i32, BPF_ADJ_ROOM_MAC, 0) };
        if ret == 0 {
            Ok(())
        } else {
            Err(Drop(stat::DROP_STORE))
        }
    }

    #[inline(always)]
    fn store_bytes<const N: usize>(&self, off: usize, bytes: &[u8; N]) -> Result<(), Drop> {
        // SAFETY: `bytes` is N readable bytes for the call; the helper
        // checks the packet's bounds itself.
        let ret = unsafe {
            bpf_skb_store_bytes(
                self.skb(),
                off as u32,
                bytes.as_ptr() as *const _,
                N as u32,
                BPF_F_RECOMPUTE_CSUM as u64,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(Drop(stat::DROP_STORE))
        }
    }

    #[inline(always)]
    fn load_into<const N: usize>(
        &self,
        off: usize,
        dst: &mut [u8; N],
        len: usize,
    ) -> Result<(), Drop> {
        let len = opaque(len);
        if len == 0 || len > N {
            return Err(Drop(stat::DROP_STORE));
        }
        // SAFETY: `dst` has room for `len` <= N bytes; the helper checks the
        // packet's bounds itself.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.skb() as *const _,
                off as u32,
                dst.as_mut_ptr() as *mut _,
                len as u32,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(Drop(stat::DROP_STORE))
        }
    }

    #[inline(always)]
    fn store_from<const N: usize>(
        &self,
        off: usize,
        src: &[u8; N],
        len: usize,
    ) -> Result<(), Drop> {
        let len = opaque(len);
        if len == 0 || len > N {
            return Err(Drop(stat::DROP_STORE));
        }
        // SAFETY: `src` holds `len` <= N readable bytes; the helper checks
        // the packet's bounds itself.
        let ret = unsafe {
            bpf_skb_store_bytes(
                self.skb(),
                off as u32,
                src.as_ptr() as *const _,
                len as u32,
                BPF_F_RECOMPUTE_CSUM as u64,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(Drop(stat::DROP_STORE))
        }
    }

    #[inline(always)]
    fn store_from_at<const N: usize, const MAX: usize>(
        &self,
        off: usize,
        src: &[u8; N],
        src_off: usize,
        len: usize,
    ) -> Result<(), Drop> {
        let src_off = opaque(src_off);
        let len = opaque(len);
        if len == 0 || len > MAX || MAX > N || src_off > N - MAX {
            return Err(Drop(stat::DROP_STORE));
        }
        // SAFETY: `src[src_off..src_off + len]` is within the array (checked
        // above); the helper checks the packet's bounds itself.
        let ret = unsafe {
            bpf_skb_store_bytes(
                self.skb(),
                off as u32,
                src.as_ptr().add(src_off) as *const _,
                len as u32,
                BPF_F_RECOMPUTE_CSUM as u64,
            )
        };
        if ret == 0 {
            Ok(())
        } else {
            Err(Drop(stat::DROP_STORE))
        }
    }

    #[inline(always)]
    fn clone_to(&self, ifindex: u32) -> Result<(), Drop> {
        // SAFETY: the helper takes the program's own context.
        match unsafe { bpf_clone_redirect(self.skb(), ifindex, 0) } {
            0 => Ok(()),
            _ => Err(Drop(stat::DROP_REDIRECT)),
        }
    }

    #[inline(always)]
    fn gso_size(&self) -> u32 {
        // SAFETY: as in `data`.
        unsafe { core::ptr::addr_of!((*self.skb()).gso_size).read_volatile() }
    }

    #[inline(always)]
    fn fib_lookup(&self, params: &mut bpf_fib_lookup, flags: u32) -> bool {
        // SAFETY: `params` is a whole bpf_fib_lookup on the caller's stack,
        // which the helper reads and fills.
        let ret = unsafe {
            aya_ebpf::helpers::bpf_fib_lookup(
                self.0.as_ptr(),
                params,
                core::mem::size_of::<bpf_fib_lookup>() as i32,
                flags,
            )
        };
        ret == 0
    }

    #[inline(always)]
    fn clone_to_ingress(&self, ifindex: u32) -> Result<(), Drop> {
        // SAFETY: the helper takes the program's own context.
        match unsafe { bpf_clone_redirect(self.skb(), ifindex, BPF_F_INGRESS as u64) } {
            0 => Ok(()),
            _ => Err(Drop(stat::DROP_REDIRECT)),
        }
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
    fn too_big_for(&self, ifindex: u32) -> Option<u32> {
        let mut mtu = 0u32;
        // SAFETY: the helper takes the program's own context and writes the
        // device's MTU into `mtu`, on the stack for the call.
        let ret = unsafe {
            bpf_check_mtu(
                self.0.as_ptr(),
                ifindex,
                &mut mtu,
                0,
                BPF_MTU_CHK_SEGS as u64,
            )
        };
        // 0: fits; > 0: too big (whole, or per segment); < 0: no such
        // device (under BPF_PROG_TEST_RUN) or bad arguments.
        (ret > 0).then_some(mtu)
    }

    #[inline(always)]
    fn device_mtu(&self, ifindex: u32) -> Option<u32> {
        // A length of 1 (mtu_len in) fits any device: only the MTU the
        // helper writes back is wanted.
        let mut mtu = 1u32;
        // SAFETY: as in `too_big_for`.
        let ret = unsafe { bpf_check_mtu(self.0.as_ptr(), ifindex, &mut mtu, 0, 0) };
        (ret >= 0).then_some(mtu)
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

/// The largest offset `Packet::ptr` reaches into a packet (headers and the
/// fragments kept for replay lie well within it).
const MAX_OFF: usize = 0x3fff;

const CHUNK: usize = 64;

/// The one's complement sum of `len` (at most MAX) bytes of the packet from
/// `off`.
#[inline(always)]
pub fn sum_range<const MAX: usize, P: Packet>(p: &P, off: usize, len: usize) -> Option<Sum> {
    if len > MAX {
        return None;
    }
    let mut s = Sum::default();
    let mut done = 0;
    for _ in 0..MAX / CHUNK {
        if done + CHUNK > len {
            break;
        }
        let ptr = p.ptr::<[u8; CHUNK]>(off + done)?;
        // SAFETY: `ptr` points at CHUNK bytes of packet the program may read
        // (checked just above); the helper only reads them.
        let r =
            unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, ptr as *mut u32, CHUNK as u32, 0) };
        if r < 0 {
            return None;
        }
        s = s.add32(r as u32);
        done += CHUNK;
    }
    for _ in 0..CHUNK / 2 {
        if done + 2 > len {
            break;
        }
        s = s.add16(p.read::<u16>(off + done)?);
        done += 2;
    }
    if done < len {
        // An odd last byte is the first of a word whose second is zero. It
        // is read with the byte before it (there is one: the stretch starts
        // after a header), see `Packet::ptr` on one-byte reads.
        s = s.add16(p.read::<[u8; 2]>(off + done - 1)?[1] as u16);
    }
    Some(s)
}

/// `x`, hidden from the optimiser: a bounds check on the result is kept and
/// made on the register the verifier then sees used, even where LLVM could
/// prove it redundant from an earlier check on a copy (which the verifier
/// does not connect).
#[inline(always)]
fn opaque(x: usize) -> usize {
    // SAFETY: a volatile read of a local.
    unsafe { core::ptr::read_volatile(&x) }
}

/// Where `forget` puts a value.
#[map(name = "pf_forget")]
static FORGET: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// `x`, bounded by 0x3fff, with everything else the verifier knows about it
/// forgotten: a value read from a map is any number. For a loop's running
/// offset, which would otherwise make every iteration (and every path after
/// it) a state of its own; each costs a map lookup.
#[inline(always)]
pub fn forget(x: usize) -> Option<usize> {
    forget_below(x, 0x3fff)
}

/// As `forget`, bounded by `max`.
#[inline(always)]
pub fn forget_below(x: usize, max: usize) -> Option<usize> {
    let slot = FORGET.get_ptr_mut(0)?;
    // SAFETY: a per-CPU array value from a successful lookup: valid for the
    // program run and used only by this CPU.
    let y = unsafe {
        core::ptr::write_volatile(slot, x as u64);
        core::ptr::read_volatile(slot)
    } as usize;
    (y <= max).then_some(y)
}

/// The body of a loop that `repeat` runs.
pub trait Repeat {
    /// Iteration `i`; false ends the loop.
    fn step(&mut self, i: u32) -> bool;
}

/// Runs `body.step(i)` for i = 0, 1, .. until it returns false, at most `n`
/// times, with `bpf_loop`: the verifier checks the body once instead of once
/// per iteration, which a long loop with branches in it would need more
/// instructions for than it accepts. The number of iterations run.
#[inline(always)]
pub fn repeat<R: Repeat>(n: u32, body: &mut R) -> Option<u32> {
    extern "C" fn step<R: Repeat>(i: u64, ctx: *mut c_void) -> i64 {
        // SAFETY: `ctx` is the `&mut R` that `repeat` passed to bpf_loop,
        // which calls this with it while `repeat` waits.
        let body = unsafe { &mut *(ctx as *mut R) };
        if body.step(i as u32) {
            0
        } else {
            1
        }
    }
    // SAFETY: the callback is a function of the program taking bpf_loop's
    // arguments; `body` outlives the call.
    let ran = unsafe {
        bpf_loop(
            n,
            step::<R> as *mut c_void,
            body as *mut R as *mut c_void,
            0,
        )
    };
    u32::try_from(ran).ok()
}

/// The program's return code for `outcome`, counting the drop reason.
#[inline(always)]
pub fn finish<P: Packet>(outcome: Outcome) -> i32 {
    match outcome {
        Ok(Verdict::Pass) => P::PASS,
        Ok(Verdict::Redirect) => P::REDIRECT,
        Ok(Verdict::Stolen) => P::STOLEN,
        Ok(Verdict::Pending) => {
            crate::stats::count(stat::DROP_STORE);
            P::DROP
        }
        Err(Drop(reason)) => {
            crate::stats::count(reason);
            P::DROP
        }
    }
}
