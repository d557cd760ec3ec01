//! portfwd's kernel programs. Entry points only: each attach point is one thin
//! function that hands its context to the orchestrator for its concern.
//!
//! - `hooks`: one orchestrator per TC attach point, deciding what a packet
//!   needs; `xlate`: the leaf transforms they apply (DNAT, reverse NAT,
//!   hairpin source ports, resets);
//! - `family`: IPv4 and IPv6 behind the `Family` trait; `pkt`: packet access behind
//!   the `Packet` trait (TC today);
//! - `sock`: the cgroup socket hooks, apart from the packet path;
//! - `conntrack`, `mapping`, `nat`, `maps`, `stats`: shared pieces.
#![no_std]
#![no_main]
// aya-ebpf map methods take `impl Borrow<K>`: keys and values are passed by
// reference so that they are not copied onto the 512-byte stack.
#![allow(clippy::needless_borrows_for_generic_args)]

mod conntrack;
mod csum;
mod family;
mod hooks;
mod mapping;
mod maps;
mod nat;
mod pkt;
mod sock;
mod stats;
mod xlate;

use aya_ebpf::{
    macros::{cgroup_sock_addr, classifier},
    programs::{SockAddrContext, TcContext},
};

use crate::{
    family::{v4::Ipv4, v6::Ipv6},
    pkt::{finish, TcPacket},
    sock::addr::V4Mapped,
};

/// TC ingress on each external interface: DNAT to the container, redirect to
/// the bridge.
#[classifier]
pub fn pf_ext_in(ctx: TcContext) -> i32 {
    let p = TcPacket(&ctx);
    finish::<TcPacket>(hooks::by_family(
        &p,
        hooks::ext_ingress::run::<Ipv4, _>,
        hooks::ext_ingress::run::<Ipv6, _>,
    ))
}

/// TC ingress on the bridge: reverse NAT of replies, redirect to the client;
/// DNAT and SNAT of containers' own packets to published ports (hairpin).
#[classifier]
pub fn pf_br_in(ctx: TcContext) -> i32 {
    let p = TcPacket(&ctx);
    finish::<TcPacket>(hooks::by_family(
        &p,
        hooks::bridge_ingress::run::<Ipv4, _>,
        hooks::bridge_ingress::run::<Ipv6, _>,
    ))
}

/// connect(2), TCP and UDP: clients on the host itself.
#[cgroup_sock_addr(connect4)]
pub fn pf_connect4(ctx: SockAddrContext) -> i32 {
    sock::addr::redirect::<Ipv4>(&ctx)
}

/// sendmsg(2) on unconnected UDP sockets.
#[cgroup_sock_addr(sendmsg4)]
pub fn pf_sendmsg4(ctx: SockAddrContext) -> i32 {
    sock::addr::redirect::<Ipv4>(&ctx)
}

/// recvmsg(2) on UDP sockets: replies appear to come from the address used.
#[cgroup_sock_addr(recvmsg4)]
pub fn pf_recvmsg4(ctx: SockAddrContext) -> i32 {
    sock::addr::restore::<Ipv4>(&ctx)
}

/// getpeername(2): the peer is the address the application connected to.
#[cgroup_sock_addr(getpeername4)]
pub fn pf_getpeer4(ctx: SockAddrContext) -> i32 {
    sock::addr::restore::<Ipv4>(&ctx)
}

/// bind(2): published ports are reserved.
#[cgroup_sock_addr(bind4)]
pub fn pf_bind4(ctx: SockAddrContext) -> i32 {
    sock::addr::bind::<Ipv4>(&ctx)
}

/// connect(2) on IPv6 sockets; an IPv4-mapped destination goes by the
/// IPv4 mappings (the kernel runs no IPv4 hook for it).
#[cgroup_sock_addr(connect6)]
pub fn pf_connect6(ctx: SockAddrContext) -> i32 {
    if V4Mapped::applies(&ctx) {
        sock::addr::redirect::<V4Mapped>(&ctx)
    } else {
        sock::addr::redirect::<Ipv6>(&ctx)
    }
}

/// sendmsg(2) on unconnected IPv6 UDP sockets.
#[cgroup_sock_addr(sendmsg6)]
pub fn pf_sendmsg6(ctx: SockAddrContext) -> i32 {
    if V4Mapped::applies(&ctx) {
        sock::addr::redirect::<V4Mapped>(&ctx)
    } else {
        sock::addr::redirect::<Ipv6>(&ctx)
    }
}

/// recvmsg(2) on IPv6 UDP sockets.
#[cgroup_sock_addr(recvmsg6)]
pub fn pf_recvmsg6(ctx: SockAddrContext) -> i32 {
    if V4Mapped::applies(&ctx) {
        sock::addr::restore::<V4Mapped>(&ctx)
    } else {
        sock::addr::restore::<Ipv6>(&ctx)
    }
}

/// getpeername(2) on IPv6 sockets.
#[cgroup_sock_addr(getpeername6)]
pub fn pf_getpeer6(ctx: SockAddrContext) -> i32 {
    if V4Mapped::applies(&ctx) {
        sock::addr::restore::<V4Mapped>(&ctx)
    } else {
        sock::addr::restore::<Ipv6>(&ctx)
    }
}

/// bind(2) on IPv6 sockets.
#[cgroup_sock_addr(bind6)]
pub fn pf_bind6(ctx: SockAddrContext) -> i32 {
    if V4Mapped::applies(&ctx) {
        sock::addr::bind::<V4Mapped>(&ctx)
    } else {
        sock::addr::bind::<Ipv6>(&ctx)
    }
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
