//! `portfwd detach BRIDGE`
use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    bridge: String,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let report = ops::detach(&ops::DetachRequest {
        netns,
        bridge: args.bridge,
    })?;
    super::say_removed(&report.dead_namespaces);
    let bridge = report.bridge;
    Ok(match report.detached {
        ops::Detached::Everything => {
            format!("detached {bridge}; removed all portfwd state in this namespace\n")
        }
        ops::Detached::Bridge { mappings_removed } => {
            format!("detached {bridge} ({mappings_removed} mappings removed)\n")
        }
    })
}
