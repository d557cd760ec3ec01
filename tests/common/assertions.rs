//! The checks every test file shares: whether the tests can run here, what
//! a usage error looks like, and what a successful command returns.
use std::process::{Command, Output};

use super::Topology;

/// True if the tests can run here. Under CI=true a machine that cannot run
/// them is a failure, never a silent skip.
pub fn privileged_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let netns_ok = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && netns_ok {
        return true;
    }
    let why = if root {
        "iproute2 (`ip`) is missing"
    } else {
        "not running as root"
    };
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: cannot run network tests under CI=true: {why}");
    }
    eprintln!("SKIPPED {test}: {why} (needs root, BPF and network namespaces)");
    false
}

/// Returns from the calling test unless it can run here (see
/// `privileged_or_skip`): under CI=true it fails instead.
#[allow(unused_macros)] // tests/datapath checks for itself
macro_rules! require_privileges {
    () => {
        if !$crate::common::privileged_or_skip(module_path!()) {
            return;
        }
    };
}
pub(crate) use require_privileges;

/// Asserts a usage error: exit code 2, nothing on stdout, and a single line
/// on stderr, "portfwd: error: ...", that mentions `needle` (case aside).
pub fn assert_usage_error(out: &Output, needle: &str, what: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: expected exit 2, got {} (stderr: {stderr})",
        out.status
    );
    let lines: Vec<_> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one line on stderr, got {lines:?}"
    );
    assert!(
        lines[0].starts_with("portfwd: error: "),
        "{what}: stderr {:?} should be a portfwd error",
        lines[0]
    );
    assert!(
        lines[0].to_lowercase().contains(&needle.to_lowercase()),
        "{what}: stderr {:?} should mention {needle:?}",
        lines[0]
    );
    assert!(out.stdout.is_empty(), "{what}: nothing should go to stdout");
}

/// `portfwd list --json` for the topology's host namespace, parsed.
pub fn list_json(topo: &Topology) -> Vec<serde_json::Value> {
    let out = topo.portfwd(&["list", "--json"]);
    assert!(
        out.status.success(),
        "list --json: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<serde_json::Value>>(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "list --json is not a JSON array ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Asserts a portfwd invocation succeeded; returns its stdout.
pub fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
