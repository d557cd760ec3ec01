//! `portfwd restore`: what was attached before a reboot or an upgrade,
//! attached and published again.
use std::fmt::Write as _;

use portfwd::{family::endpoint, ops, Error};

#[derive(clap::Args)]
pub struct Args {}

pub fn run(netns: Option<String>, _args: Args) -> Result<String, Error> {
    let report = ops::restore(&ops::RestoreRequest { netns })?;
    let mut out = String::new();
    if report.restored.is_empty() {
        let _ = writeln!(out, "nothing to restore");
    }
    for r in &report.restored {
        super::say_removed(&r.dead_namespaces);
        if let Some(why) = &r.skipped {
            let _ = writeln!(out, "skipped {}: {why}", r.netns);
            continue;
        }
        if let Some(dir) = &r.replaced_stale {
            let _ = writeln!(
                out,
                "{}: removed {}, made by another portfwd version",
                r.netns,
                dir.display()
            );
        }
        for b in &r.bridges {
            let _ = writeln!(
                out,
                "{}: attached {}; external: {}",
                r.netns,
                b.bridge,
                b.external.join(", ")
            );
            for m in &b.mappings {
                let _ = writeln!(out, "  {m}");
            }
        }
        for f in &r.followed {
            let _ = writeln!(out, "  {}", followed(f));
        }
        if let Some(why) = &r.engine_unreachable {
            let _ = writeln!(out, "  {why}: mappings that follow containers are held");
        }
        for (bridge, why) in &r.failed {
            let _ = writeln!(out, "{}: could not attach {bridge}: {why}", r.netns);
        }
    }
    match report.failures() {
        0 => Ok(out),
        failed => {
            // What was restored is said too, before the error.
            print!("{out}");
            Err(Error::RestoreIncomplete(failed))
        }
    }
}

/// One line for a mapping that follows a container.
fn followed(f: &ops::Followed) -> String {
    match f.to {
        Some(ip) => format!(
            "{} -> {} ({})",
            f.host,
            endpoint(ip, f.container_port),
            f.container
        ),
        None => format!(
            "{} held: {} is not running here (or has no address of the family)",
            f.host, f.container
        ),
    }
}

/// What `watch` says about following containers, on stderr: kept beside
/// `followed`, whose lines restore prints too.
pub fn say_followed(event: &ops::FollowEvent) {
    match event {
        ops::FollowEvent::Connected => {
            eprintln!("portfwd watch: following containers through the Docker engine");
        }
        ops::FollowEvent::Unreachable(why) => {
            eprintln!("portfwd watch: {why}; mappings that follow containers are held");
        }
        ops::FollowEvent::Followed(f) => eprintln!("portfwd watch: {}", followed(f)),
        ops::FollowEvent::Failed(why) => eprintln!("portfwd watch: following: {why}"),
    }
}
