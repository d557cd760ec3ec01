//! `portfwd list`: the mapping table and the datapath counters.
use std::fmt::Write as _;

use crate::{datapath, error::Result, ifaces, spec::HostPort, state::StateDir};

pub fn run() -> Result<String> {
    let state = StateDir::current()?;
    let mut out = String::new();
    if !state.exists() {
        out.push_str("nothing attached in this network namespace\n");
        return Ok(out);
    }
    let maps = datapath::Maps::open(&state)?;
    let mut rows: Vec<_> = maps
        .mapping_entries()
        .into_iter()
        .filter_map(|(k, b)| Some((HostPort::from_key(&k)?, b)))
        .collect();
    rows.sort_by_key(|(h, _)| (h.port, h.proto, h.addr));
    let _ = writeln!(out, "{:<5} {:<22} {:<22} {}", "PROTO", "HOST", "CONTAINER", "BRIDGE");
    for (host, b) in rows {
        let addr = host.addr.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED);
        let container = format!(
            "{}:{}",
            std::net::Ipv4Addr::from(b.addr_be.to_ne_bytes()),
            u16::from_be(b.port_be)
        );
        let bridge = ifaces::ifname(b.bridge_ifindex).unwrap_or_else(|| format!("#{}", b.bridge_ifindex));
        let _ = writeln!(
            out,
            "{:<5} {:<22} {:<22} {}",
            host.proto,
            format!("{addr}:{}", host.port),
            container,
            bridge
        );
    }
    let counters: Vec<String> = maps
        .counters()
        .into_iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !counters.is_empty() {
        let _ = writeln!(out, "counters: {}", counters.join(" "));
    }
    Ok(out)
}
