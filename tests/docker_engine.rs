//! `docker run -p` and compose through portfwd-docker-proxy, on a real
//! dockerd (Debian's docker.io 20.10) that this test starts for itself with
//! `--userland-proxy-path`: its own data and exec roots, socket, bridge and
//! containerd namespace, and `--iptables=false`, so that what it serves is
//! portfwd's datapath alone and it adds nothing to the host's firewall.
//!
//! It works in the root namespace (where dockerd runs); what it adds there
//! (the bridge, a veth to a client namespace, the engine's files) is undone
//! by `Engine`'s Drop, also when the test fails. It changes no interface it
//! did not make: portfwd is first attached to a bridge of the test's own
//! with `--external` the client's veth, and the proxies keep that choice
//! rather than take every interface with an address (the machine's own
//! among them). That default itself is tested in netns.rs. Under CI=true a machine
//! where it cannot run fails the test.
mod common;

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, TcpStream},
    path::PathBuf,
    time::{Duration, Instant},
};

use common::{
    connect_from,
    docker::{
        cannot_run, connections_of, install_packages, try_sh, wait_for, Dockerd, BUSYBOX, SHORT,
    },
    ok, pattern, require_privileges, PORTFWD,
};

const PROXY: &str = env!("CARGO_BIN_EXE_portfwd-docker-proxy");
const PORT: u16 = 18100;
const COMPOSE_PORT: u16 = 18101;
const PAGE: &str = "portfwd engine test page";
/// The large download.
const BIG: usize = 32 << 20;

struct Engine {
    pid: u32,
    dir: PathBuf,
    sock: String,
    bridge: String,
    client_ns: Option<String>,
    veth: Option<String>,
    /// The test's own bridge, attached with `--external` the veth.
    anchor: Option<String>,
    image: bool,
    compose: bool,
    dockerd: Option<Dockerd>,
}

impl Engine {
    fn docker(&self, args: &[&str]) -> Result<String, String> {
        let host = format!("unix://{}", self.sock);
        let mut full = vec!["docker", "-H", &host];
        full.extend_from_slice(args);
        try_sh(&full, Duration::from_secs(60))
    }

    fn compose(&self, args: &[&str]) -> Result<String, String> {
        let host = format!("DOCKER_HOST=unix://{}", self.sock);
        let file = self.dir.join("compose.yml");
        let project = format!("pfe{}", self.pid);
        let mut full = vec![
            "env",
            &host,
            "docker-compose",
            "-p",
            &project,
            "-f",
            file.to_str().unwrap(),
        ];
        full.extend_from_slice(args);
        try_sh(&full, Duration::from_secs(120))
    }

    fn client_get(&self, url: &str) -> Result<String, String> {
        let ns = self.client_ns.as_deref().expect("client namespace");
        try_sh(
            &[
                "ip", "netns", "exec", ns, "timeout", "10", BUSYBOX, "wget", "-qO-", url,
            ],
            SHORT,
        )
    }

    fn inspect_ip(&self, name: &str) -> Ipv4Addr {
        let out = self
            .docker(&[
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                name,
            ])
            .unwrap();
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: no address: {out:?}"))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if self.compose {
            let _ = self.compose(&["down"]);
        }
        if self.dockerd.is_some() {
            if let Ok(ids) = self.docker(&["ps", "-aq"]) {
                for id in ids.split_whitespace() {
                    let _ = self.docker(&["rm", "-f", id]);
                }
            }
            if self.image {
                let _ = self.docker(&["rmi", "pfe-busybox"]);
            }
        }
        if let Some(mut d) = self.dockerd.take() {
            d.stop();
        }
        if let Some(anchor) = self.anchor.take() {
            let _ = try_sh(&[PORTFWD, "detach", &anchor], Duration::from_secs(60));
            let _ = try_sh(&["ip", "link", "del", &anchor], SHORT);
        }
        if let Some(v) = self.veth.take() {
            let _ = try_sh(&["ip", "link", "del", &v], SHORT);
        }
        if let Some(ns) = self.client_ns.take() {
            let _ = try_sh(&["ip", "netns", "del", &ns], SHORT);
        }
        let _ = try_sh(&["ip", "link", "del", &self.bridge], SHORT);
        // dockerd's roots hold mounts only while it runs.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn refused(port: u16) -> bool {
    TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), Duration::from_secs(2)).is_err()
}

fn processes(name: &str) -> Vec<String> {
    try_sh(&["pgrep", "-a", "-x", name], SHORT)
        .map(|o| o.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn docker_run_p_and_compose_through_portfwd() {
    let started = Instant::now();
    require_privileges!();
    if let Err(e) = install_packages() {
        return cannot_run(&format!("cannot install docker.io / busybox-static: {e}"));
    }
    if try_sh(&["docker-compose", "version"], SHORT).is_err() {
        return cannot_run("docker-compose (Debian's package) is not installed");
    }
    let state = portfwd::state::StateDir::current().expect("netns cookie");
    if state.exists() {
        return cannot_run("portfwd is already attached in the root network namespace");
    }
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("pfe-{pid}"));
    std::fs::create_dir_all(dir.join("rootfs/bin")).unwrap();
    let x = (pid % 200 + 20) as u8;
    let mut engine = Engine {
        pid,
        sock: dir.join("docker.sock").display().to_string(),
        dir: dir.clone(),
        bridge: format!("pfe{pid}"),
        client_ns: None,
        veth: None,
        anchor: None,
        image: false,
        compose: false,
        dockerd: None,
    };
    // The bridge dockerd uses (-b), and a client namespace behind a veth
    // that nobody names anywhere.
    let bridge = engine.bridge.clone();
    try_sh(&["ip", "link", "add", &bridge, "type", "bridge"], SHORT).unwrap();
    try_sh(
        &[
            "ip",
            "addr",
            "add",
            &format!("172.29.{x}.1/24"),
            "dev",
            &bridge,
        ],
        SHORT,
    )
    .unwrap();
    try_sh(&["ip", "link", "set", &bridge, "up"], SHORT).unwrap();
    let ns = format!("pfe-{pid}-client");
    let (veth, peer) = (format!("pfe{pid}r"), format!("pfe{pid}c"));
    try_sh(&["ip", "netns", "add", &ns], SHORT).unwrap();
    engine.client_ns = Some(ns.clone());
    try_sh(
        &[
            "ip", "link", "add", &veth, "type", "veth", "peer", "name", &peer, "netns", &ns,
        ],
        SHORT,
    )
    .unwrap();
    engine.veth = Some(veth.clone());
    let (root_ip, client_ip) = (Ipv4Addr::new(10, 198, x, 1), Ipv4Addr::new(10, 198, x, 2));
    try_sh(
        &["ip", "addr", "add", &format!("{root_ip}/30"), "dev", &veth],
        SHORT,
    )
    .unwrap();
    try_sh(&["ip", "link", "set", &veth, "up"], SHORT).unwrap();
    for args in [
        vec!["addr", "add", &*format!("{client_ip}/30"), "dev", &peer],
        vec!["link", "set", &peer, "up"],
        vec!["link", "set", "lo", "up"],
        vec!["route", "add", "default", "via", &*root_ip.to_string()],
    ] {
        let mut full = vec!["ip", "-n", &ns];
        full.extend(args.iter().copied());
        try_sh(&full, SHORT).unwrap();
    }

    // The external interface portfwd serves: the client's veth alone.
    let anchor = format!("pfa{pid}");
    try_sh(&["ip", "link", "add", &anchor, "type", "bridge"], SHORT).unwrap();
    engine.anchor = Some(anchor.clone());
    try_sh(&["ip", "link", "set", &anchor, "up"], SHORT).unwrap();
    try_sh(
        &[PORTFWD, "attach", &anchor, "--external", &veth],
        Duration::from_secs(60),
    )
    .unwrap();

    let d = |k: &str, v: &str| format!("--{k}={}", dir.join(v).display());
    let args = vec![
        format!("--userland-proxy-path={PROXY}"),
        d("data-root", "data"),
        d("exec-root", "exec"),
        d("pidfile", "dockerd.pid"),
        format!("--host=unix://{}", engine.sock),
        format!("--bridge={bridge}"),
        "--iptables=false".into(),
        "--ip-masq=false".into(),
        format!("--containerd-namespace=pfe{pid}"),
        format!("--containerd-plugins-namespace=pfe{pid}p"),
    ];
    let host = format!("unix://{}", engine.sock);
    match Dockerd::start(
        &args,
        &["docker", "-H", &host, "info"],
        dir.join("dockerd.log"),
    ) {
        Ok(d) => engine.dockerd = Some(d),
        Err(e) => return cannot_run(&format!("cannot start a dockerd of our own: {e}")),
    }

    // The image: the host's static busybox and a page.
    let root = dir.join("rootfs");
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    std::fs::create_dir_all(root.join("www/cgi-bin")).unwrap();
    std::fs::write(root.join("www/index.html"), format!("{PAGE}\n")).unwrap();
    std::fs::write(root.join("www/big"), pattern(7, BIG)).unwrap();
    let cgi = root.join("www/cgi-bin/ip");
    std::fs::write(
        &cgi,
        "#!/bin/busybox sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    engine.image = true;
    let import = format!(
        "tar -C '{}' -c . | docker -H {host} import - pfe-busybox",
        root.display()
    );
    try_sh(&["sh", "-c", &import], Duration::from_secs(120)).unwrap();
    let httpd = ["/bin/busybox", "httpd", "-f", "-p", "80", "-h", "/www"];

    // 1. docker run -p.
    let publish = format!("{PORT}:80");
    let mut run = vec!["run", "-d", "--name", "web", "-p", &publish, "pfe-busybox"];
    run.extend(httpd);
    engine.docker(&run).unwrap();
    let local = format!("http://127.0.0.1:{PORT}/");
    let host_get = |url: &str| try_sh(&["timeout", "10", BUSYBOX, "wget", "-qO-", url], SHORT);
    let body = wait_for(
        "127.0.0.1 to serve the -p port",
        Duration::from_secs(30),
        || host_get(&local),
    )
    .unwrap();
    assert_eq!(body.trim(), PAGE, "from 127.0.0.1");
    let remote = format!("http://{root_ip}:{PORT}/");
    assert_eq!(
        engine.client_get(&remote).unwrap().trim(),
        PAGE,
        "from the client namespace"
    );
    let seen = engine.client_get(&format!("{remote}cgi-bin/ip")).unwrap();
    assert!(
        seen.contains(&client_ip.to_string()),
        "client address must be kept: saw {seen:?}"
    );
    let gateway = format!("http://172.29.{x}.1:{PORT}/");
    let hairpin = engine
        .docker(&[
            "run",
            "--rm",
            "pfe-busybox",
            "/bin/busybox",
            "timeout",
            "10",
            "/bin/busybox",
            "wget",
            "-qO-",
            &gateway,
        ])
        .unwrap();
    assert_eq!(hairpin.trim(), PAGE, "from another container (hairpin)");
    assert!(
        processes("docker-proxy").is_empty(),
        "no docker-proxy may run: {:?}",
        processes("docker-proxy")
    );
    let proxies = processes("portfwd-docker-");
    assert!(
        !proxies.is_empty(),
        "portfwd-docker-proxy should run for {PORT}"
    );
    let list = ok(
        std::process::Command::new(PORTFWD)
            .arg("list")
            .output()
            .unwrap(),
        "portfwd list",
    );
    assert!(
        list.contains(&format!("0.0.0.0:{PORT}")) && list.contains(&bridge),
        "list: {list}"
    );
    // A large download from the client, stalled half-way (the client does
    // not read): the proxies hold no TCP connection while it is under way.
    let mut download = connect_from(&ns, root_ip, PORT).expect("connect for the download");
    download.write_all(b"GET /big HTTP/1.0\r\n\r\n").unwrap();
    let mut head = [0u8; 4096];
    let mut got = download
        .read(&mut head)
        .expect("first bytes of the download");
    std::thread::sleep(Duration::from_millis(300));
    for line in &proxies {
        let pid: u32 = line.split_whitespace().next().unwrap().parse().unwrap();
        let conns = connections_of(pid);
        assert!(
            conns.is_empty(),
            "proxy {line} holds TCP connections: {conns:?}"
        );
    }
    let mut rest = Vec::new();
    download
        .read_to_end(&mut rest)
        .expect("the rest of the download");
    got += rest.len();
    assert!(
        got > BIG,
        "the download should carry {BIG} bytes and a header, got {got}"
    );
    if proxies.len() > 1 {
        // Docker 20.10 runs a second proxy for [::] to the IPv4 container.
        assert!(
            list.contains("relayed by portfwd-docker-proxy")
                && list.contains(&format!("[::]:{PORT}")),
            "the [::] proxy must be listed as relayed: {list}"
        );
    }
    let old_ip = engine.inspect_ip("web");

    // 2. docker stop: refused; another container takes the old address;
    //    docker start: the port follows to the new one.
    engine.docker(&["stop", "-t", "1", "web"]).unwrap();
    assert!(
        refused(PORT),
        "{PORT} must be refused once the container stopped"
    );
    let mut other = vec!["run", "-d", "--name", "other", "pfe-busybox"];
    other.extend(httpd);
    engine.docker(&other).unwrap();
    assert_eq!(
        engine.inspect_ip("other"),
        old_ip,
        "the other container should take the old address"
    );
    engine.docker(&["start", "web"]).unwrap();
    let new_ip = engine.inspect_ip("web");
    assert_ne!(new_ip, old_ip);
    let seen = wait_for(
        "the restarted container to serve",
        Duration::from_secs(30),
        || engine.client_get(&format!("{remote}cgi-bin/ip")),
    )
    .unwrap();
    assert!(seen.contains(&client_ip.to_string()), "{seen:?}");
    let list = ok(
        std::process::Command::new(PORTFWD)
            .arg("list")
            .output()
            .unwrap(),
        "list",
    );
    assert!(
        list.contains(&format!("{new_ip}:80")) && !list.contains(&format!("{old_ip}:80")),
        "the port must point at the new address {new_ip} only: {list}"
    );
    engine.docker(&["rm", "-f", "web", "other"]).unwrap();
    assert!(refused(PORT), "{PORT} must be refused after docker rm");

    // 3. compose up/down, on a network of its own (br-<id>).
    std::fs::write(
        dir.join("compose.yml"),
        format!(
            "version: '3'\nservices:\n  web:\n    image: pfe-busybox\n    command: [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"80\", \"-h\", \"/www\"]\n    ports:\n      - \"{COMPOSE_PORT}:80\"\n"
        ),
    )
    .unwrap();
    engine.compose = true;
    engine.compose(&["up", "-d"]).unwrap();
    let url = format!("http://{root_ip}:{COMPOSE_PORT}/");
    let body = wait_for("compose's port to serve", Duration::from_secs(30), || {
        engine.client_get(&url)
    })
    .unwrap();
    assert_eq!(body.trim(), PAGE, "compose from the client");
    let list = ok(
        std::process::Command::new(PORTFWD)
            .arg("list")
            .output()
            .unwrap(),
        "list",
    );
    assert!(
        list.contains("br-"),
        "compose's network is a br-<id> bridge: {list}"
    );
    engine.compose(&["down"]).unwrap();
    engine.compose = false;
    assert!(
        refused(COMPOSE_PORT),
        "{COMPOSE_PORT} must be refused after compose down"
    );

    // 4. dockerd stopped: nothing of portfwd left.
    drop(engine);
    assert!(
        processes("portfwd-docker-").is_empty(),
        "proxies left: {:?}",
        processes("portfwd-docker-")
    );
    assert!(!state.exists(), "{} is left", state.path.display());
    assert!(portfwd::relayed::current().is_empty(), "relay records left");
    eprintln!(
        "docker engine test: passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
