//! `portfwd attach BRIDGE [--map SPEC]... [--external IFACE]... [--cgroup PATH] [--no-local] [--force]`
use std::{fmt::Write as _, path::PathBuf};

use portfwd_common::{PROG_BIND4, PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS};

use crate::{
    bpf,
    error::{Error, Result},
    host::{bpffs, cgroup, ifaces},
    spec::{self, Mapping},
    state::StateDir,
    table,
};

pub struct Args {
    pub bridge: String,
    pub mappings: Vec<Mapping>,
    /// Empty: the interfaces that carry a default route.
    pub external: Vec<String>,
    /// Where the socket hooks attach (default: the cgroup2 root).
    pub cgroup: Option<PathBuf>,
    /// No socket hooks for clients on the host itself.
    pub no_local: bool,
    /// Publish even if a host process holds the port.
    pub force: bool,
}

/// Validates everything, then attaches. On a bridge that is already attached
/// the programs are swapped in place and the given mappings added to (or
/// re-pointed in) the table; maps, conntrack and counters are kept.
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
    let cgroup = match &args.cgroup {
        Some(path) => path.clone(),
        None => cgroup::default_root()?,
    };
    cgroup::require_cgroup2(&cgroup)?;
    if !args.force {
        super::check_not_held(&args.mappings)?;
    }

    let state = StateDir::current()?;
    let fresh = !state.exists();
    state.create()?;
    let result = table::lock(&state).and_then(|_lock| {
        if !fresh {
            // Refuse before touching anything if the pinned maps are another
            // version's (`Maps::open` checks), or a new mapping would shadow
            // or be shadowed by one already published with another address.
            table::check_free(&bpf::Maps::open(&state)?, &args.mappings, true)?;
        }
        attach_in(&state, args, &cgroup, bridge_index, &external, &ext_indices)
    });
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
    if args.no_local {
        let _ = writeln!(out, "host-local access: off (--no-local)");
    } else {
        let _ = writeln!(out, "host-local access: cgroup {}", cgroup.display());
    }
    for m in &args.mappings {
        let _ = writeln!(out, "  {m}");
    }
    Ok(out)
}

fn attach_in(
    state: &StateDir,
    args: &Args,
    cgroup: &std::path::Path,
    bridge_index: u32,
    external: &[String],
    ext_indices: &[u32],
) -> Result<()> {
    let mut ebpf = bpf::load(Some(state))?;
    let mut maps = bpf::Maps::open(state)?;
    maps.sync_local_addrs(&ifaces::local_ipv4_addresses()?)?;
    table::rebuild_ports(&mut maps)?;
    table::add(&mut maps, &args.mappings, bridge_index, true)?;

    let prog = bpf::classifier(&mut ebpf, PROG_BRIDGE_INGRESS)?;
    bpf::attach_pinned(prog, &args.bridge, &state.bridge_link(bridge_index))?;
    let prog = bpf::classifier(&mut ebpf, PROG_EXTERNAL_INGRESS)?;
    for (name, index) in external.iter().zip(ext_indices) {
        bpf::attach_pinned(prog, name, &state.external_link(*index))?;
    }

    let prog = bpf::sock_addr(&mut ebpf, PROG_BIND4)?;
    bpf::attach_cgroup_pinned(prog, cgroup, &state.cgroup_link(PROG_BIND4))?;
    for name in bpf::LOCAL_PROGRAMS {
        let pin = state.cgroup_link(name);
        if args.no_local {
            bpf::detach_pinned(&pin)?;
        } else {
            let prog = bpf::sock_addr(&mut ebpf, name)?;
            bpf::attach_cgroup_pinned(prog, cgroup, &pin)?;
        }
    }
    Ok(())
}
