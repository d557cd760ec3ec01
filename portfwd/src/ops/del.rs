//! Unpublishing ports.
use crate::{
    error::Result,
    spec::{HostPort, PortSelector},
    table,
};

#[derive(Clone, Debug, Default)]
pub struct DelRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    /// Each must match at least one published port.
    pub ports: Vec<PortSelector>,
    /// Also end the flows in progress.
    pub kill: bool,
}

#[derive(Clone, Debug)]
pub struct DelReport {
    /// In host-port order.
    pub removed: Vec<HostPort>,
    /// Their flows were ended (`kill`).
    pub killed: bool,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// Removes mappings. New connections to those ports get the host's normal
/// answer from the next packet on; established flows drain, or with `kill`
/// are reset.
pub fn del(req: &DelRequest) -> Result<DelReport> {
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let mut at = super::open_attached()?;
    let removed = table::remove(&mut at.maps, &req.ports, req.kill)?;
    at.doc.remove(&removed);
    at.doc.save()?;
    Ok(DelReport {
        removed,
        killed: req.kill,
        dead_namespaces,
    })
}
