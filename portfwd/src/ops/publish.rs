//! One port at a time, for front ends that are told about each published
//! port on its own (Docker's userland-proxy contract; a CNI plugin): the
//! bridge that holds the container's address is found from the host's
//! addresses and attached if it is not yet, then exactly one mapping is
//! added; `unpublish` removes exactly that mapping and nothing else.
//!
//! Docker starts one proxy per port and family, several at once (compose,
//! port ranges): publishes and unpublishes are serialised by a lock on the
//! bpffs mount (which always exists once mounted and is never removed), held
//! from the check of the attached bridges to the last change.
use std::{fs::File, os::fd::AsRawFd as _};

use crate::{
    bpf,
    error::{Error, Result},
    host::{bpffs, ifaces},
    spec::Mapping,
    state::{self, StateDir},
    table,
};

#[derive(Clone, Debug)]
pub struct PublishRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    pub mapping: Mapping,
    /// Publish even if a host socket holds the port (the caller bound it
    /// itself, as Docker 28 does before it starts its proxy).
    pub force: bool,
}

#[derive(Clone, Debug)]
pub struct PublishReport {
    pub mapping: Mapping,
    /// The bridge the container address is on.
    pub bridge: String,
    /// The bridge was not attached and `publish` attached it (with this).
    pub attached: Option<super::AttachReport>,
    /// The same mapping was published already; nothing changed.
    pub already: bool,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

#[derive(Clone, Debug)]
pub struct UnpublishReport {
    /// False: the host port was not published to this container address
    /// and port any more (removed or re-pointed by someone else), and was
    /// left as it was.
    pub removed: bool,
    /// The bridge `publish` had attached, detached because this was its
    /// last mapping.
    pub detached: Option<String>,
}

/// Held while one publish or unpublish runs.
struct PublishLock(#[allow(dead_code)] File);

fn lock() -> Result<PublishLock> {
    bpffs::ensure_mounted()?;
    let dir =
        File::open(bpffs::BPFFS).map_err(|e| Error::io(format!("opening {}", bpffs::BPFFS), e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(
            format!("locking {}", bpffs::BPFFS),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(PublishLock(dir))
}

/// The interface whose subnet holds `ip` (and which does not hold `ip`
/// itself): the bridge the container is on.
fn interface_for(networks: &[ifaces::Network], ip: std::net::IpAddr) -> Result<(String, u32)> {
    networks
        .iter()
        .filter(|n| n.addr != ip && n.contains(ip))
        // The longest prefix is the most specific route.
        .max_by_key(|n| n.prefix)
        .and_then(|n| Some((ifaces::ifname(n.ifindex)?, n.ifindex)))
        .ok_or_else(|| Error::NoInterfaceFor(ip.to_string()))
}

fn check(m: &Mapping) -> Result<()> {
    if m.host.addr.is_ipv4() != m.container_ip.is_ipv4() {
        return Err(Error::BadSpec {
            spec: m.to_string(),
            why: "the host and container addresses are of different families".into(),
        });
    }
    if m.container_ip.is_unspecified() || m.container_ip.is_loopback() {
        return Err(Error::BadSpec {
            spec: m.to_string(),
            why: format!("{} cannot be a container address", m.container_ip),
        });
    }
    Ok(())
}

/// Attaches the bridge that holds the container address if it is not
/// attached, then adds the mapping. Publishing the same mapping twice is not
/// an error (`already`); a host port published to another address is.
pub fn publish(req: &PublishRequest) -> Result<PublishReport> {
    let m = req.mapping;
    check(&m)?;
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let _lock = lock()?;
    let (bridge, bridge_index) = interface_for(&ifaces::networks()?, m.container_ip)?;
    if !req.force {
        super::check_not_held(&[m])?;
    }
    let state = StateDir::current()?;
    let attached = if state.bridges().contains(&bridge_index) {
        None
    } else {
        let existing = state.exists();
        // Keep what the namespace was attached with: the external
        // interfaces a user named, and --no-local.
        let external = if existing && !state.auto_external() {
            state
                .externals()
                .into_iter()
                .filter_map(ifaces::ifname)
                .collect()
        } else {
            Vec::new()
        };
        let no_local = existing
            && !bpf::LOCAL_PROGRAMS
                .iter()
                .any(|p| state.cgroup_link(p).exists());
        let report = super::attach(&super::AttachRequest {
            netns: None,
            bridge: bridge.clone(),
            specs: Vec::new(),
            external,
            cgroup: None,
            no_local,
            force: true,
        })?;
        Some(report)
    };
    let added = (|| {
        if attached.is_some() {
            state::set_mark(&state.proxy_mark(bridge_index), true)?;
        }
        let mut at = super::open_attached()?;
        let already = table::lookup(&at.maps, &m.host).is_some_and(|t| {
            t.addr == m.container_ip
                && t.port == m.container_port
                && t.bridge_ifindex == bridge_index
        });
        if !already {
            table::check_free(&at.maps, &[m], false)?;
            table::add(&mut at.maps, &[m], bridge_index, false)?;
        }
        Ok(already)
    })();
    let already = match added {
        Ok(already) => already,
        Err(e) => {
            // Leave nothing of a bridge attached for this port alone.
            if attached.is_some() {
                let _ = super::detach(&super::DetachRequest {
                    netns: None,
                    bridge: bridge.clone(),
                });
            }
            return Err(e);
        }
    };
    Ok(PublishReport {
        mapping: m,
        bridge,
        attached,
        already,
        dead_namespaces,
    })
}

/// Removes the mapping if the host port is still published to its container
/// address and port (established flows drain, as with `del`); other
/// mappings are never touched. A bridge that `publish` attached is detached
/// with its last mapping, so that nothing is left once every port is gone.
pub fn unpublish(netns: Option<&str>, m: &Mapping) -> Result<UnpublishReport> {
    super::enter(netns)?;
    let _lock = lock()?;
    let state = StateDir::current()?;
    if !state.exists() {
        return Ok(UnpublishReport {
            removed: false,
            detached: None,
        });
    }
    let mut at = super::open_attached()?;
    let target = table::lookup(&at.maps, &m.host);
    let Some(t) = target.filter(|t| t.addr == m.container_ip && t.port == m.container_port) else {
        return Ok(UnpublishReport {
            removed: false,
            detached: None,
        });
    };
    table::unpublish(&mut at.maps, &[m.host])?;
    let left_on_bridge = table::entries(&at.maps)
        .values()
        .any(|o| o.bridge_ifindex == t.bridge_ifindex);
    drop(at);
    let mut detached = None;
    if !left_on_bridge && state.proxy_mark(t.bridge_ifindex).is_dir() {
        if let Some(name) = ifaces::ifname(t.bridge_ifindex) {
            state::set_mark(&state.proxy_mark(t.bridge_ifindex), false)?;
            super::detach(&super::DetachRequest {
                netns: None,
                bridge: name.clone(),
            })?;
            detached = Some(name);
        }
    }
    Ok(UnpublishReport {
        removed: true,
        detached,
    })
}
