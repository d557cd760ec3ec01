//! Ending killed TCP flows (`portfwd del --kill`) from the datapath.
//!
//! The first packet of a killed flow in each direction is turned into a RST
//! and delivered as usual, resetting its receiver (its sequence number is the
//! one the receiver expects). The sender's later packets (retransmissions,
//! since no ACK comes any more) are bounced back to it as RSTs carrying the
//! sequence number it acknowledged last, which resets the sender too.
use aya_ebpf::{helpers::bpf_redirect, programs::TcContext};
use portfwd_common::{
    stat, CtEntry, CT_F_CLOSING, CT_F_KILL, CT_F_KILL_SENT, CT_LIFETIME_CLOSE_NS,
};

use crate::{
    dnat::ingress_ifindex,
    parse::{Flow, ETH_HLEN, IP_DADDR_OFF, IP_SADDR_OFF, L4_DPORT_OFF, L4_SPORT_OFF, TCP_RST},
    stats,
};

const TCP_SEQ_OFF: usize = 4;
const TCP_ACK_SEQ_OFF: usize = 8;
/// The 16-bit word holding the data offset and the flags.
const TCP_DOFF_FLAGS_OFF: usize = 12;

/// For a packet of a killed TCP flow (entry `entry`, this packet's
/// direction): the first one becomes a RST for its receiver and goes on
/// (None: the caller NATs and forwards it as usual); later ones bounce back
/// to their sender (Some(verdict)).
#[inline(always)]
pub fn if_killed(ctx: &TcContext, flow: &Flow, entry: &mut CtEntry, now: u64) -> Option<i32> {
    if entry.flags & CT_F_KILL == 0 || !flow.is_tcp() {
        return None;
    }
    if entry.flags & CT_F_KILL_SENT != 0 {
        return Some(reflect(ctx, flow, ingress_ifindex(ctx)));
    }
    entry.flags |= CT_F_KILL_SENT | CT_F_CLOSING;
    entry.expires_ns = now + CT_LIFETIME_CLOSE_NS;
    match make_rst(ctx, flow) {
        Ok(()) => None,
        Err(reason) => Some(stats::drop(reason)),
    }
}

/// Turns the packet into a RST for its receiver.
#[inline(always)]
fn make_rst(ctx: &TcContext, flow: &Flow) -> Result<(), u32> {
    set_rst_only(ctx, flow)?;
    stats::count(stat::KILL_RST_FORWARDED);
    Ok(())
}

/// Makes the TCP flags a bare RST, fixing the checksum.
#[inline(always)]
fn set_rst_only(ctx: &TcContext, flow: &Flow) -> Result<(), u32> {
    let off = flow.l4_off + TCP_DOFF_FLAGS_OFF;
    let old: u16 = ctx.load(off).map_err(|_| stat::DROP_STORE)?;
    // Byte 12 (data offset) stays; byte 13 (flags) becomes RST. On the
    // little-endian target byte 13 is the high byte of the loaded word.
    let new = (old & 0x00ff) | ((TCP_RST as u16) << 8);
    ctx.l4_csum_replace(flow.l4_csum_off(), old as u64, new as u64, 2)
        .map_err(|_| stat::DROP_CSUM_L4)?;
    ctx.store(off, &new, 0).map_err(|_| stat::DROP_STORE)
}

/// Turns the packet into a RST back to its sender and sends it out of the
/// interface it came in on. Swapping addresses and ports leaves every
/// checksum unchanged; only the sequence number and flags need updates.
#[inline(always)]
fn reflect(ctx: &TcContext, flow: &Flow, ifindex: u32) -> i32 {
    match try_reflect(ctx, flow) {
        Ok(()) => {
            stats::count(stat::KILL_RST_REFLECTED);
            // SAFETY: bpf_redirect has no memory arguments.
            unsafe { bpf_redirect(ifindex, 0) as i32 }
        }
        Err(reason) => stats::drop(reason),
    }
}

#[inline(always)]
fn try_reflect(ctx: &TcContext, flow: &Flow) -> Result<(), u32> {
    let dst_mac: [u8; 6] = ctx.load(0).map_err(|_| stat::DROP_STORE)?;
    let src_mac: [u8; 6] = ctx.load(6).map_err(|_| stat::DROP_STORE)?;
    ctx.store(0, &src_mac, 0).map_err(|_| stat::DROP_STORE)?;
    ctx.store(6, &dst_mac, 0).map_err(|_| stat::DROP_STORE)?;
    ctx.store(ETH_HLEN + IP_SADDR_OFF, &flow.daddr_be, 0)
        .map_err(|_| stat::DROP_STORE)?;
    ctx.store(ETH_HLEN + IP_DADDR_OFF, &flow.saddr_be, 0)
        .map_err(|_| stat::DROP_STORE)?;
    ctx.store(flow.l4_off + L4_SPORT_OFF, &flow.dport_be, 0)
        .map_err(|_| stat::DROP_STORE)?;
    ctx.store(flow.l4_off + L4_DPORT_OFF, &flow.sport_be, 0)
        .map_err(|_| stat::DROP_STORE)?;
    let seq: u32 = ctx
        .load(flow.l4_off + TCP_SEQ_OFF)
        .map_err(|_| stat::DROP_STORE)?;
    let ack: u32 = ctx
        .load(flow.l4_off + TCP_ACK_SEQ_OFF)
        .map_err(|_| stat::DROP_STORE)?;
    ctx.l4_csum_replace(flow.l4_csum_off(), seq as u64, ack as u64, 4)
        .map_err(|_| stat::DROP_CSUM_L4)?;
    ctx.store(flow.l4_off + TCP_SEQ_OFF, &ack, 0)
        .map_err(|_| stat::DROP_STORE)?;
    set_rst_only(ctx, flow)
}
