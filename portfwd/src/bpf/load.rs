//! Loading the eBPF object for the current network namespace, and its
//! programs by name.
use std::io;

use aya::{
    maps::{Array, MapData},
    programs::{CgroupSockAddr, SchedClassifier},
    Ebpf, EbpfLoader,
};
use portfwd_common::{
    GLOBAL_HOST_NETNS, LAYOUT_VERSION, MAPS, MAP_CUT4, MAP_META, META_LAYOUT, META_NETNS_INO,
    PROG_BIND4, PROG_BIND6, PROG_BRIDGE_INGRESS, PROG_CONNECT4, PROG_CONNECT6,
    PROG_EXTERNAL_INGRESS, PROG_GETPEERNAME4, PROG_GETPEERNAME6, PROG_RECVMSG4, PROG_RECVMSG6,
    PROG_SENDMSG4, PROG_SENDMSG6,
};

use crate::{
    error::{Error, Result},
    state::StateDir,
};

/// The cgroup sock_addr programs that serve clients on the host itself,
/// IPv4 and IPv6 sockets (an IPv6 socket's IPv4-mapped destination goes by
/// the IPv4 mappings, in the IPv6 programs).
pub const LOCAL_PROGRAMS: [&str; 8] = [
    PROG_CONNECT4,
    PROG_SENDMSG4,
    PROG_RECVMSG4,
    PROG_GETPEERNAME4,
    PROG_CONNECT6,
    PROG_SENDMSG6,
    PROG_RECVMSG6,
    PROG_GETPEERNAME6,
];

/// The cgroup bind programs that keep host processes off published ports,
/// attached even with `--no-local`.
pub const BIND_PROGRAMS: [&str; 2] = [PROG_BIND4, PROG_BIND6];

/// Loads the object for the current network namespace (whose cookie the
/// socket hooks compare against). With `state`, every map is opened from its
/// pin in the state directory (or created and pinned there), so a reload
/// keeps mappings, conntrack and counters. Without it the maps are private
/// (tests).
pub fn load(state: Option<&StateDir>) -> Result<Ebpf> {
    let host_netns = crate::host::netns::cookie()?;
    let mut loader = EbpfLoader::new();
    loader.override_global(GLOBAL_HOST_NETNS, &host_netns, true);
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::ebpf(what.to_string(), e))?;
    loader.map_max_entries(MAP_CUT4, cpus as u32);
    let pins: Vec<_> = match state {
        Some(s) => MAPS.iter().map(|m| (m.name, s.map_pin(m.name))).collect(),
        None => Vec::new(),
    };
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(crate::EBPF_OBJECT)
        .map_err(|e| Error::ebpf("loading the eBPF object", e))?;
    let mut meta: Array<&mut MapData, u64> = ebpf
        .map_mut(MAP_META)
        .ok_or_else(|| Error::ebpf(MAP_META, io::Error::other("map missing from object")))
        .and_then(|m| Array::try_from(m).map_err(|e| Error::ebpf(format!("map {MAP_META}"), e)))?;
    meta.set(META_LAYOUT, LAYOUT_VERSION, 0)
        .map_err(|e| Error::ebpf(format!("writing {MAP_META}"), e))?;
    // Pinned state also records which namespace it serves, so that a later
    // command can tell when that namespace is gone (ops::reap).
    if state.is_some() {
        meta.set(META_NETNS_INO, crate::host::netns::inode()?, 0)
            .map_err(|e| Error::ebpf(format!("writing {MAP_META}"), e))?;
    }
    for name in [PROG_EXTERNAL_INGRESS, PROG_BRIDGE_INGRESS] {
        classifier(&mut ebpf, name)?
            .load()
            .map_err(|e| Error::ebpf(format!("loading program {name} (verifier)"), e))?;
    }
    for name in LOCAL_PROGRAMS.into_iter().chain(BIND_PROGRAMS) {
        sock_addr(&mut ebpf, name)?
            .load()
            .map_err(|e| Error::ebpf(format!("loading program {name} (verifier)"), e))?;
    }
    Ok(ebpf)
}

pub fn sock_addr<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSockAddr> {
    program(ebpf, name)
}

/// The program `name` of the object, as its type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| {
            Error::ebpf(
                name.to_string(),
                io::Error::other("program missing from object"),
            )
        })?
        .try_into()
        .map_err(|e| Error::ebpf(format!("program {name}"), e))
}

pub fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    program(ebpf, name)
}
