//! Bad input: one clear line on stderr, exit code 2, and nothing changed.
mod common;

use std::process::Command;

use common::*;

/// The state a failed command must not have changed: pins and mapping table.
fn snapshot(topo: &Topology) -> (Vec<String>, String) {
    let dir = topo.state_dir();
    let mut pins: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    pins.sort();
    let list = topo.portfwd(&["list"]);
    (pins, String::from_utf8_lossy(&list.stdout).into_owned())
}

#[test]
fn bad_input_exits_2_and_changes_nothing() {
    require_privileges!();
    let topo = Topology::new("cli", 1);
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["attach", "docker0", "--map", "80"],
            "invalid mapping",
            "malformed spec",
        ),
        (
            &["attach", "docker0", "--map", "80=172.30.0.10"],
            "invalid mapping",
            "missing container port",
        ),
        (
            &["attach", "docker0", "--map", "0=172.30.0.10:80"],
            "port 0",
            "port 0",
        ),
        (
            &["attach", "docker0", "--map", "80=172.30.0.10:0"],
            "port 0",
            "container port 0",
        ),
        (
            &["attach", "docker0", "--map", "65536=172.30.0.10:80"],
            "out of range",
            "port > 65535",
        ),
        (
            &["attach", "docker0", "--map", "80=172.30.0.10:80/sctp"],
            "protocol",
            "bad protocol",
        ),
        (
            &["attach", "nosuchbr0", "--map", "80=172.30.0.10:80"],
            "no such interface",
            "unknown bridge",
        ),
        (
            &[
                "attach",
                "docker0",
                "--map",
                "80=172.30.0.10:80",
                "--external",
                "nosuch1",
            ],
            "no such interface",
            "unknown external interface",
        ),
        (
            &[
                "attach",
                "docker0",
                "--map",
                "80=172.30.0.10:80",
                "--map",
                "80=172.30.0.11:80",
            ],
            "twice",
            "same host port twice",
        ),
        (
            &[
                "attach",
                "docker0",
                "--map",
                "80=172.30.0.10:80",
                "--map",
                "127.0.0.1:80=172.30.0.11:80",
            ],
            "twice",
            "wildcard and specific address on one port",
        ),
        (
            &["attach", "docker0", "--external", "docker0"],
            "both",
            "bridge as external",
        ),
        (
            &["attach", "docker0", "--map", "8089=127.0.0.1:80"],
            "127.0.0.1 is a loopback address",
            "loopback container address",
        ),
        (
            &["attach", "docker0", "--map", "8089=127.9.9.9:80/udp"],
            "127.9.9.9 is a loopback address",
            "loopback container address, not 127.0.0.1",
        ),
        (
            &["attach", "docker0", "--map", "8089=224.0.0.5:80"],
            "224.0.0.5 cannot be a container address",
            "multicast container address",
        ),
        (
            &["detach", "docker0"],
            "not attached",
            "detach before attach",
        ),
        (
            &["attach", "docker0", "--map", "[fd00::1]:80=172.30.0.10:80"],
            "no NAT between IPv4 and IPv6",
            "an IPv6 host side with an IPv4 container",
        ),
        (
            &["attach", "docker0", "--map", "10.0.1.1:80=[fd00:30::10]:80"],
            "no NAT between IPv4 and IPv6",
            "an IPv4 host side with an IPv6 container",
        ),
        (
            &["attach", "docker0", "--map", "80=fd00:30::10:80"],
            "write it in brackets",
            "IPv6 container address without brackets",
        ),
        (
            &["attach", "docker0", "--map", "::1:80=[fd00:30::10]:80"],
            "write it in brackets",
            "IPv6 host address without brackets",
        ),
        (
            &["attach", "docker0", "--map", "80=[fd00:30::zz]:80"],
            "'fd00:30::zz' is not an IPv6 address",
            "malformed IPv6 address",
        ),
        (
            &["attach", "docker0", "--map", "80=[172.30.0.10]:80"],
            "not an IPv6 address",
            "IPv4 address in brackets",
        ),
        (
            &["attach", "docker0", "--map", "80=[fd00:30::10]"],
            "followed by :PORT",
            "IPv6 container without a port",
        ),
        (
            &["attach", "docker0", "--map", "80=[::1]:80"],
            "::1 is a loopback address",
            "IPv6 loopback container address",
        ),
        (
            &["attach", "docker0", "--map", "80=[fe80::2]:80"],
            "fe80::2 cannot be a container address",
            "link-local container address",
        ),
        (
            &[
                "attach",
                "docker0",
                "--map",
                "80=[fd00:30::10]:80",
                "--map",
                "[::1]:80=[fd00:30::11]:80",
            ],
            "[::1]:80/tcp is given twice",
            "IPv6 wildcard and a specific IPv6 address on one port",
        ),
    ];
    let before = snapshot(&topo);
    assert!(
        before.0.is_empty(),
        "fresh namespace should have no state: {before:?}"
    );
    for (args, needle, what) in cases {
        assert_usage_error(&topo.portfwd(args), needle, what);
        assert_eq!(snapshot(&topo), before, "{what}: state changed");
    }

    // Once attached, a conflicting add and a bad re-attach change nothing either.
    topo.attach(&["8080=172.30.0.10:80"]);
    let attached = snapshot(&topo);
    let conflicting: &[(&[&str], &str, &str)] = &[
        (
            &["attach", "docker0", "--map", "10.0.1.1:8080=172.30.0.10:81"],
            "already published",
            "shadowing an existing port",
        ),
        (
            &["attach", "docker0", "--map", "8081=172.30.0.10:99999"],
            "out of range",
            "bad spec on re-attach",
        ),
        (
            &["attach", "docker0", "--external", "lo"],
            "not an ethernet",
            "loopback as external",
        ),
        (
            &["add", "8089=127.0.0.1:80"],
            "127.0.0.1 is a loopback address",
            "adding a loopback container address",
        ),
        (
            &["add", "8090=172.30.0.10:80", "8089=127.0.0.1:80"],
            "127.0.0.1 is a loopback address",
            "a loopback container address among good ones",
        ),
        (
            &["add", "8091=[fd00:30::10]:80", "[::]:8092=172.30.0.10:80"],
            "no NAT",
            "a mixed-family SPEC among good ones",
        ),
        (
            &["del", "[::]:8080"],
            "[::]:8080/tcp is not published",
            "del of the IPv6 side of an IPv4-only port",
        ),
    ];
    for (args, needle, what) in conflicting {
        assert_usage_error(&topo.portfwd(args), needle, what);
        assert_eq!(snapshot(&topo), attached, "{what}: state changed");
    }
}

#[test]
fn unknown_namespace_exits_2() {
    require_privileges!();
    let out = Command::new(PORTFWD)
        .args([
            "-n",
            "pft-no-such-namespace",
            "attach",
            "docker0",
            "--map",
            "80=1.2.3.4:80",
        ])
        .output()
        .unwrap();
    assert_usage_error(&out, "no such network namespace", "unknown netns");
    assert!(!std::path::Path::new("/var/run/netns/pft-no-such-namespace").exists());
}

#[test]
fn not_root_exits_2() {
    require_privileges!();
    let topo = Topology::new("noroot", 0);
    let before = snapshot(&topo);
    // setpriv drops to an unprivileged user; the capability sets empty with it.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            PORTFWD,
            "-n",
            &topo.host.name,
        ])
        .args(["attach", "docker0", "--map", "80=172.30.0.10:80"])
        .output()
        .expect("setpriv");
    assert_usage_error(&out, "needs root", "unprivileged user");
    assert_eq!(snapshot(&topo), before, "unprivileged attach changed state");
}

#[test]
fn no_bpffs_exits_2() {
    require_privileges!();
    let topo = Topology::new("nobpffs", 0);
    // In a private mount namespace, hide /sys/fs behind a read-only tmpfs so
    // that /sys/fs/bpf neither is bpffs nor can be created.
    let script = format!(
        "mount -t tmpfs -o ro,size=1m none /sys/fs && exec {PORTFWD} -n {} attach docker0 --map 80=172.30.0.10:80",
        topo.host.name
    );
    let out = Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("unshare");
    assert_usage_error(&out, "bpffs", "no bpffs");
    assert!(!topo.state_dir().exists(), "nothing may be pinned");
}
