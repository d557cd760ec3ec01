//! `portfwd list --stats`: each attached program's run count, run time and
//! time per run while the kernel counts them (kernel.bpf_stats_enabled=1),
//! and a plain word that it is off otherwise.
mod common;

use common::*;

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// kernel.bpf_stats_enabled set for the test, its previous value put back
/// on drop (also when the test panics).
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn set(value: &str) -> Self {
        let previous = std::fs::read_to_string(BPF_STATS).expect("read bpf_stats_enabled");
        std::fs::write(BPF_STATS, value).expect("write bpf_stats_enabled");
        Self { previous }
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, self.previous.trim());
    }
}

fn stats_json(topo: &Topology) -> serde_json::Value {
    let out = ok(topo.portfwd(&["list", "--stats", "--json"]), "list --stats");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("list --stats --json ({e}): {out}"))
}

/// The entry of `program` in a `list --stats --json` report.
fn program<'a>(report: &'a serde_json::Value, program: &str) -> &'a serde_json::Value {
    report["programs"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["program"] == program))
        .unwrap_or_else(|| panic!("no program {program} in {report}"))
}

#[test]
fn list_stats_shows_each_program_and_says_when_the_kernel_does_not_count() {
    require_privileges!();
    let topo = Topology::new("stats", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 1);
    topo.attach(&["8080=172.30.0.10:80"]);

    let guard = BpfStats::set("0");
    let text = ok(topo.portfwd(&["list", "--stats"]), "list --stats");
    assert!(
        text.contains("bpf_stats is off"),
        "with kernel.bpf_stats_enabled=0 list --stats must say the kernel is not counting: {text}"
    );
    let off = stats_json(&topo);
    assert_eq!(off["bpf_stats_enabled"], false, "{off}");
    for (name, at) in [
        ("pf_ext_in", "h0"),
        ("pf_br_in", "docker0"),
        ("pf_connect4", "cgroup"),
    ] {
        assert_eq!(
            program(&off, name)["attached_to"],
            at,
            "where {name} is attached: {off}"
        );
    }

    std::mem::drop(guard);
    let _guard = BpfStats::set("1");
    let body = http_get(&topo.client.name, HOST_EXT_IP, 8080).expect("a request through portfwd");
    assert_eq!(body, format!("web saw {CLIENT_IP}"));
    let on = stats_json(&topo);
    assert_eq!(on["bpf_stats_enabled"], true, "{on}");
    for name in ["pf_ext_in", "pf_br_in"] {
        let p = program(&on, name);
        let runs = p["run_count"].as_u64().unwrap_or(0);
        assert!(
            runs >= 3,
            "{name} ran for the request's packets (run_count {runs}): {on}"
        );
        assert!(
            p["run_time_ns"].as_u64().unwrap_or(0) > 0
                && p["ns_per_run"].as_f64().unwrap_or(0.0) > 0.0,
            "{name} has a run time and a time per run: {on}"
        );
    }
    let text = ok(topo.portfwd(&["list", "--stats"]), "list --stats");
    assert!(
        !text.contains("bpf_stats is off") && text.contains("NS/RUN") && text.contains("pf_ext_in"),
        "with kernel.bpf_stats_enabled=1 list --stats shows the programs' figures: {text}"
    );
    server.join().unwrap();
}
