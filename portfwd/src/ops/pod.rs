//! A runtime's own mappings (the CNI plugin's): publish exactly a set of
//! mappings, attaching first the host interfaces through which their
//! containers are reached; later remove exactly those (only where they still
//! point at the same container endpoint) and detach what no mapping uses any
//! more; or check that they are still in place.
use std::{collections::BTreeMap, path::PathBuf};

use portfwd_common::BACKEND_F_HOST_MAY_BIND;

use crate::{
    bpf::Maps,
    error::{Error, Result},
    host::{ifaces, routes},
    spec::{self, Mapping},
    state::StateDir,
    table,
};

#[derive(Clone, Debug, Default)]
pub struct PublishRequest {
    /// Each forwards to a container address the host has a route to.
    pub mappings: Vec<Mapping>,
    /// For an interface attached now: where outside clients arrive (empty:
    /// the interfaces with a default route).
    pub external: Vec<String>,
    /// For an interface attached now: the cgroup of the socket hooks
    /// (default: the cgroup2 root).
    pub cgroup: Option<PathBuf>,
    /// The runtime binds the host ports itself to reserve them
    /// (`BACKEND_F_HOST_MAY_BIND`).
    pub host_may_bind: bool,
}

/// A mapping with the host interface it forwards through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Routed {
    pub mapping: Mapping,
    pub ifindex: u32,
}

#[derive(Clone, Debug)]
pub struct PublishReport {
    /// In the order of the request.
    pub published: Vec<Routed>,
    /// The interfaces this call attached (they were not attached before).
    pub attached: Vec<u32>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// Publishes `mappings`, or nothing: a host port that is published already
/// (PortConflict) or held by a host process (PortInUse), or a container
/// address no interface reaches (NoRouteTo), changes nothing.
pub fn publish_pod(req: &PublishRequest) -> Result<PublishReport> {
    spec::check_unique(&req.mappings)?;
    let dead_namespaces = super::enter(None)?;
    let mut routed = Vec::new();
    for m in &req.mappings {
        let ifindex = routes::interface_to(m.container_ip)?
            .ok_or_else(|| Error::NoRouteTo(m.container_ip.to_string()))?;
        routed.push(Routed {
            mapping: *m,
            ifindex,
        });
    }
    let state = StateDir::current()?;
    if state.exists() {
        let _lock = table::lock(&state)?;
        table::check_free(&Maps::open(&state)?, &req.mappings, false)?;
    }
    super::check_not_held(&req.mappings)?;

    let mut attached = Vec::new();
    let result =
        attach_missing(req, &routed, &state, &mut attached).and_then(|()| add_all(req, &routed));
    if let Err(e) = result {
        for index in attached.iter().rev() {
            let _ = super::detach::detach_index(&state, *index);
        }
        return Err(e);
    }
    Ok(PublishReport {
        published: routed,
        attached,
        dead_namespaces,
    })
}

/// Attaches each interface of `routed` that is not attached yet, noting it
/// in `attached`.
fn attach_missing(
    req: &PublishRequest,
    routed: &[Routed],
    state: &StateDir,
    attached: &mut Vec<u32>,
) -> Result<()> {
    let mut wanted: Vec<u32> = routed.iter().map(|r| r.ifindex).collect();
    wanted.sort_unstable();
    wanted.dedup();
    for index in wanted {
        if state.bridges().contains(&index) {
            continue;
        }
        let name =
            ifaces::ifname(index).ok_or_else(|| Error::NoSuchInterface(index.to_string()))?;
        super::attach(&super::AttachRequest {
            bridge: name,
            external: req.external.clone(),
            cgroup: req.cgroup.clone(),
            ..Default::default()
        })?;
        attached.push(index);
    }
    Ok(())
}

/// Adds every mapping, or (removing those it added) none.
fn add_all(req: &PublishRequest, routed: &[Routed]) -> Result<()> {
    let flags = if req.host_may_bind {
        BACKEND_F_HOST_MAY_BIND
    } else {
        0
    };
    let mut at = super::open_attached()?;
    for (i, r) in routed.iter().enumerate() {
        if let Err(e) = table::add_exact(&mut at.maps, &r.mapping, r.ifindex, flags) {
            for done in &routed[..i] {
                let _ = table::remove_exact(&mut at.maps, &done.mapping);
            }
            return Err(e);
        }
    }
    Ok(())
}

#[derive(Clone, Debug, Default)]
pub struct UnpublishRequest {
    pub mappings: Vec<Mapping>,
    /// Interfaces to detach once no mapping forwards through them (those
    /// the runtime's `publish` attached).
    pub release: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
pub struct UnpublishReport {
    /// The mappings that were still in place and pointed where asked.
    pub removed: Vec<Mapping>,
    /// Interfaces of `release` that are not attached any more (detached now,
    /// or already).
    pub released: Vec<u32>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// Removes those of `mappings` that still point at their container
/// endpoint, then detaches the interfaces of `release` that no mapping uses
/// any more. With nothing attached there is nothing to remove: success.
pub fn unpublish_pod(req: &UnpublishRequest) -> Result<UnpublishReport> {
    let dead_namespaces = super::enter(None)?;
    let state = StateDir::current()?;
    let mut report = UnpublishReport {
        dead_namespaces,
        ..Default::default()
    };
    if !state.exists() {
        report.released = req.release.clone();
        return Ok(report);
    }
    let in_use: Vec<u32> = {
        let mut at = super::open_attached()?;
        for m in &req.mappings {
            if table::remove_exact(&mut at.maps, m)? {
                report.removed.push(*m);
            }
        }
        table::entries(&at.maps)
            .into_values()
            .map(|t| t.bridge_ifindex)
            .collect()
    };
    for index in &req.release {
        if in_use.contains(index) {
            continue;
        }
        if state.exists() && state.bridges().contains(index) {
            super::detach::detach_index(&state, *index)?;
        }
        report.released.push(*index);
    }
    Ok(report)
}

/// What `verify_pod` found wrong with one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wrong {
    Missing(Mapping),
    /// Published, but to another endpoint (container address, port).
    Elsewhere(Mapping, std::net::SocketAddr),
}

/// The mappings of `mappings` that are not published as given (empty: all
/// are in place).
pub fn verify_pod(mappings: &[Mapping]) -> Result<Vec<Wrong>> {
    super::enter(None)?;
    let Some(maps) = super::open_read_only()? else {
        return Ok(mappings.iter().copied().map(Wrong::Missing).collect());
    };
    let found: BTreeMap<_, _> = table::entries(&maps);
    Ok(mappings
        .iter()
        .filter_map(|m| match found.get(&m.host) {
            None => Some(Wrong::Missing(*m)),
            Some(t) if t.addr == m.container_ip && t.port == m.container_port => None,
            Some(t) => Some(Wrong::Elsewhere(*m, (t.addr, t.port).into())),
        })
        .collect())
}
