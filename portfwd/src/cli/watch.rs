//! `portfwd watch [--timeout SECONDS]`
use std::time::Duration;

use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u64>,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let req = ops::WatchRequest {
        netns,
        timeout: args.timeout.map(Duration::from_secs),
    };
    let report = ops::watch(&req, |event| match event {
        ops::WatchEvent::Tracking { addresses } => {
            eprintln!("portfwd watch: tracking {addresses} host addresses");
        }
        ops::WatchEvent::DeadNamespace(dead) => super::say_removed(&[dead]),
        ops::WatchEvent::Follow(event) => super::restore::say_followed(&event),
        ops::WatchEvent::Externals(names) => {
            eprintln!("portfwd watch: now external: {}", names.join(", "));
        }
    })?;
    let syncs = report.syncs;
    Ok(match report.end {
        ops::WatchEnd::Detached => format!("namespace detached; {syncs} address syncs\n"),
        ops::WatchEnd::TimedOut(after) => {
            format!("stopped after {after:?}; {syncs} address syncs\n")
        }
    })
}
