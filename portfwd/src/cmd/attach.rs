//! `portfwd attach BRIDGE [--map SPEC]... [--external IFACE]...`
use std::fmt::Write as _;

use portfwd_common::{PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS};

use crate::{
    bpffs, datapath,
    error::{Error, Result},
    ifaces,
    spec::{self, HostPort, Mapping},
    state::StateDir,
};

pub struct Args {
    pub bridge: String,
    pub mappings: Vec<Mapping>,
    /// Empty: the interfaces that carry a default route.
    pub external: Vec<String>,
}

/// Validates everything, then attaches. On a bridge that is already attached
/// the programs are swapped in place and the given mappings added to (or
/// updated in) the table; maps, conntrack and counters are kept.
pub fn run(args: &Args) -> Result<String> {
    spec::check_unique(&args.mappings)?;
    let bridge_index = ifaces::require_ethernet(&args.bridge)?;
    let (external, defaulted) = if args.external.is_empty() {
        let found = ifaces::default_route_interfaces()?;
        let found: Vec<String> = found.into_iter().filter(|i| *i != args.bridge).collect();
        if found.is_empty() {
            return Err(Error::NoDefaultRoute);
        }
        (found, true)
    } else {
        (args.external.clone(), false)
    };
    let mut ext_indices = Vec::new();
    for name in &external {
        if *name == args.bridge {
            return Err(Error::BridgeIsExternal(name.clone()));
        }
        ext_indices.push(ifaces::require_ethernet(name)?);
    }

    bpffs::ensure_mounted()?;
    let state = StateDir::current()?;
    let fresh = !state.exists();
    if !fresh {
        // Refuse before touching anything if a new mapping would shadow or be
        // shadowed by one that is already published with another address.
        check_against_table(&datapath::Maps::open(&state)?, &args.mappings)?;
    }
    state.create()?;
    let result = attach_in(&state, args, bridge_index, &external, &ext_indices);
    if result.is_err() && fresh {
        let _ = state.remove();
    }
    result?;

    let mut out = String::new();
    let how = if defaulted { " (default route)" } else { "" };
    let _ = writeln!(
        out,
        "attached to {} (index {bridge_index}); external: {}{how}",
        args.bridge,
        external.join(", ")
    );
    for m in &args.mappings {
        let _ = writeln!(out, "  {m}");
    }
    Ok(out)
}

fn check_against_table(maps: &datapath::Maps, new: &[Mapping]) -> Result<()> {
    for (key, _) in maps.mapping_entries() {
        let Some(existing) = HostPort::from_key(&key) else { continue };
        if let Some(m) = new.iter().find(|m| m.host != existing && m.host.overlaps(&existing)) {
            return Err(Error::PortConflict {
                port: m.host.to_string(),
                existing: existing.to_string(),
            });
        }
    }
    Ok(())
}

fn attach_in(
    state: &StateDir,
    args: &Args,
    bridge_index: u32,
    external: &[String],
    ext_indices: &[u32],
) -> Result<()> {
    let mut ebpf = datapath::load(Some(state))?;
    let mut maps = datapath::Maps::open(state)?;
    maps.sync_local_addrs(&ifaces::local_ipv4_addresses()?)?;
    for m in &args.mappings {
        maps.mappings
            .insert(m.host.key(), m.backend(bridge_index), 0)
            .map_err(|e| Error::ebpf(format!("adding {m}"), e))?;
    }
    let prog = datapath::classifier(&mut ebpf, PROG_BRIDGE_INGRESS)?;
    datapath::attach_pinned(prog, &args.bridge, &state.bridge_link(bridge_index))?;
    let prog = datapath::classifier(&mut ebpf, PROG_EXTERNAL_INGRESS)?;
    for (name, index) in external.iter().zip(ext_indices) {
        datapath::attach_pinned(prog, name, &state.external_link(*index))?;
    }
    Ok(())
}
