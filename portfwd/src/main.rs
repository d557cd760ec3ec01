//! The portfwd command line.
use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use portfwd::{
    docker,
    host::{netns, privileges},
    ops,
    spec::{Container, Mapping, PortSelector, SpecTemplate},
    Error,
};

#[derive(Parser)]
#[command(
    name = "portfwd",
    version,
    about = "Publish container ports with eBPF: no proxy process, client IP preserved"
)]
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
        /// [HOST_IP:]HOST_PORT=CONTAINER_IP:CONTAINER_PORT[/tcp|/udp]; ranges as 8000-8009=IP:8000-8009;
        /// CONTAINER_IP may be a Docker container name or id.
        #[arg(long = "map", value_name = "SPEC")]
        maps: Vec<String>,
        /// Interface where outside clients arrive (default: those with a default route).
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
    },
    /// Remove everything portfwd attached for a bridge.
    Detach { bridge: String },
    /// Publish more ports on the attached namespace.
    Add {
        /// Re-point host ports that are already published.
        #[arg(long)]
        replace: bool,
        /// Publish even if a host process holds the port.
        #[arg(long)]
        force: bool,
        #[arg(required = true, value_name = "SPEC")]
        specs: Vec<String>,
    },
    /// Unpublish ports; established flows drain unless --kill.
    Del {
        /// Also end the flows in progress.
        #[arg(long)]
        kill: bool,
        /// [HOST_IP:]HOST_PORT[-END][/tcp|/udp]
        #[arg(required = true, value_name = "PORT")]
        ports: Vec<String>,
    },
    /// Show the published ports with their counters.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show the tracked flows.
    Flows {
        #[arg(long)]
        json: bool,
    },
    /// Keep the host-address map current (rtnetlink); exits once detached.
    Watch {
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
}

fn main() -> ExitCode {
    let started = std::time::Instant::now();
    let cli = Cli::parse();
    let result = run(cli);
    // For `cargo xtask bench`: the command's own time, without process
    // start-up and exit, which no change to portfwd can remove.
    if std::env::var_os("PORTFWD_TIMING").is_some() {
        eprintln!(
            "portfwd: in-process time {:.3} ms",
            started.elapsed().as_secs_f64() * 1e3
        );
    }
    match result {
        Ok(out) => {
            // A closed pipe (`portfwd list | head`) is not an error.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(err) => {
            let usage = match (
                err.downcast_ref::<Error>(),
                err.downcast_ref::<docker::Error>(),
            ) {
                (Some(e), _) => e.is_usage(),
                (_, Some(e)) => e.is_usage(),
                _ => false,
            };
            let code = if usage { 2 } else { 1 };
            eprintln!("portfwd: error: {err}");
            ExitCode::from(code)
        }
    }
}

/// Parses every SPEC, container names left unresolved, and refuses a host
/// port given twice. Touches nothing outside the strings.
fn parse_specs(texts: &[String]) -> Result<Vec<SpecTemplate>, Error> {
    let specs = texts
        .iter()
        .map(|t| t.parse::<SpecTemplate>())
        .collect::<Result<Vec<_>, _>>()?;
    portfwd::spec::check_unique_hosts(specs.iter().flat_map(|s| s.host_ports()))?;
    Ok(specs)
}

/// The mappings of `specs`, each container name resolved once through the
/// Docker engine (which is asked only if a SPEC names a container). A
/// container on several networks is taken at its address on one of
/// `bridges` when it has one there.
fn resolve_specs(
    specs: &[SpecTemplate],
    bridges: impl FnOnce() -> Vec<String>,
) -> anyhow::Result<Vec<Mapping>> {
    let names: Vec<&str> = specs.iter().filter_map(|s| s.container_name()).collect();
    let addrs = if names.is_empty() {
        Default::default()
    } else {
        docker::resolve(docker::DEFAULT_SOCKET, names, &bridges())?
    };
    let mut all = Vec::new();
    for spec in specs {
        let ip = match &spec.container {
            Container::Ip(ip) => *ip,
            Container::Name(name) => addrs[name],
        };
        all.extend(spec.resolve(ip)?.mappings);
    }
    Ok(all)
}

/// The names of the bridges attached in the current network namespace.
fn attached_bridges() -> Vec<String> {
    portfwd::state::StateDir::current()
        .map(|state| {
            state
                .bridges()
                .into_iter()
                .filter_map(portfwd::host::ifaces::ifname)
                .collect()
        })
        .unwrap_or_default()
}

fn run(cli: Cli) -> anyhow::Result<String> {
    // Parse every input before anything touches the system.
    let specs = match &cli.command {
        Command::Attach { maps, .. } => parse_specs(maps)?,
        Command::Add { specs, .. } => parse_specs(specs)?,
        _ => Vec::new(),
    };
    let selectors = match &cli.command {
        Command::Del { ports, .. } => ports
            .iter()
            .map(|p| p.parse::<PortSelector>())
            .collect::<Result<Vec<_>, _>>()?,
        _ => Vec::new(),
    };
    privileges::check(cli.netns.is_some())?;
    privileges::check_kernel()?;
    if let Some(name) = &cli.netns {
        // Single-threaded here: setns affects only the calling thread.
        netns::enter(name)?;
    }
    // Container names resolve here, before anything is changed and after
    // setns, which must come first while the process has one thread (the
    // Docker client's current-thread runtime starts none of its own).
    let mappings = match &cli.command {
        Command::Attach { bridge, .. } => resolve_specs(&specs, || vec![bridge.clone()])?,
        Command::Add { .. } => resolve_specs(&specs, attached_bridges)?,
        _ => Vec::new(),
    };
    Ok(match cli.command {
        Command::Attach {
            bridge,
            external,
            cgroup,
            no_local,
            force,
            ..
        } => ops::attach::run(&ops::attach::Args {
            bridge,
            mappings,
            external,
            cgroup,
            no_local,
            force,
        })?,
        Command::Detach { bridge } => ops::detach::run(&bridge)?,
        Command::Add { replace, force, .. } => ops::add::run(&ops::add::Args {
            mappings,
            replace,
            force,
        })?,
        Command::Del { kill, .. } => ops::del::run(&selectors, kill)?,
        Command::List { json } => ops::list::run(json)?,
        Command::Flows { json } => ops::flows::run(json)?,
        Command::Watch { timeout } => ops::watch::run(timeout.map(std::time::Duration::from_secs))?,
    })
}
