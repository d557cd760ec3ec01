//! Socket-level forwarding for clients on the host itself, which never send a
//! packet through the external interfaces: processes connecting to
//! 127.0.0.1:PORT or to any of the host's addresses. cgroup sock_addr hooks
//! rewrite the destination at connect(2) / sendmsg(2) time, so no packet
//! needs NAT at all, and put the original address back in recvmsg(2) and
//! getpeername(2).
//!
//! A destination is rewritten only when the socket is in the host's network
//! namespace (the hooks run for every namespace under the cgroup) and the
//! destination is loopback or one of the host's addresses, with a mapped
//! port. Sockets in other namespaces are never touched: a container on the
//! bridge reaching a host address is hairpinned by the TC program on the
//! bridge, and any other namespace's packets meet the external interfaces
//! like a remote client's. Rewriting them here would send them straight to
//! the container's address over a routed path that Docker's FORWARD policy
//! drops, and would touch a container's own 127.0.0.1.
use aya_ebpf::{
    bindings::bpf_sock_addr,
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
    EbpfContext as _, Global,
};
use portfwd_common::{stat, MapKey, PortKey, SockRevKey, SockRevValue, PROTO_TCP, PROTO_UDP};

use crate::{
    mapping,
    maps::{MAPPINGS, PORTS, SOCK_REVERSE},
    stats,
};

/// Cookie of the network namespace portfwd is attached in; set at load time.
#[unsafe(no_mangle)]
static HOST_NETNS: Global<u64> = Global::new(0);

const ALLOW: i32 = 1;
const DENY: i32 = 0;

#[inline(always)]
fn in_host_netns(ctx: &SockAddrContext) -> bool {
    let host = HOST_NETNS.load();
    // SAFETY: the helper only reads the program's own context.
    host != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == host
}

#[inline(always)]
fn sa(ctx: &SockAddrContext) -> &mut bpf_sock_addr {
    // SAFETY: the context pointer is valid for the whole program run, and the
    // kernel lets these programs write user_ip4 / user_port.
    unsafe { &mut *ctx.sock_addr }
}

#[inline(always)]
fn l4_proto(sa: &bpf_sock_addr) -> Option<u8> {
    match sa.protocol {
        p if p == PROTO_TCP as u32 => Some(PROTO_TCP),
        p if p == PROTO_UDP as u32 => Some(PROTO_UDP),
        _ => None,
    }
}

/// connect4 (TCP and UDP) and sendmsg4 (unconnected UDP).
#[inline(always)]
pub fn redirect(ctx: &SockAddrContext) -> i32 {
    let addr = sa(ctx);
    let Some(proto) = l4_proto(addr) else {
        return ALLOW;
    };
    let dst = addr.user_ip4;
    // user_port is a 32-bit field holding a 16-bit port in network order;
    // read it whole (narrower loads are rejected for some hooks).
    let port = addr.user_port as u16;
    if !in_host_netns(ctx) || !(mapping::is_loopback(dst) || mapping::is_local(dst)) {
        return ALLOW;
    }
    let Some(m) = mapping::lookup(dst, port, proto) else {
        return ALLOW;
    };
    addr.user_ip4 = m.backend.addr_be;
    addr.user_port = m.backend.port_be as u32;
    let key = SockRevKey {
        // SAFETY: the helper only reads the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr_be: m.backend.addr_be,
        port_be: m.backend.port_be,
        pad: 0,
    };
    let orig = SockRevValue {
        addr_be: dst,
        port_be: port,
        pad: 0,
    };
    // Best effort: without it only recvmsg/getpeername would show the
    // container's address.
    let _ = SOCK_REVERSE.insert(&key, &orig, 0);
    stats::count(stat::SOCK_REWRITTEN);
    ALLOW
}

/// recvmsg4 (UDP source) and getpeername4: show the address the application
/// used instead of the container endpoint it was sent to.
#[inline(always)]
pub fn restore(ctx: &SockAddrContext) -> i32 {
    let addr = sa(ctx);
    let key = SockRevKey {
        // SAFETY: the helper only reads the program's own context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.as_ptr()) },
        addr_be: addr.user_ip4,
        port_be: addr.user_port as u16,
        pad: 0,
    };
    // SAFETY: plain integers copied out at once.
    if let Some(orig) = unsafe { SOCK_REVERSE.get(&key) } {
        addr.user_ip4 = orig.addr_be;
        addr.user_port = orig.port_be as u32;
    }
    ALLOW
}

/// bind4: a host process may not bind a published port (it would be
/// shadowed by the mapping). Containers and other namespaces are not affected.
#[inline(always)]
pub fn bind(ctx: &SockAddrContext) -> i32 {
    let addr = sa(ctx);
    let Some(proto) = l4_proto(addr) else {
        return ALLOW;
    };
    let port = addr.user_port as u16;
    if port == 0 || !in_host_netns(ctx) {
        return ALLOW;
    }
    let taken = if addr.user_ip4 == 0 {
        // SAFETY: presence check only.
        unsafe {
            PORTS.get(&PortKey {
                port_be: port,
                proto,
                pad: 0,
            })
        }
        .is_some()
    } else {
        let mut key = MapKey {
            addr_be: 0,
            port_be: port,
            proto,
            pad: 0,
        };
        // SAFETY: presence checks only.
        let wildcard = unsafe { MAPPINGS.get(&key) }.is_some();
        key.addr_be = addr.user_ip4;
        // SAFETY: as above.
        wildcard || unsafe { MAPPINGS.get(&key) }.is_some()
    };
    if taken {
        stats::count(stat::BIND_REFUSED);
        DENY
    } else {
        ALLOW
    }
}
