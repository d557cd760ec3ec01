//! `portfwd list [--json] [--counters | --stats]`
use std::fmt::Write as _;

use comfy_table::{presets::UTF8_FULL_CONDENSED, CellAlignment, Table};
use portfwd::{family::Af, ops, Error};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
    /// Show every datapath counter (zeros too) and how full conntrack is,
    /// instead of the mappings.
    #[arg(long, conflicts_with = "stats")]
    counters: bool,
    /// Show each attached program's run count, total run time and time
    /// per run (counted while kernel.bpf_stats_enabled=1), instead of the
    /// mappings.
    #[arg(long)]
    stats: bool,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let report = ops::list(&ops::ListRequest {
        netns,
        programs: args.stats,
    })?;
    super::say_removed(&report.dead_namespaces);
    if !report.attached {
        // Relays run without the datapath (an SCTP port alone).
        return Ok(if report.relayed.is_empty() || args.json {
            super::nothing_attached(args.json)
        } else {
            relayed(&report)
        });
    }
    if args.counters {
        return Ok(counters(&report, args.json));
    }
    if let Some(programs) = &report.programs {
        return Ok(programs_stats(programs, args.json));
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
            endpoint(&r.host_ip, r.host_port),
            container(r),
            r.bridge.clone(),
            format!("{}/{}", r.packets_in, r.packets_out),
            format!("{}/{}", r.bytes_in, r.bytes_out),
            r.connections.to_string(),
            r.active_flows.to_string(),
        ]);
    }
    align_right(&mut t, 4..8);
    let mut out = format!("{t}\n");
    for af in [Af::V4, Af::V6] {
        let ports: Vec<String> = report
            .one_family
            .iter()
            .filter(|o| o.family == af)
            .map(|o| format!("{}/{}", o.port, o.proto))
            .collect();
        if !ports.is_empty() {
            let _ = writeln!(
                out,
                "{} only: {} ({} clients of these ports are not served: there is no NAT between \
                 IPv4 and IPv6)",
                af.name(),
                ports.join(" "),
                af.other().name(),
            );
        }
    }
    out.push_str(&relayed(&report));
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

/// One line per port a userspace relay serves.
fn relayed(report: &ops::ListReport) -> String {
    let mut out = String::new();
    for r in &report.relayed {
        let _ = writeln!(
            out,
            "relayed by {} (pid {}): {}/{} -> {} ({})",
            r.by,
            r.pid,
            endpoint(&r.host_ip, r.host_port),
            r.proto,
            endpoint(&r.container_ip, r.container_port),
            r.why
        );
    }
    out
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

/// `--stats`: the attached programs' run statistics, or that the kernel is
/// not counting them.
fn programs_stats(report: &ops::ProgramsReport, json: bool) -> String {
    if json {
        return super::json(report);
    }
    let mut out = String::new();
    if !report.bpf_stats_enabled {
        let _ = writeln!(
            out,
            "bpf_stats is off (kernel.bpf_stats_enabled=0): the kernel is not counting run time; \
             `sysctl -w kernel.bpf_stats_enabled=1` turns it on (at a small cost on every run)"
        );
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "PROGRAM",
        "ATTACHED TO",
        "RUNS",
        "RUN TIME (ns)",
        "NS/RUN",
    ]);
    for p in &report.programs {
        t.add_row([
            p.program.clone(),
            p.attached_to.clone(),
            p.run_count.to_string(),
            p.run_time_ns.to_string(),
            p.ns_per_run
                .map_or_else(|| "-".into(), |v| format!("{v:.0}")),
        ]);
    }
    align_right(&mut t, 2..5);
    let _ = writeln!(out, "{t}");
    out
}

/// Where a row goes: `ip:port`, after the container's name for a mapping
/// that follows one (`web 172.17.0.2:80`, `web (held):80` while it does not
/// run).
fn container(r: &ops::Row) -> String {
    let held = r
        .container_ip
        .parse()
        .is_ok_and(|ip: std::net::IpAddr| ip.is_unspecified());
    match &r.container_name {
        Some(name) if held => format!("{name} (held):{}", r.container_port),
        Some(name) => format!("{name} {}", endpoint(&r.container_ip, r.container_port)),
        None => endpoint(&r.container_ip, r.container_port),
    }
}

/// `ip:port`, `[ip]:port` for IPv6 (a row's address is in its plain form).
fn endpoint(ip: &str, port: u16) -> String {
    match ip.parse() {
        Ok(ip) => portfwd::family::endpoint(ip, port),
        Err(_) => format!("{ip}:{port}"),
    }
}

/// Numbers read best right-aligned.
fn align_right(t: &mut Table, cols: std::ops::Range<usize>) {
    for col in cols {
        if let Some(c) = t.column_mut(col) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}
