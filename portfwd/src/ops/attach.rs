//! Attaching to a bridge: programs on the bridge and the external
//! interfaces, socket hooks on a cgroup, and the first mappings.
use std::path::PathBuf;

use portfwd_common::{PROG_BRIDGE_INGRESS, PROG_EXTERNAL_INGRESS};

use crate::{
    bpf,
    error::{Error, Result},
    host::{bpffs, cgroup, ifaces},
    persist,
    spec::{self, Mapping, SpecTemplate},
    state::StateDir,
    table,
};

#[derive(Clone, Debug, Default)]
pub struct AttachRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    /// The bridge the containers are on.
    pub bridge: String,
    pub specs: Vec<SpecTemplate>,
    /// Empty: every interface that holds a host address, except the
    /// bridges attached, loopback and containers' veths (see
    /// `ifaces::host_address_interfaces`); `watch` adds the ones that
    /// appear later.
    pub external: Vec<String>,
    /// Where the socket hooks attach (default: the cgroup2 root).
    pub cgroup: Option<PathBuf>,
    /// No socket hooks for clients on the host itself.
    pub no_local: bool,
    /// Publish even if a host process holds the port.
    pub force: bool,
}

#[derive(Clone, Debug)]
pub struct AttachReport {
    pub bridge: String,
    pub bridge_index: u32,
    pub external: Vec<String>,
    /// The external interfaces were every one with a host address (none was
    /// named).
    pub external_defaulted: bool,
    /// The cgroup the socket hooks serve, or None with `no_local`.
    pub local_cgroup: Option<PathBuf>,
    /// The mappings added or re-pointed, in the order of the request.
    pub mappings: Vec<Mapping>,
    /// External interfaces whose MTU is smaller than the bridge's.
    pub mtu_mismatches: Vec<MtuMismatch>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// A bridge MTU larger than an external interface's: a container's reply
/// may not fit the way back to the client (with DF set it is answered with
/// ICMP fragmentation needed, so that the container's TCP lowers its MSS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MtuMismatch {
    pub bridge_mtu: u32,
    pub external: String,
    pub external_mtu: u32,
    /// IPv4 forwarding on the external interface. Without it a datagram
    /// without DF that does not fit cannot be cut into fragments (the
    /// kernel's FIB lookup for the pieces' next hop answers only for a
    /// forwarding device): it is dropped and counted as drop_too_big.
    pub forwarding: bool,
}

/// Validates everything, then attaches. On a bridge that is already attached
/// the programs are swapped in place and the given mappings added to (or
/// re-pointed in) the table; maps, conntrack and counters are kept.
pub fn attach(req: &AttachRequest) -> Result<AttachReport> {
    super::check_specs(&req.specs)?;
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let mappings = super::resolve_specs(&req.specs, || vec![req.bridge.clone()])?;
    spec::check_unique(&mappings)?;
    let names = super::follow::names(&req.specs, &mappings)?;
    let bridge_index = ifaces::require_ethernet(&req.bridge)?;
    let (external, defaulted) = if req.external.is_empty() {
        let mut bridges = StateDir::current()?.bridges();
        bridges.push(bridge_index);
        let found: Vec<String> = ifaces::host_address_interfaces(&bridges)?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        if found.is_empty() {
            return Err(Error::NoDefaultRoute);
        }
        (found, true)
    } else {
        (req.external.clone(), false)
    };
    let mut ext_indices = Vec::new();
    for name in &external {
        if *name == req.bridge {
            return Err(Error::BridgeIsExternal(name.clone()));
        }
        ext_indices.push(ifaces::require_ethernet(name)?);
    }
    bpffs::ensure_mounted()?;
    let cgroup = match &req.cgroup {
        Some(path) => path.clone(),
        None => cgroup::default_root()?,
    };
    cgroup::require_cgroup2(&cgroup)?;
    if !req.force {
        super::check_not_held(&mappings)?;
    }
    let mtu_mismatches = mtu_mismatches(&req.bridge, &external)?;

    let state = StateDir::current()?;
    let fresh = !state.exists();
    state.create()?;
    let result = table::lock(&state).and_then(|_lock| {
        let mut doc = persist::Doc::load()?;
        if !fresh {
            // Refuse before touching anything if the pinned maps are another
            // version's (`Maps::open` checks), or a new mapping would shadow
            // or be shadowed by one already published with another address.
            table::check_free(&bpf::Maps::open(&state)?, &mappings, true)?;
        }
        attach_in(
            &state,
            req,
            &mappings,
            &cgroup,
            bridge_index,
            &external,
            &ext_indices,
        )?;
        state.set_auto_external(defaulted)?;
        doc.set_bridge(
            &req.bridge,
            &req.external,
            req.cgroup.as_deref(),
            req.no_local,
        );
        doc.record(&req.bridge, &mappings, &names);
        doc.save()
    });
    if result.is_err() && fresh {
        let _ = state.remove();
    }
    result?;
    Ok(AttachReport {
        bridge: req.bridge.clone(),
        bridge_index,
        external,
        external_defaulted: defaulted,
        local_cgroup: (!req.no_local).then_some(cgroup),
        mappings,
        mtu_mismatches,
        dead_namespaces,
    })
}

fn mtu_mismatches(bridge: &str, external: &[String]) -> Result<Vec<MtuMismatch>> {
    let bridge_mtu = ifaces::mtu(bridge)?;
    let mut out = Vec::new();
    for name in external {
        let external_mtu = ifaces::mtu(name)?;
        if external_mtu < bridge_mtu {
            let forwarding =
                std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{name}/forwarding"))
                    .is_ok_and(|v| v.trim() == "1");
            out.push(MtuMismatch {
                bridge_mtu,
                external: name.clone(),
                external_mtu,
                forwarding,
            });
        }
    }
    Ok(out)
}

fn attach_in(
    state: &StateDir,
    req: &AttachRequest,
    mappings: &[Mapping],
    cgroup: &std::path::Path,
    bridge_index: u32,
    external: &[String],
    ext_indices: &[u32],
) -> Result<()> {
    let mut ebpf = bpf::load(Some(state))?;
    let mut maps = bpf::Maps::open(state)?;
    maps.sync_local_addrs(&ifaces::local_addresses()?)?;
    table::rebuild_ports(&mut maps)?;
    table::rebuild_slots(&mut maps)?;
    table::add(&mut maps, mappings, bridge_index, true)?;
    // Before the new programs run: state pinned by a build without pf_hot,
    // or a bit a killed command left unset, would pass packets over.
    table::rebuild_hot(&mut maps)?;

    // A bridge served as an external interface before it was attached
    // (every interface with an address is, by default) is one no longer.
    bpf::detach_pinned(&state.external_link(bridge_index))?;
    let prog = bpf::classifier(&mut ebpf, PROG_BRIDGE_INGRESS)?;
    bpf::attach_pinned(prog, &req.bridge, &state.bridge_link(bridge_index))?;
    let prog = bpf::classifier(&mut ebpf, PROG_EXTERNAL_INGRESS)?;
    for (name, index) in external.iter().zip(ext_indices) {
        bpf::attach_pinned(prog, name, &state.external_link(*index))?;
    }

    for name in bpf::BIND_PROGRAMS {
        let prog = bpf::sock_addr(&mut ebpf, name)?;
        bpf::attach_cgroup_pinned(prog, cgroup, &state.cgroup_link(name))?;
    }
    for name in bpf::LOCAL_PROGRAMS {
        let pin = state.cgroup_link(name);
        if req.no_local {
            bpf::detach_pinned(&pin)?;
        } else {
            let prog = bpf::sock_addr(&mut ebpf, name)?;
            bpf::attach_cgroup_pinned(prog, cgroup, &pin)?;
        }
    }
    Ok(())
}

/// For `watch`: when the external interfaces were not named at attach, serves
/// the interfaces with a host address that have appeared since (bridges
/// attached since are left out). The names of those it attached to.
pub(crate) fn attach_new_externals(state: &StateDir) -> Result<Vec<String>> {
    if !state.auto_external() {
        return Ok(Vec::new());
    }
    let _lock = match table::lock(state) {
        Ok(lock) => lock,
        // Detached meanwhile: `watch` ends at its next look.
        Err(_) if !state.exists() => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    if !state.auto_external() {
        return Ok(Vec::new());
    }
    let mut known = state.bridges();
    known.extend(state.externals());
    let new = ifaces::host_address_interfaces(&known)?;
    if new.is_empty() {
        return Ok(Vec::new());
    }
    let mut ebpf = bpf::load(Some(state))?;
    let prog = bpf::classifier(&mut ebpf, PROG_EXTERNAL_INGRESS)?;
    let mut out = Vec::new();
    for (name, index) in new {
        bpf::attach_pinned(prog, &name, &state.external_link(index))?;
        out.push(name);
    }
    Ok(out)
}
