//! `portfwd del [--kill] [HOST_IP:]HOST_PORT[-END][/tcp|/udp]...`
use std::fmt::Write as _;

use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    /// Also end the flows in progress.
    #[arg(long)]
    kill: bool,
    /// [HOST_IP:]HOST_PORT[-END][/tcp|/udp]: without HOST_IP both families, 0.0.0.0 or [::] one
    /// family (every address of it), an address that mapping only
    #[arg(required = true, value_name = "PORT")]
    ports: Vec<String>,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let ports = args
        .ports
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<_>, _>>()?;
    let report = ops::del(&ops::DelRequest {
        netns,
        ports,
        kill: args.kill,
    })?;
    super::say_removed(&report.dead_namespaces);
    let how = if report.killed { " (flows killed)" } else { "" };
    let mut out = String::new();
    for h in &report.removed {
        let _ = writeln!(out, "removed {h}{how}");
    }
    Ok(out)
}
