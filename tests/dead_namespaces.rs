//! The state of a network namespace deleted without `detach` (its pinned
//! maps, and links that keep programs on the cgroup) is removed by the next
//! portfwd command run anywhere, which says so.
//!
//! A test binary of its own, its tests one at a time: any portfwd command
//! of a test running alongside would remove the state too, and only here
//! can a test tell which command did.
mod common;

use std::{
    io::Read,
    process::{Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use common::*;

/// Held by each test: one at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The cookie in the name of a state directory, netns-<cookie>.
fn cookie_of(dir: &std::path::Path) -> String {
    dir.file_name()
        .and_then(|n| n.to_str()?.strip_prefix("netns-"))
        .unwrap_or_else(|| panic!("state directory {} is not netns-<cookie>", dir.display()))
        .to_string()
}

/// What portfwd says when it removes the state of namespace `cookie`.
fn removed_line(cookie: &str) -> String {
    format!("portfwd: removed state of network namespace {cookie}, which no longer exists")
}

#[test]
fn state_of_a_deleted_namespace_is_removed_by_the_next_command() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let gone = Topology::new("gone", 1);
    gone.attach(&["8080=172.30.0.10:80"]);
    let dir = gone.state_dir();
    let cookie = cookie_of(&dir);
    assert_eq!(cgroup_hooks(&gone.cgroup), hooks(1, 1), "after attach");
    // A namespace that stays: its state must not be touched.
    let stays = Topology::new("stays", 1);
    stays.attach(&["8080=172.30.0.10:80"]);
    let kept = stays.state_dir();

    gone.host.delete();
    let out = stays.portfwd(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "list in the namespace that stays");
    let said =
        format!("portfwd: removed state of network namespace {cookie}, which no longer exists");
    assert_eq!(
        stderr.lines().filter(|l| *l == said).count(),
        1,
        "the command must say once that it removed the state: {stderr:?}"
    );
    assert!(!dir.exists(), "{} is left", dir.display());
    assert_eq!(
        cgroup_hooks(&gone.cgroup),
        hooks(0, 0),
        "the dead namespace's programs are still on {}",
        gone.cgroup.display()
    );

    assert!(
        kept.is_dir(),
        "the live namespace's state {} was removed",
        kept.display()
    );
    assert_eq!(cgroup_hooks(&stays.cgroup), hooks(1, 1), "live namespace");
    let out = stays.portfwd(&["list"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out, "list again");
    assert!(
        !stderr.contains(&cookie),
        "the state was removed already: {stderr:?}"
    );
}

#[test]
fn watch_removes_the_state_of_a_namespace_deleted_while_it_runs() {
    require_privileges!();
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stays = Topology::new("watching", 1);
    stays.attach(&["8080=172.30.0.10:80"]);
    let gone = Topology::new("gone-watched", 1);
    gone.attach(&["8080=172.30.0.10:80"]);
    let dir = gone.state_dir();
    let cookie = cookie_of(&dir);
    let mut watch = Command::new(PORTFWD)
        .args(["-n", &stays.host.name, "watch", "--timeout", "13"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start portfwd watch");
    // Let watch make its first round (the namespace is alive then).
    std::thread::sleep(Duration::from_millis(500));
    gone.host.delete();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dir.exists() && Instant::now() < deadline {
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
    assert!(!dir.exists(), "watch left {}: {stderr}", dir.display());
    assert!(
        stderr.lines().any(|l| l == removed_line(&cookie)),
        "watch must say it removed the state: {stderr:?}"
    );
    assert_eq!(cgroup_hooks(&gone.cgroup), hooks(0, 0), "programs left");
}
