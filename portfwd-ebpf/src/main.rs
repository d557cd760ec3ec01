//! portfwd's kernel programs. Entry points only: each attach point is one thin
//! function that hands the packet to the module for its concern.
//!
//! - `dnat`: packets from outside to a published host port (TC ingress on the
//!   external interfaces);
//! - `rnat`: the containers' replies (TC ingress on the bridge);
//! - `parse`, `nat`, `conntrack`, `maps`, `stats`: the pieces both use.
#![no_std]
#![no_main]

mod conntrack;
mod dnat;
mod maps;
mod nat;
mod parse;
mod rnat;
mod stats;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// TC ingress on each external interface: DNAT to the container, redirect to
/// the bridge.
#[classifier]
pub fn pf_ext_in(ctx: TcContext) -> i32 {
    dnat::from_external(&ctx)
}

/// TC ingress on the bridge: reverse NAT of replies, redirect to the client.
#[classifier]
pub fn pf_br_in(ctx: TcContext) -> i32 {
    rnat::from_bridge(&ctx)
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
