//! Detaching a bridge, and with the last one everything portfwd made in the
//! namespace.
use crate::{
    bpf,
    error::{Error, Result},
    host::ifaces,
    persist,
    state::StateDir,
    table,
};

#[derive(Clone, Debug, Default)]
pub struct DetachRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    pub bridge: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetachReport {
    pub bridge: String,
    pub detached: Detached,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detached {
    /// Other bridges stay attached; this one's mappings were removed.
    Bridge { mappings_removed: usize },
    /// It was the last bridge: every program, link, map and pin portfwd made
    /// in the namespace is gone.
    Everything,
}

/// Removes the bridge's program and its mappings. When no bridge is left in
/// the namespace, also the external programs, the maps and the directory:
/// nothing portfwd made remains.
pub fn detach(req: &DetachRequest) -> Result<DetachReport> {
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let bridge = req.bridge.as_str();
    let index = ifaces::ifindex(bridge)?;
    let state = StateDir::current()?;
    let pin = state.bridge_link(index);
    if !pin.exists() {
        return Err(Error::NotAttached(bridge.to_string()));
    }
    let detached = detach_index(&state, index)?;
    Ok(DetachReport {
        bridge: bridge.to_string(),
        detached,
        dead_namespaces,
    })
}

/// Detaches the attached interface `index` (its pin exists in `state`): the
/// body of `detach`, also for an interface that is gone (a point-to-point
/// veth deleted with its container), whose link left the hook with it.
pub(crate) fn detach_index(state: &StateDir, index: u32) -> Result<Detached> {
    let pin = state.bridge_link(index);
    let last = state.bridges() == [index];
    let _lock = table::lock(state)?;
    let mut doc = persist::Doc::load()?;
    let name = ifaces::ifname(index);
    // The table matters only when other bridges stay: the last detach
    // removes everything, even state another portfwd version left whose maps
    // this one cannot read. Otherwise the bridge's mappings leave through
    // the table's one path, with their counters and port reservations.
    let removed = if last {
        Vec::new()
    } else {
        let mut maps = bpf::Maps::open(state)?;
        table::remove_bridge(&mut maps, index)?
    };
    if name.is_some() {
        bpf::detach_pinned(&pin)?;
    } else {
        let _ = bpf::detach_pinned(&pin);
        let _ = std::fs::remove_file(&pin);
    }
    let detached = if last {
        remove_everything(state)?;
        doc.bridges.clear();
        Detached::Everything
    } else {
        if let Some(name) = &name {
            doc.remove_bridge(name);
        }
        Detached::Bridge {
            mappings_removed: removed.len(),
        }
    };
    doc.save()?;
    Ok(detached)
}

/// Detaches every link of the namespace and removes its state directory,
/// maps and all, whatever version of portfwd made them.
pub(crate) fn remove_everything(state: &StateDir) -> Result<()> {
    for link in state.all_links() {
        bpf::detach_pinned(&link)?;
    }
    state.remove()
}
