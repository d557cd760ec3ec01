//! `cargo xtask bench`: portfwd against the routed path and the usual port
//! forwarders, measured side by side in one namespace topology.
//!
//! - `rig`: the namespaces, servers and processes, torn down on drop;
//! - `modes`: one type per way of reaching the container (direct, portfwd,
//!   iptables, nftables, docker-proxy, socat);
//! - `measure`: iperf3 and wrk through a mode, table-size latency, memory;
//! - `report`: the Markdown tables; `chart`: the PNG.
//!
//! Every mode is set up at once on its own host ports, so rounds interleave
//! the modes (A B C … A B C …) without reconfiguring, and the machine's drift
//! hits them alike. Reported: medians with min–max over the rounds.
mod chart;
mod measure;
mod modes;
mod report;
mod rig;

use std::{
    collections::BTreeMap,
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
    /// Comma-separated modes (default: all): direct,portfwd,iptables,nftables,docker-proxy,socat
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
    let mut rig = Rig::build(portfwd)?;
    rig.start_servers()?;
    modes::setup_all(&mut rig, &modes)?;

    // results[path][metric][mode] = samples
    let mut results: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>> =
        BTreeMap::new();
    for round in 1..=rounds {
        for client in Client::ALL {
            for m in &modes {
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
    // The last two parts report an error in the results rather than lose the
    // rounds already measured.
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
    eprintln!("\r\x1b[2Kbench: done");

    let machine = machine();
    let stamp = capture(Command::new("date").args(["-u", "+%Y%m%dT%H%M%SZ"]))
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())?;
    let report = render(
        &results,
        &modes,
        table.as_ref(),
        &memory,
        &machine,
        &stamp,
        rounds,
        secs,
    );
    println!("{report}");

    let dir = crate::cmd::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let raw = json!({
        "date": stamp, "machine": machine, "rounds": rounds, "seconds": secs,
        "results": results, "table_size": table, "memory": memory,
    });
    std::fs::write(
        dir.join(format!("{stamp}.json")),
        serde_json::to_string_pretty(&raw)?,
    )?;
    std::fs::write(dir.join(format!("{stamp}.md")), &report)?;
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
