//! Source NAT for hairpin flows: choosing the source port.
//!
//! A container that reaches a published port through a host address has its
//! packets arrive on the bridge. They are DNATed like any client's, but the
//! container's reply would go straight back to the client over the bridge,
//! never through portfwd, so the source is rewritten too: to the host address
//! the client used (the container sees the host calling, as with
//! docker-proxy), keeping the client's own port when that is free.
//!
//! A port is free for backend B when no live flow already uses
//! (B -> snat address:port) as its reply tuple, and no socket of the host
//! itself answers to that tuple (a host process connected to the container
//! from that address and port, or a listener on that port). Otherwise a few
//! random ports from 1024..=65535 are tried; a privileged source port is
//! never made up.
use aya_ebpf::{
    bindings::{bpf_sock_tuple, BPF_F_CURRENT_NETNS},
    helpers::{bpf_get_prandom_u32, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
    EbpfContext as _,
};
use portfwd_common::{stat, Backend, CtKey};

use crate::{conntrack, parse::Flow, stats};

/// Random ports tried after the client's own.
const RETRIES: u32 = 3;
const FIRST_UNPRIVILEGED: u32 = 1024;

/// The source address and a free source port for the hairpin flow whose
/// first packet is `flow`, going to `backend`. None if no port was free.
#[inline(always)]
pub fn pick(ctx: &TcContext, flow: &Flow, backend: &Backend, now: u64) -> Option<(u32, u16)> {
    let addr = flow.daddr_be;
    if is_free(ctx, flow, backend, addr, flow.sport_be, now) {
        return Some((addr, flow.sport_be));
    }
    for _ in 0..RETRIES {
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let r = unsafe { bpf_get_prandom_u32() };
        let port = (FIRST_UNPRIVILEGED + r % (65_536 - FIRST_UNPRIVILEGED)) as u16;
        let port_be = port.to_be();
        if is_free(ctx, flow, backend, addr, port_be, now) {
            stats::count(stat::HAIRPIN_PORT_MOVED);
            return Some((addr, port_be));
        }
    }
    None
}

#[inline(always)]
fn is_free(
    ctx: &TcContext,
    flow: &Flow,
    backend: &Backend,
    addr: u32,
    port_be: u16,
    now: u64,
) -> bool {
    let reply_key = CtKey {
        saddr_be: backend.addr_be,
        daddr_be: addr,
        sport_be: backend.port_be,
        dport_be: port_be,
        proto: flow.proto,
        pad: [0; 3],
    };
    if let Some(e) = conntrack::lookup(&reply_key, now) {
        // SAFETY: pointer from `conntrack::lookup` in this program run.
        let e = unsafe { &*e };
        if !e.is_reply_to(flow.saddr_be, flow.sport_be) {
            return false;
        }
    }
    !host_socket(ctx, flow.is_tcp(), backend, addr, port_be)
}

/// True if a socket of this namespace would take a packet from `backend` to
/// `addr:port_be`.
#[inline(always)]
fn host_socket(ctx: &TcContext, tcp: bool, backend: &Backend, addr: u32, port_be: u16) -> bool {
    // SAFETY: bpf_sock_tuple is plain integers; all zeroes is a valid value.
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4.saddr = backend.addr_be;
    tuple.__bindgen_anon_1.ipv4.daddr = addr;
    tuple.__bindgen_anon_1.ipv4.sport = backend.port_be;
    tuple.__bindgen_anon_1.ipv4.dport = port_be;
    // The IPv4 part of the union: two addresses and two ports.
    let size = 12;
    let netns = BPF_F_CURRENT_NETNS as u64;
    // SAFETY: the context is the program's own, `tuple` lives on the stack
    // for the call and `size` covers its IPv4 member.
    let sk = unsafe {
        if tcp {
            bpf_skc_lookup_tcp(ctx.as_ptr(), &mut tuple, size, netns, 0)
        } else {
            bpf_sk_lookup_udp(ctx.as_ptr(), &mut tuple, size, netns, 0)
        }
    };
    if sk.is_null() {
        return false;
    }
    // SAFETY: `sk` is the non-NULL reference the lookup returned; it must be
    // released exactly once.
    unsafe { bpf_sk_release(sk as *mut _) };
    true
}
