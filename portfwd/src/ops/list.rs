//! The mapping table with the kernel's counters, one row per mapping, both
//! families (addresses in their usual text forms; `host_ip` of a wildcard is
//! `0.0.0.0` or `::`).
use std::collections::{BTreeMap, BTreeSet};

use portfwd_common::{CT_DIR_FORWARD, CT_F_CLOSING, V4, V6};
use serde::Serialize;

use crate::{
    bpf::{self, Maps, ProgramStats},
    error::Result,
    family::{Af, Family},
    host::ifaces,
    persist,
    spec::{HostPort, Proto},
    state::StateDir,
    table,
};

#[derive(Debug, Serialize)]
pub struct Row {
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    /// `0.0.0.0` or `::` while the mapping is held: the container it
    /// follows does not run (see `ops::follow`).
    pub container_ip: String,
    pub container_port: u16,
    /// The Docker container the mapping follows (made by name); None for a
    /// mapping by address.
    pub container_name: Option<String>,
    pub bridge: String,
    /// Both directions.
    pub packets: u64,
    pub bytes: u64,
    /// Client -> container.
    pub packets_in: u64,
    pub bytes_in: u64,
    /// Container -> client.
    pub packets_out: u64,
    pub bytes_out: u64,
    pub connections: u64,
    pub active_flows: u64,
}

/// How full the conntrack maps are: live entries (both directions of every
/// flow) of their capacity, both families together (each family's map has
/// `CONNTRACK_MAX`); an LRU evicts its least recently used when full.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ConntrackUse {
    pub entries: u64,
    pub capacity: u64,
}

/// The rows of both families, and how full conntrack is (from one pass over
/// each family's).
pub fn rows(maps: &Maps, doc: &persist::Doc) -> (Vec<Row>, ConntrackUse) {
    let now = super::monotonic_ns();
    let mut usage = ConntrackUse::default();
    let mut active = BTreeMap::new();
    live_flows::<V4>(maps, now, &mut usage, &mut active);
    live_flows::<V6>(maps, now, &mut usage, &mut active);
    let rows = table::entries(maps)
        .into_iter()
        .map(|(host, t)| {
            let s = table::mapping_stats(maps, &host);
            Row {
                proto: host.proto.to_string(),
                host_ip: host.addr.to_string(),
                host_port: host.port,
                container_ip: t.addr.to_string(),
                container_port: t.port,
                container_name: doc.container_of(&host).map(str::to_string),
                bridge: ifaces::ifname(t.bridge_ifindex)
                    .unwrap_or_else(|| format!("#{}", t.bridge_ifindex)),
                packets: s.fwd_packets + s.rev_packets,
                bytes: s.fwd_bytes + s.rev_bytes,
                packets_in: s.fwd_packets,
                bytes_in: s.fwd_bytes,
                packets_out: s.rev_packets,
                bytes_out: s.rev_bytes,
                connections: s.connections,
                active_flows: active.get(&host).copied().unwrap_or(0),
            }
        })
        .collect();
    (rows, usage)
}

/// Counts family `A`'s live conntrack entries into `usage`, and its live,
/// not closing flows per mapping into `active`.
fn live_flows<A: Family>(
    maps: &Maps,
    now: u64,
    usage: &mut ConntrackUse,
    active: &mut BTreeMap<HostPort, u64>,
) {
    usage.capacity += u64::from(portfwd_common::CONNTRACK_MAX);
    for (k, e) in A::maps(maps).conntrack.iter().filter_map(|r| r.ok()) {
        if e.expires_ns <= now {
            continue;
        }
        usage.entries += 1;
        if e.dir == CT_DIR_FORWARD && e.flags & CT_F_CLOSING == 0 {
            if let Some(host) = HostPort::from_key(&e.mapping_key(&k)) {
                *active.entry(host).or_default() += 1;
            }
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    /// The network namespace to act in (/var/run/netns/NAME); None: this one.
    pub netns: Option<String>,
    /// Also read the attached programs' run statistics.
    pub programs: bool,
}

/// The attached programs and what the kernel counted of them.
#[derive(Debug, Default, Serialize)]
pub struct ProgramsReport {
    /// kernel.bpf_stats_enabled: without it the kernel counts nothing.
    pub bpf_stats_enabled: bool,
    pub programs: Vec<ProgramStats>,
}

#[derive(Debug, Default)]
pub struct ListReport {
    /// False: nothing is attached in the namespace (and the rest is empty).
    pub attached: bool,
    /// One per mapping, in host-port order.
    pub rows: Vec<Row>,
    /// The datapath's counters by name, summed over CPUs, zeros included.
    pub counters: Vec<(&'static str, u64)>,
    pub conntrack: ConntrackUse,
    /// Ports published in one family only, in port order: the datapath does
    /// no NAT between families, so clients of the other family are not served.
    pub one_family: Vec<OneFamily>,
    /// With `programs` asked: the attached programs' statistics.
    pub programs: Option<ProgramsReport>,
    /// Ports a userspace relay serves (portfwd-docker-proxy), attached or not.
    pub relayed: Vec<crate::relayed::Relayed>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// The mapping table with the kernel's counters.
pub fn list(req: &ListRequest) -> Result<ListReport> {
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let Some(maps) = super::open_read_only()? else {
        return Ok(ListReport {
            relayed: crate::relayed::current(),
            dead_namespaces,
            ..Default::default()
        });
    };
    // Names only: a file that cannot be read is for the commands that
    // change things to refuse.
    let doc = persist::Doc::load().unwrap_or_default();
    let (rows, conntrack) = rows(&maps, &doc);
    let one_family = one_family(&maps);
    let programs = if req.programs {
        Some(ProgramsReport {
            bpf_stats_enabled: bpf::stats_enabled(),
            programs: bpf::attached_programs(&StateDir::current()?),
        })
    } else {
        None
    };
    Ok(ListReport {
        attached: true,
        rows,
        counters: maps.counters(),
        conntrack,
        one_family,
        programs,
        relayed: crate::relayed::current(),
        dead_namespaces,
    })
}

/// A port (and protocol) published for one family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OneFamily {
    pub proto: Proto,
    pub port: u16,
    /// The family it is published in.
    pub family: Af,
}

fn one_family(maps: &Maps) -> Vec<OneFamily> {
    let mut families: BTreeMap<(u16, Proto), BTreeSet<Af>> = BTreeMap::new();
    for host in table::entries(maps).into_keys() {
        families
            .entry((host.port, host.proto))
            .or_default()
            .insert(host.af());
    }
    families
        .into_iter()
        .filter_map(|((port, proto), afs)| {
            let mut afs = afs.into_iter();
            match (afs.next(), afs.next()) {
                (Some(family), None) => Some(OneFamily {
                    proto,
                    port,
                    family,
                }),
                _ => None,
            }
        })
        .collect()
}
