//! Ending killed TCP flows (`portfwd del --kill`) from the datapath.
//!
//! The first packet of a killed flow in each direction is turned into a RST
//! and delivered as usual, resetting its receiver (its sequence number is the
//! one the receiver expects). The sender's later packets (retransmissions,
//! since no ACK comes any more) are bounced back to it as RSTs carrying the
//! sequence number it acknowledged last, which resets the sender too.
use portfwd_common::{
    stat, Addr, CtEntry, CT_F_CLOSING, CT_F_KILL, CT_F_KILL_SENT, CT_LIFETIME_CLOSE_NS,
};

use crate::{
    family::{Family, Flow, Side, L4_DPORT_OFF, L4_SPORT_OFF, TCP_DOFF_OFF, TCP_RST},
    hooks::{Pending, Step},
    pkt::{Drop, Outcome, Packet, Ret, Verdict},
    stats,
};

const TCP_SEQ_OFF: usize = 4;
const TCP_ACK_SEQ_OFF: usize = 8;

/// For a packet of a killed TCP flow (entry `entry`, this packet's
/// direction): the first one becomes a RST for its receiver and goes on
/// (None: the caller NATs and forwards it as usual); later ones bounce back
/// to their sender (Some(outcome): a pending step, `reflect`).
#[inline(always)]
pub fn if_killed<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    entry: &mut CtEntry<F::Addr>,
    pending: &mut Pending<F::Addr>,
) -> Option<Outcome> {
    if entry.flags & CT_F_KILL == 0 || !flow.is_tcp() {
        return None;
    }
    if entry.flags & CT_F_KILL_SENT != 0 {
        pending.what = Step::Reflect;
        return Some(Ok(Verdict::Pending));
    }
    let now = pending.now;
    entry.flags |= CT_F_KILL_SENT | CT_F_CLOSING;
    entry.expires_ns = now + CT_LIFETIME_CLOSE_NS;
    match set_rst_only(p, flow) {
        Ok(()) => {
            stats::count(stat::KILL_RST_FORWARDED);
            None
        }
        Err(reason) => Some(Err(reason)),
    }
}

/// Makes the TCP flags a bare RST, fixing the checksum.
#[inline(always)]
fn set_rst_only<A: Addr, P: Packet>(p: &P, flow: &Flow<A>) -> Result<(), Drop> {
    // The 16-bit word holding the data offset and the flags.
    let off = flow.l4_off() + TCP_DOFF_OFF;
    let old: u16 = p.read(off).ok_or(Drop(stat::DROP_STORE))?;
    // Byte 12 (data offset) stays; byte 13 (flags) becomes RST. On the
    // little-endian target byte 13 is the high byte of the loaded word.
    let new = (old & 0x00ff) | ((TCP_RST as u16) << 8);
    p.l4_csum_replace(flow.l4_csum_off(), old as u32, new as u32, 2)?;
    p.write(off, new)
}

/// Turns the packet into a RST back to its sender and sends it out of the
/// interface it came in on. Swapping addresses and ports leaves every
/// checksum unchanged; only the sequence number and flags need updates.
// A subprogram of its own: a rare path, kept off the hot path's stack.
#[inline(never)]
pub fn reflect<F: Family, P: Packet>(p: &P, flow: &Flow<F::Addr>) -> Ret {
    Ret::of(|| {
        try_reflect::<F, P>(p, flow)?;
        stats::count(stat::KILL_RST_REFLECTED);
        p.redirect(p.ingress_ifindex())
    })
}

#[inline(always)]
fn try_reflect<F: Family, P: Packet>(p: &P, flow: &Flow<F::Addr>) -> Result<(), Drop> {
    let bad = Drop(stat::DROP_STORE);
    let dst_mac: [u8; 6] = p.read(0).ok_or(bad)?;
    let src_mac: [u8; 6] = p.read(6).ok_or(bad)?;
    p.write(0, src_mac)?;
    p.write(6, dst_mac)?;
    F::write_addr(p, Side::Src, flow.daddr_be)?;
    F::write_addr(p, Side::Dst, flow.saddr_be)?;
    p.write(flow.l4_off() + L4_SPORT_OFF, flow.dport_be)?;
    p.write(flow.l4_off() + L4_DPORT_OFF, flow.sport_be)?;
    let seq: u32 = p.read(flow.l4_off() + TCP_SEQ_OFF).ok_or(bad)?;
    let ack: u32 = p.read(flow.l4_off() + TCP_ACK_SEQ_OFF).ok_or(bad)?;
    p.l4_csum_replace(flow.l4_csum_off(), seq, ack, 4)?;
    p.write(flow.l4_off() + TCP_SEQ_OFF, ack)?;
    set_rst_only(p, flow)
}
