//! The mapping table: adding, replacing and removing mappings in the pinned
//! maps, with the rules that keep it consistent.
//!
//! Consistency, also under concurrent commands and `kill -9`:
//! - every command that changes the table holds an exclusive flock on the
//!   state directory, so check-then-insert cannot interleave;
//! - each mapping is one hash-map element, written by one syscall: the
//!   datapath sees it whole or not at all;
//! - the per-mapping counters entry is created before the mapping and removed
//!   after it; `pf_ports` (derived data for bind4) is rebuilt from the table by
//!   every command, so an interrupted command leaves nothing stale for long.
use std::{collections::BTreeMap, fs::File, os::fd::AsRawFd as _};

use aya::maps::PerCpuValues;
use portfwd_common::{
    CtEntry, CtKey, MapKey, MapStats, PortKey, CT_DIR_FORWARD, CT_F_KILL, PROTO_TCP, V4,
};

use crate::{
    bpf::Maps,
    error::{Error, Result},
    spec::{HostPort, Mapping, PortSelector},
    state::StateDir,
};

const BPF_NOEXIST: u64 = 1;
const BPF_EXIST: u64 = 2;

/// An exclusive lock on a namespace's state, released when dropped (or when
/// the process dies, however it dies).
pub struct Lock(#[allow(dead_code)] File);

pub fn lock(state: &StateDir) -> Result<Lock> {
    let dir = File::open(&state.path)
        .map_err(|e| Error::io(format!("opening {}", state.path.display()), e))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(Error::io(
            "locking the state directory",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(Lock(dir))
}

/// The published mappings, by host port.
pub fn entries(maps: &Maps) -> BTreeMap<HostPort, portfwd_common::Backend<V4>> {
    maps.mapping_entries()
        .into_iter()
        .filter_map(|(k, b)| Some((HostPort::from_key(&k)?, b)))
        .collect()
}

/// Refuses mappings whose host port is already published (the same one,
/// unless `replace`; an overlapping one with another address, always).
/// Costs a few lookups per mapping, whatever the table's size.
pub fn check_free(maps: &Maps, new: &[Mapping], replace: bool) -> Result<()> {
    for m in new {
        let key = m.host.key();
        let wildcard = HostPort {
            addr: None,
            ..m.host
        };
        let has = |h: &HostPort| maps.mappings.get(&h.key(), 0).is_ok();
        let conflict = |existing: String| Error::PortConflict {
            port: m.host.to_string(),
            existing,
        };
        if !replace && has(&m.host) {
            return Err(conflict(m.host.to_string()));
        }
        if m.host.addr.is_some() {
            if has(&wildcard) {
                return Err(conflict(wildcard.to_string()));
            }
        } else {
            // Specific-address mappings on this port: pf_ports counts every
            // mapping on the port, the wildcard included.
            let on_port = port_count(maps, &key);
            if on_port > u32::from(has(&wildcard)) {
                let specific = entries(maps)
                    .into_keys()
                    .find(|h| h.addr.is_some() && h.overlaps(&m.host))
                    .map_or_else(
                        || format!("{}:{}/{}", "an address", m.host.port, m.host.proto),
                        |h| h.to_string(),
                    );
                return Err(conflict(specific));
            }
        }
    }
    Ok(())
}

fn port_count(maps: &Maps, key: &MapKey<V4>) -> u32 {
    maps.ports
        .get(&port_key(key.port_be, key.proto), 0)
        .unwrap_or(0)
}

/// The `pf_ports` key of an IPv4 port.
fn port_key(port_be: u16, proto: u8) -> PortKey {
    PortKey {
        port_be,
        proto,
        af: portfwd_common::AF_INET,
    }
}

fn bump_port(maps: &mut Maps, key: &MapKey<V4>, delta: i32) -> Result<()> {
    let pk = port_key(key.port_be, key.proto);
    let n = port_count(maps, key) as i64 + i64::from(delta);
    if n <= 0 {
        let _ = maps.ports.remove(&pk);
        Ok(())
    } else {
        maps.ports
            .insert(pk, n as u32, 0)
            .map_err(|e| Error::ebpf("updating pf_ports", e))
    }
}

/// Adds (or, with `replace`, adds or re-points) `mappings`. Call
/// `check_free` first; this only enforces "no silent overwrite" through
/// BPF_NOEXIST when not replacing. A few syscalls per mapping, whatever the
/// table's size.
pub fn add(
    maps: &mut Maps,
    mappings: &[Mapping],
    bridge_ifindex: u32,
    replace: bool,
) -> Result<()> {
    for m in mappings {
        let is_new = maps.mappings.get(&m.host.key(), 0).is_err();
        let zeros = zero_stats()?;
        let key = m.host.key();
        // Counters first, so the datapath can count from the first packet.
        match maps.mapping_stats.insert(key, zeros, BPF_NOEXIST) {
            Ok(()) => {}
            Err(_) if maps.mapping_stats.get(&key, 0).is_ok() => {}
            Err(e) => return Err(Error::ebpf(format!("counters for {m}"), e)),
        }
        let flags = if replace { 0 } else { BPF_NOEXIST };
        maps.mappings
            .insert(key, m.backend(bridge_ifindex), flags)
            .map_err(|e| match maps.mappings.get(&key, 0) {
                Ok(_) if !replace => Error::PortConflict {
                    port: m.host.to_string(),
                    existing: m.host.to_string(),
                },
                _ => Error::ebpf(format!("adding {m}"), e),
            })?;
        if is_new {
            bump_port(maps, &key, 1)?;
        }
    }
    Ok(())
}

/// Removes the mappings matching `selectors` (each must match at least one)
/// and returns them. Established flows keep their conntrack entries and
/// drain; with `kill` they are ended (see `kill_flows`).
pub fn remove(maps: &mut Maps, selectors: &[PortSelector], kill: bool) -> Result<Vec<HostPort>> {
    let mut doomed = Vec::new();
    let mut table: Option<BTreeMap<HostPort, portfwd_common::Backend<V4>>> = None;
    for sel in selectors {
        let matched = matching(maps, sel, &mut table);
        if matched.is_empty() {
            let port = if sel.ports.start() == sel.ports.end() {
                sel.ports.start().to_string()
            } else {
                format!("{}-{}", sel.ports.start(), sel.ports.end())
            };
            let addr = sel.addr.map(|a| format!("{a}:")).unwrap_or_default();
            return Err(Error::NotPublished(format!("{addr}{port}/{}", sel.proto)));
        }
        doomed.extend(matched);
    }
    doomed.sort();
    doomed.dedup();
    unpublish(maps, &doomed)?;
    if kill {
        kill_flows(maps, &doomed)?;
    }
    Ok(doomed)
}

/// Removes every mapping to `bridge_ifindex` (the bridge is being detached)
/// and returns them. Their flows drain like those of `remove`.
pub fn remove_bridge(maps: &mut Maps, bridge_ifindex: u32) -> Result<Vec<HostPort>> {
    let doomed: Vec<HostPort> = entries(maps)
        .into_iter()
        .filter(|(_, b)| b.bridge_ifindex == bridge_ifindex)
        .map(|(h, _)| h)
        .collect();
    unpublish(maps, &doomed)?;
    Ok(doomed)
}

/// The one way a mapping leaves the table: the mapping, then its counters,
/// then its count in `pf_ports` (which frees the port for host processes
/// once no mapping is left on it).
fn unpublish(maps: &mut Maps, hosts: &[HostPort]) -> Result<()> {
    for host in hosts {
        let key = host.key();
        maps.mappings
            .remove(&key)
            .map_err(|e| Error::ebpf(format!("removing {host}"), e))?;
        let _ = maps.mapping_stats.remove(&key);
        bump_port(maps, &key, -1)?;
    }
    Ok(())
}

/// The published host ports a selector names. Direct lookups when that is
/// enough (an address given, or only the wildcard on the port); a scan of
/// the table (done once) when specific-address mappings must be found.
fn matching(
    maps: &Maps,
    sel: &PortSelector,
    table: &mut Option<BTreeMap<HostPort, portfwd_common::Backend<V4>>>,
) -> Vec<HostPort> {
    let mut out = Vec::new();
    for port in sel.ports.clone() {
        let host = HostPort {
            proto: sel.proto,
            addr: sel.addr,
            port,
        };
        let present = maps.mappings.get(&host.key(), 0).is_ok();
        if sel.addr.is_some() || port_count(maps, &host.key()) == u32::from(present) {
            if present {
                out.push(host);
            }
            continue;
        }
        let all = table.get_or_insert_with(|| entries(maps));
        out.extend(
            all.keys()
                .filter(|h| sel.matches(h) && h.port == port)
                .copied(),
        );
    }
    out
}

/// Ends the flows of the given host ports: TCP entries are marked so the
/// datapath turns their next packets into RSTs for both ends; UDP entries are
/// deleted (the next datagram follows the table, which no longer has them).
pub fn kill_flows(maps: &mut Maps, hosts: &[HostPort]) -> Result<usize> {
    let keys: Vec<MapKey<V4>> = hosts.iter().map(HostPort::key).collect();
    let flows: Vec<(CtKey<V4>, CtEntry<V4>)> = maps
        .conntrack
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| e.dir == CT_DIR_FORWARD && keys.iter().any(|m| *m == e.mapping_key(k)))
        .collect();
    for (key, entry) in &flows {
        let reply_key = reply_key(key, entry);
        if key.proto == PROTO_TCP {
            for k in [*key, reply_key] {
                if let Ok(mut e) = maps.conntrack.get(&k, 0) {
                    e.flags |= CT_F_KILL;
                    let _ = maps.conntrack.insert(k, e, BPF_EXIST);
                }
            }
        } else {
            let _ = maps.conntrack.remove(key);
            let _ = maps.conntrack.remove(&reply_key);
        }
    }
    Ok(flows.len())
}

/// The reply-direction key of the flow whose forward entry is (`key`, `entry`).
pub fn reply_key(key: &CtKey<V4>, entry: &CtEntry<V4>) -> CtKey<V4> {
    entry.sibling_key(key)
}

/// Makes `pf_ports` the count of mappings per (port, protocol), repairing
/// what a command killed between its two writes may have left. Run by attach.
pub fn rebuild_ports(maps: &mut Maps) -> Result<()> {
    let mut wanted: BTreeMap<(u16, u8), u32> = BTreeMap::new();
    for (key, _) in maps.mapping_entries() {
        *wanted.entry((key.port_be, key.proto)).or_default() += 1;
    }
    let stale: Vec<PortKey> = maps
        .ports
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !wanted.contains_key(&(k.port_be, k.proto)))
        .collect();
    for k in stale {
        let _ = maps.ports.remove(&k);
    }
    for ((port_be, proto), count) in wanted {
        maps.ports
            .insert(port_key(port_be, proto), count, 0)
            .map_err(|e| Error::ebpf("updating pf_ports", e))?;
    }
    Ok(())
}

fn zero_stats() -> Result<PerCpuValues<MapStats>> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::io(what.to_string(), e))?;
    PerCpuValues::try_from(vec![MapStats::default(); cpus])
        .map_err(|e| Error::io("per-CPU values", e))
}

/// Per-mapping counters summed over CPUs (zero if the entry is missing).
pub fn mapping_stats(maps: &Maps, host: &HostPort) -> MapStats {
    let mut total = MapStats::default();
    if let Ok(per_cpu) = maps.mapping_stats.get(&host.key(), 0) {
        for s in per_cpu.iter() {
            total.fwd_packets += s.fwd_packets;
            total.fwd_bytes += s.fwd_bytes;
            total.rev_packets += s.rev_packets;
            total.rev_bytes += s.rev_bytes;
            total.connections += s.connections;
        }
    }
    total
}
