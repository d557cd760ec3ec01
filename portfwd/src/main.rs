//! The portfwd command line.
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portfwd::{cmd, netns, privileges, spec::Spec, Error};

#[derive(Parser)]
#[command(name = "portfwd", version, about = "Publish container ports with eBPF: no proxy process, client IP preserved")]
struct Cli {
    /// Act on the named network namespace (/var/run/netns/NETNS), like `ip -n`.
    #[arg(short = 'n', long = "netns", global = true, value_name = "NETNS")]
    netns: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Attach to a bridge and publish ports; run again to update in place.
    Attach {
        /// The bridge the containers are on (e.g. docker0).
        bridge: String,
        /// [HOST_IP:]HOST_PORT=CONTAINER_IP:CONTAINER_PORT[/tcp|/udp]; ranges as 8000-8009=IP:8000-8009.
        #[arg(long = "map", value_name = "SPEC")]
        maps: Vec<String>,
        /// Interface where outside clients arrive (default: those with a default route).
        #[arg(long = "external", value_name = "IFACE")]
        external: Vec<String>,
    },
    /// Remove everything portfwd attached for a bridge.
    Detach { bridge: String },
    /// Show the published ports and the datapath counters.
    List,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            let code = match err.downcast_ref::<Error>() {
                Some(e) if e.is_usage() => 2,
                _ => 1,
            };
            eprintln!("portfwd: error: {err}");
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<String> {
    // Parse every input before anything touches the system.
    let mappings = match &cli.command {
        Command::Attach { maps, .. } => {
            let mut all = Vec::new();
            for text in maps {
                all.extend(text.parse::<Spec>()?.mappings);
            }
            portfwd::spec::check_unique(&all)?;
            all
        }
        _ => Vec::new(),
    };
    privileges::check(cli.netns.is_some())?;
    privileges::check_kernel()?;
    if let Some(name) = &cli.netns {
        // Single-threaded here: setns affects only the calling thread.
        netns::enter(name)?;
    }
    Ok(match cli.command {
        Command::Attach { bridge, external, .. } => cmd::attach::run(&cmd::attach::Args {
            bridge,
            mappings,
            external,
        })?,
        Command::Detach { bridge } => cmd::detach::run(&bridge)?,
        Command::List => cmd::list::run()?,
    })
}
