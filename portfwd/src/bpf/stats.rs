//! The attached programs' run statistics: how many times each ran and for
//! how long, which the kernel counts only while kernel.bpf_stats_enabled=1.
use std::{os::fd::AsFd as _, path::Path};

use serde::Serialize;

use crate::{host::ifaces, state::StateDir};

const BPF_STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";

/// One attached program and what the kernel counted of it.
#[derive(Clone, Debug, Serialize)]
pub struct ProgramStats {
    /// The program's name (e.g. `pf_ext_in`).
    pub program: String,
    /// Where it is attached: an interface's name, or `cgroup`.
    pub attached_to: String,
    pub run_count: u64,
    pub run_time_ns: u64,
    /// run_time_ns / run_count; None before the first counted run.
    pub ns_per_run: Option<f64>,
}

/// Whether the kernel counts programs' run time (kernel.bpf_stats_enabled).
pub fn stats_enabled() -> bool {
    std::fs::read_to_string(BPF_STATS_SYSCTL).is_ok_and(|v| v.trim() != "0")
}

/// The programs behind `state`'s pinned links, bridges first, then
/// external interfaces, then the cgroup hooks. A link whose program cannot
/// be read (removed meanwhile) is left out.
pub fn attached_programs(state: &StateDir) -> Vec<ProgramStats> {
    let iface = |i: u32| ifaces::ifname(i).unwrap_or_else(|| format!("#{i}"));
    let links = state
        .bridges()
        .into_iter()
        .map(|i| (state.bridge_link(i), iface(i)))
        .chain(
            state
                .externals()
                .into_iter()
                .map(|i| (state.external_link(i), iface(i))),
        )
        .chain(
            state
                .cgroup_links()
                .into_iter()
                .map(|p| (p, "cgroup".to_string())),
        );
    links
        .filter_map(|(pin, attached_to)| {
            let info = program_of(&pin)?;
            Some(ProgramStats {
                program: info.name,
                attached_to,
                run_count: info.run_cnt,
                run_time_ns: info.run_time_ns,
                ns_per_run: (info.run_cnt > 0)
                    .then(|| info.run_time_ns as f64 / info.run_cnt as f64),
            })
        })
        .collect()
}

/// The info of the program a pinned link holds.
fn program_of(pin: &Path) -> Option<portfwd_sys::ProgInfo> {
    let link = portfwd_sys::obj_get(pin).ok()?;
    let id = portfwd_sys::link_prog_id(link.as_fd()).ok()?;
    let prog = portfwd_sys::prog_get_fd_by_id(id).ok()?;
    portfwd_sys::prog_info(prog.as_fd()).ok()
}
