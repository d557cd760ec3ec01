//! Real Docker engines for the tests that need one (tests/docker.rs,
//! tests/docker_engine.rs): commands with time limits, installing Debian's
//! docker.io and busybox-static, and a dockerd the test starts and stops.
use std::{
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BUSYBOX: &str = "/bin/busybox";
/// Bound for one short command (an HTTP GET, a docker CLI call).
pub const SHORT: Duration = Duration::from_secs(30);

pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Fails under CI=true, else says SKIPPED; the caller returns.
pub fn cannot_run(why: &str) {
    if in_ci() {
        panic!("docker test cannot run under CI=true: {why}");
    }
    eprintln!("SKIPPED docker: {why}");
}

// ---------------------------------------------------------------------------
// Commands, each with a time limit.

pub use super::commands::{run_for, try_sh};

/// `try_sh` that panics on failure.
pub fn sh(args: &[&str]) -> String {
    try_sh(args, SHORT).unwrap_or_else(|e| panic!("{e}"))
}

/// Polls `f` until it returns Ok or `limit` passes; the last error then.
pub fn wait_for<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + limit;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => {
                return Err(format!("{what}: not within {limit:?}: {e}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

// ---------------------------------------------------------------------------
// Docker itself.

pub fn works(args: &[&str]) -> bool {
    run_for(args, SHORT).is_ok_and(|o| o.status.success())
}

/// True if `path` is an ELF executable without an interpreter (static), so
/// that it runs alone in an image.
pub fn is_static_elf(path: &Path) -> bool {
    let Ok(elf) = std::fs::read(path) else {
        return false;
    };
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" || elf[4] != 2 || elf[5] != 1 {
        return false; // not a 64-bit little-endian ELF
    }
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).all(|i| {
        let at = phoff + i * phentsize;
        // PT_INTERP = 3: a dynamic executable's loader.
        elf.get(at..at + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// Installs docker.io, docker-compose and busybox-static if one is missing.
pub fn install_packages() -> Result<(), String> {
    let have_dockerd = works(&["dockerd", "--version"]);
    let have_busybox = is_static_elf(Path::new(BUSYBOX));
    if have_dockerd
        && have_busybox
        && works(&["iptables-save", "--version"])
        && works(&["docker-compose", "version"])
    {
        return Ok(());
    }
    eprintln!("docker test: installing docker.io, docker-compose and busybox-static with apt-get");
    let apt = |args: &[&str]| {
        let mut full = vec![
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=120",
        ];
        full.extend_from_slice(args);
        try_sh(&full, Duration::from_secs(900))
    };
    let install = [
        "install",
        "-y",
        "--no-install-recommends",
        "docker.io",
        "docker-compose",
        "busybox-static",
        "iptables",
    ];
    if apt(&install).is_err() {
        apt(&["update"])?;
        apt(&install)?;
    }
    if !is_static_elf(Path::new(BUSYBOX)) {
        return Err(format!(
            "{BUSYBOX} is not a static executable after installing busybox-static"
        ));
    }
    Ok(())
}

/// A dockerd this test started (None: one was running already).
pub struct Dockerd {
    child: Option<Child>,
    log: PathBuf,
}

impl Dockerd {
    /// Makes sure an engine answers, starting dockerd if none does.
    pub fn ensure() -> Result<Self, String> {
        let log = std::env::temp_dir().join(format!("pft-dockerd-{}.log", std::process::id()));
        if works(&["docker", "info"]) {
            return Ok(Self { child: None, log });
        }
        Self::start(&[], &["docker", "info"], log)
    }

    /// Starts a dockerd of our own with `args`, waiting until `probe`
    /// (a `docker ... info` against it) answers; its output goes to `log`.
    pub fn start(args: &[String], probe: &[&str], log: PathBuf) -> Result<Self, String> {
        let file =
            std::fs::File::create(&log).map_err(|e| format!("create {}: {e}", log.display()))?;
        let child = Command::new("dockerd")
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().map_err(|e| e.to_string())?)
            .stderr(file)
            // Its own process group: a ^C to the test does not stop it
            // half-way; Drop stops it.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start dockerd: {e}"))?;
        let mut me = Self {
            child: Some(child),
            log,
        };
        let up = wait_for(
            "dockerd to answer `docker info`",
            Duration::from_secs(60),
            || {
                if let Some(Ok(Some(status))) = me.child.as_mut().map(|c| c.try_wait()) {
                    return Ok(Err(format!("dockerd exited ({status})")));
                }
                try_sh(probe, Duration::from_secs(10)).map(|_| Ok(()))
            },
        );
        match up.and_then(|r| r) {
            Ok(()) => {
                eprintln!(
                    "docker test: started dockerd (pid {}), log {}",
                    me.pid(),
                    me.log.display()
                );
                Ok(me)
            }
            Err(e) => {
                let tail = std::fs::read_to_string(&me.log).unwrap_or_default();
                let tail: Vec<&str> = tail
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                me.stop();
                Err(format!("{e}; dockerd log:\n{}", tail.join("\n")))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGTERM to the dockerd we started (it stops its containerd), then
    /// wait for it; SIGKILL after 30 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of our own child, not yet reaped.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                let _ = std::fs::remove_file(&self.log);
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("docker test: dockerd did not stop within 30 s of SIGTERM; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A process's TCP sockets other than listeners (from /proc/PID/net/tcp*
/// of its namespace, matched against its descriptors).
pub fn connections_of(pid: u32) -> Vec<String> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter_map(|l| {
                    let l = l.to_string_lossy().into_owned();
                    Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st ... inode(9); 0A is LISTEN.
            if f.len() > 9 && f[3] != "0A" && inodes.iter().any(|i| i == f[9]) {
                out.push(line.to_string());
            }
        }
    }
    out
}

/// A container image's root at `root`: the host's static busybox with the
/// docker tests' applets, two web roots (`/www` with `pages[0]` and a CGI
/// script, cgi-bin/ip, that prints the client's address; `/www2` with
/// `pages[1]`), ready for `docker import` or `podman import`.
pub fn busybox_rootfs(root: &Path, pages: [&str; 2]) {
    let _ = std::fs::remove_dir_all(root);
    for dir in ["bin", "tmp", "www/cgi-bin", "www2"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).unwrap();
    for applet in ["sh", "httpd", "wget", "cat", "echo", "sleep", "timeout"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("www/index.html"), format!("{}\n", pages[0])).unwrap();
    std::fs::write(root.join("www2/index.html"), format!("{}\n", pages[1])).unwrap();
    let cgi = root.join("www/cgi-bin/ip");
    std::fs::write(
        &cgi,
        "#!/bin/sh\necho 'Content-Type: text/plain'\necho\necho \"$REMOTE_ADDR\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&cgi, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

/// A remote client for a test in the root namespace: namespace `ns` (made
/// here) behind a veth `root_if` / `client_if`, `ours`/30 on the root end,
/// `theirs`/30 on the client's with its default route via `ours`. The
/// caller records `ns` and `root_if` for removal before calling.
pub fn client_link(
    ns: &str,
    (root_if, client_if): (&str, &str),
    ours: std::net::Ipv4Addr,
    theirs: std::net::Ipv4Addr,
) {
    sh(&["ip", "netns", "add", ns]);
    sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
    sh(&[
        "ip", "link", "add", root_if, "type", "veth", "peer", "name", client_if, "netns", ns,
    ]);
    sh(&["ip", "addr", "add", &format!("{ours}/30"), "dev", root_if]);
    sh(&["ip", "link", "set", root_if, "up"]);
    let theirs = format!("{theirs}/30");
    sh(&["ip", "-n", ns, "addr", "add", &theirs, "dev", client_if]);
    sh(&["ip", "-n", ns, "link", "set", client_if, "up"]);
    sh(&[
        "ip",
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        &ours.to_string(),
    ]);
}
