//! `portfwd detach BRIDGE`
use crate::{
    bpf,
    error::{Error, Result},
    host::ifaces,
    state::StateDir,
};

/// Removes the bridge's program and its mappings. When no bridge is left in
/// the namespace, also the external programs, the maps and the directory:
/// nothing portfwd made remains.
pub fn run(bridge: &str) -> Result<String> {
    let index = ifaces::ifindex(bridge)?;
    let state = StateDir::current()?;
    let pin = state.bridge_link(index);
    if !pin.exists() {
        return Err(Error::NotAttached(bridge.to_string()));
    }
    let last = state.bridges() == [index];
    // Only the mapping table is needed, and only when other bridges stay:
    // the last detach removes everything, even state another portfwd
    // version left whose maps this one cannot read.
    let mut owned = Vec::new();
    match bpf::open_mappings(&state) {
        Ok(mut mappings) => {
            owned = mappings
                .iter()
                .filter_map(|r| r.ok())
                .filter(|(_, b)| b.bridge_ifindex == index)
                .map(|(k, _)| k)
                .collect();
            for key in &owned {
                let _ = mappings.remove(key);
            }
        }
        Err(e) if !last => return Err(e),
        Err(_) => {}
    }
    bpf::detach_pinned(&pin)?;
    if last {
        for ext in state.externals() {
            bpf::detach_pinned(&state.external_link(ext))?;
        }
        for link in state.cgroup_links() {
            bpf::detach_pinned(&link)?;
        }
        state.remove()?;
        Ok(format!(
            "detached {bridge}; removed all portfwd state in this namespace\n"
        ))
    } else {
        Ok(format!(
            "detached {bridge} ({} mappings removed)\n",
            owned.len()
        ))
    }
}
