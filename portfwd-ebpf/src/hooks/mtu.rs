//! Path MTU: a packet about to be redirected that does not fit the egress
//! device must not vanish (the kernel's forwarding path would answer or
//! fragment it; a redirect skips that path, and the device drops what is too
//! big).
use super::{Pending, Step};
use crate::{
    family::{Family, ETH_HLEN},
    pkt::{Outcome, Packet, Verdict},
};

/// Checked before the packet is rewritten, so that an error quotes it as its
/// sender sent it. Ok(0): it fits `ifindex`. Ok(mtu): it is to be cut into
/// fragments of at most `mtu` once rewritten (see `send`). Err: the answer
/// instead (a pending step): with DF (always for IPv6), or when it cannot be
/// cut, the sender gets "fragmentation needed" with the device's MTU from
/// `from`, the host address it sent to.
#[inline(always)]
pub fn check<F: Family, P: Packet>(
    p: &P,
    ifindex: u32,
    from: F::Addr,
    pending: &mut Pending<F::Addr>,
) -> Result<u32, Outcome> {
    // Any packet this small fits every device of the family.
    if p.len() <= F::MIN_MTU + ETH_HLEN as u32 {
        return Ok(0);
    }
    let Some(mtu) = p.too_big_for(ifindex) else {
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
