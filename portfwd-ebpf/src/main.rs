//! portfwd's kernel programs. Entry points only: each attach point is one thin
//! function that hands the packet to the module for its concern.
//!
//! - `dnat`: packets from outside to a published host port (TC ingress on the
//!   external interfaces);
//! - `rnat`: the containers' replies (TC ingress on the bridge), and handing
//!   hairpin packets from containers to `dnat`, with `snat` for their source;
//! - `sock`: clients on the host itself (cgroup sock_addr hooks), and keeping
//!   host processes off published ports;
//! - `reset`: ending killed flows;
//! - `parse`, `nat`, `conntrack`, `mapping`, `maps`, `stats`: shared pieces.
#![no_std]
#![no_main]

mod conntrack;
mod dnat;
mod mapping;
mod maps;
mod nat;
mod parse;
mod reset;
mod rnat;
mod snat;
mod sock;
mod stats;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};

/// TC ingress on each external interface: DNAT to the container, redirect to
/// the bridge.
#[classifier]
pub fn pf_ext_in(ctx: TcContext) -> i32 {
    dnat::from_external(&ctx)
}

/// TC ingress on the bridge: reverse NAT of replies, redirect to the client;
/// DNAT and SNAT of containers' own packets to published ports (hairpin).
#[classifier]
pub fn pf_br_in(ctx: TcContext) -> i32 {
    rnat::from_bridge(&ctx)
}

/// connect(2), TCP and UDP: clients on the host itself.
#[cgroup_sock_addr(connect4)]
pub fn pf_connect4(ctx: SockAddrContext) -> i32 {
    sock::redirect(&ctx)
}

/// sendmsg(2) on unconnected UDP sockets.
#[cgroup_sock_addr(sendmsg4)]
pub fn pf_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::redirect(&ctx)
}

/// recvmsg(2) on UDP sockets: replies appear to come from the address used.
#[cgroup_sock_addr(recvmsg4)]
pub fn pf_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx)
}

/// getpeername(2): the peer is the address the application connected to.
#[cgroup_sock_addr(getpeername4)]
pub fn pf_getpeer4(ctx: SockAddrContext) -> i32 {
    sock::restore(&ctx)
}

/// bind(2): published ports are reserved.
#[cgroup_sock_addr(bind4)]
pub fn pf_bind4(ctx: SockAddrContext) -> i32 {
    sock::bind(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach here; nothing to do.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
