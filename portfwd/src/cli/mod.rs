//! The command line: one file per subcommand, each with its own `clap::Args`
//! and its printing, over `portfwd::ops`.
mod add;
mod attach;
mod del;
mod detach;
mod flows;
mod list;
mod restore;
mod watch;

use clap::{Parser, Subcommand};
use portfwd::{ops::DeadNamespace, spec::SpecTemplate, Error};

#[derive(Parser)]
#[command(
    name = "portfwd",
    version,
    about = "Publish container ports with eBPF: no proxy process, client IP preserved"
)]
pub struct Cli {
    /// Act on the named network namespace (/var/run/netns/NETNS), like `ip -n`.
    #[arg(short = 'n', long = "netns", global = true, value_name = "NETNS")]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a bridge and publish ports; run again to update in place.
    Attach(attach::Args),
    /// Remove everything portfwd attached for a bridge.
    Detach(detach::Args),
    /// Publish more ports on the attached namespace.
    Add(add::Args),
    /// Unpublish ports; established flows drain unless --kill.
    Del(del::Args),
    /// Show the published ports with their counters.
    List(list::Args),
    /// Show the tracked flows.
    Flows(flows::Args),
    /// Keep the host-address map current (rtnetlink) and mappings made by container name
    /// on their containers (Docker events); exits once detached.
    Watch(watch::Args),
    /// Attach and publish again what was attached before a reboot or an upgrade
    /// (from /var/lib/portfwd); idempotent.
    Restore(restore::Args),
}

/// Runs the command; what it prints on stdout.
pub fn run(cli: Cli) -> Result<String, Error> {
    let netns = cli.netns;
    match cli.command {
        Command::Attach(args) => attach::run(netns, args),
        Command::Detach(args) => detach::run(netns, args),
        Command::Add(args) => add::run(netns, args),
        Command::Del(args) => del::run(netns, args),
        Command::List(args) => list::run(netns, args),
        Command::Flows(args) => flows::run(netns, args),
        Command::Watch(args) => watch::run(netns, args),
        Command::Restore(args) => restore::run(netns, args),
    }
}

/// Parses SPEC arguments (container names left unresolved); touches
/// nothing outside the strings.
fn parse_specs(texts: &[String]) -> Result<Vec<SpecTemplate>, Error> {
    texts.iter().map(|t| t.parse()).collect()
}

/// Serialises a report for `--json`.
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("plain data serialises") + "\n"
}

/// What `list` and `flows` print when nothing is attached.
fn nothing_attached(json: bool) -> String {
    if json {
        "[]\n".into()
    } else {
        "nothing attached in this network namespace\n".into()
    }
}

/// One line on stderr for each namespace whose state was removed because
/// the namespace no longer exists.
fn say_removed(dead: &[DeadNamespace]) {
    for d in dead {
        eprintln!(
            "portfwd: removed state of network namespace {}, which no longer exists",
            d.cookie
        );
    }
}
