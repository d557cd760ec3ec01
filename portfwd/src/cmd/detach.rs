//! `portfwd detach BRIDGE`
use crate::{
    datapath,
    error::{Error, Result},
    ifaces,
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
    let mut maps = datapath::Maps::open(&state)?;
    let owned: Vec<_> = maps
        .mapping_entries()
        .into_iter()
        .filter(|(_, b)| b.bridge_ifindex == index)
        .map(|(k, _)| k)
        .collect();
    for key in &owned {
        let _ = maps.mappings.remove(key);
    }
    datapath::detach_pinned(&pin)?;
    if state.bridges().is_empty() {
        for ext in state.externals() {
            datapath::detach_pinned(&state.external_link(ext))?;
        }
        drop(maps);
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
