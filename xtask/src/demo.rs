//! `cargo xtask demo`: portfwd publishing a "container" port on a machine
//! without Docker. Everything lives in three throwaway network namespaces;
//! the root namespace is never touched.
//!
//! ```text
//!  client ns                 host ns                          web ns ("container")
//!  c0 10.77.1.2/24 ──veth── h0 10.77.1.1/24 (default route)
//!                            docker0 172.31.0.1/16 ──veth──── eth0 172.31.0.10/16
//!                                                              HTTP server on :80
//! ```
//!
//! portfwd attaches to docker0 in the host namespace and maps
//! 10.77.1.1:8080 to 172.31.0.10:80; the client fetches a page through it and
//! the container reports which address it saw.
use std::io::{ErrorKind, Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::cmd::{capture, show};
use crate::netns::{self, ip, NetnsGuard, NETNS_DIR};

const BRIDGE: &str = "docker0";
const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 1);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 1, 2);
const WEB_IP: Ipv4Addr = Ipv4Addr::new(172, 31, 0, 10);
const HOST_PORT: u16 = 8080;
const WEB_PORT: u16 = 80;
const PREFIX: &str = "pfdemo";

/// The web server stops after this many requests, or after `SERVER_LIFETIME`.
const MAX_REQUESTS: usize = 8;
const SERVER_LIFETIME: Duration = Duration::from_secs(60);
const IO_TIMEOUT: Duration = Duration::from_secs(5);

fn heading(text: &str) {
    println!("\n=== {text}");
}

pub fn demo(portfwd: &Path) -> Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads BPF programs: run it as root");
    }
    clean_stale(portfwd);

    let mut demo = Demo::new(portfwd);
    heading("Topology (three network namespaces; the root namespace is left alone)");
    demo.create()?;
    println!("  client    {:<24} c0  {CLIENT_IP}/24", demo.client);
    println!(
        "  host      {:<24} h0  {HOST_IP}/24 (default route: the external side)",
        demo.host
    );
    println!("            {:<24} {BRIDGE} 172.31.0.1/16", "");
    println!("  container {:<24} eth0 {WEB_IP}/16 on {BRIDGE}", demo.web);

    heading(&format!(
        "Web server in the container, on {WEB_IP}:{WEB_PORT}"
    ));
    let server = Server::start(&demo.web)?;
    println!(
        "  listening (stops after {MAX_REQUESTS} requests or {}s)",
        SERVER_LIFETIME.as_secs()
    );

    heading(&format!(
        "Publish {HOST_IP}:{HOST_PORT} -> {WEB_IP}:{WEB_PORT}"
    ));
    demo.attached = true;
    let map = format!("{HOST_PORT}={WEB_IP}:{WEB_PORT}");
    // --no-local: the demo shows the remote path only, so it leaves the
    // socket hooks for the host's own processes (attached on the cgroup2
    // root, machine-wide) out of it.
    demo.portfwd(&["attach", BRIDGE, "--no-local", "--map", &map])?;

    heading(&format!(
        "Client {CLIENT_IP} fetches http://{HOST_IP}:{HOST_PORT}/"
    ));
    let fetched = fetch(
        &demo.client,
        SocketAddr::new(IpAddr::V4(HOST_IP), HOST_PORT),
    );
    match &fetched {
        Ok(response) => print_response(response),
        Err(err) => println!("  fetch failed: {err:#}"),
    }

    heading("portfwd list");
    demo.portfwd(&["list"])?;

    let peers = server.stop()?;
    heading("Result");
    let response = fetched.context("the client could not fetch the page through the mapping")?;
    if !response.starts_with("HTTP/1.1 200 ") {
        bail!(
            "unexpected response: {}",
            response.lines().next().unwrap_or("")
        );
    }
    match peers.first() {
        Some(peer) if peer.ip() == IpAddr::V4(CLIENT_IP) => println!(
            "  the container saw the connection come from {peer}: the client address was preserved"
        ),
        Some(peer) => println!(
            "  note: the container saw {peer}, not the client's {CLIENT_IP} (address not preserved)"
        ),
        None => println!("  note: the server recorded no connection"),
    }

    heading(&format!(
        "portfwd detach {BRIDGE}, then delete the namespaces"
    ));
    demo.portfwd(&["detach", BRIDGE])?;
    demo.attached = false;
    Ok(())
}

/// The topology; dropping it detaches portfwd (while the host namespace still
/// exists) and then deletes the namespaces, on success, error or panic.
struct Demo {
    portfwd: PathBuf,
    client: String,
    host: String,
    web: String,
    /// Set from the moment `attach` runs until `detach` succeeded.
    attached: bool,
    namespaces: NetnsGuard,
}

impl Demo {
    fn new(portfwd: &Path) -> Self {
        let name = |role| format!("{PREFIX}-{}-{role}", std::process::id());
        Self {
            portfwd: portfwd.to_owned(),
            client: name("client"),
            host: name("host"),
            web: name("web"),
            attached: false,
            namespaces: NetnsGuard::default(),
        }
    }

    fn create(&mut self) -> Result<()> {
        let (client, host, web) = (&self.client, &self.host, &self.web);
        for ns in [client, host, web] {
            self.namespaces.add(ns)?;
        }
        // client <-> host: the "outside" link.
        ip(
            host,
            &format!("link add h0 type veth peer name c0 netns {client}"),
        )?;
        ip(host, &format!("addr add {HOST_IP}/24 dev h0"))?;
        ip(host, "link set h0 up")?;
        ip(client, &format!("addr add {CLIENT_IP}/24 dev c0"))?;
        ip(client, "link set c0 up")?;
        // The default route makes h0 the external interface portfwd picks.
        ip(host, &format!("route add default via {CLIENT_IP}"))?;
        // host bridge <-> container.
        ip(host, &format!("link add {BRIDGE} type bridge"))?;
        ip(host, &format!("addr add 172.31.0.1/16 dev {BRIDGE}"))?;
        ip(host, &format!("link set {BRIDGE} up"))?;
        ip(
            host,
            &format!("link add vweb type veth peer name eth0 netns {web}"),
        )?;
        ip(host, &format!("link set vweb master {BRIDGE}"))?;
        ip(host, "link set vweb up")?;
        ip(web, &format!("addr add {WEB_IP}/16 dev eth0"))?;
        ip(web, "link set eth0 up")?;
        ip(web, "route add default via 172.31.0.1")?;
        Ok(())
    }

    /// Runs `portfwd -n HOST ARGS`, echoing the command and its output.
    fn portfwd(&self, args: &[&str]) -> Result<()> {
        let out = self.portfwd_quiet(args)?;
        println!("$ portfwd -n {} {}", self.host, args.join(" "));
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            bail!("portfwd {} failed ({})", args.join(" "), out.status);
        }
        Ok(())
    }

    fn portfwd_quiet(&self, args: &[&str]) -> Result<Output> {
        let mut cmd = Command::new(&self.portfwd);
        cmd.args(["-n", &self.host]).args(args);
        capture(&mut cmd).with_context(|| show(&cmd))
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if self.attached {
            // Errors are expected when attach never got far; ignore them.
            let _ = self.portfwd_quiet(&["detach", BRIDGE]);
        }
        // Deleting the namespaces deletes the veths and the bridge with them.
        let namespaces = std::mem::take(&mut self.namespaces);
        if !namespaces.is_empty() {
            drop(namespaces);
            println!(
                "  deleted namespaces {}, {}, {}",
                self.client, self.host, self.web
            );
        }
    }
}

/// Removes what an interrupted earlier demo left behind: namespaces named
/// after a process that no longer exists, and their portfwd state.
fn clean_stale(portfwd: &Path) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    let mut stale: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(&format!("{PREFIX}-"))
            .and_then(|rest| rest.strip_suffix("-host"))
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            stale.push(pid.to_owned());
        }
    }
    for pid in stale {
        eprintln!("demo: removing namespaces {PREFIX}-{pid}-* left by an interrupted run");
        let host = format!("{PREFIX}-{pid}-host");
        let _ = capture(Command::new(portfwd).args(["-n", &host, "detach", BRIDGE]));
        for role in ["web", "client", "host"] {
            let name = format!("{PREFIX}-{pid}-{role}");
            if Path::new(NETNS_DIR).join(&name).exists() {
                let _ = capture(Command::new("ip").args(["netns", "del", &name]));
            }
        }
    }
}

/// The container's web server: a thread in the web namespace.
struct Server {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Result<Vec<SocketAddr>>>,
}

impl Server {
    /// Returns once the server is listening.
    fn start(web: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = netns::spawn_in(web, {
            let stop = stop.clone();
            let web = web.to_owned();
            move || {
                let listener = TcpListener::bind((Ipv4Addr::UNSPECIFIED, WEB_PORT))
                    .with_context(|| format!("binding 0.0.0.0:{WEB_PORT} in {web}"))?;
                let _ = ready_tx.send(());
                serve(&listener, &web, &stop)
            }
        });
        match ready_rx.recv_timeout(IO_TIMEOUT) {
            Ok(()) => Ok(Self { stop, handle }),
            // The thread ended (sender dropped) without binding: report why.
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(netns::join(handle)
                .err()
                .unwrap_or_else(|| anyhow!("web server exited"))),
            Err(mpsc::RecvTimeoutError::Timeout) => bail!("web server did not start"),
        }
    }

    /// Stops the server; returns the peers it served.
    fn stop(self) -> Result<Vec<SocketAddr>> {
        self.stop.store(true, Ordering::Relaxed);
        netns::join(self.handle)
    }
}

fn serve(listener: &TcpListener, web: &str, stop: &AtomicBool) -> Result<Vec<SocketAddr>> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + SERVER_LIFETIME;
    let mut peers = Vec::new();
    while peers.len() < MAX_REQUESTS && Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                peers.push(peer);
                if let Err(err) = answer(stream, peer, web) {
                    eprintln!("demo web server: {peer}: {err:#}");
                }
            }
            Err(err) if err.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(err) => return Err(err).context("accept"),
        }
    }
    Ok(peers)
}

fn answer(mut stream: TcpStream, peer: SocketAddr, web: &str) -> Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    // Read the request head (we ignore any body).
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let local = stream.local_addr()?;
    let (status, body) = if head.starts_with(b"GET ") {
        let body = format!(
            "<!doctype html>\n<html><head><title>portfwd demo</title></head><body>\n\
             <h1>Hello from the container</h1>\n\
             <p>Served by {local} in network namespace {web}.</p>\n\
             <p>Your address, as the container sees it: <b>{peer}</b></p>\n\
             </body></html>\n"
        );
        ("200 OK", body)
    } else {
        ("405 Method Not Allowed", "only GET here\n".to_owned())
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes())?;
    Ok(())
}

/// GET / from a thread in the client namespace; returns the whole response.
fn fetch(client: &str, addr: SocketAddr) -> Result<String> {
    netns::run_in(client, move || {
        let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let request = format!(
            "GET / HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xtask-demo\r\nConnection: close\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .context("sending the request")?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .context("reading the response")?;
        if response.is_empty() {
            bail!("empty response from {addr}");
        }
        Ok(response)
    })
}

fn print_response(response: &str) {
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    println!("  {}", head.lines().next().unwrap_or(""));
    for line in body.lines() {
        println!("  | {line}");
    }
}
