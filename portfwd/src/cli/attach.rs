//! `portfwd attach BRIDGE [--map SPEC]... [--external IFACE]... [--cgroup PATH] [--no-local] [--force]`
use std::{fmt::Write as _, path::PathBuf};

use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    /// The bridge the containers are on (e.g. docker0).
    bridge: String,
    /// [HOST_IP:]HOST_PORT=CONTAINER_IP:CONTAINER_PORT[/tcp|/udp]; ranges as 8000-8009=IP:8000-8009;
    /// IPv6 in brackets ([::1]:8080=[fd00::2]:80), both sides one family; a host port once per
    /// family; CONTAINER_IP may be a Docker container name or id (each family it has).
    #[arg(long = "map", value_name = "SPEC")]
    maps: Vec<String>,
    /// Interface where outside clients arrive (default: every interface with a host address but the bridges and loopback; `watch` adds new ones).
    #[arg(long = "external", value_name = "IFACE")]
    external: Vec<String>,
    /// cgroup2 directory for the socket hooks (default: the cgroup2 root).
    #[arg(long, value_name = "PATH")]
    cgroup: Option<PathBuf>,
    /// Do not serve clients on the host itself (no cgroup socket hooks; containers and remote clients are served either way).
    #[arg(long)]
    no_local: bool,
    /// Publish even if a host process holds the port.
    #[arg(long)]
    force: bool,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let report = ops::attach(&ops::AttachRequest {
        netns,
        specs: super::parse_specs(&args.maps)?,
        bridge: args.bridge,
        external: args.external,
        cgroup: args.cgroup,
        no_local: args.no_local,
        force: args.force,
    })?;
    super::say_removed(&report.dead_namespaces);
    let mut out = String::new();
    let how = if report.external_defaulted {
        " (every interface with a host address)"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "attached to {} (index {}); external: {}{how}",
        report.bridge,
        report.bridge_index,
        report.external.join(", ")
    );
    match &report.local_cgroup {
        None => {
            let _ = writeln!(out, "host-local access: off (--no-local)");
        }
        Some(cgroup) => {
            let _ = writeln!(out, "host-local access: cgroup {}", cgroup.display());
        }
    }
    for m in &report.mappings {
        let _ = writeln!(out, "  {m}");
    }
    for m in &report.mtu_mismatches {
        let _ = writeln!(
            out,
            "warning: {} MTU {} is larger than {} MTU {}; replies larger than {} bytes are \
             answered with ICMP fragmentation needed",
            report.bridge, m.bridge_mtu, m.external, m.external_mtu, m.external_mtu
        );
        if !m.forwarding {
            let _ = writeln!(
                out,
                "warning: IPv4 forwarding is off on {}: UDP replies without DF larger than {} bytes \
                 cannot be cut into fragments and are dropped (counted as drop_too_big)",
                m.external, m.external_mtu
            );
        }
    }
    Ok(out)
}
