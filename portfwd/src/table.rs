//! The mapping table: adding, replacing and removing mappings in the pinned
//! maps, with the rules that keep it consistent.
//!
//! Consistency, also under concurrent commands and `kill -9`:
//! - every command that changes the table holds an exclusive flock on the
//!   state directory, so check-then-insert cannot interleave;
//! - each mapping is one hash-map element, written by one syscall: the
//!   datapath sees it whole or not at all;
//! - the per-mapping counters entry is created before the mapping and removed
//!   after it; `pf_ports` (derived data for bind4 and bind6) is rebuilt from
//!   the table by every command, so an interrupted command leaves nothing
//!   stale for long.
//!
//! Each family has its own mapping and conntrack maps; the code that touches
//! them is written once over `family::Family` and run for both, each run
//! passing over the host ports of the other family. The counters' slots,
//! `pf_hot` and `pf_ports` (keyed by family) are shared.
use std::{collections::BTreeMap, fs::File, net::IpAddr, os::fd::AsRawFd as _};

use aya::maps::PerCpuValues;
use portfwd_common::{
    Backend, CtEntry, CtKey, MapKey, MapStats, PortKey, AF_INET, AF_INET6, BACKEND_F_HOST_MAY_BIND,
    CT_DIR_FORWARD, CT_F_KILL, HOT_BACKEND, HOT_HOST, PORTS_MAY_BIND_SHIFT, PROTO_TCP, V4, V6,
};

use crate::{
    bpf::Maps,
    error::{Error, Result},
    family::{Af, Family},
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

/// A mapping's container side, in either family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub addr: IpAddr,
    pub port: u16,
    pub bridge_ifindex: u32,
    pub stats_slot: u32,
    /// `BACKEND_F_*` bits.
    pub flags: u16,
}

impl Target {
    /// A host process may bind the port (`BACKEND_F_HOST_MAY_BIND`).
    pub fn host_may_bind(&self) -> bool {
        self.flags & BACKEND_F_HOST_MAY_BIND != 0
    }
}

impl<A: Family> From<Backend<A>> for Target {
    fn from(b: Backend<A>) -> Self {
        Self {
            addr: b.addr_be.to_ip(),
            port: u16::from_be(b.port_be),
            bridge_ifindex: b.bridge_ifindex,
            stats_slot: b.stats_slot,
            flags: b.flags,
        }
    }
}

/// The published mappings of both families, by host port.
pub fn entries(maps: &Maps) -> BTreeMap<HostPort, Target> {
    let mut out = entries_in::<V4>(maps);
    out.append(&mut entries_in::<V6>(maps));
    out
}

fn entries_in<A: Family>(maps: &Maps) -> BTreeMap<HostPort, Target> {
    A::maps(maps)
        .mapping_entries()
        .into_iter()
        .filter_map(|(k, b)| Some((HostPort::from_key(&k)?, b.into())))
        .collect()
}

/// Family `A`'s entry for `host` (None: not published, or the other
/// family's port).
fn get<A: Family>(maps: &Maps, host: &HostPort) -> Option<Backend<A>> {
    A::maps(maps).mappings.get(&host.key::<A>()?, 0).ok()
}

/// The mapping of `host`, in whichever family it is.
pub fn lookup(maps: &Maps, host: &HostPort) -> Option<Target> {
    get::<V4>(maps, host)
        .map(Target::from)
        .or_else(|| get::<V6>(maps, host).map(Target::from))
}

/// Refuses mappings whose host port is already published (the same one,
/// unless `replace`; an overlapping one with another address of its family,
/// always). Costs a few lookups per mapping, whatever the table's size.
pub fn check_free(maps: &Maps, new: &[Mapping], replace: bool) -> Result<()> {
    for m in new {
        let wildcard = m.host.wildcard();
        let has = |h: &HostPort| lookup(maps, h).is_some();
        let conflict = |existing: String| Error::PortConflict {
            port: m.host.to_string(),
            existing,
        };
        if !replace && has(&m.host) {
            return Err(conflict(m.host.to_string()));
        }
        if !m.host.is_wildcard() {
            if has(&wildcard) {
                return Err(conflict(wildcard.to_string()));
            }
        } else {
            // Specific-address mappings on this port: pf_ports counts every
            // mapping of the family on the port, the wildcard included.
            let on_port = port_count(maps, &m.host);
            if on_port > u32::from(has(&wildcard)) {
                let specific = entries(maps)
                    .into_keys()
                    .find(|h| !h.is_wildcard() && h.overlaps(&m.host))
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

/// The `pf_ports` key of a host port: its port, protocol and family.
fn port_key(host: &HostPort) -> PortKey {
    PortKey {
        port_be: host.port.to_be(),
        proto: host.proto.number(),
        af: match host.af() {
            Af::V4 => AF_INET,
            Af::V6 => AF_INET6,
        },
    }
}

/// How many mappings of `host`'s family are on its port, of both halves of
/// the `pf_ports` value.
fn port_count(maps: &Maps, host: &HostPort) -> u32 {
    let (refuse, may_bind) = port_halves(maps.ports.get(&port_key(host), 0).unwrap_or(0));
    refuse + may_bind
}

/// A `pf_ports` value as (mappings that refuse host binds, mappings that
/// allow them).
fn port_halves(value: u32) -> (u32, u32) {
    let low = (1 << PORTS_MAY_BIND_SHIFT) - 1;
    (value & low, value >> PORTS_MAY_BIND_SHIFT)
}

/// Counts one more (`delta` 1) or one fewer (-1) mapping on `host`'s port,
/// in the half of the value its `may_bind` selects.
fn bump_port(maps: &mut Maps, host: &HostPort, delta: i32, may_bind: bool) -> Result<()> {
    let pk = port_key(host);
    let (refuse, allow) = port_halves(maps.ports.get(&pk, 0).unwrap_or(0));
    let step = |n: u32| (i64::from(n) + i64::from(delta)).clamp(0, 0xffff) as u32;
    let (refuse, allow) = if may_bind {
        (refuse, step(allow))
    } else {
        (step(refuse), allow)
    };
    if refuse + allow == 0 {
        let _ = maps.ports.remove(&pk);
        Ok(())
    } else {
        maps.ports
            .insert(pk, refuse | allow << PORTS_MAY_BIND_SHIFT, 0)
            .map_err(|e| Error::ebpf("updating pf_ports", e))
    }
}

/// Adds (or, with `replace`, adds or re-points) `mappings`, each in its
/// family's table. Call `check_free` first; this only enforces "no silent
/// overwrite" through BPF_NOEXIST when not replacing. A few syscalls per
/// mapping, whatever the table's size.
pub fn add(
    maps: &mut Maps,
    mappings: &[Mapping],
    bridge_ifindex: u32,
    replace: bool,
) -> Result<()> {
    for m in mappings {
        add_in::<V4>(maps, m, bridge_ifindex, replace, 0)?;
        add_in::<V6>(maps, m, bridge_ifindex, replace, 0)?;
    }
    Ok(())
}

/// Adds exactly `m`, with `flags` (`BACKEND_F_*`), unless its host port or
/// an overlapping one is published already (PortConflict, nothing changed).
/// For a runtime that owns the mapping and later removes it with
/// `remove_exact`.
pub fn add_exact(maps: &mut Maps, m: &Mapping, bridge_ifindex: u32, flags: u16) -> Result<()> {
    check_free(maps, std::slice::from_ref(m), false)?;
    add_in::<V4>(maps, m, bridge_ifindex, false, flags)?;
    add_in::<V6>(maps, m, bridge_ifindex, false, flags)
}

/// Removes `m`'s host port only if it still forwards to `m`'s container
/// endpoint (another owner may have re-pointed it since); true if it did.
/// Its flows drain.
pub fn remove_exact(maps: &mut Maps, m: &Mapping) -> Result<bool> {
    match lookup(maps, &m.host) {
        Some(t) if t.addr == m.container_ip && t.port == m.container_port => {
            unpublish(maps, &[m.host])?;
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `add` for one mapping if it is family `A`'s.
fn add_in<A: Family>(
    maps: &mut Maps,
    m: &Mapping,
    bridge_ifindex: u32,
    replace: bool,
    flags: u16,
) -> Result<()> {
    let Some(key) = m.host.key::<A>() else {
        return Ok(());
    };
    // Parsing refuses a container side of the other family; a Mapping
    // built by hand may still have one.
    let Some(mut backend) = m.backend::<A>(bridge_ifindex, 0) else {
        return Err(Error::BadSpec {
            spec: m.to_string(),
            why: "both sides must be one family (there is no NAT between IPv4 and IPv6)".into(),
        });
    };
    let existing = get::<A>(maps, &m.host);
    // Hot before the mapping exists: its first packet must not be
    // passed over.
    mark_hot(
        maps,
        &[
            (HOT_HOST, key.proto, key.port_be),
            (HOT_BACKEND, key.proto, m.container_port.to_be()),
        ],
    )?;
    // A re-pointed mapping keeps its counters; a new one gets a slot,
    // zeroed before the mapping exists so it counts from the first packet.
    let slot = match existing {
        Some(b) => b.stats_slot,
        None => take_slot(maps)?,
    };
    backend.stats_slot = slot;
    backend.flags = flags;
    let insert_flags = if replace { 0 } else { BPF_NOEXIST };
    let table = &mut A::maps_mut(maps).mappings;
    let added = table
        .insert(key, backend, insert_flags)
        .map_err(|e| match table.get(&key, 0) {
            Ok(_) if !replace => Error::PortConflict {
                port: m.host.to_string(),
                existing: m.host.to_string(),
            },
            _ => Error::ebpf(format!("adding {m}"), e),
        });
    if let Err(e) = added {
        if existing.is_none() {
            free_slot(maps, slot);
        }
        return Err(e);
    }
    maps.table_changed();
    let may_bind = flags & BACKEND_F_HOST_MAY_BIND != 0;
    match existing {
        None => bump_port(maps, &m.host, 1, may_bind)?,
        // Re-pointed with the other kind of flags: it moves between halves.
        Some(b) if (b.flags & BACKEND_F_HOST_MAY_BIND != 0) != may_bind => {
            bump_port(maps, &m.host, -1, !may_bind)?;
            bump_port(maps, &m.host, 1, may_bind)?;
        }
        Some(_) => {}
    }
    Ok(())
}

/// A free slot of `pf_mstats` for a new mapping, its counters zeroed and its
/// bit in `pf_slots` set. Slots are handed out round the array from the hint
/// in `pf_meta`, so a removed mapping's slot (its draining flows may still
/// count into it) comes round again only after every other: a few syscalls,
/// whatever the table's size.
fn take_slot(maps: &mut Maps) -> Result<u32> {
    let words = portfwd_common::SLOT_WORDS;
    let hint = maps
        .meta
        .get(&portfwd_common::META_SLOT_HINT, 0)
        .unwrap_or(0) as u32
        % words;
    for i in 0..words {
        let w = (hint + i) % words;
        let used = maps.slots.get(&w, 0).unwrap_or(0);
        if used == u64::MAX {
            continue;
        }
        let bit = (!used).trailing_zeros();
        let slot = w * 64 + bit;
        maps.mapping_stats
            .set(slot, zero_stats()?, 0)
            .map_err(|e| Error::ebpf("zeroing a counters slot", e))?;
        maps.slots
            .set(w, used | (1 << bit), 0)
            .map_err(|e| Error::ebpf("updating pf_slots", e))?;
        // The next search starts past this word once it is full.
        let next = if used | (1 << bit) == u64::MAX {
            (w + 1) % words
        } else {
            w
        };
        let _ = maps
            .meta
            .set(portfwd_common::META_SLOT_HINT, u64::from(next), 0);
        return Ok(slot);
    }
    Err(Error::ebpf(
        "allocating counters",
        std::io::Error::other("every counters slot is in use"),
    ))
}

/// Gives `slot` back (its counters stay until it is handed out again).
fn free_slot(maps: &mut Maps, slot: u32) {
    let w = slot / 64;
    if let Ok(used) = maps.slots.get(&w, 0) {
        let _ = maps.slots.set(w, used & !(1 << (slot % 64)), 0);
    }
}

/// Makes `pf_slots` exactly the slots the mappings hold, repairing what a
/// command killed between its writes may have left. Run by attach.
pub fn rebuild_slots(maps: &mut Maps) -> Result<()> {
    let mut wanted = vec![0u64; portfwd_common::SLOT_WORDS as usize];
    for t in entries(maps).into_values() {
        if let Some(w) = wanted.get_mut(t.stats_slot as usize / 64) {
            *w |= 1 << (t.stats_slot % 64);
        }
    }
    write_words(&mut maps.slots, wanted, "pf_slots")
}

/// Makes the bitmap `array` hold `wanted`, writing only the words that
/// differ.
fn write_words(
    array: &mut aya::maps::Array<aya::maps::MapData, u64>,
    wanted: Vec<u64>,
    name: &str,
) -> Result<()> {
    for (word, value) in wanted.into_iter().enumerate() {
        let word = word as u32;
        if array.get(&word, 0).unwrap_or(0) != value {
            array
                .set(word, value, 0)
                .map_err(|e| Error::ebpf(format!("updating {name}"), e))?;
        }
    }
    Ok(())
}

/// Removes the mappings matching `selectors` (each must match at least one)
/// and returns them. Established flows keep their conntrack entries and
/// drain; with `kill` they are ended (see `kill_flows`).
pub fn remove(maps: &mut Maps, selectors: &[PortSelector], kill: bool) -> Result<Vec<HostPort>> {
    let mut doomed = Vec::new();
    let mut table: Option<BTreeMap<HostPort, Target>> = None;
    for sel in selectors {
        let matched = matching(maps, sel, &mut table);
        if matched.is_empty() {
            return Err(Error::NotPublished(sel.to_string()));
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
        .filter(|(_, t)| t.bridge_ifindex == bridge_ifindex)
        .map(|(h, _)| h)
        .collect();
    unpublish(maps, &doomed)?;
    Ok(doomed)
}

/// The one way a mapping leaves the table: the mapping, then its counters,
/// then its count in `pf_ports` (which frees the port for host processes
/// once no mapping of the family is left on it).
pub fn unpublish(maps: &mut Maps, hosts: &[HostPort]) -> Result<()> {
    for host in hosts {
        let target = lookup(maps, host);
        remove_in::<V4>(maps, host)?;
        remove_in::<V6>(maps, host)?;
        if let Some(t) = target {
            free_slot(maps, t.stats_slot);
        }
        bump_port(maps, host, -1, target.is_some_and(|t| t.host_may_bind()))?;
    }
    Ok(())
}

/// Removes `host` from family `A`'s table if it is that family's.
fn remove_in<A: Family>(maps: &mut Maps, host: &HostPort) -> Result<()> {
    let Some(key) = host.key::<A>() else {
        return Ok(());
    };
    A::maps_mut(maps)
        .mappings
        .remove(&key)
        .map_err(|e| Error::ebpf(format!("removing {host}"), e))?;
    maps.table_changed();
    Ok(())
}

/// The published host ports a selector names. Direct lookups when that is
/// enough (an address given, or only the wildcard on the port in each
/// family the selector names); a scan of the table (done once) when
/// specific-address mappings must be found.
fn matching(
    maps: &Maps,
    sel: &PortSelector,
    table: &mut Option<BTreeMap<HostPort, Target>>,
) -> Vec<HostPort> {
    let families: &[Af] = match sel.addr {
        None => &[Af::V4, Af::V6],
        Some(a) if Af::of(a) == Af::V4 => &[Af::V4],
        Some(_) => &[Af::V6],
    };
    let mut out = Vec::new();
    for port in sel.ports.clone() {
        if let Some(host) = sel.exact(port) {
            if lookup(maps, &host).is_some() {
                out.push(host);
            }
            continue;
        }
        for af in families {
            let host = HostPort {
                proto: sel.proto,
                addr: af.unspecified(),
                port,
            };
            let present = lookup(maps, &host).is_some();
            if port_count(maps, &host) == u32::from(present) {
                if present {
                    out.push(host);
                }
                continue;
            }
            let all = table.get_or_insert_with(|| entries(maps));
            out.extend(
                all.keys()
                    .filter(|h| sel.matches(h) && h.port == port && h.af() == *af)
                    .copied(),
            );
        }
    }
    out
}

/// Ends the flows of the given host ports: TCP entries are marked so the
/// datapath turns their next packets into RSTs for both ends; UDP entries are
/// deleted (the next datagram follows the table, which no longer has them).
pub fn kill_flows(maps: &mut Maps, hosts: &[HostPort]) -> Result<usize> {
    Ok(kill_flows_in::<V4>(maps, hosts) + kill_flows_in::<V6>(maps, hosts))
}

fn kill_flows_in<A: Family>(maps: &mut Maps, hosts: &[HostPort]) -> usize {
    let keys: Vec<MapKey<A>> = hosts.iter().filter_map(HostPort::key::<A>).collect();
    if keys.is_empty() {
        return 0;
    }
    let conntrack = &mut A::maps_mut(maps).conntrack;
    let flows: Vec<(CtKey<A>, CtEntry<A>)> = conntrack
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(k, e)| e.dir == CT_DIR_FORWARD && keys.iter().any(|m| *m == e.mapping_key(k)))
        .collect();
    for (key, entry) in &flows {
        let reply_key = reply_key(key, entry);
        if key.proto == PROTO_TCP {
            for k in [*key, reply_key] {
                if let Ok(mut e) = conntrack.get(&k, 0) {
                    e.flags |= CT_F_KILL;
                    let _ = conntrack.insert(k, e, BPF_EXIST);
                }
            }
        } else {
            let _ = conntrack.remove(key);
            let _ = conntrack.remove(&reply_key);
        }
    }
    flows.len()
}

/// The reply-direction key of the flow whose forward entry is (`key`, `entry`).
pub fn reply_key<A: Family>(key: &CtKey<A>, entry: &CtEntry<A>) -> CtKey<A> {
    entry.sibling_key(key)
}

/// Sets the `pf_hot` bits of `ports` ((set, protocol, port in network
/// order)); one read and one write per word.
fn mark_hot(maps: &mut Maps, ports: &[(u32, u8, u16)]) -> Result<()> {
    for &(set, proto, port_be) in ports {
        let (word, bit) = portfwd_common::hot_bit(set, proto, port_be);
        let old = maps.hot.get(&word, 0).unwrap_or(0);
        if old & bit == 0 {
            maps.hot
                .set(word, old | bit, 0)
                .map_err(|e| Error::ebpf("updating pf_hot", e))?;
        }
    }
    Ok(())
}

/// Makes `pf_hot` (one bitmap for both families) exactly the ports of the
/// mappings and of the flows that are still alive (a removed mapping's port
/// stays hot while its flows drain). Run by attach and, periodically, by
/// `watch`; costs a pass over conntrack.
pub fn rebuild_hot(maps: &mut Maps) -> Result<()> {
    let mut wanted = vec![0u64; portfwd_common::HOT_WORDS as usize];
    let now = crate::ops::monotonic_ns();
    want_hot::<V4>(maps, now, &mut wanted);
    want_hot::<V6>(maps, now, &mut wanted);
    write_words(&mut maps.hot, wanted, "pf_hot")
}

/// Sets in `wanted` the hot bits family `A`'s mappings and live flows need.
fn want_hot<A: Family>(maps: &Maps, now: u64, wanted: &mut [u64]) {
    let mut want = |set, proto, port_be| {
        let (word, bit) = portfwd_common::hot_bit(set, proto, port_be);
        wanted[word as usize] |= bit;
    };
    let fam = A::maps(maps);
    for (key, b) in fam.mapping_entries() {
        want(HOT_HOST, key.proto, key.port_be);
        want(HOT_BACKEND, key.proto, b.port_be);
    }
    for (key, e) in fam.conntrack.iter().filter_map(|r| r.ok()) {
        if e.expires_ns <= now {
            continue;
        }
        let (_, host_port) = e.host_side(&key);
        let backend_port = if e.dir == CT_DIR_FORWARD {
            e.nat_port_be
        } else {
            key.sport_be
        };
        want(HOT_HOST, key.proto, host_port);
        want(HOT_BACKEND, key.proto, backend_port);
    }
}

/// Makes `pf_ports` the count of mappings per (port, protocol, family), in
/// the halves of `PORTS_MAY_BIND_SHIFT`, repairing what a command killed
/// between its two writes may have left. Run by attach.
pub fn rebuild_ports(maps: &mut Maps) -> Result<()> {
    let mut wanted: BTreeMap<(u16, u8, u8), u32> = BTreeMap::new();
    for (host, t) in entries(maps) {
        let k = port_key(&host);
        let one = if t.host_may_bind() {
            1 << PORTS_MAY_BIND_SHIFT
        } else {
            1
        };
        *wanted.entry((k.port_be, k.proto, k.af)).or_default() += one;
    }
    let stale: Vec<PortKey> = maps
        .ports
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !wanted.contains_key(&(k.port_be, k.proto, k.af)))
        .collect();
    for k in stale {
        let _ = maps.ports.remove(&k);
    }
    for ((port_be, proto, af), count) in wanted {
        let key = PortKey { port_be, proto, af };
        maps.ports
            .insert(key, count, 0)
            .map_err(|e| Error::ebpf("updating pf_ports", e))?;
    }
    Ok(())
}

fn zero_stats() -> Result<PerCpuValues<MapStats>> {
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| Error::io(what.to_string(), e))?;
    PerCpuValues::try_from(vec![MapStats::default(); cpus])
        .map_err(|e| Error::io("per-CPU values", e))
}

/// Per-mapping counters summed over CPUs (zero if the mapping is missing).
pub fn mapping_stats(maps: &Maps, host: &HostPort) -> MapStats {
    let mut total = MapStats::default();
    let Some(b) = lookup(maps, host) else {
        return total;
    };
    if let Ok(per_cpu) = maps.mapping_stats.get(&b.stats_slot, 0) {
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
