//! Publishing more ports on an attached namespace.
use std::collections::BTreeMap;

use crate::{
    error::Result,
    host::ifaces,
    spec::{self, Mapping, SpecTemplate},
    table,
};

#[derive(Clone, Debug, Default)]
pub struct AddRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    pub specs: Vec<SpecTemplate>,
    /// Re-point host ports that are already published.
    pub replace: bool,
    /// Publish even if a host process holds the port.
    pub force: bool,
    /// Not recorded in the state file (`persist`): for a front end whose
    /// mappings live only as long as something else (a Docker userland
    /// proxy's port, re-made by dockerd after a boot), which `restore` must
    /// not make again.
    pub transient: bool,
}

#[derive(Clone, Debug)]
pub struct AddReport {
    /// In the order of the request.
    pub added: Vec<Mapping>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// Adds mappings to the attached namespace; they apply from the next packet.
/// With `replace`, a published port is re-pointed: new TCP connections go to
/// the new endpoint while established ones finish on the old one; UDP follows
/// at once.
pub fn add(req: &AddRequest) -> Result<AddReport> {
    super::check_specs(&req.specs)?;
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let mappings = super::resolve_specs(&req.specs, super::attached_bridges)?;
    spec::check_unique(&mappings)?;
    let names = super::follow::names(&req.specs, &mappings)?;
    let mut at = super::open_attached()?;
    table::check_free(&at.maps, &mappings, req.replace)?;
    if !req.force {
        super::check_not_held(&mappings)?;
    }
    // Resolve every bridge before changing anything.
    let bridges = at.state.bridges();
    let mut by_bridge: BTreeMap<u32, Vec<Mapping>> = BTreeMap::new();
    for m in &mappings {
        by_bridge
            .entry(super::bridge_for(&bridges, &at.networks, m)?)
            .or_default()
            .push(*m);
    }
    for (bridge, mappings) in &by_bridge {
        table::add(&mut at.maps, mappings, *bridge, req.replace)?;
        let name = ifaces::ifname(*bridge).unwrap_or_else(|| format!("#{bridge}"));
        at.doc.record(&name, mappings, &names);
    }
    if !req.transient {
        at.doc.save()?;
    }
    Ok(AddReport {
        added: mappings,
        dead_namespaces,
    })
}
