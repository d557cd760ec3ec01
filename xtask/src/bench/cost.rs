//! What each program costs per packet, per path (issue 13), two ways:
//!
//! - BPF_PROG_TEST_RUN of crafted frames through the programs portfwd itself
//!   attached in the bench's host namespace (so the maps are the ones
//!   portfwd filled, whatever their layout): repeat=1 on a fresh frame every
//!   run, since a repeated run keeps the rewritten packet; the kernel's
//!   duration of each run, median and p10-p90;
//! - bpf_stats (kernel.bpf_stats_enabled=1, restored after) on real
//!   traffic, one kind at a time through every build in turn: run_time_ns
//!   / run_cnt before and after.
//!
//! The floor under both is an empty program (`r0 = TC_ACT_OK; exit`, and
//! `r0 = 1; exit` for connect4) loaded here, test-run the same way and
//! attached alone to the same hooks for the traffic.
use std::{
    collections::BTreeMap,
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::{json, Value};

use super::{
    measure::percentile,
    modes::{MODES, PORTFWD_HTTP, PORTFWD_IPERF},
    packet::{frame_tuple, parse_mac, Link, Tuple, L4, TCP_ACK, TCP_PSH, TCP_SYN},
    rig::{output, wait_port, Client, Rig, BRIDGE, HOST_IP, PEER_IP, WEB_IP},
};
use crate::{cmd::stdout, netns};

/// A port nothing is published on, with an iperf3 server in the host
/// namespace: traffic that is not portfwd's.
const NOT_OURS_PORT: u16 = 5999;
const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 88, 1, 2);
/// `struct __sk_buff`: its size, and where `ifindex` is in it.
const SKB_SIZE: usize = 192;
const SKB_IFINDEX: usize = 40;
/// No run of one path may take longer than this, whatever the count.
const CASE_LIMIT: Duration = Duration::from_secs(60);

/// A portfwd binary to measure, and what to call it in the report.
#[derive(Clone, Debug)]
pub struct Build {
    pub label: String,
    pub portfwd: PathBuf,
}

impl Build {
    /// `portfwd`, labelled by the commit of the git checkout it was built
    /// in (the nearest ancestor directory that is one), else by its path.
    pub fn new(portfwd: &Path) -> Self {
        let commit = portfwd.ancestors().skip(1).find_map(|dir| {
            let out = stdout(Command::new("git").args(["-C"]).arg(dir).args([
                "rev-parse",
                "--short",
                "HEAD",
            ]))
            .ok()?;
            let dirty = stdout(Command::new("git").args(["-C"]).arg(dir).args([
                "status",
                "--porcelain",
                "--untracked-files=no",
            ]))
            .is_ok_and(|s| !s.trim().is_empty());
            Some(format!(
                "{}{}",
                out.trim(),
                if dirty { "+dirty" } else { "" }
            ))
        });
        Self {
            label: commit.unwrap_or_else(|| portfwd.display().to_string()),
            portfwd: portfwd.to_owned(),
        }
    }
}

/// kernel.bpf_stats_enabled=1 for as long as it lives; the previous value
/// is put back on drop, also when the bench fails.
struct BpfStats {
    previous: String,
}

impl BpfStats {
    fn enable() -> Result<Self> {
        let previous = std::fs::read_to_string(BPF_STATS).context(BPF_STATS)?;
        std::fs::write(BPF_STATS, "1").context("enabling kernel.bpf_stats_enabled")?;
        Ok(Self {
            previous: previous.trim().to_string(),
        })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        let _ = std::fs::write(BPF_STATS, &self.previous);
    }
}

/// An interface in a namespace: its index and MAC address.
#[derive(Clone, Copy, Debug)]
struct Iface {
    index: u32,
    mac: [u8; 6],
}

fn iface(ns: &str, name: &str) -> Result<Iface> {
    let text = stdout(Command::new("ip").args(["-n", ns, "-j", "link", "show", name]))?;
    let v: Value = serde_json::from_str(&text)?;
    let l = &v[0];
    Ok(Iface {
        index: l["ifindex"]
            .as_u64()
            .and_then(|i| u32::try_from(i).ok())
            .ok_or_else(|| anyhow!("no ifindex for {name} in {ns}"))?,
        mac: l["address"]
            .as_str()
            .and_then(parse_mac)
            .ok_or_else(|| anyhow!("no MAC address for {name} in {ns}"))?,
    })
}

/// What the test-run frames need to know of the rig.
#[derive(Clone, Copy, Debug)]
struct Wires {
    /// External interface h0 and the bridge, as the programs see them.
    ext: u32,
    br: u32,
    /// client -> h0, web -> docker0, peer -> docker0.
    from_client: Link,
    from_web: Link,
    from_peer: Link,
}

impl Wires {
    fn read(rig: &Rig) -> Result<Self> {
        let h0 = iface(&rig.host, "h0")?;
        let br = iface(&rig.host, BRIDGE)?;
        let c0 = iface(&rig.client, "c0")?;
        let web = iface(&rig.web, "eth0")?;
        let peer = iface(&rig.peer, "eth0")?;
        Ok(Self {
            ext: h0.index,
            br: br.index,
            from_client: Link {
                from: c0.mac,
                to: h0.mac,
            },
            from_web: Link {
                from: web.mac,
                to: br.mac,
            },
            from_peer: Link {
                from: peer.mac,
                to: br.mac,
            },
        })
    }
}

/// The programs of one build (or the floor), as descriptors.
struct Programs {
    ext: OwnedFd,
    br: OwnedFd,
    connect: Option<OwnedFd>,
}

/// The first program on a hook of the host namespace (TCX ingress of
/// `ifindex`, or the bench cgroup's connect4).
fn program_on(target: u32, attach_type: u32) -> Result<Option<OwnedFd>> {
    let ids = portfwd_sys::prog_query_ids(target, attach_type)?;
    ids.first()
        .map(|id| portfwd_sys::prog_get_fd_by_id(*id).map_err(Into::into))
        .transpose()
}

/// The programs portfwd attached in the rig's host namespace.
fn attached_programs(rig: &Rig, wires: Wires) -> Result<Programs> {
    let cgroup = std::fs::File::open(&rig.cgroup)?;
    let connect = program_on(
        cgroup.as_raw_fd() as u32,
        portfwd_sys::BPF_CGROUP_INET4_CONNECT,
    )?;
    let (ext, br) = netns::run_in(&rig.host, move || {
        let on = |i| {
            program_on(i, portfwd_sys::BPF_TCX_INGRESS)?
                .ok_or_else(|| anyhow!("no program on TCX ingress of interface {i}"))
        };
        Ok((on(wires.ext)?, on(wires.br)?))
    })?;
    Ok(Programs { ext, br, connect })
}

fn stats_of(fd: BorrowedFd<'_>) -> Result<(String, u64, u64)> {
    let i = portfwd_sys::prog_info(fd)?;
    Ok((i.name, i.run_cnt, i.run_time_ns))
}

/// The kernel's verdict for a TC program's return value.
fn verdict(retval: u32) -> String {
    match retval as i32 {
        -1 => "unspec".into(),
        0 => "ok (pass)".into(),
        2 => "shot (drop)".into(),
        4 => "stolen".into(),
        7 => "redirect".into(),
        other => other.to_string(),
    }
}

/// The durations of `runs` test runs of `prog`, each on a fresh frame
/// from `frame(i)` arriving on interface `ifindex`, and the verdicts.
fn sample(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    runs: usize,
    mut frame: impl FnMut(usize) -> Vec<u8>,
) -> Result<Value> {
    let mut ctx = [0u8; SKB_SIZE];
    ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; 4096];
    let mut ns = Vec::with_capacity(runs);
    let mut verdicts: BTreeMap<String, usize> = BTreeMap::new();
    let started = Instant::now();
    for i in 0..runs {
        if started.elapsed() > CASE_LIMIT {
            break;
        }
        let r = portfwd_sys::prog_test_run(prog, &frame(i), &mut out, &ctx, 1)
            .context("BPF_PROG_TEST_RUN")?;
        ns.push(f64::from(r.duration_ns));
        *verdicts.entry(verdict(r.retval)).or_default() += 1;
    }
    Ok(json!({
        "runs": ns.len(),
        "median_ns": percentile(&ns, 50.0),
        "p10_ns": percentile(&ns, 10.0),
        "p90_ns": percentile(&ns, 90.0),
        "verdicts": verdicts,
    }))
}

/// One test run of `frame`; the frame as the program left it.
fn run_once(prog: BorrowedFd<'_>, ifindex: u32, frame: &[u8]) -> Result<Vec<u8>> {
    let mut ctx = [0u8; SKB_SIZE];
    ctx[SKB_IFINDEX..SKB_IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    let mut out = vec![0u8; 4096];
    let r = portfwd_sys::prog_test_run(prog, frame, &mut out, &ctx, 1)?;
    out.truncate(r.data_out_len as usize);
    Ok(out)
}

fn syn(seq: u32) -> L4 {
    L4::Tcp {
        flags: TCP_SYN,
        seq,
        ack: 0,
    }
}

fn data(seq: u32, ack: u32) -> L4 {
    L4::Tcp {
        flags: TCP_ACK | TCP_PSH,
        seq,
        ack,
    }
}

/// A TCP handshake of `client` (arriving on `first` through `link`) run
/// through the programs: the SYN through `first`, the container's SYN-ACK
/// through the bridge program. Returns the container's side of the flow
/// (container -> whoever it sees), as the SYN left the program.
fn handshake(
    first: (BorrowedFd<'_>, u32, Link),
    br: (BorrowedFd<'_>, u32),
    web: Link,
    client: Tuple,
) -> Result<Tuple> {
    let (prog, ifindex, link) = first;
    let out = run_once(prog, ifindex, &link.ipv4(client, syn(1000), &[]))?;
    let seen = frame_tuple(&out).ok_or_else(|| anyhow!("the SYN came out with no tuple"))?;
    let reply = seen.reversed();
    let synack = L4::Tcp {
        flags: TCP_SYN | TCP_ACK,
        seq: 5000,
        ack: 1001,
    };
    run_once(br.0, br.1, &web.ipv4(reply, synack, &[]))?;
    Ok(reply)
}

/// Every test-run path of one set of programs.
fn test_runs(p: &Programs, w: Wires, runs: usize) -> Result<Vec<Value>> {
    let host = HOST_IP.parse::<Ipv4Addr>()?;
    let web = WEB_IP.parse::<Ipv4Addr>()?;
    let peer = PEER_IP.parse::<Ipv4Addr>()?;
    let gateway = Ipv4Addr::new(172, 29, 0, 1);
    let (ext, br) = (p.ext.as_fd(), p.br.as_fd());
    let payload = [0x55u8; 100];
    let mut rows = Vec::new();
    let mut row = |program: &str, path: &str, v: Result<Value>| {
        let mut v = v.unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
        v["program"] = program.into();
        v["path"] = path.into();
        rows.push(v);
    };
    let port = |base: u16, i: usize| base + (i % 20_000) as u16;

    // pf_ext_in: a client on the external interface.
    let c = w.from_client;
    row(
        "pf_ext_in",
        "not ours: TCP SYN to an unpublished port",
        sample(ext, w.ext, runs, |i| {
            let t = Tuple::new(CLIENT_IP, port(20_000, i), host, NOT_OURS_PORT);
            c.ipv4(t, syn(1), &[])
        }),
    );
    row(
        "pf_ext_in",
        "not ours: UDP to an unpublished port",
        sample(ext, w.ext, runs, |i| {
            let t = Tuple::new(CLIENT_IP, port(20_000, i), host, NOT_OURS_PORT);
            c.ipv4(t, L4::Udp, &payload)
        }),
    );
    row(
        "pf_ext_in",
        "not ours: ARP request (not IP)",
        sample(ext, w.ext, runs, |_| c.arp_request(CLIENT_IP, host)),
    );
    row(
        "pf_ext_in",
        "DNAT, new flow: TCP SYN (a new source port each run)",
        sample(ext, w.ext, runs, |i| {
            let t = Tuple::new(CLIENT_IP, port(20_000, i), host, PORTFWD_HTTP);
            c.ipv4(t, syn(1), &[])
        }),
    );
    row(
        "pf_ext_in",
        "DNAT, new flow: first UDP datagram (a new source port each run)",
        sample(ext, w.ext, runs, |i| {
            let t = Tuple::new(CLIENT_IP, port(20_000, i), host, PORTFWD_IPERF);
            c.ipv4(t, L4::Udp, &payload)
        }),
    );
    let flow = Tuple::new(CLIENT_IP, 61_001, host, PORTFWD_HTTP);
    let established = handshake((ext, w.ext, c), (br, w.br), w.from_web, flow);
    let again = |r: &Result<Tuple>| r.as_ref().copied().map_err(|e| anyhow!("{e:#}"));
    row(
        "pf_ext_in",
        "DNAT, established flow: TCP ACK with 100 bytes",
        again(&established).and_then(|_| {
            sample(ext, w.ext, runs, |_| {
                c.ipv4(flow, data(1001, 5001), &payload)
            })
        }),
    );
    let udp_flow = Tuple::new(CLIENT_IP, 61_002, host, PORTFWD_IPERF);
    let udp_reply = run_once(ext, w.ext, &c.ipv4(udp_flow, L4::Udp, &payload))
        .map(|out| frame_tuple(&out).map(Tuple::reversed));
    row(
        "pf_ext_in",
        "DNAT, established flow: UDP datagram",
        sample(ext, w.ext, runs, |_| c.ipv4(udp_flow, L4::Udp, &payload)),
    );

    // pf_br_in: containers on the bridge.
    let (wb, pr) = (w.from_web, w.from_peer);
    row(
        "pf_br_in",
        "not ours: TCP SYN to an unpublished host port",
        sample(br, w.br, runs, |i| {
            let t = Tuple::new(peer, port(20_000, i), gateway, NOT_OURS_PORT);
            pr.ipv4(t, syn(1), &[])
        }),
    );
    row(
        "pf_br_in",
        "not ours: UDP to an unpublished host port",
        sample(br, w.br, runs, |i| {
            let t = Tuple::new(peer, port(20_000, i), gateway, NOT_OURS_PORT);
            pr.ipv4(t, L4::Udp, &payload)
        }),
    );
    row(
        "pf_br_in",
        "not ours: ARP request (not IP)",
        sample(br, w.br, runs, |_| pr.arp_request(peer, gateway)),
    );
    row(
        "pf_br_in",
        "not ours: routed TCP ACK from a container (no flow)",
        sample(br, w.br, runs, |i| {
            let t = Tuple::new(web, 80, CLIENT_IP, port(20_000, i));
            wb.ipv4(t, data(1, 1), &payload)
        }),
    );
    row(
        "pf_br_in",
        "reverse NAT, established flow: the container's TCP ACK with 100 bytes",
        again(&established).and_then(|reply| {
            sample(br, w.br, runs, |_| {
                wb.ipv4(reply, data(5001, 1101), &payload)
            })
        }),
    );
    row(
        "pf_br_in",
        "reverse NAT: the container's UDP reply",
        udp_reply.and_then(|reply| {
            let reply = reply.ok_or_else(|| anyhow!("the datagram came out with no tuple"))?;
            sample(br, w.br, runs, |_| wb.ipv4(reply, L4::Udp, &payload))
        }),
    );
    row(
        "pf_br_in",
        "hairpin, new flow: TCP SYN from a container to the host address",
        sample(br, w.br, runs, |i| {
            let t = Tuple::new(peer, port(20_000, i), host, PORTFWD_HTTP);
            pr.ipv4(t, syn(1), &[])
        }),
    );
    let hairpin = Tuple::new(peer, 61_003, host, PORTFWD_HTTP);
    let hp = handshake((br, w.br, pr), (br, w.br), wb, hairpin);
    row(
        "pf_br_in",
        "hairpin, established flow: the client container's TCP ACK",
        again(&hp).and_then(|_| {
            sample(br, w.br, runs, |_| {
                pr.ipv4(hairpin, data(1001, 5001), &payload)
            })
        }),
    );
    row(
        "pf_br_in",
        "hairpin, established flow: the served container's reply",
        hp.and_then(|reply| {
            sample(br, w.br, runs, |_| {
                wb.ipv4(reply, data(5001, 1101), &payload)
            })
        }),
    );
    Ok(rows)
}

/// The connect4 hook cannot be test-run (the kernel has no test run for
/// cgroup sock_addr programs): what it answers, for the report.
fn connect_test_run(p: &Programs) -> Value {
    let Some(fd) = &p.connect else {
        return json!({ "error": "no connect4 program on the bench cgroup" });
    };
    match portfwd_sys::prog_test_run(fd.as_fd(), &[0u8; 64], &mut [0u8; 64], &[], 1) {
        Ok(r) => json!({ "runs": 1, "median_ns": r.duration_ns }),
        Err(e) => json!({ "error": format!("BPF_PROG_TEST_RUN: {e}") }),
    }
}

/// The floor: the same frames through a program that only returns.
fn floor_test_runs(w: Wires, runs: usize) -> Result<Value> {
    let empty =
        portfwd_sys::prog_load_return(portfwd_sys::BPF_PROG_TYPE_SCHED_CLS, 0, 0, "pfbench_floor")
            .context("loading the empty TC program")?;
    let host = HOST_IP.parse::<Ipv4Addr>()?;
    let c = w.from_client;
    sample(empty.as_fd(), w.ext, runs, |i| {
        let t = Tuple::new(CLIENT_IP, 20_000 + (i % 20_000) as u16, host, PORTFWD_HTTP);
        c.ipv4(t, syn(1), &[])
    })
}

/// Kinds of real traffic, one at a time, and which client drives each.
struct Traffic {
    label: &'static str,
    client: Client,
    /// The load tool and its arguments (the duration is appended).
    program: &'static str,
    args: Vec<String>,
}

fn iperf(label: &'static str, client: Client, addr: &str, port: u16, extra: &[&str]) -> Traffic {
    let mut args: Vec<String> = ["-c", addr, "-p", &port.to_string()]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("-t".into());
    Traffic {
        label,
        client,
        program: "iperf3",
        args,
    }
}

fn wrk_close(label: &'static str, client: Client, url: String) -> Traffic {
    Traffic {
        label,
        client,
        program: "wrk",
        args: ["-t", "1", "-c", "16", "-H", "Connection: close", &url, "-d"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    }
}

fn traffic_kinds() -> Vec<Traffic> {
    let udp = ["-u", "-b", "500M", "-l", "1400"];
    let http = format!("http://{HOST_IP}:{PORTFWD_HTTP}/");
    vec![
        iperf(
            "not ours: TCP stream to an unpublished host port",
            Client::Remote,
            HOST_IP,
            NOT_OURS_PORT,
            &[],
        ),
        iperf(
            "not ours: UDP at 500 Mbit/s to an unpublished host port",
            Client::Remote,
            HOST_IP,
            NOT_OURS_PORT,
            &udp,
        ),
        iperf(
            "not ours: routed TCP stream to the container's own address",
            Client::Remote,
            WEB_IP,
            MODES[0].backend().iperf,
            &[],
        ),
        iperf(
            "DNAT + reverse NAT: TCP stream through the mapping, client sending",
            Client::Remote,
            HOST_IP,
            PORTFWD_IPERF,
            &[],
        ),
        iperf(
            "DNAT + reverse NAT: TCP stream through the mapping, container sending",
            Client::Remote,
            HOST_IP,
            PORTFWD_IPERF,
            &["-R"],
        ),
        iperf(
            "DNAT + reverse NAT: UDP at 500 Mbit/s through the mapping",
            Client::Remote,
            HOST_IP,
            PORTFWD_IPERF,
            &udp,
        ),
        wrk_close(
            "new flows: HTTP requests with Connection: close through the mapping",
            Client::Remote,
            http.clone(),
        ),
        iperf(
            "hairpin: TCP stream from a container to the host address",
            Client::Hairpin,
            HOST_IP,
            PORTFWD_IPERF,
            &[],
        ),
        wrk_close(
            "socket hook: HTTP requests with Connection: close from the host (127.0.0.1)",
            Client::Local,
            format!("http://127.0.0.1:{PORTFWD_HTTP}/"),
        ),
    ]
}

/// Drives `t` for `secs` and returns what each of `progs` ran meanwhile:
/// (name, runs, ns per run).
fn drive(rig: &Rig, t: &Traffic, progs: &[BorrowedFd<'_>], secs: u64) -> Result<Vec<Value>> {
    let before: Vec<_> = progs.iter().map(|p| stats_of(*p)).collect::<Result<_>>()?;
    let mut c = rig.client_cmd(t.client, t.program)?;
    c.args(&t.args);
    c.arg(if t.program == "wrk" {
        format!("{secs}s")
    } else {
        secs.to_string()
    });
    output(c, &format!("{} ({})", t.program, t.label))?;
    let mut out = Vec::new();
    for (p, (name, runs0, ns0)) in progs.iter().zip(before) {
        let (_, runs1, ns1) = stats_of(*p)?;
        let runs = runs1.saturating_sub(runs0);
        let ns = ns1.saturating_sub(ns0);
        out.push(json!({
            "traffic": t.label,
            "program": name,
            "runs": runs,
            "ns_per_run": if runs > 0 { Some(ns as f64 / runs as f64) } else { None },
        }));
    }
    Ok(out)
}

/// bpf_stats of one build's programs over every kind of traffic.
/// The bpf_stats rows of one kind of traffic over the programs `p`.
fn stats_run(rig: &Rig, p: &Programs, t: &Traffic, secs: u64) -> Result<Vec<Value>> {
    let mut progs = vec![p.ext.as_fd(), p.br.as_fd()];
    if let Some(c) = &p.connect {
        progs.push(c.as_fd());
    }
    drive(rig, t, &progs, secs)
}

/// The floor under bpf_stats: the empty programs attached alone (TCX on
/// the external interface and the bridge; connect4 on the bench cgroup),
/// with routed traffic and host-local connections.
fn floor_stats(rig: &Rig, wires: Wires, secs: u64) -> Result<Vec<Value>> {
    let tc =
        portfwd_sys::prog_load_return(portfwd_sys::BPF_PROG_TYPE_SCHED_CLS, 0, 0, "pfbench_floor")
            .context("loading the empty TC program")?;
    let connect = portfwd_sys::prog_load_return(
        portfwd_sys::BPF_PROG_TYPE_CGROUP_SOCK_ADDR,
        portfwd_sys::BPF_CGROUP_INET4_CONNECT,
        1,
        "pfbench_floor4",
    )
    .context("loading the empty connect4 program")?;
    let tc_fd = tc.try_clone()?;
    let _tcx = netns::run_in(&rig.host, move || {
        let ext = portfwd_sys::link_create(tc_fd.as_fd(), wires.ext, portfwd_sys::BPF_TCX_INGRESS)?;
        let br = portfwd_sys::link_create(tc_fd.as_fd(), wires.br, portfwd_sys::BPF_TCX_INGRESS)?;
        Ok((ext, br))
    })
    .context("attaching the empty TC program")?;
    let cgroup = std::fs::File::open(&rig.cgroup)?;
    let _cg = portfwd_sys::link_create(
        connect.as_fd(),
        cgroup.as_raw_fd() as u32,
        portfwd_sys::BPF_CGROUP_INET4_CONNECT,
    )
    .context("attaching the empty connect4 program")?;
    let direct = MODES[0].backend();
    let kinds = [
        iperf(
            "floor: routed TCP stream (empty TC program on h0 and the bridge)",
            Client::Remote,
            WEB_IP,
            direct.iperf,
            &[],
        ),
        wrk_close(
            "floor: HTTP requests with Connection: close from the host (empty connect4 program)",
            Client::Local,
            format!("http://{WEB_IP}:{}/", direct.http),
        ),
    ];
    let mut rows = drive(rig, &kinds[0], &[tc.as_fd()], secs)?;
    rows.extend(drive(rig, &kinds[1], &[connect.as_fd()], secs)?);
    Ok(rows)
}

/// The cost section: the floor, then each build attached in turn.
pub fn run(rig: &mut Rig, builds: &[Build], runs: usize, secs: u64) -> Result<Value> {
    rig.detach_portfwd()?;
    let mut server = Command::new("iperf3");
    server.args(["-s", "-p", &NOT_OURS_PORT.to_string()]);
    let host = rig.host.clone();
    rig.spawn(server, &host)?;
    wait_port(&rig.client, HOST_IP, NOT_OURS_PORT)?;
    let wires = Wires::read(rig)?;
    // Neighbours known, as they are under real traffic.
    for addr in [WEB_IP, PEER_IP, "10.88.1.2"] {
        let _ = output(
            {
                let mut c = Command::new("ip");
                c.args([
                    "netns", "exec", &rig.host, "ping", "-c", "1", "-W", "1", addr,
                ]);
                c
            },
            "ping",
        );
    }
    let _stats = BpfStats::enable()?;
    super::progress("cost: floor");
    let floor = floor_stats(rig, wires, secs)?;
    let mut measured = Vec::new();
    for b in builds {
        super::progress(&format!("cost: {} test runs", b.label));
        rig.attach_portfwd(&b.portfwd, MODES[1].backend())?;
        let progs = attached_programs(rig, wires)?;
        let (ext, br) = (progs.ext.try_clone()?, progs.br.try_clone()?);
        let test = netns::run_in(&rig.host, move || {
            let p = Programs {
                ext,
                br,
                connect: None,
            };
            Ok((test_runs(&p, wires, runs)?, floor_test_runs(wires, runs)?))
        })?;
        let connect = connect_test_run(&progs);
        drop(progs);
        rig.detach_portfwd()?;
        measured.push(json!({
            "label": b.label,
            "portfwd": b.portfwd.display().to_string(),
            "test_run": test.0,
            "test_run_floor": test.1,
            "connect_test_run": connect,
            "bpf_stats": [],
        }));
    }
    // Real traffic moves with whatever else the machine does, so each kind
    // of traffic runs through every build in turn before the next kind:
    // a drift in load lands on all builds alike, not on the last one.
    for t in traffic_kinds() {
        for (b, m) in builds.iter().zip(measured.iter_mut()) {
            super::progress(&format!("cost: bpf_stats, {}, {}", t.label, b.label));
            rig.attach_portfwd(&b.portfwd, MODES[1].backend())?;
            let progs = attached_programs(rig, wires)?;
            let rows = stats_run(rig, &progs, &t, secs)?;
            drop(progs);
            rig.detach_portfwd()?;
            m["bpf_stats"]
                .as_array_mut()
                .expect("an array")
                .extend(rows);
        }
    }
    if measured.is_empty() {
        bail!("no portfwd build to measure");
    }
    Ok(json!({
        "runs_per_path": runs,
        "seconds_per_traffic": secs,
        "bpf_stats_floor": floor,
        "builds": measured,
    }))
}
