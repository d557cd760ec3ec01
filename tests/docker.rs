//! portfwd on a real Docker host: real containers on Docker's docker0,
//! Docker's own iptables rules and `-p` ports next to portfwd's, container
//! names in SPECs resolved through the Docker engine.
//!
//! Unlike the other integration tests this one works in the root network
//! namespace, because that is where Docker's bridge is. What it adds there
//! (a veth pair to a client namespace, portfwd's attachment, containers, the
//! test image) is undone by `Scene`'s Drop, also when the test fails. A
//! dockerd that the test had to start is stopped again; one that was running
//! is left alone. The image is removed too (it is rebuilt in a second from
//! the host's busybox, and nothing is left in Docker's store).
//!
//! Needs root, Debian's docker.io and busybox-static (installed with apt-get
//! when missing). Under CI=true a machine where it cannot run fails the test;
//! elsewhere it prints SKIPPED.
mod common;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use common::{
    assert_usage_error, connect_from,
    docker::{
        busybox_rootfs, cannot_run, client_link, install_packages, run_for, sh, try_sh, wait_for,
        Dockerd, BUSYBOX, SHORT,
    },
    ok, persist_dir, require_privileges, PORTFWD,
};

const IMAGE: &str = "portfwd-test-busybox:latest";
const BRIDGE: &str = "docker0";
/// Published by portfwd.
const PORT: u16 = 18080;
/// Published by Docker itself (`-p`).
const DOCKER_PORT: u16 = 18081;
/// For the names that must not resolve (never published).
const SPARE_PORT: u16 = 18082;
const PAGE_WEB: &str = "portfwd docker test: the web container";
const PAGE_DOCKER_P: &str = "portfwd docker test: the docker -p container";

/// Bound for one HTTP GET inside the client (busybox wget has no usable
/// timeout option: `-T` crashes the static build in Debian 12).
const GET_SECS: &str = "10";

fn portfwd(args: &[&str]) -> Output {
    // What survives a reboot goes to the tests' directory, not the host's.
    let dir = format!("{}={}", portfwd::persist::DIR_ENV, persist_dir().display());
    let mut full = vec!["env", &dir, PORTFWD];
    full.extend_from_slice(args);
    run_for(&full, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

fn portfwd_ok(args: &[&str]) -> String {
    ok(portfwd(args), &format!("portfwd {args:?}"))
}

/// Docker's filter and nat tables of both families as `iptables-save` and
/// `ip6tables-save` print them, without their comment lines (they hold
/// timestamps) and the packet counters of the chain headers.
fn iptables_state() -> String {
    let mut out = String::new();
    for save in ["iptables-save", "ip6tables-save"] {
        for table in ["filter", "nat"] {
            out.push_str(&format!("# {save} -t {table}\n"));
            let text = sh(&[save, "-t", table]);
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let line = match (line.starts_with(':'), line.rfind(" [")) {
                    (true, Some(at)) => &line[..at],
                    _ => line,
                };
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    assert!(
        out.contains(":FORWARD"),
        "iptables-save shows no FORWARD chain:\n{out}"
    );
    out
}

fn assert_same_iptables(before: &str, when: &str) {
    let now = iptables_state();
    if now != before {
        let removed: Vec<&str> = before
            .lines()
            .filter(|l| !now.lines().any(|n| n == *l))
            .collect();
        let added: Vec<&str> = now
            .lines()
            .filter(|l| !before.lines().any(|b| b == *l))
            .collect();
        panic!("Docker's iptables state changed {when}:\nremoved: {removed:#?}\nadded: {added:#?}\nnow:\n{now}");
    }
}

// ---------------------------------------------------------------------------
// The scene: everything the test adds, undone on drop.

struct Scene {
    pid: u32,
    rootfs: PathBuf,
    image: bool,
    containers: Vec<String>,
    /// Docker networks the test created (removed after the containers).
    networks: Vec<String>,
    client_ns: Option<String>,
    veth_root: Option<String>,
    /// The bridge portfwd is attached to.
    attached: Option<String>,
    dockerd: Dockerd,
}

impl Scene {
    /// Docker and the test's packages installed, an engine answering, and
    /// nothing of portfwd attached in the root namespace (the test attaches
    /// there: never over someone's setup); Err says why the test cannot run.
    fn start() -> Result<Self, String> {
        install_packages()
            .map_err(|e| format!("cannot install docker.io / busybox-static: {e}"))?;
        let state = portfwd::state::StateDir::current().expect("netns cookie");
        if state.exists() {
            return Err(format!(
                "portfwd is already attached in the root network namespace ({}); the test would change it",
                state.path.display()
            ));
        }
        let dockerd = Dockerd::ensure().map_err(|e| format!("no Docker engine: {e}"))?;
        Ok(Self::new(dockerd))
    }

    fn new(dockerd: Dockerd) -> Self {
        let pid = std::process::id();
        Self {
            pid,
            rootfs: std::env::temp_dir().join(format!("pft-docker-rootfs-{pid}")),
            image: false,
            containers: Vec::new(),
            networks: Vec::new(),
            client_ns: None,
            veth_root: None,
            attached: None,
            dockerd,
        }
    }

    /// `portfwd-test-busybox`: the host's static busybox with its applets,
    /// two web roots (one with a CGI script that prints the client's
    /// address), imported with `docker import`: no registry involved.
    fn build_image(&mut self) {
        let root = &self.rootfs;
        busybox_rootfs(root, [PAGE_WEB, PAGE_DOCKER_P]);
        let import = format!("tar -C '{}' -c . | docker import - {IMAGE}", root.display());
        self.image = true;
        try_sh(&["sh", "-c", &import], Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("building {IMAGE}: {e}"));
    }

    /// `docker run -d` (or `docker create`), recorded for removal; the id.
    fn container(&mut self, verb: &str, name: &str, extra: &[&str], cmd: &[&str]) -> String {
        self.containers.push(name.to_string());
        let mut args = vec!["docker", verb, "--name", name];
        if verb == "run" {
            args.push("-d");
        }
        args.extend_from_slice(extra);
        args.push(IMAGE);
        args.extend_from_slice(cmd);
        try_sh(&args, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}"))
            .trim()
            .to_string()
    }

    fn veth_names(&self) -> (String, String) {
        (format!("pfd{}r", self.pid), format!("pfd{}c", self.pid))
    }

    /// The client side: namespace `pft-docker-<pid>-client` with a veth to
    /// the root namespace, 10.199.x.2/30 there, 10.199.x.1/30 on our side,
    /// default route via our side. Returns (root address, client address).
    fn client(&mut self) -> (Ipv4Addr, Ipv4Addr) {
        let x = (self.pid % 254 + 1) as u8;
        let (root_ip, client_ip) = (Ipv4Addr::new(10, 199, x, 1), Ipv4Addr::new(10, 199, x, 2));
        let ns = format!("pft-docker-{}-client", self.pid);
        let (root_if, client_if) = self.veth_names();
        self.client_ns = Some(ns.clone());
        self.veth_root = Some(root_if.clone());
        client_link(&ns, (&root_if, &client_if), root_ip, client_ip);
        (root_ip, client_ip)
    }

    /// GET from the client namespace.
    fn client_get(&self, url: &str) -> Result<String, String> {
        let ns = self.client_ns.as_deref().expect("client namespace");
        try_sh(
            &[
                "ip", "netns", "exec", ns, "timeout", GET_SECS, BUSYBOX, "wget", "-qO-", url,
            ],
            SHORT,
        )
    }

    fn attach(&mut self, extra: &[&str], map: &str) -> String {
        self.attach_to(BRIDGE, extra, map)
    }

    fn attach_to(&mut self, bridge: &str, extra: &[&str], map: &str) -> String {
        let mut args = vec!["attach", bridge];
        args.extend_from_slice(extra);
        args.extend(["--map", map]);
        self.attached = Some(bridge.to_string());
        portfwd_ok(&args)
    }

    fn detach(&mut self) {
        let bridge = self.attached.take().expect("attached");
        let out = portfwd_ok(&["detach", &bridge]);
        assert!(out.contains("detached"), "detach said: {out}");
    }

    /// An IPv6 address on both ends of the client's veth (fd19:9:x::1 ours,
    /// ::2 the client's, its default route via ours): (ours, the client's).
    fn client_ipv6(&mut self) -> (Ipv6Addr, Ipv6Addr) {
        let x = (self.pid % 254 + 1) as u16;
        let (ours, theirs) = (
            Ipv6Addr::new(0xfd19, 9, x, 0, 0, 0, 0, 1),
            Ipv6Addr::new(0xfd19, 9, x, 0, 0, 0, 0, 2),
        );
        let ns = self.client_ns.clone().expect("client namespace");
        let (root_if, client_if) = self.veth_names();
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{ours}/64"),
            "dev",
            &root_if,
            "nodad",
        ]);
        let theirs_cidr = format!("{theirs}/64");
        sh(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &theirs_cidr,
            "dev",
            &client_if,
            "nodad",
        ]);
        sh(&[
            "ip",
            "-n",
            &ns,
            "-6",
            "route",
            "add",
            "default",
            "via",
            &ours.to_string(),
        ]);
        (ours, theirs)
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let quiet = |args: &[&str], limit: Duration| {
            if let Err(e) = try_sh(args, limit) {
                eprintln!("docker test cleanup: {e}");
            }
        };
        if let Some(bridge) = self.attached.take() {
            quiet(&[PORTFWD, "detach", &bridge], Duration::from_secs(60));
        }
        for name in self.containers.drain(..) {
            quiet(&["docker", "rm", "-f", &name], Duration::from_secs(60));
        }
        for net in self.networks.drain(..) {
            quiet(&["docker", "network", "rm", &net], Duration::from_secs(60));
        }
        if self.image {
            // Without -f: left in place if another run's containers use it.
            let _ = try_sh(&["docker", "rmi", IMAGE], Duration::from_secs(60));
        }
        if let Some(veth) = self.veth_root.take() {
            // Deleting one end deletes the pair and the address with it.
            let _ = try_sh(&["ip", "link", "del", &veth], SHORT);
        }
        if let Some(ns) = self.client_ns.take() {
            quiet(&["ip", "netns", "del", &ns], SHORT);
        }
        let _ = std::fs::remove_dir_all(&self.rootfs);
        self.dockerd.stop();
    }
}

// ---------------------------------------------------------------------------

fn host_get(url: &str) -> Result<String, String> {
    try_sh(&["timeout", GET_SECS, BUSYBOX, "wget", "-qO-", url], SHORT)
}

/// GET from a new container on docker0 (`docker run --rm`).
fn container_get(url: &str) -> Result<String, String> {
    try_sh(
        &[
            "docker", "run", "--rm", IMAGE, "timeout", GET_SECS, "wget", "-qO-", url,
        ],
        Duration::from_secs(60),
    )
}

fn assert_page(got: Result<String, String>, page: &str, what: &str) {
    match got {
        Ok(body) => assert_eq!(body.trim(), page, "{what}: wrong page"),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn inspect_ip(name: &str) -> Ipv4Addr {
    let ip = sh(&[
        "docker",
        "inspect",
        "-f",
        "{{.NetworkSettings.IPAddress}}",
        name,
    ]);
    ip.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} has no IPv4 address: {ip:?}"))
}

fn bridge_ip() -> Ipv4Addr {
    let out = sh(&["ip", "-4", "-o", "addr", "show", "dev", BRIDGE]);
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no IPv4 address on {BRIDGE}: {out}"))
}

/// The mappings `portfwd list --json` shows in the root namespace.
fn listed() -> Vec<serde_json::Value> {
    let out = portfwd_ok(&["list", "--json"]);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("list --json ({e}): {out}"))
}

fn assert_nothing_attached(when: &str) {
    let out = portfwd_ok(&["list"]);
    assert!(
        out.contains("nothing attached"),
        "{when}: `portfwd list` says:\n{out}"
    );
    let state = portfwd::state::StateDir::current().expect("netns cookie");
    assert!(!state.exists(), "{when}: {} is left", state.path.display());
}

/// The body of the container's cgi-bin/ip page (REMOTE_ADDR, bare or as
/// "[::ffff:a.b.c.d]") names `ip`.
fn assert_peer(seen: &str, ip: Ipv4Addr, who: &str) {
    eprintln!(
        "docker test: {who} seen by the container as {}",
        seen.trim()
    );
    assert!(
        seen.contains(&format!("{ip}]")) || seen.trim() == ip.to_string(),
        "the container should see the {who} as {ip}, saw {seen:?}"
    );
}

/// A usage error (see `common::assert_usage_error`) after which nothing is
/// attached.
fn assert_refused(args: &[&str], needle: &str) {
    assert_usage_error(&portfwd(args), needle, &format!("portfwd {args:?}"));
    assert_nothing_attached(&format!("after the failed portfwd {args:?}"));
}

/// The address of one family of a container on its one network.
fn inspect_network_ip<T: std::str::FromStr>(name: &str, field: &str) -> T {
    let format = format!("{{{{range .NetworkSettings.Networks}}}}{{{{.{field}}}}}{{{{end}}}}");
    let ip = sh(&["docker", "inspect", "-f", &format, name]);
    ip.trim()
        .parse()
        .unwrap_or_else(|_| panic!("{name} has no {field}: {ip:?}"))
}

/// Step 6: a `docker network create --ipv6` bridge (br-<id>, not docker0)
/// with a container on it, published by name: the name publishes both of
/// its families, an IPv6 and an IPv4 remote client each reach it with their
/// own address, the host reaches it over [::1], and neither family's Docker
/// rules change.
fn ipv6_network(scene: &mut Scene, root_if: &str, (root_ip, client_ip): (Ipv4Addr, Ipv4Addr)) {
    let pid = scene.pid;
    let x = pid % 254 + 1;
    let net = format!("pft-v6-{pid}");
    let (subnet6, subnet4) = (format!("fd17:{x:x}::/64"), format!("10.198.{x}.0/24"));
    scene.networks.push(net.clone());
    let id = sh(&[
        "docker", "network", "create", "--ipv6", "--subnet", &subnet6, "--subnet", &subnet4, &net,
    ]);
    let bridge = format!("br-{}", &id.trim()[..12]);
    let web6 = format!("pft-web6-{pid}");
    scene.container(
        "run",
        &web6,
        &["--network", &net],
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let ip6: Ipv6Addr = inspect_network_ip(&web6, "GlobalIPv6Address");
    let ip4: Ipv4Addr = inspect_network_ip(&web6, "IPAddress");
    wait_for(
        "the dual-stack container to serve over IPv6",
        Duration::from_secs(30),
        || host_get(&format!("http://[{ip6}]/")),
    )
    .unwrap();
    let (ours6, client6) = scene.client_ipv6();
    let rules = iptables_state();

    let out = scene.attach_to(
        &bridge,
        &["--external", root_if],
        &format!("{PORT}={web6}:80"),
    );
    for endpoint in [format!("{ip4}:80"), format!("[{ip6}]:80")] {
        assert!(
            out.contains(&endpoint),
            "attach should publish {web6} at {endpoint} (both of its families):\n{out}"
        );
    }
    assert_same_iptables(&rules, "after attach to the dual-stack network");
    let mut ips: Vec<String> = listed()
        .iter()
        .map(|r| r["container_ip"].as_str().unwrap_or("?").to_string())
        .collect();
    ips.sort();
    let mut want = vec![ip4.to_string(), ip6.to_string()];
    want.sort();
    assert_eq!(ips, want, "list should show one mapping per family");

    let url6 = format!("http://[{ours6}]:{PORT}/");
    assert_page(scene.client_get(&url6), PAGE_WEB, "IPv6 remote client");
    let seen = scene.client_get(&format!("{url6}cgi-bin/ip")).unwrap();
    assert!(
        seen.contains(&client6.to_string()),
        "the container should see the IPv6 client as {client6}, saw {seen:?}"
    );
    let url4 = format!("http://{root_ip}:{PORT}/");
    assert_page(scene.client_get(&url4), PAGE_WEB, "IPv4 remote client");
    assert_peer(
        &scene.client_get(&format!("{url4}cgi-bin/ip")).unwrap(),
        client_ip,
        "IPv4 remote client of the dual-stack network",
    );
    assert_page(
        host_get(&format!("http://[::1]:{PORT}/")),
        PAGE_WEB,
        "host via [::1]",
    );

    scene.detach();
    assert_same_iptables(&rules, "after detach from the dual-stack network");
    assert_nothing_attached("after detach from the dual-stack network");
}

/// The tests of this file take turns: each attaches in the root namespace
/// and may start and stop dockerd.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn docker_end_to_end() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let started = Instant::now();
    require_privileges!();
    let mut scene = match Scene::start() {
        Ok(scene) => scene,
        Err(why) => return cannot_run(&why),
    };
    let pid = scene.pid;

    // 1. The image and the containers: the one portfwd publishes (no -p),
    //    and one that Docker publishes itself with -p.
    scene.build_image();
    let web = format!("pft-web-{pid}");
    let web_id = scene.container(
        "run",
        &web,
        &[],
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    let dp = format!("pft-dp-{pid}");
    let publish = format!("{DOCKER_PORT}:80");
    scene.container(
        "run",
        &dp,
        &["-p", &publish],
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www2"],
    );
    let web_ip = inspect_ip(&web);
    let gateway = bridge_ip();
    let web_url = format!("http://{web_ip}/");
    wait_for(
        "the web container to serve",
        Duration::from_secs(30),
        || host_get(&web_url),
    )
    .unwrap();
    let dp_local = format!("http://127.0.0.1:{DOCKER_PORT}/");
    wait_for("the -p container to serve", Duration::from_secs(30), || {
        host_get(&dp_local)
    })
    .unwrap();

    // 2. The client namespace, a "remote" client behind a veth.
    let (root_ip, client_ip) = scene.client();
    let (root_if, _) = scene.veth_names();
    let dp_remote = format!("http://{root_ip}:{DOCKER_PORT}/");
    let published = format!("http://{root_ip}:{PORT}/");
    assert_page(
        scene.client_get(&dp_remote),
        PAGE_DOCKER_P,
        "docker -p from the client, before attach",
    );
    assert_page(
        host_get(&dp_local),
        PAGE_DOCKER_P,
        "docker -p from the host, before attach",
    );

    let iptables = iptables_state();

    // 3. Attach as on a real host: socket hooks on the cgroup2 root, the
    //    container named rather than addressed.
    let out = scene.attach(&["--external", &root_if], &format!("{PORT}={web}:80"));
    assert!(
        out.contains(&format!("{web_ip}:80")),
        "attach did not resolve {web} to {web_ip}:\n{out}"
    );
    assert_same_iptables(&iptables, "after attach");
    let rows = listed();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["container_ip"], web_ip.to_string(), "{rows:#?}");
    assert_eq!(rows[0]["host_port"], PORT, "{rows:#?}");

    // The host itself, through the connect4 hook: loopback and docker0's address.
    assert_page(
        host_get(&format!("http://127.0.0.1:{PORT}/")),
        PAGE_WEB,
        "host via 127.0.0.1",
    );
    assert_page(
        host_get(&format!("http://{gateway}:{PORT}/")),
        PAGE_WEB,
        "host via docker0's address",
    );
    assert_page(
        host_get(&published),
        PAGE_WEB,
        "host via the external interface's address",
    );
    // Another container, hairpin through a host address: source-NATed to
    // that address, as docker-proxy would show it.
    assert_page(
        container_get(&format!("http://{gateway}:{PORT}/")),
        PAGE_WEB,
        "container via docker0's address",
    );
    assert_peer(
        &container_get(&format!("http://{gateway}:{PORT}/cgi-bin/ip")).unwrap(),
        gateway,
        "hairpin client",
    );
    // The client namespace, hooked like every process on the host (cgroup2
    // root), reaches the port through the external path with its own
    // address: the socket hooks act in the host's namespace only.
    assert_page(
        scene.client_get(&published),
        PAGE_WEB,
        "remote client, hooks on",
    );
    assert_peer(
        &scene.client_get(&format!("{published}cgi-bin/ip")).unwrap(),
        client_ip,
        "remote client",
    );
    // Docker's own -p keeps working.
    assert_page(
        scene.client_get(&dp_remote),
        PAGE_DOCKER_P,
        "docker -p from the client, attached",
    );
    assert_page(
        host_get(&dp_local),
        PAGE_DOCKER_P,
        "docker -p from the host, attached",
    );

    scene.detach();
    assert_same_iptables(&iptables, "after detach");
    assert_nothing_attached("after detach");
    assert_page(
        scene.client_get(&dp_remote),
        PAGE_DOCKER_P,
        "docker -p from the client, after detach",
    );
    assert_page(
        host_get(&dp_local),
        PAGE_DOCKER_P,
        "docker -p from the host, after detach",
    );
    assert!(
        host_get(&format!("http://127.0.0.1:{PORT}/")).is_err(),
        "{PORT} still answers after detach"
    );

    // 4. --no-local: no socket hooks, the remote client still served by the
    //    TC programs (Docker's br_netfilter and FORWARD DROP in place). The
    //    container by its id.
    let short_id = &web_id[..12];
    let out = scene.attach(
        &["--external", &root_if, "--no-local"],
        &format!("{PORT}={short_id}:80"),
    );
    assert!(
        out.contains(&format!("{web_ip}:80")),
        "attach did not resolve {short_id} to {web_ip}:\n{out}"
    );
    assert_same_iptables(&iptables, "after attach --no-local");
    assert_page(scene.client_get(&published), PAGE_WEB, "remote client");
    assert_peer(
        &scene.client_get(&format!("{published}cgi-bin/ip")).unwrap(),
        client_ip,
        "remote client",
    );
    assert_page(
        scene.client_get(&dp_remote),
        PAGE_DOCKER_P,
        "docker -p from the client, attached --no-local",
    );
    assert_page(
        host_get(&dp_local),
        PAGE_DOCKER_P,
        "docker -p from the host, attached --no-local",
    );
    scene.detach();
    assert_same_iptables(&iptables, "after the second detach");
    assert_nothing_attached("after the second detach");
    assert_page(
        scene.client_get(&dp_remote),
        PAGE_DOCKER_P,
        "docker -p from the client, at the end",
    );

    // 5. Names that do not resolve: usage errors, nothing attached.
    let spare = |target: &str| format!("{SPARE_PORT}={target}:80");
    assert_refused(
        &[
            "attach",
            BRIDGE,
            "--external",
            &root_if,
            "--map",
            &spare("no-such-container-xyz"),
        ],
        "no such container: no-such-container-xyz",
    );
    let stopped = format!("pft-stopped-{pid}");
    scene.container(
        "create",
        &stopped,
        &[],
        &["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"],
    );
    assert_refused(
        &[
            "attach",
            BRIDGE,
            "--external",
            &root_if,
            "--map",
            &spare(&stopped),
        ],
        &format!("container {stopped} is not running"),
    );
    assert_refused(
        &["add", &spare(&stopped)],
        &format!("container {stopped} is not running"),
    );
    assert_same_iptables(&iptables, "after the failed commands");

    // 6. A user-defined dual-stack network.
    ipv6_network(&mut scene, &root_if, (root_ip, client_ip));

    drop(scene);
    let state = portfwd::state::StateDir::current().expect("netns cookie");
    assert!(!state.exists(), "{} is left", state.path.display());
    eprintln!(
        "docker test: passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The engine unreachable: a usage error naming the socket (the resolver
/// takes the socket path, so no Docker needs to be stopped for this).
#[test]
fn unreachable_engine_is_a_usage_error() {
    let socket = format!("/nonexistent-{}/docker.sock", std::process::id());
    let err = portfwd::docker::resolve(&socket, ["web"], &[BRIDGE.to_string()]).unwrap_err();
    assert!(err.is_usage(), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!("cannot reach the Docker engine at {socket}: ")),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");
}

/// Published by name while `watch` runs, and followed.
const FOLLOW_PORT: u16 = 18090;
/// Published by address, so that something is attached before `add`.
const FOLLOW_SPARE_PORT: u16 = 18091;

/// `portfwd watch`, killed on drop if it is still running.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The row of `port` in `list --json`.
fn row(port: u16) -> serde_json::Value {
    listed()
        .into_iter()
        .find(|r| r["host_port"] == port)
        .unwrap_or_else(|| panic!("{port} is not listed: {:#?}", listed()))
}

/// A TCP connection from the client namespace to `ip:port` is refused (a
/// RST answers the SYN: no hang, no other container answering).
fn assert_refused_now(scene: &Scene, ip: Ipv4Addr, port: u16, what: &str) {
    let ns = scene.client_ns.clone().expect("client namespace");
    let started = Instant::now();
    match connect_from(&ns, ip, port) {
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "{what}: the connection should be refused, got {e} after {:?}",
            started.elapsed()
        ),
        Ok(_) => panic!("{what}: {ip}:{port} accepted a connection"),
    }
}

#[test]
fn a_mapping_by_name_follows_its_container() {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    require_privileges!();
    let mut scene = match Scene::start() {
        Ok(scene) => scene,
        Err(why) => return cannot_run(&why),
    };
    let pid = scene.pid;
    scene.build_image();
    let web = format!("pft-follow-{pid}");
    let httpd = |root: &'static str| ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", root];
    scene.container("run", &web, &[], &httpd("/www"));
    let old_ip = inspect_ip(&web);
    let (root_ip, _) = scene.client();
    let (root_if, _) = scene.veth_names();
    let url = format!("http://{root_ip}:{FOLLOW_PORT}/");
    wait_for("the container to serve", Duration::from_secs(30), || {
        host_get(&format!("http://{old_ip}/"))
    })
    .unwrap();

    scene.attach(
        &["--external", &root_if],
        &format!("{FOLLOW_SPARE_PORT}={old_ip}:80"),
    );
    let log = std::env::temp_dir().join(format!("pft-follow-watch-{pid}.log"));
    let watch = Watch(
        Command::new(PORTFWD)
            .env(portfwd::persist::DIR_ENV, persist_dir())
            .args(["watch", "--timeout", "240"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start portfwd watch"),
    );
    let out = portfwd_ok(&["add", &format!("{FOLLOW_PORT}={web}:80")]);
    assert!(out.contains(&format!("{old_ip}:80")), "add said: {out}");
    assert_page(scene.client_get(&url), PAGE_WEB, "by name, running");
    assert_eq!(row(FOLLOW_PORT)["container_name"], web.as_str());
    let human = portfwd_ok(&["list"]);
    assert!(human.contains(&web), "list should name {web}:\n{human}");
    let watch_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // Stopped: refused at once, the port still reserved.
    sh(&["docker", "stop", "-t", "1", &web]);
    wait_for(
        "the mapping to be held after docker stop",
        Duration::from_secs(15),
        || match row(FOLLOW_PORT)["container_ip"].as_str() {
            Some("0.0.0.0") => Ok(()),
            other => Err(format!("container_ip {other:?}; watch: {}", watch_log())),
        },
    )
    .unwrap();
    assert_refused_now(&scene, root_ip, FOLLOW_PORT, "after docker stop");
    let bind = std::net::TcpListener::bind((Ipv4Addr::UNSPECIFIED, FOLLOW_PORT));
    assert!(
        bind.is_err(),
        "a held port must stay reserved: a host process could bind {FOLLOW_PORT}"
    );
    // The host's own clients (the connect hook) are refused too.
    let local = std::net::TcpStream::connect_timeout(
        &(Ipv4Addr::LOCALHOST, FOLLOW_PORT).into(),
        Duration::from_secs(5),
    );
    assert_eq!(
        local.as_ref().map_err(std::io::Error::kind).err(),
        Some(std::io::ErrorKind::ConnectionRefused),
        "a host process connecting to 127.0.0.1:{FOLLOW_PORT} should be refused: {local:?}"
    );
    let human = portfwd_ok(&["list"]);
    assert!(
        human.contains(&format!("{web} (held):80")),
        "list should show the mapping held:\n{human}"
    );

    // Another container takes the old address: it must not get the traffic.
    let thief = format!("pft-thief-{pid}");
    scene.container("run", &thief, &[], &httpd("/www2"));
    assert_eq!(
        inspect_ip(&thief),
        old_ip,
        "the test needs the second container at the first one's old address"
    );
    wait_for(
        "the second container to serve",
        Duration::from_secs(30),
        || host_get(&format!("http://{old_ip}/")),
    )
    .unwrap();
    assert_refused_now(
        &scene,
        root_ip,
        FOLLOW_PORT,
        "while another container holds the old address",
    );

    // Started again: at a new address, followed there.
    sh(&["docker", "start", &web]);
    let new_ip = inspect_ip(&web);
    assert_ne!(new_ip, old_ip, "docker gave {web} its old address back");
    let body = wait_for(
        "the mapping to follow docker start",
        Duration::from_secs(15),
        || scene.client_get(&url),
    )
    .unwrap_or_else(|e| panic!("{e}; watch: {}", watch_log()));
    assert_eq!(
        body.trim(),
        PAGE_WEB,
        "after docker start the port must reach {web}, not {thief}"
    );
    assert_eq!(row(FOLLOW_PORT)["container_ip"], new_ip.to_string());

    // Renamed: followed by id, under its new name.
    let renamed = format!("pft-renamed-{pid}");
    sh(&["docker", "rename", &web, &renamed]);
    scene.containers.push(renamed.clone());
    wait_for(
        "list to show the new name",
        Duration::from_secs(15),
        || match row(FOLLOW_PORT)["container_name"].as_str() {
            Some(n) if n == renamed => Ok(()),
            other => Err(format!("container_name {other:?}")),
        },
    )
    .unwrap();
    sh(&["docker", "stop", "-t", "1", &renamed]);
    wait_for(
        "the renamed container's port to refuse",
        Duration::from_secs(15),
        || match connect_from(scene.client_ns.as_deref().unwrap(), root_ip, FOLLOW_PORT) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .unwrap();
    sh(&["docker", "start", &renamed]);
    let body = wait_for(
        "the renamed container to be followed",
        Duration::from_secs(15),
        || scene.client_get(&url),
    )
    .unwrap();
    assert_eq!(
        body.trim(),
        PAGE_WEB,
        "the renamed container must be followed"
    );
    let file = std::fs::read_to_string(persist_dir().join("host.json")).unwrap();
    assert!(
        file.contains(&renamed),
        "the state file should hold the new name: {file}"
    );

    // A reboot (bpffs is empty) while the container is stopped: restore
    // holds its port, and points it at the container once it runs again.
    drop(watch);
    sh(&["docker", "stop", "-t", "1", &renamed]);
    let state = portfwd::state::StateDir::current().expect("netns cookie");
    std::fs::remove_dir_all(&state.path).unwrap();
    let out = portfwd_ok(&["restore"]);
    assert!(
        out.contains(&format!("held: {renamed}")),
        "restore said: {out}"
    );
    assert_eq!(row(FOLLOW_PORT)["container_ip"], "0.0.0.0");
    assert_refused_now(&scene, root_ip, FOLLOW_PORT, "restored while stopped");
    assert_page(
        scene.client_get(&format!("http://{root_ip}:{FOLLOW_SPARE_PORT}/")),
        PAGE_DOCKER_P,
        "the mapping by address, restored",
    );
    sh(&["docker", "start", &renamed]);
    let out = portfwd_ok(&["restore"]);
    let now_ip = inspect_ip(&renamed);
    assert!(
        out.contains(&format!("{now_ip}:80 ({renamed})")),
        "restore said: {out}"
    );
    assert_page(
        scene.client_get(&url),
        PAGE_WEB,
        "restored after docker start",
    );

    scene.detach();
    let _ = std::fs::remove_file(&log);
}
