//! The portfwd command line: parses, runs, prints, and maps errors to exit
//! codes (2: the caller's mistake, nothing changed; 1: a failure); or, with
//! CNI_COMMAND set, acts as a CNI plugin (`cni`).
mod cli;
mod cni;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    // A CNI runtime runs plugins with their arguments in CNI_* variables
    // and none on the command line.
    if std::env::var_os(cni::COMMAND_ENV).is_some() {
        return cni::main();
    }
    let started = std::time::Instant::now();
    let result = cli::run(cli::Cli::parse());
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
            eprintln!("portfwd: error: {err}");
            ExitCode::from(if err.is_usage() { 2 } else { 1 })
        }
    }
}
