//! `portfwd flows [--json]`
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use portfwd::{ops, Error};

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    json: bool,
}

pub fn run(netns: Option<String>, args: Args) -> Result<String, Error> {
    let report = ops::flows(&ops::FlowsRequest { netns })?;
    super::say_removed(&report.dead_namespaces);
    if !report.attached {
        return Ok(super::nothing_attached(args.json));
    }
    if args.json {
        return Ok(super::json(&report.flows));
    }
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED).set_header([
        "PROTO",
        "CLIENT",
        "HOST",
        "CONTAINER",
        "STATE",
        "AGE",
        "BYTES IN/OUT",
    ]);
    for f in &report.flows {
        t.add_row([
            f.proto.clone(),
            f.client.clone(),
            f.host.clone(),
            match &f.container_sees {
                Some(seen) => format!("{} (sees {seen})", f.container),
                None => f.container.clone(),
            },
            f.state.clone(),
            format!("{:.1}s", f.age_s),
            format!("{}/{}", f.bytes_in, f.bytes_out),
        ]);
    }
    Ok(format!("{t}\n"))
}
