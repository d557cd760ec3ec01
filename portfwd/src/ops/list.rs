//! The mapping table with the kernel's counters, one row per mapping.
use std::net::Ipv4Addr;

use portfwd_common::{CT_DIR_FORWARD, CT_F_CLOSING};
use serde::Serialize;

use crate::{
    bpf::{self, Maps, ProgramStats},
    error::Result,
    host::ifaces,
    state::StateDir,
    table,
};

#[derive(Debug, Serialize)]
pub struct Row {
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_ip: String,
    pub container_port: u16,
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

/// How full the conntrack map is: live entries (both directions of every
/// flow) of its capacity; the LRU evicts the least recently used when full.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ConntrackUse {
    pub entries: u64,
    pub capacity: u64,
}

/// The rows, and how full conntrack is (from one pass over it).
pub fn rows(maps: &Maps) -> (Vec<Row>, ConntrackUse) {
    let now = super::monotonic_ns();
    let entries: Vec<_> = maps
        .conntrack
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(_, e)| e.expires_ns > now)
        .collect();
    let usage = ConntrackUse {
        entries: entries.len() as u64,
        capacity: u64::from(portfwd_common::CONNTRACK_MAX),
    };
    let live: Vec<_> = entries
        .into_iter()
        .filter(|(_, e)| e.dir == CT_DIR_FORWARD && e.flags & CT_F_CLOSING == 0)
        .collect();
    let rows = table::entries(maps)
        .into_iter()
        .map(|(host, b)| {
            let s = table::mapping_stats(maps, &host);
            let key = host.key();
            let active = live.iter().filter(|(k, e)| e.mapping_key(k) == key).count() as u64;
            Row {
                proto: host.proto.to_string(),
                host_ip: host.addr.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string(),
                host_port: host.port,
                container_ip: Ipv4Addr::from(b.addr_be.to_ne_bytes()).to_string(),
                container_port: u16::from_be(b.port_be),
                bridge: ifaces::ifname(b.bridge_ifindex)
                    .unwrap_or_else(|| format!("#{}", b.bridge_ifindex)),
                packets: s.fwd_packets + s.rev_packets,
                bytes: s.fwd_bytes + s.rev_bytes,
                packets_in: s.fwd_packets,
                bytes_in: s.fwd_bytes,
                packets_out: s.rev_packets,
                bytes_out: s.rev_bytes,
                connections: s.connections,
                active_flows: active,
            }
        })
        .collect();
    (rows, usage)
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
    /// With `programs` asked: the attached programs' statistics.
    pub programs: Option<ProgramsReport>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// The mapping table with the kernel's counters.
pub fn list(req: &ListRequest) -> Result<ListReport> {
    let dead_namespaces = super::enter(req.netns.as_deref())?;
    let Some(maps) = super::open_read_only()? else {
        return Ok(ListReport {
            dead_namespaces,
            ..Default::default()
        });
    };
    let (rows, conntrack) = rows(&maps);
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
        programs,
        dead_namespaces,
    })
}
