//! Detaching a bridge, and with the last one everything portfwd made in the
//! namespace.
use crate::{
    bpf,
    error::{Error, Result},
    host::ifaces,
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
pub enum DetachReport {
    /// Other bridges stay attached; this one's mappings were removed.
    Bridge {
        bridge: String,
        mappings_removed: usize,
    },
    /// It was the last bridge: every program, link, map and pin portfwd made
    /// in the namespace is gone.
    Everything { bridge: String },
}

/// Removes the bridge's program and its mappings. When no bridge is left in
/// the namespace, also the external programs, the maps and the directory:
/// nothing portfwd made remains.
pub fn detach(req: &DetachRequest) -> Result<DetachReport> {
    super::enter(req.netns.as_deref())?;
    let bridge = req.bridge.as_str();
    let index = ifaces::ifindex(bridge)?;
    let state = StateDir::current()?;
    let pin = state.bridge_link(index);
    if !pin.exists() {
        return Err(Error::NotAttached(bridge.to_string()));
    }
    let last = state.bridges() == [index];
    let _lock = table::lock(&state)?;
    // The table matters only when other bridges stay: the last detach
    // removes everything, even state another portfwd version left whose maps
    // this one cannot read. Otherwise the bridge's mappings leave through
    // the table's one path, with their counters and port reservations.
    let removed = if last {
        Vec::new()
    } else {
        let mut maps = bpf::Maps::open(&state)?;
        table::remove_bridge(&mut maps, index)?
    };
    bpf::detach_pinned(&pin)?;
    let bridge = bridge.to_string();
    if last {
        for ext in state.externals() {
            bpf::detach_pinned(&state.external_link(ext))?;
        }
        for link in state.cgroup_links() {
            bpf::detach_pinned(&link)?;
        }
        state.remove()?;
        Ok(DetachReport::Everything { bridge })
    } else {
        Ok(DetachReport::Bridge {
            bridge,
            mappings_removed: removed.len(),
        })
    }
}
