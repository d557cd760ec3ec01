//! `portfwd add [--replace] [--force] SPEC...`
use std::fmt::Write as _;

use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    /// Re-point host ports that are already published.
    #[arg(long)]
    replace: bool,
    /// Publish even if a host process holds the port.
    #[arg(long)]
    force: bool,
    /// As in `attach --map` (IPv6 in brackets).
    #[arg(required = true, value_name = "SPEC")]
    specs: Vec<String>,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let report = ops::add(&ops::AddRequest {
        netns,
        specs: super::parse_specs(&args.specs)?,
        replace: args.replace,
        force: args.force,
        transient: false,
    })?;
    super::say_removed(&report.dead_namespaces);
    let mut out = String::new();
    for m in &report.added {
        let _ = writeln!(out, "added {m}");
    }
    Ok(out)
}
