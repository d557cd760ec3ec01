//! `portfwd list [--json]`: the mapping table with the kernel's counters.
use std::{fmt::Write as _, net::Ipv4Addr};

use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use portfwd_common::{CT_DIR_FORWARD, CT_F_CLOSING};
use serde::Serialize;

use crate::{bpf::Maps, error::Result, host::ifaces, table};

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

/// CLOCK_MONOTONIC in nanoseconds, the clock of bpf_ktime_get_ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub fn rows(maps: &Maps) -> Vec<Row> {
    let now = monotonic_ns();
    let live: Vec<_> = maps
        .conntrack
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(_, e)| {
            e.dir == CT_DIR_FORWARD && e.expires_ns > now && e.flags & CT_F_CLOSING == 0
        })
        .collect();
    table::entries(maps)
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
        .collect()
}

pub fn run(json: bool) -> Result<String> {
    let Some(maps) = super::open_read_only()? else {
        return Ok(super::nothing_attached(json));
    };
    let rows = rows(&maps);
    if json {
        return Ok(serde_json::to_string_pretty(&rows).expect("plain data serialises") + "\n");
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "PROTO",
        "HOST",
        "CONTAINER",
        "BRIDGE",
        "PACKETS IN/OUT",
        "BYTES IN/OUT",
        "CONNS",
        "ACTIVE",
    ]);
    for r in &rows {
        t.add_row([
            r.proto.clone(),
            format!("{}:{}", r.host_ip, r.host_port),
            format!("{}:{}", r.container_ip, r.container_port),
            r.bridge.clone(),
            format!("{}/{}", r.packets_in, r.packets_out),
            format!("{}/{}", r.bytes_in, r.bytes_out),
            r.connections.to_string(),
            r.active_flows.to_string(),
        ]);
    }
    for col in 4..8 {
        if let Some(c) = t.column_mut(col) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = format!("{t}\n");
    let counters: Vec<String> = maps
        .counters()
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !counters.is_empty() {
        let _ = writeln!(out, "datapath: {}", counters.join(" "));
    }
    Ok(out)
}
