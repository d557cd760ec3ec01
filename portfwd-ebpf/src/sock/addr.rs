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
    maps::LruHashMap,
    programs::SockAddrContext,
    EbpfContext as _, Global,
};
use portfwd_common::{
    ports_refuse_bind, stat, MapKey, PortKey, SockRevKey, SockRevValue, AF_INET,
    BACKEND_F_HOST_MAY_BIND, PROTO_TCP, PROTO_UDP, V4, V6,
};

use crate::{
    family::{v4::Ipv4, v6::Ipv6, Family},
    mapping,
    maps::{PORTS, SOCK_REVERSE4, SOCK_REVERSE6},
    stats,
};

/// Cookie of the network namespace portfwd is attached in; set at load time.
#[unsafe(no_mangle)]
static HOST_NETNS: Global<u64> = Global::new(0);

const ALLOW: i32 = 1;
const DENY: i32 = 0;

/// The `bpf_sock_addr` context, read and written field by field through its
/// pointer (the kernel lets these programs write user_ip4, user_ip6 and
/// user_port).
pub struct SockAddr<'a>(&'a SockAddrContext);

impl SockAddr<'_> {
    #[inline(always)]
    fn raw(&self) -> *mut bpf_sock_addr {
        self.0.sock_addr
    }

    #[inline(always)]
    fn protocol(&self) -> Option<u8> {
        // SAFETY: the context pointer is valid for the whole program run.
        match unsafe { (*self.raw()).protocol } {
            p if p == PROTO_TCP as u32 => Some(PROTO_TCP),
            p if p == PROTO_UDP as u32 => Some(PROTO_UDP),
            _ => None,
        }
    }

    /// user_port is a 32-bit field holding a 16-bit port in network order;
    /// it is read whole (narrower loads are rejected for some hooks).
    #[inline(always)]
    fn port(&self) -> u16 {
        // SAFETY: as in `protocol`.
        unsafe { (*self.raw()).user_port as u16 }
    }

    #[inline(always)]
    fn set_port(&self, port_be: u16) {
        // SAFETY: as in `protocol`; the field is writable for these hooks.
        unsafe { (*self.raw()).user_port = port_be as u32 }
    }

    /// One 32-bit word of user_ip6, read alone (the kernel takes 4-byte
    /// accesses; LLVM must not merge them).
    #[inline(always)]
    fn ip6_word(&self, i: usize) -> u32 {
        // SAFETY: as in `protocol`; `i` is below 4.
        unsafe { core::ptr::read_volatile(&(*self.raw()).user_ip6[i & 3]) }
    }

    #[inline(always)]
    fn set_ip6_word(&self, i: usize, w: u32) {
        // SAFETY: as in `set_port`; `i` is below 4.
        unsafe { core::ptr::write_volatile(&mut (*self.raw()).user_ip6[i & 3], w) }
    }

    #[inline(always)]
    fn in_host_netns(&self) -> bool {
        let host = HOST_NETNS.load();
        // SAFETY: the helper only reads the program's own context.
        host != 0 && unsafe { bpf_get_netns_cookie(self.0.as_ptr()) } == host
    }

    #[inline(always)]
    fn socket_cookie(&self) -> u64 {
        // SAFETY: the helper only reads the program's own context.
        unsafe { bpf_get_socket_cookie(self.0.as_ptr()) }
    }
}

/// How a family's addresses sit in `bpf_sock_addr`: IPv4 sockets, IPv6
/// sockets, and IPv6 sockets with an IPv4-mapped address (::ffff:a.b.c.d),
/// which the kernel sends over IPv4 without running the IPv4 hooks: they are
/// served by the IPv4 mappings, the address kept mapped.
pub trait SockFamily {
    type F: Family;
    /// A wildcard bind covers the IPv4 ports too (an IPv6 socket without
    /// IPV6_V6ONLY, which a program cannot read, is assumed).
    const WILDCARD_COVERS_V4: bool = false;
    fn sock_reverse() -> &'static LruHashMap<SockRevKey<Addr<Self>>, SockRevValue<Addr<Self>>>;
    fn user_ip(sa: &SockAddr) -> Addr<Self>;
    fn set_user_ip(sa: &SockAddr, addr: Addr<Self>);
}

/// The address type of a `SockFamily`.
type Addr<S> = <<S as SockFamily>::F as Family>::Addr;

impl SockFamily for Ipv4 {
    type F = Ipv4;

    #[inline(always)]
    fn sock_reverse() -> &'static LruHashMap<SockRevKey<V4>, SockRevValue<V4>> {
        &SOCK_REVERSE4
    }

    #[inline(always)]
    fn user_ip(sa: &SockAddr) -> V4 {
        // SAFETY: as in `SockAddr::protocol`.
        unsafe { (*sa.raw()).user_ip4 }
    }

    #[inline(always)]
    fn set_user_ip(sa: &SockAddr, addr: V4) {
        // SAFETY: as in `SockAddr::set_port`.
        unsafe { (*sa.raw()).user_ip4 = addr }
    }
}

impl SockFamily for Ipv6 {
    type F = Ipv6;
    const WILDCARD_COVERS_V4: bool = true;

    #[inline(always)]
    fn sock_reverse() -> &'static LruHashMap<SockRevKey<V6>, SockRevValue<V6>> {
        &SOCK_REVERSE6
    }

    #[inline(always)]
    fn user_ip(sa: &SockAddr) -> V6 {
        [
            sa.ip6_word(0),
            sa.ip6_word(1),
            sa.ip6_word(2),
            sa.ip6_word(3),
        ]
    }

    #[inline(always)]
    fn set_user_ip(sa: &SockAddr, addr: V6) {
        for (i, w) in addr.into_iter().enumerate() {
            sa.set_ip6_word(i, w);
        }
    }
}

/// An IPv6 socket's IPv4-mapped address, as IPv4.
pub struct V4Mapped;

/// The first three words of ::ffff:0:0/96, as on the wire.
const V4_MAPPED_PREFIX: [u32; 3] = [0, 0, 0xffffu32.to_be()];

impl SockFamily for V4Mapped {
    type F = Ipv4;

    #[inline(always)]
    fn sock_reverse() -> &'static LruHashMap<SockRevKey<V4>, SockRevValue<V4>> {
        &SOCK_REVERSE4
    }

    #[inline(always)]
    fn user_ip(sa: &SockAddr) -> V4 {
        sa.ip6_word(3)
    }

    #[inline(always)]
    fn set_user_ip(sa: &SockAddr, addr: V4) {
        sa.set_ip6_word(3, addr);
    }
}

impl V4Mapped {
    /// True if the IPv6 socket's address is IPv4-mapped.
    #[inline(always)]
    pub fn applies(ctx: &SockAddrContext) -> bool {
        let sa = SockAddr(ctx);
        (0..3).all(|i| sa.ip6_word(i) == V4_MAPPED_PREFIX[i])
    }
}

/// connect (TCP and UDP) and sendmsg (unconnected UDP).
#[inline(always)]
pub fn redirect<S: SockFamily>(ctx: &SockAddrContext) -> i32 {
    let sa = SockAddr(ctx);
    let Some(proto) = sa.protocol() else {
        return ALLOW;
    };
    let dst = S::user_ip(&sa);
    let port = sa.port();
    if !sa.in_host_netns() || !(S::F::is_loopback(dst) || mapping::is_local::<S::F>(dst)) {
        return ALLOW;
    }
    let Some(m) = mapping::lookup::<S::F>(dst, port, proto) else {
        return ALLOW;
    };
    S::set_user_ip(&sa, m.backend.addr_be);
    sa.set_port(m.backend.port_be);
    let key = SockRevKey::new(sa.socket_cookie(), m.backend.addr_be, m.backend.port_be);
    let orig = SockRevValue {
        addr_be: dst,
        port_be: port,
        pad: 0,
    };
    // Best effort: without it only recvmsg/getpeername would show the
    // container's address.
    let _ = S::sock_reverse().insert(&key, &orig, 0);
    stats::count(stat::SOCK_REWRITTEN);
    ALLOW
}

/// recvmsg (UDP source) and getpeername: show the address the application
/// used instead of the container endpoint it was sent to.
#[inline(always)]
pub fn restore<S: SockFamily>(ctx: &SockAddrContext) -> i32 {
    let sa = SockAddr(ctx);
    let key = SockRevKey::new(sa.socket_cookie(), S::user_ip(&sa), sa.port());
    // SAFETY: plain integers copied out at once.
    if let Some(orig) = unsafe { S::sock_reverse().get(&key) } {
        S::set_user_ip(&sa, orig.addr_be);
        sa.set_port(orig.port_be);
    }
    ALLOW
}

/// bind: a host process may not bind a published port (it would be
/// shadowed by the mapping), unless the mapping lets the host bind it (a
/// runtime's reservation of the ports it published). Containers and other
/// namespaces are not affected.
#[inline(always)]
pub fn bind<S: SockFamily>(ctx: &SockAddrContext) -> i32 {
    let sa = SockAddr(ctx);
    let Some(proto) = sa.protocol() else {
        return ALLOW;
    };
    let port = sa.port();
    if port == 0 || !sa.in_host_netns() {
        return ALLOW;
    }
    let ip = S::user_ip(&sa);
    let taken = if ip == Addr::<S>::default() {
        let mut key = PortKey {
            port_be: port,
            proto,
            af: <Addr<S> as portfwd_common::Addr>::AF,
        };
        // Mappings whose host may bind them are not counted in the low half.
        // SAFETY: the counts are plain integers copied out at once.
        let own = unsafe { PORTS.get(&key) }.is_some_and(|v| ports_refuse_bind(*v));
        key.af = AF_INET;
        // SAFETY: as above.
        own || S::WILDCARD_COVERS_V4
            && unsafe { PORTS.get(&key) }.is_some_and(|v| ports_refuse_bind(*v))
    } else {
        let mut key = MapKey::new(Addr::<S>::default(), port, proto);
        let refuses = |k: &MapKey<Addr<S>>| {
            // SAFETY: the flags are a plain integer copied out at once.
            unsafe { S::F::mappings().get(k) }
                .is_some_and(|b| b.flags & BACKEND_F_HOST_MAY_BIND == 0)
        };
        let wildcard = refuses(&key);
        key.addr_be = ip;
        wildcard || refuses(&key)
    };
    if taken {
        stats::count(stat::BIND_REFUSED);
        DENY
    } else {
        ALLOW
    }
}
