//! `cargo xtask setup`: everything the build and the tests need that cargo
//! does not fetch by itself. Each step checks first, so a second run only
//! looks and reports.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};

use crate::cmd::{self, capture, run, stdout, which};

/// Debian packages the integration tests and the demo use, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip and ss"),
    ("iputils-ping", "ping"),
    ("util-linux", "setpriv and unshare"),
    ("procps", "sysctl and kill"),
    (
        "iptables",
        "iptables (Docker end-to-end test and benchmarks)",
    ),
    (
        "python3",
        "clients placed in a cgroup by the host-local tests",
    ),
];

/// The bpf-linker release line portfwd's eBPF build expects.
const BPF_LINKER_LINE: &str = "0.13.";

/// The rustc toolchain that builds the eBPF object, as chosen by [`setup`].
/// Every cargo that xtask spawns gets [`BuildEnv::apply`]ed.
#[derive(Debug, Clone)]
pub struct BuildEnv {
    pub toolchain: &'static str,
    vars: Vec<(&'static str, &'static str)>,
}

impl BuildEnv {
    fn nightly() -> Self {
        // Nothing to export: portfwd/build.rs defaults to nightly, and leaving
        // the variables alone keeps a later plain `cargo build` from
        // rebuilding the eBPF object because they changed.
        Self {
            toolchain: "nightly",
            vars: Vec::new(),
        }
    }

    fn stable() -> Self {
        Self {
            toolchain: "stable",
            vars: vec![
                ("RUSTC_BOOTSTRAP", "1"),
                ("PORTFWD_EBPF_TOOLCHAIN", "stable"),
            ],
        }
    }

    pub fn apply<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.envs(self.vars.iter().copied())
    }
}

fn say(msg: impl std::fmt::Display) {
    eprintln!("setup: {msg}");
}

/// Runs every step; returns the environment for the builds.
pub fn setup() -> Result<BuildEnv> {
    let mut changed = false;
    ensure_cargo_bin_on_path();
    let env = ebpf_toolchain(&mut changed)?;
    bpf_linker(&env, &mut changed)?;
    packages(&mut changed)?;
    if changed {
        say("done");
    } else {
        say("everything is already present; nothing to do");
    }
    Ok(env)
}

/// Step 4, done first so that the later checks find what cargo
/// installed: ~/.cargo/bin goes on PATH for this process and its children.
fn ensure_cargo_bin_on_path() {
    let Some(bin) = cargo_bin() else { return };
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|dir| dir == bin) {
        return;
    }
    say(format!(
        "adding {} to PATH (cargo-installed tools live there)",
        bin.display()
    ));
    let joined = std::env::join_paths(std::iter::once(bin).chain(std::env::split_paths(&path)))
        .expect("PATH entries contain no ':'");
    // Single-threaded at this point: nothing else reads the environment.
    std::env::set_var("PATH", joined);
}

fn cargo_bin() -> Option<PathBuf> {
    match std::env::var_os("CARGO_HOME") {
        Some(home) if !home.is_empty() => Some(PathBuf::from(home).join("bin")),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin")),
    }
}

/// Step 1: nightly with rust-src when there is a nightly, otherwise stable
/// with `RUSTC_BOOTSTRAP=1` (the eBPF build needs `-Z build-std=core`).
fn ebpf_toolchain(changed: &mut bool) -> Result<BuildEnv> {
    let list = stdout(Command::new("rustup").args(["toolchain", "list"]))
        .context("rustup is needed to build the eBPF object (https://rustup.rs)")?;
    let env = if has_nightly(&list) {
        BuildEnv::nightly()
    } else {
        say(
            "no nightly toolchain: the eBPF object will be built with stable and RUSTC_BOOTSTRAP=1",
        );
        BuildEnv::stable()
    };
    let src = sysroot(env.toolchain)?.join("lib/rustlib/src/rust/library");
    if src.is_dir() {
        say(format!(
            "eBPF toolchain: {} with rust-src (present)",
            env.toolchain
        ));
    } else {
        say(format!(
            "installing rust-src for {}: the eBPF build compiles `core` from source (-Z build-std=core)",
            env.toolchain
        ));
        run(to_stderr(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            env.toolchain,
        ])))?;
        *changed = true;
    }
    if env.toolchain == "stable" {
        say("plain cargo needs these too: export RUSTC_BOOTSTRAP=1 PORTFWD_EBPF_TOOLCHAIN=stable");
    }
    Ok(env)
}

/// Whether `rustup toolchain list` shows `nightly-<host>`: a dated
/// `nightly-2025-...` is not what `+nightly` selects.
fn has_nightly(toolchains: &str) -> bool {
    toolchains.lines().any(|line| {
        line.strip_prefix("nightly-")
            .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    })
}

fn sysroot(toolchain: &str) -> Result<PathBuf> {
    let out = stdout(
        Command::new("rustc")
            .arg(format!("+{toolchain}"))
            .args(["--print", "sysroot"]),
    )?;
    Ok(PathBuf::from(out.trim()))
}

/// Step 2: bpf-linker 0.13, linked against the toolchain's own LLVM 22
/// (Debian ships no LLVM 22).
fn bpf_linker(env: &BuildEnv, changed: &mut bool) -> Result<()> {
    match which("bpf-linker") {
        Some(path) => match linker_version(&path) {
            Some(v) if v.starts_with(BPF_LINKER_LINE) => {
                say(format!("bpf-linker {v} (present: {})", path.display()));
                return Ok(());
            }
            Some(v) => say(format!(
                "{} is version {v}; portfwd needs 0.13",
                path.display()
            )),
            // Typically the toolchain it was linked against was updated and
            // its libLLVM is gone.
            None => say(format!("{} does not run", path.display())),
        },
        None => say("bpf-linker not found"),
    }

    let sysroot = sysroot(env.toolchain)?;
    let lib = sysroot.join("lib");
    let link_name = llvm_dylib(&lib)?;
    say(format!(
        "installing bpf-linker 0.13 (links the eBPF object) against {}'s lib{link_name}.so; this takes a few minutes",
        env.toolchain
    ));
    let rustflags = format!(
        "-L {0} -l dylib={link_name} -C link-arg=-Wl,-rpath,{0}",
        lib.display()
    );
    let install = |locked: bool| {
        let mut cmd = Command::new("cargo");
        cmd.args(["install", "bpf-linker", "--version", "~0.13", "--force"]);
        if locked {
            cmd.arg("--locked");
        }
        cmd.args([
            "--no-default-features",
            "--features",
            "llvm-22,no-llvm-linking",
        ])
        .env("RUSTFLAGS", &rustflags);
        to_stderr(&mut cmd);
        cmd::status(&mut cmd).map(|s| (s, cmd::show(&cmd)))
    };
    let (status, line) = install(true)?;
    if !status.success() {
        say(format!(
            "`{line}` failed ({status}); retrying without --locked"
        ));
        let (status, line) = install(false)?;
        if !status.success() {
            bail!("command failed ({status}): {line}");
        }
    }
    match which("bpf-linker").and_then(|p| linker_version(&p)) {
        Some(v) if v.starts_with(BPF_LINKER_LINE) => say(format!("bpf-linker {v} installed")),
        _ => bail!("bpf-linker was installed but `bpf-linker --version` does not report 0.13.x"),
    }
    *changed = true;
    Ok(())
}

/// The version `bpf-linker --version` reports, if it runs.
fn linker_version(path: &Path) -> Option<String> {
    let out = capture(Command::new(path).arg("--version")).ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().nth(1).map(str::to_owned)
}

/// The link name of `libLLVM-22-*.so` in `lib`, e.g. `LLVM-22-rust-1.97.0-nightly`.
fn llvm_dylib(lib: &Path) -> Result<String> {
    let entries = std::fs::read_dir(lib).with_context(|| format!("reading {}", lib.display()))?;
    for entry in entries {
        if let Some(link_name) = llvm_link_name(&entry?.file_name().to_string_lossy()) {
            return Ok(link_name.to_owned());
        }
    }
    bail!(
        "no libLLVM-22-*.so in {}: bpf-linker 0.13 is built here against the Rust toolchain's LLVM 22",
        lib.display()
    )
}

/// `libLLVM-22-X.so` -> `LLVM-22-X`; None for any other file name.
fn llvm_link_name(file_name: &str) -> Option<&str> {
    file_name
        .strip_prefix("lib")?
        .strip_suffix(".so")
        .filter(|stem| stem.starts_with("LLVM-22-"))
}

/// Step 3: the Debian packages, installed only when missing.
fn packages(changed: &mut bool) -> Result<()> {
    let missing: Vec<&(&str, &str)> = PACKAGES
        .iter()
        .filter(|(pkg, _)| !dpkg_installed(pkg))
        .collect();
    let names: Vec<&str> = PACKAGES.iter().map(|(pkg, _)| *pkg).collect();
    if missing.is_empty() {
        say(format!("system packages: {} (present)", names.join(" ")));
        return Ok(());
    }
    for (pkg, why) in &missing {
        say(format!(
            "missing Debian package {pkg}: the tests and the demo use {why}"
        ));
    }
    if which("apt-get").is_none() {
        bail!("apt-get not found; install the packages above with your package manager");
    }
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args(args);
        to_stderr(&mut cmd);
        cmd
    };
    say("running apt-get update, then installing the missing packages");
    run(&mut apt(&["update", "-q"]))?;
    let mut install = apt(&["install", "-y", "-q", "--no-install-recommends"]);
    install.args(missing.iter().map(|(pkg, _)| *pkg));
    run(&mut install)?;
    *changed = true;
    Ok(())
}

fn dpkg_installed(pkg: &str) -> bool {
    capture(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|out| out.status.success() && out.stdout.ends_with(b" installed"))
}

/// Setup reports on stderr only, including what the installers print.
fn to_stderr(cmd: &mut Command) -> &mut Command {
    cmd.stdout(std::io::stderr())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nightly_detection() {
        let list = "stable-x86_64-unknown-linux-gnu (active, default)\n\
                    nightly-x86_64-unknown-linux-gnu\n";
        assert!(has_nightly(list));
        assert!(!has_nightly("stable-x86_64-unknown-linux-gnu (default)\n"));
        assert!(!has_nightly(
            "nightly-2025-01-01-x86_64-unknown-linux-gnu\n"
        ));
    }

    #[test]
    fn llvm_dylib_names() {
        assert_eq!(
            llvm_link_name("libLLVM-22-rust-1.97.0-nightly.so"),
            Some("LLVM-22-rust-1.97.0-nightly")
        );
        assert_eq!(llvm_link_name("libLLVM.so.22.1-rust-1.97.0-nightly"), None);
        assert_eq!(llvm_link_name("libLLVM-21-rust-1.90.0-stable.so"), None);
        assert_eq!(llvm_link_name("librustc_driver-b5a965480ee51f9a.so"), None);
    }
}
