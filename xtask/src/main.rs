//! portfwd's development tasks: `cargo xtask setup|build|lint|test|demo|bench`.
mod bench;
mod cmd;
mod demo;
mod netns;
mod setup;

use std::path::PathBuf;
use std::process::{ExitCode, ExitStatus};

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::cmd::{cargo, run, workspace_root};
use crate::setup::BuildEnv;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "portfwd development tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (eBPF toolchain, bpf-linker, Debian packages).
    Setup,
    /// Setup, then build portfwd (with its eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Setup, then `cargo fmt --check` and clippy (warnings are errors) over
    /// the host crates and the eBPF crate (for the BPF target).
    Lint,
    /// Setup, then run the test suite (needs root). Arguments go to `cargo test`.
    Test {
        /// Extra `cargo test` arguments, e.g. `-- --test netns -- --nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Setup and build, then publish a port from a throwaway "container"
    /// namespace and fetch a page through it (needs root).
    Demo {
        #[arg(long)]
        release: bool,
    },
    /// Build release, then measure portfwd against the direct path,
    /// iptables, nftables, docker-proxy and socat, side by side (needs root;
    /// takes minutes). Results go to bench/results/.
    Bench(bench::BenchArgs),
}

/// `cargo test --workspace` would also build portfwd-ebpf's binary as a host
/// test, which cannot link (`#![no_main]`); that crate only builds for the
/// BPF target, through portfwd's build script.
const NOT_FOR_HOST_TESTS: &str = "portfwd-ebpf";

fn main() -> ExitCode {
    match run_task(Cli::parse().task) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_task(task: Task) -> Result<ExitCode> {
    match task {
        Task::Setup => {
            setup::setup()?;
        }
        Task::Build { release } => {
            let env = setup::setup()?;
            build(&env, release)?;
        }
        Task::Lint => {
            let env = setup::setup()?;
            lint(&env)?;
        }
        Task::Test { args } => {
            let env = setup::setup()?;
            let mut test = cargo();
            test.args(["test", "--workspace", "--exclude", NOT_FOR_HOST_TESTS]);
            test.args(&args);
            env.apply(&mut test);
            // portfwd's files of what survives a reboot: never the host's
            // /var/lib/portfwd from a test.
            if std::env::var_os("PORTFWD_STATE_DIR").is_none() {
                test.env(
                    "PORTFWD_STATE_DIR",
                    std::env::temp_dir().join("portfwd-test-state"),
                );
            }
            eprintln!("xtask: {}", cmd::show(&test));
            return Ok(exit_code(cmd::status(&mut test)?));
        }
        Task::Demo { release } => {
            let env = setup::setup()?;
            let binary = build(&env, release)?;
            demo::demo(&binary)?;
        }
        Task::Bench(args) => {
            let env = setup::setup()?;
            let binary = build(&env, true)?;
            bench::run_bench(&binary, &args)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// rustfmt and clippy over every crate; the eBPF crate is checked for its
/// own target, the way aya-build compiles it.
fn lint(env: &BuildEnv) -> Result<()> {
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    eprintln!("xtask: {}", cmd::show(&fmt));
    run(&mut fmt)?;
    let mut host = cargo();
    host.args(["clippy", "--all-targets", "--", "-D", "warnings"]);
    env.apply(&mut host);
    eprintln!("xtask: {}", cmd::show(&host));
    run(&mut host)?;
    let mut ebpf = std::process::Command::new("cargo");
    ebpf.arg(format!("+{}", env.toolchain))
        .current_dir(workspace_root().join(NOT_FOR_HOST_TESTS))
        .args([
            "clippy",
            "--target",
            "bpfel-unknown-none",
            "-Z",
            "build-std=core",
            "--release",
            "--target-dir",
        ])
        .arg(target_dir().join("ebpf-lint"))
        .args(["--", "-D", "warnings"]);
    env.apply(&mut ebpf);
    eprintln!("xtask: {}", cmd::show(&ebpf));
    run(&mut ebpf)
}

/// `cargo build -p portfwd`; returns the path of the binary.
fn build(env: &BuildEnv, release: bool) -> Result<PathBuf> {
    let mut build = cargo();
    build.args(["build", "-p", "portfwd"]);
    if release {
        build.arg("--release");
    }
    env.apply(&mut build);
    eprintln!("xtask: {}", cmd::show(&build));
    run(&mut build)?;
    let profile = if release { "release" } else { "debug" };
    Ok(target_dir().join(profile).join("portfwd"))
}

fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// cargo's exit status as ours (128 + signal when it was killed).
fn exit_code(status: ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt as _;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
