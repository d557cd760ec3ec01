//! The measurements: throughput, connections/s and latency through one mode
//! (iperf3 and wrk), the latency of table changes, and memory.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use super::{
    modes::{docker_proxy_bin, portfwd_docker_proxy_bin, Target, MODES},
    rig::{host_port, in_ns, output, Client, Rig, HOST_IP, WEB_IP},
};

/// Ports the bench's table-size part fills with mappings / rules (clear of
/// the modes' 8080-12201), the port its add/del probe uses, and the first of
/// the ports the memory part's docker-proxy processes listen on.
const TABLE_FIRST_PORT: u16 = 13_000;
const TABLE_PROBE_PORT: u16 = 63_500;
const MEMORY_FIRST_PORT: u16 = 63_600;

impl Rig {
    /// Every metric through one mode from one client: iperf3 TCP (1 and 4
    /// streams, with CPU per GB), UDP if `udp`, wrk connections/s and
    /// kept-alive latency.
    pub fn measure(
        &self,
        client: Client,
        mode: &str,
        (addr, http, iperf): Target,
        udp: bool,
        secs: u64,
    ) -> Result<Vec<(String, f64)>> {
        let mut out = Vec::new();
        let t = secs.to_string();
        let what = format!("{} {mode}", client.key());
        for (label, streams) in [("tcp_1_stream_gbps", "1"), ("tcp_4_streams_gbps", "4")] {
            let cpu0 = cpu_seconds();
            let mut c = self.client_cmd(client, "iperf3")?;
            c.args([
                "-c",
                addr,
                "-p",
                &iperf.to_string(),
                "-t",
                &t,
                "-P",
                streams,
                "-J",
            ]);
            let v: Value = serde_json::from_str(&output(c, &format!("iperf3 {what}"))?)?;
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
            out.push((label.to_string(), bps / 1e9));
            if streams == "1" && bytes > 0.0 {
                out.push((
                    "cpu_seconds_per_gb".into(),
                    (cpu_seconds() - cpu0) / (bytes / 1e9),
                ));
            }
        }
        if udp {
            let mut c = self.client_cmd(client, "iperf3")?;
            c.args([
                "-c",
                addr,
                "-p",
                &iperf.to_string(),
                "-t",
                &t,
                "-u",
                "-b",
                "1G",
                "-l",
                "1400",
                "-J",
            ]);
            let v: Value = serde_json::from_str(&output(c, &format!("iperf3 -u {what}"))?)?;
            out.push((
                "udp_1g_offered_gbps".into(),
                v["end"]["sum"]["bits_per_second"].as_f64().unwrap_or(0.0)
                    * (1.0 - v["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0) / 100.0)
                    / 1e9,
            ));
            out.push((
                "udp_loss_percent".into(),
                v["end"]["sum"]["lost_percent"].as_f64().unwrap_or(100.0),
            ));
        }
        let url = format!("http://{}/", host_port(addr, http));
        let mut c = self.client_cmd(client, "wrk")?;
        c.args([
            "-t",
            "1",
            "-c",
            "16",
            "-d",
            &format!("{secs}s"),
            "-H",
            "Connection: close",
            &url,
        ]);
        out.push((
            "connections_per_s".into(),
            wrk_rps(&output(c, &format!("wrk {what}"))?)?,
        ));
        let mut c = self.client_cmd(client, "wrk")?;
        c.args([
            "-t",
            "1",
            "-c",
            "1",
            "-d",
            &format!("{secs}s"),
            "--latency",
            &url,
        ]);
        let text = output(c, &format!("wrk --latency {what}"))?;
        out.push(("latency_p50_us".into(), wrk_percentile(&text, "50%")?));
        out.push(("latency_p99_us".into(), wrk_percentile(&text, "99%")?));
        Ok(out)
    }

    /// Runs `program` in the host namespace (setns between fork and exec)
    /// and returns how long it took, spawn to exit, in milliseconds.
    fn timed_in_host(&self, program: &str, args: &[&str]) -> Result<f64> {
        Ok(self.timed_in_host_with_stderr(program, args)?.0)
    }

    /// `portfwd ARGS` timed as above, with the time portfwd reports for its
    /// own work (PORTFWD_TIMING: from main() to exit, start-up excluded).
    fn timed_portfwd(&self, args: &[&str]) -> Result<(f64, f64)> {
        let portfwd = self.portfwd.to_str().expect("utf-8 path");
        let (ms, stderr) = self.timed_in_host_with_stderr(portfwd, args)?;
        let own = stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix("portfwd: in-process time ")?
                    .strip_suffix(" ms")?
                    .parse()
                    .ok()
            })
            .ok_or_else(|| anyhow!("portfwd {args:?} reported no in-process time: {stderr}"))?;
        Ok((ms, own))
    }

    fn timed_in_host_with_stderr(&self, program: &str, args: &[&str]) -> Result<(f64, String)> {
        let mut c = Command::new(program);
        c.env("PORTFWD_TIMING", "1")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        in_ns(&mut c, &self.host, None)?;
        let t0 = Instant::now();
        let out = c.output().with_context(|| format!("running {program}"))?;
        let ms = t0.elapsed().as_secs_f64() * 1e3;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{program} {args:?} failed: {stderr}");
        }
        Ok((ms, stderr))
    }

    /// Latency of one add and one del at several table sizes, portfwd vs
    /// iptables, and portfwd forwarding with the biggest table.
    pub fn table_size(&self, quick: bool, secs: u64) -> Result<Value> {
        let sizes: &[usize] = if quick {
            &[1, 1_000]
        } else {
            &[1, 1_000, 10_000, 50_000]
        };
        let reps = if quick { 3 } else { 7 };
        let mut rows = Vec::new();
        let mut installed = 0usize;
        let chain_ready = self
            .host_sh("iptables -t nat -N PFTABLE 2>/dev/null; true")
            .is_ok();
        for &n in sizes {
            // Grow both tables to n entries.
            if n > installed {
                let (a, b) = (
                    TABLE_FIRST_PORT as usize + installed,
                    TABLE_FIRST_PORT as usize + n - 1,
                );
                let mut c = Command::new(&self.portfwd);
                c.args([
                    "-n",
                    &self.host,
                    "add",
                    &format!("{a}-{b}={WEB_IP}:{a}-{b}"),
                ]);
                output(c, "portfwd add (fill)")?;
                if chain_ready {
                    let mut rules = String::from("*nat\n");
                    for p in a..=b {
                        let _ = writeln!(rules, "-A PFTABLE -d {HOST_IP} -p tcp --dport {p} -j DNAT --to-destination {WEB_IP}:{p}");
                    }
                    rules.push_str("COMMIT\n");
                    let f = self.tmp.join("fill.rules");
                    std::fs::write(&f, rules)?;
                    self.host_sh(&format!("iptables-restore --noflush < {}", f.display()))?;
                }
                installed = n;
            }
            // Every command is timed the same way: one process spawned
            // straight into the host namespace (setns before exec), as a user
            // on the host would run it; no `ip netns exec`, no shell.
            let probe = format!("{TABLE_PROBE_PORT}={WEB_IP}:80");
            let probe_port = TABLE_PROBE_PORT.to_string();
            let (mut pf_add_ms, mut pf_del_ms) = (Vec::new(), Vec::new());
            let (mut pf_add_own, mut pf_del_own) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                let (whole, own) = self.timed_portfwd(&["add", &probe])?;
                pf_add_ms.push(whole);
                pf_add_own.push(own);
                let (whole, own) = self.timed_portfwd(&["del", &probe_port])?;
                pf_del_ms.push(whole);
                pf_del_own.push(own);
            }
            let rule = format!("-d {HOST_IP} -p tcp --dport {TABLE_PROBE_PORT} -j DNAT --to-destination {WEB_IP}:80");
            let rule: Vec<&str> = rule.split_whitespace().collect();
            let with = |op: &'static str| -> Vec<&str> {
                let mut v = vec!["-t", "nat", op, "PFTABLE"];
                v.extend(&rule);
                v
            };
            let mut ipt_add_ms = Vec::new();
            let mut ipt_del_ms = Vec::new();
            for _ in 0..reps {
                ipt_add_ms.push(self.timed_in_host("iptables", &with("-A"))?);
                ipt_del_ms.push(self.timed_in_host("iptables", &with("-D"))?);
            }
            rows.push(json!({
                "entries": n,
                "portfwd_add_ms": median(&pf_add_ms), "portfwd_del_ms": median(&pf_del_ms),
                "portfwd_add_in_process_ms": median(&pf_add_own), "portfwd_del_in_process_ms": median(&pf_del_own),
                "iptables_add_ms": median(&ipt_add_ms), "iptables_del_ms": median(&ipt_del_ms),
            }));
        }
        // The floor under any whole command: starting a process that does
        // nothing, spawned the same way.
        let mut floor = Vec::new();
        for _ in 0..reps.max(20) {
            floor.push(self.timed_in_host("true", &[])?);
        }
        // Forwarding through portfwd with the biggest table installed.
        let m = MODES[1];
        let samples = self.measure(Client::Remote, m.name(), m.fwd.remote(), false, secs)?;
        let big: BTreeMap<String, f64> = samples.into_iter().collect();
        Ok(
            json!({ "rows": rows, "spawn_floor_ms": median(&floor), "portfwd_forwarding_with_table": { "entries": installed, "figures": big } }),
        )
    }

    /// What published ports cost in memory: portfwd's kernel maps (fixed,
    /// preallocated) vs docker-proxy processes (one per port and protocol).
    pub fn memory(&mut self, proxies: usize) -> Result<Value> {
        let mut memlock = 0u64;
        let state = Path::new("/sys/fs/bpf/portfwd");
        if let Ok(dirs) = std::fs::read_dir(state) {
            for d in dirs.flatten() {
                if !d.file_name().to_string_lossy().starts_with("netns-") {
                    continue;
                }
                for f in std::fs::read_dir(d.path())?.flatten() {
                    let name = f.file_name().to_string_lossy().into_owned();
                    if name.starts_with("pf_") {
                        memlock += map_memlock(&f.path()).unwrap_or(0);
                    }
                }
            }
        }
        let docker_proxy = docker_proxy_bin();
        let (per_proxy_kib, started) = match &docker_proxy {
            Some(bin) => self.proxies_rss(bin, MEMORY_FIRST_PORT, proxies)?,
            None => (0.0, 0),
        };
        // portfwd-docker-proxy on the next ports: the datapath publishes,
        // so each process only waits for its signal.
        let ours = portfwd_docker_proxy_bin(&self.portfwd);
        let (ours_kib, ours_started) =
            self.proxies_rss(&ours, MEMORY_FIRST_PORT + proxies as u16, proxies)?;
        Ok(json!({
            "portfwd_kernel_maps_bytes": memlock,
            "portfwd_userspace_bytes": 0,
            "docker_proxy_processes_measured": started,
            "docker_proxy_rss_kib_per_process": per_proxy_kib,
            "docker_proxy_1000_ports_mib_extrapolated": per_proxy_kib * 1000.0 / 1024.0,
            "portfwd_docker_proxy_processes_measured": ours_started,
            "portfwd_docker_proxy_rss_kib_per_process": ours_kib,
        }))
    }

    /// Starts `count` TCP proxies of `bin` from port `first` on, and returns
    /// their mean RSS in KiB and how many were measured.
    fn proxies_rss(&mut self, bin: &Path, first: u16, count: usize) -> Result<(f64, usize)> {
        let start = self.children.len();
        for i in 0..count {
            self.docker_proxy(bin, "tcp", first + i as u16, 80)?;
        }
        std::thread::sleep(Duration::from_millis(500));
        let mut rss_kib = 0u64;
        for c in &self.children[start..] {
            rss_kib += std::fs::read_to_string(format!("/proc/{}/status", c.id()))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("VmRSS:"))
                        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                })
                .unwrap_or(0);
        }
        let n = self.children.len() - start;
        Ok((
            if n > 0 {
                rss_kib as f64 / n as f64
            } else {
                0.0
            },
            n,
        ))
    }
}

/// memlock of a pinned map, from the fdinfo of a descriptor opened on its pin.
fn map_memlock(pin: &Path) -> Option<u64> {
    use std::os::fd::AsRawFd as _;
    let fd = portfwd_sys::obj_get(pin).ok()?;
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd())).ok();
    info?
        .lines()
        .find(|l| l.starts_with("memlock:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// CPU time used by the whole machine (all CPUs), in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let hz = 100.0; // USER_HZ
    stat.lines()
        .next()
        .map(|l| {
            // cpu user nice system idle iowait irq softirq steal
            let f: Vec<f64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|v| v.parse().ok())
                .collect();
            [0, 1, 2, 5, 6]
                .iter()
                .filter_map(|&i| f.get(i))
                .sum::<f64>()
                / hz
        })
        .unwrap_or(0.0)
}

fn wrk_rps(text: &str) -> Result<f64> {
    text.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Requests/sec:")
                .and_then(|v| v.trim().parse().ok())
        })
        .ok_or_else(|| anyhow!("no Requests/sec in wrk output:\n{text}"))
}

fn wrk_percentile(text: &str, pct: &str) -> Result<f64> {
    let after = text
        .split("Latency Distribution")
        .nth(1)
        .ok_or_else(|| anyhow!("no latency distribution:\n{text}"))?;
    let line = after
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pct))
        .ok_or_else(|| anyhow!("no {pct} line"))?;
    let v = line
        .split_whitespace()
        .nth(1)
        .ok_or_else(|| anyhow!("bad {pct} line"))?;
    let (num, unit): (String, String) = v.chars().partition(|c| c.is_ascii_digit() || *c == '.');
    let n: f64 = num.parse()?;
    Ok(match unit.as_str() {
        "us" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        _ => bail!("unknown unit in {v}"),
    })
}

/// The `pct`-th percentile of `v` (nearest rank; 0 for none).
pub fn percentile(v: &[f64], pct: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return 0.0;
    }
    let rank = ((pct / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[rank.min(s.len() - 1)]
}

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        0.0
    } else {
        s[s.len() / 2]
    }
}
