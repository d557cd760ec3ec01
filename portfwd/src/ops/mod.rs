//! One file per subcommand, plus what they share.
pub mod add;
pub mod attach;
pub mod del;
pub mod detach;
pub mod flows;
pub mod list;
pub mod watch;

use crate::{
    bpf::Maps,
    error::{Error, Result},
    host::ifaces,
    spec::Mapping,
    state::StateDir,
    table::{self, Lock},
};

/// The namespace's attached state, locked for a change.
pub(crate) struct Attached {
    pub state: StateDir,
    pub maps: Maps,
    /// The namespace's IPv4 addresses, as read for this command.
    pub networks: Vec<ifaces::Network>,
    _lock: Lock,
}

pub(crate) fn open_attached() -> Result<Attached> {
    let state = StateDir::current()?;
    if !state.exists() {
        return Err(Error::NothingAttached);
    }
    let lock = table::lock(&state)?;
    let mut maps = Maps::open(&state)?;
    // Every change also refreshes the host addresses (see `watch`).
    let networks = ifaces::ipv4_networks()?;
    maps.sync_local_addrs(&ifaces::by_address(&networks))?;
    Ok(Attached {
        state,
        maps,
        networks,
        _lock: lock,
    })
}

/// The maps of the attached namespace for a command that only reads them,
/// or None if nothing is attached (see `nothing_attached`).
pub(crate) fn open_read_only() -> Result<Option<Maps>> {
    let state = StateDir::current()?;
    if !state.exists() {
        return Ok(None);
    }
    Maps::open(&state).map(Some)
}

/// What `list` and `flows` print when nothing is attached.
pub(crate) fn nothing_attached(json: bool) -> String {
    if json {
        "[]\n".into()
    } else {
        "nothing attached in this network namespace\n".into()
    }
}

/// Refuses mappings whose host port a host process already holds.
pub(crate) fn check_not_held(mappings: &[Mapping]) -> Result<()> {
    match crate::host::procnet::first_held(mappings.iter().map(|m| &m.host)) {
        Some((host, owner)) => Err(Error::PortInUse {
            port: host.to_string(),
            owner,
        }),
        None => Ok(()),
    }
}

/// The attached bridge a container address belongs to: the one whose subnet
/// holds it, or the only one attached.
pub(crate) fn bridge_for(
    bridges: &[u32],
    networks: &[ifaces::Network],
    m: &Mapping,
) -> Result<u32> {
    let by_subnet: Vec<u32> = bridges
        .iter()
        .copied()
        .filter(|b| {
            networks
                .iter()
                .any(|n| n.ifindex == *b && n.contains(m.container_ip))
        })
        .collect();
    match (by_subnet.as_slice(), bridges) {
        ([one], _) | ([], [one]) => Ok(*one),
        _ => Err(Error::NoBridgeFor(m.container_ip.to_string())),
    }
}
