//! The operations (attach, detach, add, del, list, flows, watch) as a
//! library: each takes a request and returns a typed report for a front end
//! to print (the CLI today; a Docker userland-proxy, a CNI plugin and `watch`
//! are meant to be as thin). Errors are `crate::Error`, whose `is_usage()`
//! tells the caller's mistakes (exit 2, nothing changed) from failures.
//!
//! Every operation keeps one order, so that bad input never changes anything:
//! 1. check the input that needs nothing outside itself (SPECs are parsed by
//!    the front end into `SpecTemplate`s; a host port given twice is refused);
//! 2. check privileges and the kernel;
//! 3. enter the network namespace (`netns`): setns moves only the calling
//!    thread, so call operations from a single-threaded process;
//! 4. remove the state of namespaces that no longer exist (`reap`; reports
//!    list it in `dead_namespaces`);
//! 5. resolve container names (the Docker client starts no thread);
//! 6. change things.
pub mod add;
pub mod attach;
pub mod del;
pub mod detach;
pub mod flows;
pub mod follow;
pub mod list;
pub mod pod;
pub mod publish;
pub mod reap;
pub mod restore;
pub mod watch;

pub use add::{add, AddReport, AddRequest};
pub use attach::{attach, AttachReport, AttachRequest, MtuMismatch};
pub use del::{del, DelReport, DelRequest};
pub use detach::{detach, DetachReport, DetachRequest, Detached};
pub use flows::{flows, Flow, FlowsReport, FlowsRequest};
pub use follow::{FollowEvent, Followed};
pub use list::{list, ListReport, ListRequest, OneFamily, ProgramsReport, Row};
pub use pod::{publish_pod, unpublish_pod, verify_pod};
pub use publish::{publish, unpublish, PublishReport, PublishRequest, UnpublishReport};
pub use reap::DeadNamespace;
pub use restore::{restore, RestoreReport, RestoreRequest, Restored};
pub use watch::{watch, WatchEnd, WatchEvent, WatchReport, WatchRequest};

use crate::{
    bpf::Maps,
    docker,
    error::{Error, Result},
    host::{ifaces, netns, privileges},
    spec::{self, Container, Mapping, SpecTemplate},
    state::StateDir,
    table::{self, Lock},
};

/// Steps 2 to 4: privileges, kernel, the namespace (with `-n`), then the
/// state of dead namespaces, which is returned.
fn enter(netns_name: Option<&str>) -> Result<Vec<DeadNamespace>> {
    privileges::check(netns_name.is_some())?;
    privileges::check_kernel()?;
    if let Some(name) = netns_name {
        netns::enter(name)?;
    }
    Ok(reap::remove_dead_namespaces())
}

/// Step 1 for SPECs: a host port given twice is refused.
fn check_specs(specs: &[SpecTemplate]) -> Result<()> {
    spec::check_unique_hosts(specs.iter().flat_map(|s| s.host_ports()))
}

/// Step 5: the mappings of `specs`, each container name resolved once
/// through the Docker engine (which is asked only if a SPEC names a
/// container) to its addresses on one network, one mapping per family it
/// has there. A container on several networks is taken at its addresses on
/// one of `bridges` when it has some there.
fn resolve_specs(
    specs: &[SpecTemplate],
    bridges: impl FnOnce() -> Vec<String>,
) -> Result<Vec<Mapping>> {
    let names: Vec<&str> = specs.iter().filter_map(|s| s.container_name()).collect();
    let addrs = if names.is_empty() {
        Default::default()
    } else {
        docker::resolve(docker::DEFAULT_SOCKET, names, &bridges())?
    };
    let mut all = Vec::new();
    for spec in specs {
        let ips = match &spec.container {
            Container::Ip(ip) => vec![*ip],
            Container::Name(name) => addrs[name].clone(),
        };
        all.extend(spec.resolve(&ips)?.mappings);
    }
    Ok(all)
}

/// The names of the bridges attached in the current network namespace.
fn attached_bridges() -> Vec<String> {
    StateDir::current()
        .map(|state| {
            state
                .bridges()
                .into_iter()
                .filter_map(ifaces::ifname)
                .collect()
        })
        .unwrap_or_default()
}

/// The namespace's attached state, locked for a change.
pub(crate) struct Attached {
    pub state: StateDir,
    pub maps: Maps,
    /// The namespace's addresses, as read for this command.
    pub networks: Vec<ifaces::Network>,
    /// What survives a reboot, read under the lock; a change saves it.
    pub doc: crate::persist::Doc,
    _lock: Lock,
}

pub(crate) fn open_attached() -> Result<Attached> {
    let state = StateDir::current()?;
    if !state.exists() {
        return Err(Error::NothingAttached);
    }
    let lock = table::lock(&state)?;
    let mut maps = Maps::open(&state)?;
    // Every change also refreshes the host addresses (see `watch`).
    let networks = ifaces::networks()?;
    maps.sync_local_addrs(&ifaces::by_address(&networks))?;
    Ok(Attached {
        state,
        maps,
        networks,
        doc: crate::persist::Doc::load()?,
        _lock: lock,
    })
}

/// The maps of the attached namespace for a command that only reads them,
/// or None if nothing is attached.
pub(crate) fn open_read_only() -> Result<Option<Maps>> {
    let state = StateDir::current()?;
    if !state.exists() {
        return Ok(None);
    }
    Maps::open(&state).map(Some)
}

/// Refuses mappings whose host port a host process already holds.
pub(crate) fn check_not_held(mappings: &[Mapping]) -> Result<()> {
    match crate::host::procnet::first_held(mappings.iter().map(|m| &m.host)) {
        Some((host, owner)) => Err(Error::PortInUse {
            port: host.to_string(),
            owner,
        }),
        None => Ok(()),
    }
}

/// The attached bridge a container address belongs to: the one whose subnet
/// holds it, or the only one attached.
pub(crate) fn bridge_for(
    bridges: &[u32],
    networks: &[ifaces::Network],
    m: &Mapping,
) -> Result<u32> {
    let by_subnet: Vec<u32> = bridges
        .iter()
        .copied()
        .filter(|b| {
            networks
                .iter()
                .any(|n| n.ifindex == *b && n.contains(m.container_ip))
        })
        .collect();
    match (by_subnet.as_slice(), bridges) {
        ([one], _) | ([], [one]) => Ok(*one),
        _ => Err(Error::NoBridgeFor(m.container_ip.to_string())),
    }
}

/// CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns (conntrack
/// timestamps).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
