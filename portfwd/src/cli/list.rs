//! `portfwd list [--json] [--counters]`
use std::fmt::Write as _;

use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Show every datapath counter (zeros too) and how full conntrack is,
    /// instead of the mappings.
    #[arg(long)]
    counters: bool,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let report = ops::list(&ops::ListRequest { netns })?;
    super::say_removed(&report.dead_namespaces);
    if !report.attached {
        return Ok(super::nothing_attached(args.json));
    }
    if args.counters {
        return Ok(counters(&report, args.json));
    }
    if args.json {
        return Ok(super::json(&report.rows));
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
    for r in &report.rows {
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
    let counters: Vec<String> = report
        .counters
        .iter()
        .filter(|(_, v)| *v > 0)
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    if !counters.is_empty() {
        let _ = writeln!(out, "datapath: {}", counters.join(" "));
    }
    Ok(out)
}

/// `--counters`: every counter by name, and conntrack's use.
fn counters(report: &ops::ListReport, json: bool) -> String {
    if json {
        let counters: serde_json::Map<String, serde_json::Value> = report
            .counters
            .iter()
            .map(|(n, v)| (n.to_string(), (*v).into()))
            .collect();
        return super::json(&serde_json::json!({
            "counters": counters,
            "conntrack": report.conntrack,
        }));
    }
    let mut out = String::new();
    for (n, v) in &report.counters {
        let _ = writeln!(out, "{n:<24} {v}");
    }
    let c = report.conntrack;
    let _ = writeln!(
        out,
        "conntrack                {} of {} entries ({:.1}%)",
        c.entries,
        c.capacity,
        c.entries as f64 * 100.0 / c.capacity as f64
    );
    out
}
