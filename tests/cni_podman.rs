//! Rootful podman with its CNI backend publishing through portfwd: a
//! conflist of its own (the `bridge` plugin on a bridge of its own, then
//! `{"type": "portfwd", "capabilities": {"portMappings": true}}` where
//! `portmap` would stand), its own containers.conf, storage and CNI dirs,
//! and an image made with `podman import` from the host's static busybox.
//!
//! Like tests/docker.rs this works in the root namespace, where podman puts
//! its bridge; what the test adds there (a veth to a client namespace, the
//! bridge, containers, portfwd's attachment) is undone by `Scene`'s Drop.
//! Needs root, podman, containernetworking-plugins and busybox-static
//! (installed with apt-get when missing); under CI=true a machine where it
//! cannot run fails the test.
mod common;

use std::{
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use common::{
    docker::{busybox_rootfs, client_link},
    require_privileges, try_sh, PORTFWD,
};

const BUSYBOX: &str = "/bin/busybox";
const IMAGE: &str = "localhost/portfwd-cni-test:latest";
const PORT: u16 = 18095;
const PORT2: u16 = 18096;
const PAGE1: &str = "portfwd podman test: first";
const PAGE2: &str = "portfwd podman test: second";
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);

fn cannot_run(why: &str) {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("podman test cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED cni_podman: {why}");
}

fn install_packages() -> Result<(), String> {
    let have = |p: &str| Path::new(p).exists();
    if have("/usr/bin/podman") && have("/usr/lib/cni/bridge") && have(BUSYBOX) {
        return Ok(());
    }
    eprintln!("cni_podman: installing podman, containernetworking-plugins, busybox-static");
    let install = [
        "env",
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "-o",
        "DPkg::Lock::Timeout=120",
        "install",
        "-y",
        "-q",
        "podman",
        "containernetworking-plugins",
        "busybox-static",
    ];
    try_sh(&install, Duration::from_secs(900)).map(|_| ())
}

/// Everything the test adds, removed on drop.
struct Scene {
    dir: PathBuf,
    pid: u32,
    bridge: String,
    subnet: u8,
    client_ns: Option<String>,
    veth: Option<String>,
    containers: Vec<String>,
    image: bool,
}

impl Scene {
    fn new() -> Self {
        let pid = std::process::id();
        let dir = std::env::temp_dir().join(format!("pft-podman-{pid}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            dir,
            pid,
            bridge: format!("pfp{}", pid % 100_000),
            subnet: (pid % 200 + 20) as u8,
            client_ns: None,
            veth: None,
            containers: Vec::new(),
            image: false,
        }
    }

    /// `podman` with the test's config, storage and state dirs.
    fn podman(&self, args: &[&str], limit: Duration) -> Result<String, String> {
        let d = &self.dir;
        let conf = format!("CONTAINERS_CONF={}", d.join("containers.conf").display());
        let root = d.join("graph").display().to_string();
        let runroot = d.join("run").display().to_string();
        let tmpdir = d.join("tmp").display().to_string();
        let mut full = vec![
            "env",
            &conf,
            "podman",
            "--root",
            &root,
            "--runroot",
            &runroot,
            "--tmpdir",
            &tmpdir,
            "--storage-driver",
            "vfs",
            "--cgroup-manager",
            "cgroupfs",
            "--events-backend",
            "file",
        ];
        full.extend_from_slice(args);
        try_sh(&full, limit)
    }

    /// containers.conf, the CNI bin dir (bridge, host-local, portfwd) and
    /// the conflist; `external` is where outside clients arrive.
    fn configure(&self, external: &str) {
        let d = &self.dir;
        let bin = d.join("cni-bin");
        std::fs::create_dir_all(&bin).unwrap();
        for p in ["bridge", "host-local", "loopback"] {
            std::os::unix::fs::symlink(Path::new("/usr/lib/cni").join(p), bin.join(p)).unwrap();
        }
        std::os::unix::fs::symlink(PORTFWD, bin.join("portfwd")).unwrap();
        let netd = d.join("net.d");
        std::fs::create_dir_all(&netd).unwrap();
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\n\
             network_config_dir = \"{}\"\ndefault_network = \"pftpod\"\n\
             [engine]\nevents_logger = \"file\"\ncgroup_manager = \"cgroupfs\"\n",
            bin.display(),
            netd.display()
        );
        std::fs::write(d.join("containers.conf"), conf).unwrap();
        let subnet = format!("10.89.{}.0/24", self.subnet);
        let gateway = format!("10.89.{}.1", self.subnet);
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": "pftpod",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": true,
                    "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {
                        "type": "host-local",
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "ranges": [[{"subnet": subnet, "gateway": gateway}]],
                        "dataDir": d.join("ipam"),
                    },
                },
                {
                    "type": "portfwd",
                    "capabilities": {"portMappings": true},
                    "externalInterfaces": [external],
                    // podman's cleanup process, which runs DEL, does not
                    // get the test's environment.
                    "stateDir": d.join("cni-state"),
                },
            ],
        });
        std::fs::write(netd.join("pftpod.conflist"), conflist.to_string()).unwrap();
    }

    /// The image: static busybox, two web roots and a CGI script that
    /// prints the client's address.
    fn build_image(&mut self) {
        let root = self.dir.join("rootfs");
        busybox_rootfs(&root, [PAGE1, PAGE2]);
        let tar = self.dir.join("rootfs.tar");
        try_sh(
            &[
                "tar",
                "-C",
                &root.display().to_string(),
                "-cf",
                &tar.display().to_string(),
                ".",
            ],
            SHORT,
        )
        .unwrap();
        self.image = true;
        self.podman(&["import", &tar.display().to_string(), IMAGE], LONG)
            .unwrap_or_else(|e| panic!("podman import: {e}"));
    }

    /// The client: a namespace with a veth to the root namespace
    /// (10.198.x.1/30 ours, .2 the client's). (ours, the client's, our
    /// interface).
    fn client(&mut self) -> (Ipv4Addr, Ipv4Addr, String) {
        let x = (self.pid % 254 + 1) as u8;
        let (ours, theirs) = (Ipv4Addr::new(10, 198, x, 1), Ipv4Addr::new(10, 198, x, 2));
        let ns = format!("pft-podman-{}-client", self.pid);
        let (root_if, client_if) = (format!("pfp{}r", self.pid), format!("pfp{}c", self.pid));
        self.client_ns = Some(ns.clone());
        self.veth = Some(root_if.clone());
        client_link(&ns, (&root_if, &client_if), ours, theirs);
        (ours, theirs, root_if)
    }

    fn run(&mut self, name: &str, port: u16, www: &str) {
        self.containers.push(name.to_string());
        let publish = format!("{port}:80");
        self.podman(
            &[
                "run",
                "-d",
                "--name",
                name,
                "-p",
                &publish,
                IMAGE,
                "/bin/httpd",
                "-f",
                "-p",
                "80",
                "-h",
                www,
            ],
            LONG,
        )
        .unwrap_or_else(|e| panic!("podman run -p {publish} must succeed: {e}"));
    }

    fn client_get(&self, url: &str) -> Result<String, String> {
        let ns = self.client_ns.as_deref().unwrap();
        try_sh(
            &[
                "ip", "netns", "exec", ns, BUSYBOX, "timeout", "10", BUSYBOX, "wget", "-qO-", url,
            ],
            SHORT,
        )
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        for c in self.containers.drain(..).collect::<Vec<_>>() {
            let _ = self.podman(&["rm", "-f", "-t", "0", &c], LONG);
        }
        if self.image {
            let _ = self.podman(&["rmi", "-f", IMAGE], LONG);
        }
        // The bridge plugin leaves its bridge behind.
        let _ = try_sh(&["ip", "link", "del", &self.bridge], SHORT);
        if let Some(v) = self.veth.take() {
            let _ = try_sh(&["ip", "link", "del", &v], SHORT);
        }
        if let Some(ns) = self.client_ns.take() {
            let _ = try_sh(&["ip", "netns", "del", &ns], SHORT);
        }
        // vfs storage is plain files; podman's state goes with the dir.
        let _ = try_sh(&["rm", "-rf", &self.dir.display().to_string()], LONG);
    }
}

fn host_get(url: &str) -> Result<String, String> {
    try_sh(
        &[BUSYBOX, "timeout", "10", BUSYBOX, "wget", "-qO-", url],
        SHORT,
    )
}

/// Polls `f` for up to 10 s (a container's httpd takes a moment to start).
fn soon(what: &str, mut f: impl FnMut() -> Result<String, String>) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) if std::time::Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

#[test]
fn podman_run_p_publishes_through_portfwd() {
    require_privileges!();
    if let Err(e) = install_packages() {
        return cannot_run(&format!("cannot install podman: {e}"));
    }
    let mut scene = Scene::new();
    let (host_ip, client_ip, external) = scene.client();
    scene.configure(&external);
    scene.build_image();

    scene.run("pft-podman-web1", PORT, "/www");
    let page = soon("GET 127.0.0.1 on the host", || {
        host_get(&format!("http://127.0.0.1:{PORT}/"))
    });
    assert_eq!(
        page.trim(),
        PAGE1,
        "127.0.0.1:{PORT} must reach the container"
    );
    let seen = scene
        .client_get(&format!("http://{host_ip}:{PORT}/cgi-bin/ip"))
        .expect("the external client must be served");
    // busybox httpd listens on `::` and writes IPv4 peers mapped.
    let seen = seen
        .trim()
        .trim_start_matches("[::ffff:")
        .trim_end_matches(']');
    assert_eq!(
        seen,
        client_ip.to_string(),
        "the client's address must be preserved"
    );
    let from_container = scene
        .podman(
            &[
                "run",
                "--rm",
                IMAGE,
                "/bin/wget",
                "-qO-",
                &format!("http://{host_ip}:{PORT}/"),
            ],
            LONG,
        )
        .expect("another container must reach the published port");
    assert_eq!(from_container.trim(), PAGE1);

    scene.run("pft-podman-web2", PORT2, "/www2");
    let page = soon("GET the second container", || {
        host_get(&format!("http://127.0.0.1:{PORT2}/"))
    });
    assert_eq!(page.trim(), PAGE2);

    scene
        .podman(&["rm", "-f", "-t", "0", "pft-podman-web1"], LONG)
        .expect("podman rm");
    scene.containers.retain(|c| c != "pft-podman-web1");
    assert!(
        host_get(&format!("http://127.0.0.1:{PORT}/")).is_err(),
        "podman rm must unpublish the container's port"
    );
    assert_eq!(
        host_get(&format!("http://127.0.0.1:{PORT2}/"))
            .expect("still published")
            .trim(),
        PAGE2,
        "podman rm must leave the other container's port"
    );
    let listed = try_sh(&[PORTFWD, "list", "--json"], SHORT).expect("portfwd list");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&listed).expect("list --json");
    let ports: Vec<u64> = rows
        .iter()
        .filter_map(|r| r["host_port"].as_u64())
        .collect();
    assert_eq!(
        ports,
        [u64::from(PORT2)],
        "after podman rm only the second container's port may be published: {listed}"
    );
    for save in ["iptables-save", "ip6tables-save"] {
        if let Ok(rules) = try_sh(&[save], SHORT) {
            for port in [PORT, PORT2] {
                assert!(
                    !rules.contains(&port.to_string()),
                    "no {save} rule may mention {port}: portfwd publishes without iptables"
                );
            }
        }
    }
    scene
        .podman(&["rm", "-f", "-t", "0", "pft-podman-web2"], LONG)
        .expect("podman rm");
    scene.containers.clear();
    let listed = try_sh(&[PORTFWD, "list"], SHORT).expect("portfwd list");
    assert!(
        listed.contains("nothing attached"),
        "the last podman rm must detach everything the plugin attached: {listed}"
    );
}
