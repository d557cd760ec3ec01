//! `cargo xtask bench`: portfwd against the routed path and the usual port
//! forwarders, measured side by side in one namespace topology.
//!
//! - `rig`: the namespaces, servers and processes, torn down on drop;
//! - `modes`: one type per way of reaching the container (direct, portfwd,
//!   iptables, nftables, docker-proxy, socat, docker-p-portfwd);
//! - `measure`: iperf3 and wrk through a mode, table-size latency, memory;
//! - `cost`: each program's cost per packet and path (test runs, bpf_stats);
//! - `edges`: path MTU, large UDP and a SYN flood, beside iptables DNAT, on
//!   a topology of their own; `packet`: the frames both craft;
//! - `report`: the Markdown tables; `chart`: the PNG.
//!
//! Every mode is set up at once on its own host ports, so rounds interleave
//! the modes (A B C … A B C …) without reconfiguring, and the machine's drift
//! hits them alike. Reported: medians with min–max over the rounds.
mod chart;
mod cost;
mod edges;
mod measure;
mod modes;
mod packet;
mod report;
mod rig;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::Result;
use serde_json::{json, Value};

use self::{
    chart::chart,
    modes::{Mode, MODES},
    report::{render, Results},
    rig::{Client, Rig},
};
use crate::cmd::{capture, run};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Comma-separated modes (default: all): direct,portfwd,iptables,nftables,docker-proxy,socat,
    /// docker-p-portfwd, and over IPv6 direct6,portfwd6,ip6tables
    #[arg(long)]
    modes: Option<String>,
    /// Rounds over all modes.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    duration: u64,
    /// One short round, small table sizes: a smoke run.
    #[arg(long)]
    quick: bool,
    /// Redraw bench/latest.png from a results JSON file; measure nothing.
    #[arg(long, value_name = "JSON")]
    replot: Option<PathBuf>,
    /// Only the cost per packet of each program, per path (test runs and
    /// bpf_stats, with an empty program as the floor).
    #[arg(long)]
    cost: bool,
    /// Only the edges against iptables DNAT: a download through a smaller
    /// uplink MTU, large UDP datagrams, conntrack under a SYN flood.
    #[arg(long)]
    edges: bool,
    /// Another portfwd binary to measure beside this build in the cost and
    /// edges sections (e.g. an older build, for before / after); repeatable.
    #[arg(long, value_name = "PATH")]
    portfwd: Vec<PathBuf>,
    /// Test runs per path in the cost section (each on a fresh packet).
    #[arg(long, default_value_t = 20_000)]
    cost_runs: usize,
}

pub const PACKAGES: [&str; 7] = [
    "iperf3",
    "nginx",
    "wrk",
    "socat",
    "nftables",
    "iptables",
    "docker.io",
];

fn progress(msg: &str) {
    eprint!("\r\x1b[2Kbench: {msg}");
}

pub fn run_bench(portfwd: &Path, args: &BenchArgs) -> Result<()> {
    if let Some(file) = &args.replot {
        let raw: Value = serde_json::from_str(&std::fs::read_to_string(file)?)?;
        let results: Results = serde_json::from_value(raw["results"].clone())?;
        let caption = format!(
            "{} — {}",
            raw["date"].as_str().unwrap_or("?"),
            raw["machine"].as_str().unwrap_or("?")
        );
        let png = file.with_extension("png");
        chart(&results, &MODES, &png, &caption)?;
        std::fs::copy(&png, crate::cmd::workspace_root().join("bench/latest.png"))?;
        eprintln!("bench: redrew {} and bench/latest.png", png.display());
        return Ok(());
    }
    ensure_packages()?;
    let modes = Mode::parse_list(args.modes.as_deref())?;
    let (rounds, secs) = if args.quick {
        (1, 1)
    } else {
        (args.rounds.max(1), args.duration.max(1))
    };
    // No section named: all of them.
    let full = !args.cost && !args.edges;
    let mut builds = vec![cost::Build::new(portfwd)];
    builds.extend(args.portfwd.iter().map(|p| cost::Build::new(p)));
    let runs = if args.quick {
        args.cost_runs.min(2_000)
    } else {
        args.cost_runs.max(1)
    };

    let mut raw = serde_json::Map::new();
    let mut results = Results::new();
    if full || args.cost {
        let mut rig = Rig::build(portfwd)?;
        rig.start_servers()?;
        if full {
            modes::setup_all(&mut rig, &modes)?;
            results = rounds_over(&rig, &modes, rounds, secs)?;
            // The last parts report an error in the results rather than
            // lose the rounds already measured.
            let table = if modes.iter().any(|m| m.name() == "portfwd") {
                progress("table size");
                Some(
                    rig.table_size(args.quick, secs)
                        .unwrap_or_else(|e| json!({ "error": format!("{e:#}") })),
                )
            } else {
                None
            };
            progress("memory");
            let memory = rig
                .memory(if args.quick { 20 } else { 100 })
                .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
            raw.insert("results".into(), json!(results));
            raw.insert("table_size".into(), json!(table));
            raw.insert("memory".into(), memory);
        }
        progress("cost");
        let cost = cost::run(&mut rig, &builds, runs, secs)
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        raw.insert("cost".into(), cost);
    }
    if full || args.edges {
        progress("edges");
        let edges = edges::run(&builds, args.quick)
            .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        raw.insert("edges".into(), edges);
    }
    eprintln!("\r\x1b[2Kbench: done");

    let machine = machine();
    let stamp = capture(Command::new("date").args(["-u", "+%Y%m%dT%H%M%SZ"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let mut report = if full {
        render(
            &results,
            &modes,
            raw["table_size"].as_object().map(|_| &raw["table_size"]),
            &raw["memory"],
            &machine,
            &stamp,
            rounds,
            secs,
        )
    } else {
        format!("## portfwd benchmark, {stamp}\n\nMachine: {machine}.\n\n")
    };
    if let Some(cost) = raw.get("cost") {
        report.push_str(&report::render_cost(cost));
    }
    if let Some(edges) = raw.get("edges") {
        report.push_str(&report::render_edges(edges));
    }
    println!("{report}");
    let dir = crate::cmd::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    raw.insert("date".into(), json!(stamp));
    raw.insert("machine".into(), json!(machine));
    raw.insert("rounds".into(), json!(rounds));
    raw.insert("seconds".into(), json!(secs));
    std::fs::write(
        dir.join(format!("{stamp}.json")),
        serde_json::to_string_pretty(&raw)?,
    )?;
    std::fs::write(dir.join(format!("{stamp}.md")), &report)?;
    if !full {
        eprintln!("bench: wrote {} (.json, .md)", dir.join(&stamp).display());
        return Ok(());
    }
    let png = dir.join(format!("{stamp}.png"));
    chart(&results, &modes, &png, &format!("{stamp} — {machine}"))?;
    std::fs::copy(&png, crate::cmd::workspace_root().join("bench/latest.png"))?;
    std::fs::write(
        crate::cmd::workspace_root().join("bench/latest.md"),
        &report,
    )?;
    eprintln!(
        "bench: wrote {} (.json, .md, .png) and bench/latest.{{md,png}}",
        dir.join(&stamp).display()
    );
    Ok(())
}

/// The rounds over every mode and client; results[path][metric][mode] =
/// samples.
fn rounds_over(rig: &Rig, modes: &[Mode], rounds: usize, secs: u64) -> Result<Results> {
    let mut results = Results::new();
    for round in 1..=rounds {
        for client in Client::ALL {
            for m in modes {
                // A hairpin client uses the remote client's address: the
                // host's, or the container's own for direct.
                let Some(target) = (if client == Client::Local {
                    m.fwd.local()
                } else {
                    Some(m.fwd.remote())
                }) else {
                    continue;
                };
                let path = client.key();
                progress(&format!("round {round}/{rounds} {path} {}", m.name()));
                let samples = rig.measure(client, m.name(), target, m.fwd.udp(), secs)?;
                for (metric, v) in samples {
                    results
                        .entry(path.into())
                        .or_default()
                        .entry(metric)
                        .or_default()
                        .entry(m.name().into())
                        .or_default()
                        .push(v);
                }
            }
        }
    }
    Ok(results)
}

fn ensure_packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "bench: installing {} (benchmark peers and load generators)",
        missing.join(" ")
    );
    run(Command::new("apt-get").arg("update").arg("-q"))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores, {cpu}, Linux {}", kernel.trim())
}
