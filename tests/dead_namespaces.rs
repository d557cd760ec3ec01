//! The state of a network namespace deleted without `detach` (its pinned
//! maps, and links that keep programs on the cgroup) is removed by the next
//! portfwd command run anywhere, or by a running `watch`, which say so.
//!
//! A test binary of its own, its tests one at a time: any portfwd command
//! of a test running alongside would remove the state too, and only here
//! can a test tell which command did.
mod common;

use std::{
    io::Read,
    path::PathBuf,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use common::*;

/// Held by each test: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A topology attached to, with its state directory and the cookie in that
/// directory's name (netns-<cookie>).
struct Attached {
    topo: Topology,
    dir: PathBuf,
    cookie: String,
}

fn attached(tag: &str) -> Attached {
    let topo = Topology::new(tag, 1);
    topo.attach(&["8080=172.30.0.10:80"]);
    let dir = topo.state_dir();
    let cookie = dir
        .file_name()
        .and_then(|n| n.to_str()?.strip_prefix("netns-"))
        .unwrap_or_else(|| panic!("state directory {} is not netns-<cookie>", dir.display()))
        .to_string();
    assert_eq!(
        cgroup_hooks(&topo.cgroup),
        hooks(1, 1),
        "{tag}: after attach"
    );
    Attached { topo, dir, cookie }
}

/// What portfwd says when it removes the state of namespace `cookie`.
fn removed_line(cookie: &str) -> String {
    format!("portfwd: removed state of network namespace {cookie}, which no longer exists")
}

#[test]
fn state_of_a_deleted_namespace_is_removed_by_the_next_command() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let gone = attached("gone");
    // A namespace that stays: its state must not be touched.
    let stays = attached("stays");

    gone.topo.host.delete();
    let out = stays.topo.portfwd(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "list in the namespace that stays");
    assert_eq!(
        stderr
            .lines()
            .filter(|l| *l == removed_line(&gone.cookie))
            .count(),
        1,
        "the command must say once that it removed the state: {stderr:?}"
    );
    assert_nothing_left(&gone.dir, &gone.topo.cgroup, "the dead namespace");

    assert!(
        stays.dir.is_dir(),
        "the live namespace's state {} was removed",
        stays.dir.display()
    );
    assert_eq!(
        cgroup_hooks(&stays.topo.cgroup),
        hooks(1, 1),
        "live namespace"
    );
    let out = stays.topo.portfwd(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "list again");
    assert!(
        !stderr.contains(&gone.cookie),
        "the state was removed already: {stderr:?}"
    );
}

#[test]
fn watch_removes_the_state_of_a_namespace_deleted_while_it_runs() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stays = attached("watching");
    let gone = attached("gone-watched");
    let mut watch = Command::new(PORTFWD)
        .args(["-n", &stays.topo.host.name, "watch", "--timeout", "13"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start portfwd watch");
    // Let watch make its first round (the namespace is alive then).
    std::thread::sleep(Duration::from_millis(500));
    gone.topo.host.delete();
    let deadline = Instant::now() + Duration::from_secs(20);
    while gone.dir.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = watch.wait().expect("wait for watch");
    let mut stderr = String::new();
    let _ = watch
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr);
    assert!(status.success(), "watch: {status}: {stderr}");
    assert!(
        stderr.lines().any(|l| l == removed_line(&gone.cookie)),
        "watch must say it removed the state: {stderr:?}"
    );
    assert_nothing_left(&gone.dir, &gone.topo.cgroup, "after watch");
}
