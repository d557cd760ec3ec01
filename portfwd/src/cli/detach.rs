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
    Ok(match report {
        ops::DetachReport::Everything { bridge } => {
            format!("detached {bridge}; removed all portfwd state in this namespace\n")
        }
        ops::DetachReport::Bridge {
            bridge,
            mappings_removed,
        } => format!("detached {bridge} ({mappings_removed} mappings removed)\n"),
    })
}
