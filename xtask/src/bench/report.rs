//! The Markdown report of the results.
use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

use super::{
    measure::median,
    modes::{Mode, Peers, PEERS_V4, PEERS_V6},
    rig::Client,
};

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

/// One client's table for the modes of one family, with portfwd's ratios
/// to that family's direct path and netfilter DNAT.
fn client_table(
    s: &mut String,
    client: Client,
    v6: bool,
    peers: &Peers,
    present: &[&Mode],
    metrics: &BTreeMap<String, BTreeMap<String, Vec<f64>>>,
) {
    let title = match (client, v6) {
        (Client::Remote, false) => "Remote client (client namespace -> host address)",
        (Client::Local, false) => "Host-local client (127.0.0.1; direct = the container's address)",
        (Client::Hairpin, false) => "Hairpin client (another container on the bridge -> host address; direct = the container's address)",
        (Client::Remote, true) => "IPv6 remote client (client namespace -> host's IPv6 address)",
        (Client::Local, true) => "IPv6 host-local client (the host's IPv6 address, as ip6tables cannot DNAT [::1]; direct6 = the container's address)",
        (Client::Hairpin, true) => "IPv6 hairpin client (another container -> host's IPv6 address; direct6 = the container's address)",
    };
    let _ = writeln!(s, "### {title}\n");
    let _ = write!(s, "| metric |");
    for m in present {
        let _ = write!(s, " {} |", m.name());
    }
    let _ = writeln!(
        s,
        " {p} / {} | {p} / {} |",
        peers.direct,
        peers.netfilter,
        p = peers.portfwd
    );
    let _ = writeln!(s, "|---|{}---|---|", "---|".repeat(present.len()));
    for (key, label, _) in METRICS {
        let Some(by_mode) = metrics.get(key) else {
            continue;
        };
        let _ = write!(s, "| {label} |");
        for m in present {
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
            match (by_mode.get(peers.portfwd), by_mode.get(other)) {
                (Some(p), Some(o)) if median(o) != 0.0 => {
                    format!("{:.2}x", median(p) / median(o))
                }
                _ => "–".into(),
            }
        };
        let _ = writeln!(s, " {} | {} |", ratio(peers.direct), ratio(peers.netfilter));
    }
    s.push('\n');
}

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
        for (v6, peers) in [(false, &PEERS_V4), (true, &PEERS_V6)] {
            let present: Vec<&Mode> = modes
                .iter()
                .filter(|m| m.fwd.ipv6() == v6)
                .filter(|m| metrics.values().any(|by| by.contains_key(m.name())))
                .collect();
            if !present.is_empty() {
                client_table(&mut s, client, v6, peers, &present, metrics);
            }
        }
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
        "### Memory for published ports\n\nportfwd: kernel maps {:.1} MiB in all (preallocated, the same for 1 or 65 536 mappings), no process after attach returns. docker-proxy: {:.1} MiB RSS per process (measured over {} processes), so about {:.0} MiB for 1 000 ports of one protocol. portfwd-docker-proxy (docker -p through portfwd): {:.1} MiB RSS per process (over {} processes), no byte copied by it.\n",
        memory["portfwd_kernel_maps_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
        memory["docker_proxy_rss_kib_per_process"].as_f64().unwrap_or(0.0) / 1024.0,
        memory["docker_proxy_processes_measured"],
        memory["docker_proxy_1000_ports_mib_extrapolated"].as_f64().unwrap_or(0.0),
        memory["portfwd_docker_proxy_rss_kib_per_process"].as_f64().unwrap_or(0.0) / 1024.0,
        memory["portfwd_docker_proxy_processes_measured"],
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

/// A cell "median [p10–p90]" of a test-run sample, or its error.
fn sample_cell(v: &Value) -> String {
    match (v["median_ns"].as_f64(), v["error"].as_str()) {
        (Some(m), _) => format!(
            "{} [{}–{}]",
            fmt(m),
            fmt(v["p10_ns"].as_f64().unwrap_or(0.0)),
            fmt(v["p90_ns"].as_f64().unwrap_or(0.0))
        ),
        (None, Some(e)) => format!("error: {e}"),
        _ => "–".into(),
    }
}

/// The verdict a test-run sample got most, with its share when mixed.
fn main_verdict(v: &Value) -> String {
    let Some(vs) = v["verdicts"].as_object() else {
        return "–".into();
    };
    let total: u64 = vs.values().filter_map(Value::as_u64).sum();
    let Some((name, n)) = vs
        .iter()
        .filter_map(|(k, n)| Some((k, n.as_u64()?)))
        .max_by_key(|(_, n)| *n)
    else {
        return "–".into();
    };
    if n == total {
        name.clone()
    } else {
        format!("{name} ({:.0}%)", n as f64 * 100.0 / total.max(1) as f64)
    }
}

fn minus(v: Option<f64>, floor: Option<f64>) -> String {
    match (v, floor) {
        (Some(v), Some(f)) => fmt(v - f),
        _ => "–".into(),
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "–".into(),
    }
}

/// A cost table's header: `first` columns, a raw and a floor-subtracted
/// column per build, and the first two builds' ratio when there are two.
fn builds_header(s: &mut String, first: &[&str], labels: &[&str]) {
    let mut cols: Vec<String> = first.iter().map(|c| c.to_string()).collect();
    for l in labels {
        cols.push(l.to_string());
        cols.push(format!("{l} − floor"));
    }
    if let [a, b, ..] = labels {
        cols.push(format!("{a} / {b} (− floor)"));
    }
    let _ = writeln!(s, "| {} |", cols.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(cols.len()));
}

/// The cost section: a table per method, the builds side by side.
pub fn render_cost(cost: &Value) -> String {
    let mut s = String::from("### Cost per packet of each program, per path\n\n");
    if let Some(e) = cost["error"].as_str() {
        let _ = writeln!(s, "Not measured: {e}\n");
        return s;
    }
    let builds: Vec<&Value> = cost["builds"].as_array().into_iter().flatten().collect();
    let labels: Vec<&str> = builds
        .iter()
        .map(|b| b["label"].as_str().unwrap_or("?"))
        .collect();
    let _ = writeln!(
        s,
        "Builds: {}. Test runs: BPF_PROG_TEST_RUN of crafted frames through the programs portfwd attached in the bench namespace (ctx ifindex: the interface the program is on), repeat=1 on a fresh frame every run, {} runs per path; the kernel's duration of each run, median [p10–p90] ns. \"− floor\": less the median of an empty TC program (`r0 = TC_ACT_OK; exit`) test-run the same way just after.\n",
        labels.join(", "),
        cost["runs_per_path"]
    );
    let two = labels.len() >= 2;
    builds_header(&mut s, &["program", "path", "verdict"], &labels);
    let floors: Vec<Option<f64>> = builds
        .iter()
        .map(|b| b["test_run_floor"]["median_ns"].as_f64())
        .collect();
    let _ = write!(s, "| empty TC program | floor | – |");
    for b in &builds {
        let _ = write!(s, " {} | – |", sample_cell(&b["test_run_floor"]));
    }
    let _ = writeln!(s, "{}", if two { " – |" } else { "" });
    let first: Vec<&Value> = builds
        .first()
        .and_then(|b| b["test_run"].as_array())
        .into_iter()
        .flatten()
        .collect();
    for (i, row) in first.iter().enumerate() {
        let _ = write!(
            s,
            "| {} | {} | {} |",
            row["program"].as_str().unwrap_or("?"),
            row["path"].as_str().unwrap_or("?"),
            main_verdict(row)
        );
        let mut less = Vec::new();
        for (b, floor) in builds.iter().zip(&floors) {
            let r = &b["test_run"][i];
            let v = r["median_ns"].as_f64();
            let mut cell = sample_cell(r);
            if main_verdict(r) != main_verdict(row) {
                let _ = write!(cell, " ({})", main_verdict(r));
            }
            let _ = write!(s, " {cell} | {} |", minus(v, *floor));
            less.push(v.zip(*floor).map(|(v, f)| v - f));
        }
        if two {
            let _ = write!(s, " {} |", ratio(less[0], less[1]));
        }
        s.push('\n');
    }
    if let Some(c) = builds.first().map(|b| &b["connect_test_run"]) {
        let _ = writeln!(
            s,
            "\nThe socket hook (pf_connect4) cannot be test-run here ({}): it is measured with bpf_stats only.",
            c["error"].as_str().unwrap_or("it ran")
        );
    }

    let _ = writeln!(
        s,
        "\nbpf_stats: kernel.bpf_stats_enabled=1 for the measurement (restored after), real traffic of one kind at a time for {} s (each kind through every build in turn before the next kind), run_time_ns / run_cnt of each program over it: ns per run (runs). \"− floor\": less what an empty program (the TC one on the external interface and the bridge, `r0 = 1; exit` on connect4) cost per run, attached alone to the same hooks, under routed traffic and host connections.\n",
        cost["seconds_per_traffic"]
    );
    let floor_of = |prefix: &str| {
        cost["bpf_stats_floor"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|r| r["traffic"].as_str().is_some_and(|t| t.contains(prefix)))
            .and_then(|r| r["ns_per_run"].as_f64())
    };
    let (tc_floor, connect_floor) = (floor_of("TC program"), floor_of("connect4"));
    for r in cost["bpf_stats_floor"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "- {}: {} ns per run over {} runs",
            r["traffic"].as_str().unwrap_or("?"),
            r["ns_per_run"].as_f64().map_or_else(|| "–".into(), fmt),
            r["runs"]
        );
    }
    s.push('\n');
    builds_header(&mut s, &["program", "traffic"], &labels);
    let rows: Vec<&Value> = builds
        .first()
        .and_then(|b| b["bpf_stats"].as_array())
        .into_iter()
        .flatten()
        .collect();
    for (i, row) in rows.iter().enumerate() {
        // Programs that barely ran under a kind of traffic are left out.
        let busy = builds
            .iter()
            .any(|b| b["bpf_stats"][i]["runs"].as_u64().unwrap_or(0) >= 100);
        if !busy {
            continue;
        }
        let program = row["program"].as_str().unwrap_or("?");
        let floor = if program.contains("connect") {
            connect_floor
        } else {
            tc_floor
        };
        let _ = write!(
            s,
            "| {program} | {} |",
            row["traffic"].as_str().unwrap_or("?")
        );
        let mut less = Vec::new();
        for b in &builds {
            let r = &b["bpf_stats"][i];
            let v = r["ns_per_run"].as_f64();
            let _ = write!(
                s,
                " {} ({}) | {} |",
                v.map_or_else(|| "–".into(), fmt),
                r["runs"],
                minus(v, floor)
            );
            less.push(v.zip(floor).map(|(v, f)| v - f));
        }
        if two {
            let _ = write!(s, " {} |", ratio(less[0], less[1]));
        }
        s.push('\n');
    }
    s.push('\n');
    s
}

/// The edges section: one column per path (each portfwd build, then
/// iptables DNAT), one row per figure.
pub fn render_edges(edges: &Value) -> String {
    let mut s = String::from("### Edges, beside iptables DNAT on the same topology\n\n");
    if let Some(e) = edges["error"].as_str() {
        let _ = writeln!(s, "Not measured: {e}\n");
        return s;
    }
    let _ = writeln!(
        s,
        "Client -- router -- host -- container; the router-host link has MTU 1400 on both ends, the client's link and the bridge 1500. Downloads stop after {} s. The SYN flood: up to {} SYNs of unique tuples from {} addresses of the client namespace (raw socket, at most 20 s) while one established transfer runs; a new connection is tried every 250 ms (2 s timeout).\n",
        edges["download_limit_seconds"], edges["syns"], edges["flood_sources"]
    );
    let paths: Vec<&Value> = edges["paths"].as_array().into_iter().flatten().collect();
    let _ = write!(s, "| |");
    for p in &paths {
        let _ = write!(s, " {} |", p["path"].as_str().unwrap_or("?"));
    }
    let _ = writeln!(s, "\n|---|{}", "---|".repeat(paths.len()));
    let mut line = |label: &str, cell: &dyn Fn(&Value) -> String| {
        let _ = write!(s, "| {label} |");
        for p in &paths {
            let _ = write!(s, " {} |", cell(p));
        }
        s.push('\n');
    };
    let num = |v: &Value| v.as_f64().map_or_else(|| "–".to_string(), fmt);
    line(
        "20 MiB download through the 1400-MTU uplink: complete",
        &|p| {
            let runs = p["download"]["runs"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let done = runs.iter().filter(|r| r["complete"] == true).count();
            format!("{done} of {}", runs.len())
        },
    );
    line("download: seconds, median [min–max]", &|p| {
        let secs: Vec<f64> = p["download"]["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["seconds"].as_f64())
            .collect();
        let lo = secs.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = secs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{} [{}–{}]", fmt(median(&secs)), fmt(lo), fmt(hi))
    });
    line("download: MiB received, worst run", &|p| {
        let worst = p["download"]["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["bytes"].as_f64())
            .fold(f64::INFINITY, f64::min);
        fmt(worst / 1048576.0)
    });
    line("ICMP fragmentation needed sent by portfwd", &|p| {
        let n = &p["download"]["icmp_frag_needed_sent"];
        n.as_u64().map_or_else(|| "–".into(), |n| n.to_string())
    });
    line("4000-byte UDP datagrams echoed whole", &|p| {
        format!(
            "{} of {}",
            p["udp_4000"]["echoed_whole"], p["udp_4000"]["sent"]
        )
    });
    line("SYN flood: SYNs sent, in seconds", &|p| {
        let f = &p["syn_flood"];
        format!("{} in {}", f["syns_sent"], num(&f["flood_seconds"]))
    });
    line("transfer before the flood, Gbit/s", &|p| {
        num(&p["syn_flood"]["transfer_gbps_before"])
    });
    line("transfer during the flood, Gbit/s (of before)", &|p| {
        let f = &p["syn_flood"];
        let (b, d) = (
            f["transfer_gbps_before"].as_f64(),
            f["transfer_gbps_during"].as_f64(),
        );
        format!("{} ({})", num(&f["transfer_gbps_during"]), ratio(d, b))
    });
    line("transfer after the flood, Gbit/s", &|p| {
        num(&p["syn_flood"]["transfer_gbps_after"])
    });
    for (when, key) in [
        ("during", "new_connections_during"),
        ("after", "new_connections_after"),
    ] {
        line(
            &format!("new connections {when} the flood: served of tried, median latency ms"),
            &|p| {
                let w = &p["syn_flood"][key];
                format!(
                    "{} of {}, {}",
                    w["served"],
                    w["tried"],
                    num(&w["median_latency_ms"])
                )
            },
        );
    }
    line("conntrack after: entries of capacity", &|p| {
        let a = &p["conntrack_after"];
        match (a["entries"].as_u64(), a["count"].as_u64()) {
            (Some(e), _) => format!("{e} of {}", a["capacity"]),
            (None, Some(c)) => format!("{c} of {} (nf_conntrack_max)", a["max"]),
            // A build without `list --counters`: its first line.
            _ => a["error"]
                .as_str()
                .and_then(|e| e.lines().next())
                .unwrap_or("–")
                .to_string(),
        }
    });
    line(
        "portfwd: ct_new, drop_ct_create, ct_sibling_lost, evictions ≈ 2·ct_new − live",
        &|p| {
            let a = &p["conntrack_after"];
            if a["ct_new"].is_null() {
                return "–".into();
            }
            format!(
                "{}, {}, {}, {}",
                a["ct_new"], a["drop_ct_create"], a["ct_sibling_lost"], a["evictions_estimate"]
            )
        },
    );
    line(
        "kernel conntrack during the flood: drop, early_drop, insert_failed",
        &|p| {
            let (b, a) = (&p["conntrack_before"], &p["conntrack_after"]);
            if a["count"].is_null() {
                return "–".into();
            }
            let d = |k: &str| {
                a[k].as_u64()
                    .zip(b[k].as_u64())
                    .map_or_else(|| "–".to_string(), |(x, y)| x.saturating_sub(y).to_string())
            };
            format!("{}, {}, {}", d("drop"), d("early_drop"), d("insert_failed"))
        },
    );
    s.push('\n');
    s
}
