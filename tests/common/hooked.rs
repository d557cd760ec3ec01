//! Clients that portfwd's socket hooks see. The hooks only see processes in
//! the topology's cgroup, and the test's own threads stay outside it (they
//! play remote clients). So every client that must be seen by the hooks is a
//! child process (python3) that moves itself into `topo.cgroup` and then into
//! the wanted network namespace before it creates any socket. It runs a list
//! of socket operations given as JSON and prints one JSON result per
//! operation.
use std::{
    fs::File,
    io::Read,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::{json, Value};

use super::Topology;

/// How long one client child may run before it is killed.
const CHILD_DEADLINE: Duration = Duration::from_secs(40);

/// The client run in the hooked children. argv[1]: a JSON list of operations,
/// each with the outcome it expects ("ok" or an exception class name). Prints
/// a JSON list of results (the operation included) and exits 1 if any outcome
/// differs from the expected one; any other exit code means the script broke.
const CLIENT_PY: &str = r#"
import json, socket, sys

TIMEOUT = 5.0

def family(addr):
    # IPv6 (an IPv4-mapped ::ffff:a.b.c.d included) has colons.
    return socket.AF_INET6 if ":" in addr else socket.AF_INET

def http(op):
    s = socket.socket(family(op["addr"]), socket.SOCK_STREAM)
    s.settimeout(TIMEOUT)
    try:
        s.connect((op["addr"], op["port"]))
        peer = s.getpeername()
        s.sendall(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        head, _, body = data.decode("latin-1").partition("\r\n\r\n")
        return {"peer": [peer[0], peer[1]], "status": head.split("\r\n")[0], "body": body}
    finally:
        s.close()

def udp(op):
    s = socket.socket(family(op["addr"]), socket.SOCK_DGRAM)
    s.settimeout(TIMEOUT)
    try:
        dst = (op["addr"], op["port"])
        payload = op["payload"].encode()
        out = {}
        if op["connected"]:
            s.connect(dst)
            peer = s.getpeername()
            out["peer"] = [peer[0], peer[1]]
            s.send(payload)
        else:
            s.sendto(payload, dst)
        data, src = s.recvfrom(65535)
        out["src"] = [src[0], src[1]]
        out["data"] = data.decode("latin-1")
        return out
    finally:
        s.close()

def bind(op):
    kind = socket.SOCK_STREAM if op["proto"] == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(family(op["addr"]), kind)
    try:
        if "v6only" in op:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int(op["v6only"]))
        s.bind((op["addr"], op["port"]))
        if kind == socket.SOCK_STREAM:
            s.listen(1)
        name = s.getsockname()
        return {"bound": [name[0], name[1]]}
    finally:
        s.close()

results = []
all_expected = True
for op in json.loads(sys.argv[1]):
    try:
        r = {"op": op, "outcome": "ok"}
        r.update({"http": http, "udp": udp, "bind": bind}[op["op"]](op))
    except OSError as e:  # timeouts and refusals included
        r = {"op": op, "outcome": type(e).__name__, "errno": e.errno, "msg": str(e)}
    r["as_expected"] = r["outcome"] == op["expect"]
    all_expected = all_expected and r["as_expected"]
    results.append(r)
print(json.dumps(results))
sys.exit(0 if all_expected else 1)
"#;

/// The real interpreter behind `python3` (which may be a pyenv shim script).
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap_or_else(|e| panic!("these tests need python3 for their hooked clients: {e}"));
        assert!(
            out.status.success(),
            "python3 failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if path.is_empty() {
            "python3".to_string()
        } else {
            path
        }
    })
}

/// Runs the client script with `ops` as a child process that first joins
/// `topo.cgroup`, then network namespace `ns`, so that its sockets are seen
/// by portfwd's socket hooks. Waits for it (killing it after CHILD_DEADLINE)
/// and returns one result per operation. Panics, with everything it printed,
/// if an operation's outcome is not the one it expects.
pub fn hooked(topo: &Topology, ns: &str, ops: &[Value]) -> Vec<Value> {
    let procs_path = topo.cgroup.join("cgroup.procs");
    let procs = File::options()
        .write(true)
        .open(&procs_path)
        .unwrap_or_else(|e| panic!("open {}: {e}", procs_path.display()));
    let ns_path = format!("/var/run/netns/{ns}");
    let netns = File::open(&ns_path).unwrap_or_else(|e| panic!("open {ns_path}: {e}"));
    let (procs_fd, netns_fd) = (procs.as_raw_fd(), netns.as_raw_fd());

    let ops_json = Value::Array(ops.to_vec()).to_string();
    let mut cmd = Command::new(python());
    cmd.arg("-c")
        .arg(CLIENT_PY)
        .arg(&ops_json)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: the closure runs between fork and exec and only makes two
    // async-signal-safe syscalls on descriptors opened before the fork (both
    // close-on-exec); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            // The cgroup first ("0": this process), so that every socket the
            // program creates belongs to it.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the hooked client in {ns}: {e}"));
    drop(procs);
    drop(netns);

    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHILD_DEADLINE;
    let status = loop {
        match child.try_wait().expect("wait for the hooked client") {
            Some(status) => break Some(status),
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let out = out_reader.join().unwrap();
    let err = err_reader.join().unwrap();
    let Some(status) = status else {
        panic!("hooked client in {ns} still running after {CHILD_DEADLINE:?}, killed; ops {ops_json}\nstdout: {out}\nstderr: {err}");
    };
    let results: Vec<Value> = serde_json::from_str(out.trim()).unwrap_or_else(|e| {
        panic!("hooked client in {ns} ({status}) printed no result list ({e}); ops {ops_json}\nstdout: {out}\nstderr: {err}")
    });
    let unexpected: Vec<&Value> = results
        .iter()
        .filter(|r| r["as_expected"] != json!(true))
        .collect();
    assert!(
        unexpected.is_empty() && status.success(),
        "hooked client in {ns} ({status}): {} operation(s) did not go as expected:\n{}\nall results: {out}\nstderr: {err}",
        unexpected.len(),
        unexpected.iter().map(|r| format!("  {r}")).collect::<Vec<_>>().join("\n"),
    );
    assert_eq!(results.len(), ops.len(), "one result per operation: {out}");
    results
}

/// An HTTP GET of http://addr:port/ that must succeed.
pub fn get(addr: &str, port: u16) -> Value {
    json!({"op": "http", "addr": addr, "port": port, "expect": "ok"})
}

/// A TCP connect to addr:port that must be refused.
pub fn refused(addr: &str, port: u16) -> Value {
    json!({"op": "http", "addr": addr, "port": port, "expect": "ConnectionRefusedError"})
}

/// A UDP datagram to addr:port (through a connected socket or sendto) and
/// the reply, which must come.
pub fn udp_ask(addr: &str, port: u16, connected: bool, payload: &str) -> Value {
    json!({"op": "udp", "addr": addr, "port": port, "connected": connected, "payload": payload, "expect": "ok"})
}

/// bind(2) (plus listen for TCP) on addr:port; `expect` is "ok" or
/// "PermissionError".
pub fn bind_op(addr: &str, port: u16, proto: &str, expect: &str) -> Value {
    json!({"op": "bind", "addr": addr, "port": port, "proto": proto, "expect": expect})
}

/// `bind_op` on an IPv6 socket with IPV6_V6ONLY set to `v6only` (off: a
/// dual-stack socket, whose `::` also takes IPv4).
pub fn bind6_op(addr: &str, port: u16, proto: &str, v6only: bool, expect: &str) -> Value {
    let mut op = bind_op(addr, port, proto, expect);
    op["v6only"] = json!(v6only);
    op
}

/// Checks an HTTP result: the page's body, and getpeername(2) as the client
/// saw it.
pub fn assert_page(r: &Value, body: &str, peer: (&str, u16)) {
    let what = format!("GET {}:{}", r["op"]["addr"], r["op"]["port"]);
    assert_eq!(
        r["status"],
        json!("HTTP/1.1 200 OK"),
        "{what}: unexpected response: {r}"
    );
    assert_eq!(
        r["body"],
        json!(body),
        "{what}: reached the wrong server: {r}"
    );
    assert_eq!(
        r["peer"],
        json!([peer.0, peer.1]),
        "{what}: getpeername() must return the address the client connected to, not the container's: {r}"
    );
}

pub fn assert_refused(r: &Value) {
    assert_eq!(
        r["outcome"],
        json!("ConnectionRefusedError"),
        "connect must be refused: {r}"
    );
    assert_eq!(r["errno"], json!(libc::ECONNREFUSED), "{r}");
}

pub fn assert_bind_denied(r: &Value) {
    assert_eq!(
        r["outcome"],
        json!("PermissionError"),
        "bind must be refused: {r}"
    );
    assert_eq!(
        r["errno"],
        json!(libc::EPERM),
        "bind must fail with EPERM: {r}"
    );
}

pub fn assert_bound(r: &Value) {
    assert_eq!(r["outcome"], json!("ok"), "bind must succeed: {r}");
    assert_eq!(r["bound"][1], r["op"]["port"], "bound to another port: {r}");
}
