//! Path MTU: a packet about to be redirected that does not fit the egress
//! device must not vanish (the kernel's forwarding path would answer or
//! fragment it; a redirect skips that path, and the device drops what is too
//! big).
use aya_ebpf::{macros::map, maps::Array};

use super::{Pending, Step};
use crate::{
    family::{Family, Flow, ETH_HLEN, TCP_DOFF_OFF},
    pkt::{Outcome, Packet, Verdict},
};

/// Egress MTUs as bpf_check_mtu last told them, so that most packets are
/// measured against a number instead of a helper call. One word per device,
/// indexed by the low bits of its ifindex: ifindex << 32 | mtu << 16 | the
/// time it was read, in units of 2^30 ns (about a second, 16 bits). A word
/// of another device, or older than that second, is read again: an MTU
/// change is seen within about a second. One 64-bit word, so a reader never
/// sees half of another CPU's write.
#[map(name = "pf_mtucache")]
static MTU_CACHE: Array<u64> = Array::with_max_entries(MTU_CACHE_SLOTS, 0);
const MTU_CACHE_SLOTS: u32 = 256;

/// The MTU of `ifindex` if the packet is too big for it; None if it fits
/// (or the device cannot be told, as under BPF_PROG_TEST_RUN).
#[inline(always)]
fn too_big<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    ifindex: u32,
    now: u64,
) -> Option<u32> {
    let gso_size = p.gso_size();
    // What goes out as one packet: the whole frame, or each segment of a
    // GSO packet. A TCP segment is the packet's own L3 and TCP headers
    // before gso_size bytes of payload (as the kernel's
    // skb_gso_validate_network_len counts it). Other GSO packets (UDP
    // segmentation, tunnels whose inner headers we do not parse) are
    // measured per segment by the helper itself.
    let l3_len = if gso_size == 0 {
        p.len().saturating_sub(ETH_HLEN as u32)
    } else if flow.is_tcp() {
        // Read as the 16-bit word with the flags (byte 12 is its low byte
        // on this little-endian target): LLVM turns the bound of a 1-byte
        // read into `ptr < end`, which gives the verifier no range.
        let doff = p.read::<u16>(flow.l4_off() + TCP_DOFF_OFF)? as u8 >> 4;
        (flow.l4_off() - ETH_HLEN) as u32 + doff as u32 * 4 + gso_size
    } else {
        return p.too_big_for(ifindex);
    };
    let slot = MTU_CACHE.get_ptr_mut(ifindex % MTU_CACHE_SLOTS)?;
    let tick = (now >> 30) as u16;
    // SAFETY: an array value from a successful lookup, valid for the program
    // run; read and written whole (see MTU_CACHE).
    let word = unsafe { core::ptr::read_volatile(slot) };
    let cached = (word >> 32) as u32 == ifindex && word as u16 == tick;
    let mtu = if cached {
        (word >> 16) as u16 as u32
    } else {
        // 16 bits are kept: 65 535 or more (the loopback's 65 536) is no
        // limit for any packet here.
        let mtu = p.device_mtu(ifindex)?.min(0xffff);
        let word = (ifindex as u64) << 32 | (mtu as u64 & 0xffff) << 16 | tick as u64;
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(slot, word) };
        mtu
    };
    (l3_len > mtu).then_some(mtu)
}

/// Checked before the packet is rewritten, so that an error quotes it as its
/// sender sent it. Ok(0): it fits `ifindex`. Ok(mtu): it is to be cut into
/// fragments of at most `mtu` once rewritten (see `send`). Err: the answer
/// instead (a pending step): with DF (always for IPv6), or when it cannot be
/// cut, the sender gets "fragmentation needed" with the device's MTU from
/// `from`, the host address it sent to.
#[inline(always)]
pub fn check<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    ifindex: u32,
    from: F::Addr,
    pending: &mut Pending<F::Addr>,
) -> Result<u32, Outcome> {
    // Any packet this small fits every device of the family.
    if p.len() <= F::MIN_MTU + ETH_HLEN as u32 {
        return Ok(0);
    }
    let Some(mtu) = too_big::<F, P>(p, flow, ifindex, pending.now) else {
        return Ok(0);
    };
    if !F::dont_fragment(p) && F::can_cut(p, mtu) {
        return Ok(mtu);
    }
    pending.what = Step::TooBig;
    pending.mtu = mtu;
    pending.from = from;
    Err(Ok(Verdict::Pending))
}

/// Sends the rewritten packet out of `ifindex`: whole, or (a pending step)
/// cut into fragments of at most `cut_mtu` when `check` said so.
#[inline(always)]
pub fn send<F: Family, P: Packet>(
    p: &P,
    cut_mtu: u32,
    ifindex: u32,
    pending: &mut Pending<F::Addr>,
) -> Outcome {
    if cut_mtu != 0 {
        pending.what = Step::Cut;
        pending.mtu = cut_mtu;
        pending.ifindex = ifindex;
        return Ok(Verdict::Pending);
    }
    p.redirect_neigh(ifindex)
}
