//! The Markdown report of the results.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use super::{measure::median, modes::Mode, rig::Client};

pub type Results = BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>;

const METRICS: [(&str, &str, bool); 8] = [
    ("tcp_1_stream_gbps", "TCP 1 stream (Gbit/s)", true),
    ("tcp_4_streams_gbps", "TCP 4 streams (Gbit/s)", true),
    (
        "udp_1g_offered_gbps",
        "UDP at 1 Gbit/s offered, delivered (Gbit/s)",
        true,
    ),
    ("udp_loss_percent", "UDP loss (%)", false),
    (
        "connections_per_s",
        "new connections/s (HTTP, Connection: close)",
        true,
    ),
    (
        "latency_p50_us",
        "request latency p50, kept-alive (µs)",
        false,
    ),
    (
        "latency_p99_us",
        "request latency p99, kept-alive (µs)",
        false,
    ),
    (
        "cpu_seconds_per_gb",
        "CPU seconds per GB (TCP 1 stream)",
        false,
    ),
];

#[allow(clippy::too_many_arguments)]
pub fn render(
    results: &Results,
    modes: &[Mode],
    table: Option<&Value>,
    memory: &Value,
    machine: &str,
    stamp: &str,
    rounds: usize,
    secs: u64,
) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## portfwd benchmark, {stamp}\n\nMachine: {machine}. {rounds} round(s) of {secs} s per measurement, modes interleaved; median [min–max].\n");
    for client in Client::ALL {
        let Some(metrics) = results.get(client.key()) else {
            continue;
        };
        let title = match client {
            Client::Remote => "Remote client (client namespace -> host address)",
            Client::Local => "Host-local client (127.0.0.1; direct = the container's address)",
            Client::Hairpin => "Hairpin client (another container on the bridge -> host address; direct = the container's address)",
        };
        let _ = writeln!(s, "### {title}\n");
        let present: Vec<&Mode> = modes
            .iter()
            .filter(|m| metrics.values().any(|by| by.contains_key(m.name())))
            .collect();
        let _ = write!(s, "| metric |");
        for m in &present {
            let _ = write!(s, " {} |", m.name());
        }
        let _ = writeln!(s, " portfwd / direct | portfwd / iptables |");
        let _ = writeln!(s, "|---|{}---|---|", "---|".repeat(present.len()));
        for (key, label, _) in METRICS {
            let Some(by_mode) = metrics.get(key) else {
                continue;
            };
            let _ = write!(s, "| {label} |");
            for m in &present {
                match by_mode.get(m.name()) {
                    Some(v) => {
                        let (lo, hi) = (
                            v.iter().cloned().fold(f64::INFINITY, f64::min),
                            v.iter().cloned().fold(f64::NEG_INFINITY, f64::max),
                        );
                        let _ = write!(s, " {} [{}–{}] |", fmt(median(v)), fmt(lo), fmt(hi));
                    }
                    None => s.push_str(" – |"),
                }
            }
            let ratio = |other: &str| -> String {
                match (by_mode.get("portfwd"), by_mode.get(other)) {
                    (Some(p), Some(o)) if median(o) != 0.0 => {
                        format!("{:.2}x", median(p) / median(o))
                    }
                    _ => "–".into(),
                }
            };
            let _ = writeln!(s, " {} | {} |", ratio("direct"), ratio("iptables"));
        }
        s.push('\n');
    }
    if let Some(t) = table {
        let _ = writeln!(
            s,
            "### Table size: latency of one add / del (ms, median)\n\nWhole command: spawn to exit, each tool started the same way, straight into the host namespace. In process: portfwd's own report (PORTFWD_TIMING), from main() to exit.\n"
        );
        let _ = writeln!(s, "| entries | portfwd add | portfwd del | iptables -A | iptables -D | portfwd add, in process | portfwd del, in process |\n|---|---|---|---|---|---|---|");
        for r in t["rows"].as_array().into_iter().flatten() {
            let cell = |k: &str| r[k].as_f64().map_or_else(|| "–".to_string(), fmt);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                r["entries"],
                cell("portfwd_add_ms"),
                cell("portfwd_del_ms"),
                cell("iptables_add_ms"),
                cell("iptables_del_ms"),
                cell("portfwd_add_in_process_ms"),
                cell("portfwd_del_in_process_ms")
            );
        }
        if let Some(floor) = t["spawn_floor_ms"].as_f64() {
            let _ = writeln!(
                s,
                "\nStarting a process that does nothing (`true`, spawned the same way) takes {} ms here: the floor under any whole command.",
                fmt(floor)
            );
        }
        let big = &t["portfwd_forwarding_with_table"];
        let f = |k: &str| big["figures"][k].as_f64().unwrap_or(0.0);
        let _ = writeln!(
            s,
            "\nportfwd forwarding (remote client) with {} mappings installed: TCP 1 stream {} Gbit/s, 4 streams {} Gbit/s, {} connections/s, kept-alive p50 {} µs, p99 {} µs.\n",
            big["entries"],
            fmt(f("tcp_1_stream_gbps")),
            fmt(f("tcp_4_streams_gbps")),
            fmt(f("connections_per_s")),
            fmt(f("latency_p50_us")),
            fmt(f("latency_p99_us"))
        );
    }
    let _ = writeln!(
        s,
        "### Memory for published ports\n\nportfwd: kernel maps {:.1} MiB in all (preallocated, the same for 1 or 65 536 mappings), no process after attach returns. docker-proxy: {:.1} MiB RSS per process (measured over {} processes), so about {:.0} MiB for 1 000 ports of one protocol.\n",
        memory["portfwd_kernel_maps_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        memory["docker_proxy_rss_kib_per_process"].as_f64().unwrap_or(0.0) / 1024.0,
        memory["docker_proxy_processes_measured"],
        memory["docker_proxy_1000_ports_mib_extrapolated"].as_f64().unwrap_or(0.0),
    );
    s
}

pub fn fmt(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
