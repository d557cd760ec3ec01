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
use aya_ebpf::helpers::bpf_get_prandom_u32;
use portfwd_common::{stat, Backend, CtKey};

use crate::{conntrack, family::Family, family::Flow, pkt::Packet, stats};

/// Random ports tried after the client's own.
const RETRIES: u32 = 3;
const FIRST_UNPRIVILEGED: u32 = 1024;

/// The source address and a free source port for the hairpin flow whose
/// first packet is `flow`, going to `backend`. None if no port was free.
#[inline(always)]
pub fn pick<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    backend: &Backend<F::Addr>,
    now: u64,
) -> Option<(F::Addr, u16)> {
    let addr = flow.daddr_be;
    if is_free::<F, P>(p, flow, backend, addr, flow.sport_be, now) {
        return Some((addr, flow.sport_be));
    }
    for _ in 0..RETRIES {
        // SAFETY: bpf_get_prandom_u32 has no preconditions.
        let r = unsafe { bpf_get_prandom_u32() };
        let port = (FIRST_UNPRIVILEGED + r % (65_536 - FIRST_UNPRIVILEGED)) as u16;
        let port_be = port.to_be();
        if is_free::<F, P>(p, flow, backend, addr, port_be, now) {
            stats::count(stat::HAIRPIN_PORT_MOVED);
            return Some((addr, port_be));
        }
    }
    None
}

#[inline(always)]
fn is_free<F: Family, P: Packet>(
    p: &P,
    flow: &Flow<F::Addr>,
    backend: &Backend<F::Addr>,
    addr: F::Addr,
    port_be: u16,
    now: u64,
) -> bool {
    let reply_key = CtKey::new(backend.addr_be, addr, backend.port_be, port_be, flow.proto);
    if let Some(e) = conntrack::lookup::<F>(&reply_key, now) {
        if !e.get().is_reply_to(flow.saddr_be, flow.sport_be) {
            return false;
        }
    }
    // A socket of this namespace that would take a packet from the backend
    // to `addr:port_be`.
    let (mut tuple, size) = F::sock_tuple(&reply_key);
    !p.has_socket(flow.is_tcp(), &mut tuple, size)
}
