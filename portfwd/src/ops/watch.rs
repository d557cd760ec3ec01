//! `watch`: keeps the maps of host addresses (`pf_local4`, `pf_local6`)
//! current as addresses come and go, by following rtnetlink's IPv4 and IPv6
//! address notifications.
//!
//! When no external interface was named at attach, it also serves the
//! interfaces that gain a host address later (see `attach`).
//!
//! Every portfwd command already re-reads the addresses; `watch` is for hosts
//! whose addresses change between commands (DHCP, hotplug). It holds no
//! connection state: killing it loses nothing. It exits by itself once the
//! namespace is detached.
use std::{os::fd::AsRawFd as _, time::Duration};

use crate::{
    bpf::Maps,
    error::{Error, Result},
    host::ifaces,
    state::StateDir,
};

/// RTMGRP_IPV4_IFADDR and RTMGRP_IPV6_IFADDR: the multicast groups of
/// address changes.
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

fn subscribe() -> Result<std::os::fd::OwnedFd> {
    let sock = crate::host::netlink::socket(libc::NETLINK_ROUTE)
        .map_err(|e| Error::io("netlink socket", e))?;
    // SAFETY: sockaddr_nl is plain data; zero is valid.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as u16;
    addr.nl_groups = RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    // SAFETY: bind with a properly sized sockaddr_nl.
    let rc = unsafe {
        libc::bind(
            sock.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            "binding the netlink socket",
            std::io::Error::last_os_error(),
        ));
    }
    let tv = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval of the given size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        )
    };
    Ok(sock)
}

#[derive(Clone, Debug, Default)]
pub struct WatchRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    /// Stop after this long (for tests); None: until detached.
    pub timeout: Option<Duration>,
}

/// What `watch` tells while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEvent {
    /// The first sync is done: the maps hold this many host addresses
    /// (both families).
    Tracking { addresses: usize },
    /// The state of another namespace, which no longer existed, was removed
    /// (at the start, then every `REAP_EVERY`).
    DeadNamespace(super::DeadNamespace),
    /// Mappings made by container name follow their containers (see
    /// `follow`).
    Follow(super::FollowEvent),
    /// These interfaces appeared (or gained a host address) and are now
    /// served as external interfaces.
    Externals(Vec<String>),
}

/// How often `watch` looks for the state of namespaces that are gone.
pub const REAP_EVERY: Duration = Duration::from_secs(10);
/// How often `watch` clears the `pf_hot` bits of ports no mapping or live
/// flow uses any more (removed mappings whose flows have drained).
pub const COOL_EVERY: Duration = Duration::from_secs(60);

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchEnd {
    /// The namespace was detached.
    Detached,
    /// `timeout` elapsed, after this long.
    TimedOut(Duration),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchReport {
    pub end: WatchEnd,
    /// How many times the address map was re-read, the first time included.
    pub syncs: u64,
}

/// Runs until the namespace is detached (or `timeout` elapses), telling
/// `on_event` what it does.
pub fn watch(req: &WatchRequest, mut on_event: impl FnMut(WatchEvent)) -> Result<WatchReport> {
    for dead in super::enter(req.netns.as_deref())? {
        on_event(WatchEvent::DeadNamespace(dead));
    }
    let max = req.timeout;
    let state = StateDir::current()?;
    if !state.exists() {
        return Err(Error::NothingAttached);
    }
    // Subscribe before the first sync, so no change falls in between.
    let sock = subscribe()?;
    let sync = || -> Result<usize> {
        let mut maps = Maps::open(&state)?;
        let addrs = ifaces::local_addresses()?;
        maps.sync_local_addrs(&addrs)?;
        Ok(addrs.len())
    };
    let addresses = sync()?;
    on_event(WatchEvent::Tracking { addresses });
    let follower = super::follow::Follower::start();
    new_externals(&state, &mut on_event)?;
    let start = std::time::Instant::now();
    let mut buf = vec![0u8; 64 << 10];
    let mut syncs = 1u64;
    let mut reaped = std::time::Instant::now();
    let mut cooled = std::time::Instant::now();
    loop {
        for e in follower.events() {
            on_event(WatchEvent::Follow(e));
        }
        if cooled.elapsed() >= COOL_EVERY && state.exists() {
            let _lock = crate::table::lock(&state)?;
            crate::table::rebuild_hot(&mut Maps::open(&state)?)?;
            cooled = std::time::Instant::now();
        }
        if reaped.elapsed() >= REAP_EVERY {
            for dead in super::reap::remove_dead_namespaces() {
                on_event(WatchEvent::DeadNamespace(dead));
            }
            reaped = std::time::Instant::now();
        }
        if !state.exists() {
            return Ok(WatchReport {
                end: WatchEnd::Detached,
                syncs,
            });
        }
        if max.is_some_and(|m| start.elapsed() >= m) {
            return Ok(WatchReport {
                end: WatchEnd::TimedOut(start.elapsed()),
                syncs,
            });
        }
        // SAFETY: recv into a buffer of the given length.
        let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got > 0
            || (got < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS))
        {
            // Any notification (or lost ones): re-read the whole set.
            if state.exists() {
                sync()?;
                syncs += 1;
                new_externals(&state, &mut on_event)?;
            }
        }
    }
}

/// Serves the interfaces that gained a host address, if the external ones
/// were not named at attach.
fn new_externals(state: &StateDir, on_event: &mut impl FnMut(WatchEvent)) -> Result<()> {
    let new = super::attach::attach_new_externals(state)?;
    if !new.is_empty() {
        on_event(WatchEvent::Externals(new));
    }
    Ok(())
}
