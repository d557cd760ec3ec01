//! `portfwd-docker-proxy`: Docker's userland proxy (`dockerd
//! --userland-proxy-path`, or `"userland-proxy-path"` in daemon.json) that
//! publishes through portfwd's datapath instead of copying bytes.
//!
//! Docker runs it once per published port and family:
//! `-proto tcp|udp|sctp -host-ip IP -host-port N -container-ip IP
//! -container-port N [-use-listen-fd]` (Docker 28 binds the port itself and
//! passes the socket as fd 4). It wants `0\n` on fd 3 once the port works,
//! or `1\n<message>`; it stops the proxy with SIGINT (SIGTERM if dockerd
//! dies) and waits for it. So: publish (`ops::publish`), answer, wait for
//! the signal, unpublish, exit 0. What the datapath cannot serve (SCTP, an
//! IPv6 host address with an IPv4 container, a failure of the datapath) is
//! relayed in userspace by this process (`portfwd::relay`), and recorded so
//! that `portfwd list` names it.
use std::{
    io::Write as _,
    net::{IpAddr, SocketAddr},
    os::fd::{FromRawFd as _, OwnedFd},
    process::ExitCode,
};

use portfwd::{
    ops,
    relay::{self, RelayProto},
    relayed::{self, Relayed},
    spec::{HostPort, Mapping, Proto},
};

const NAME: &str = "portfwd-docker-proxy";
/// Docker's status pipe and (with -use-listen-fd) the bound socket.
const STATUS_FD: i32 = 3;
const LISTEN_FD: i32 = 4;

#[derive(Debug)]
struct Args {
    proto: RelayProto,
    host: SocketAddr,
    container: SocketAddr,
    use_listen_fd: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut proto, mut host_ip, mut host_port, mut container_ip, mut container_port) =
        (None, None, None, None, None);
    let mut use_listen_fd = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Go's flag syntax: -name value, -name=value, --name too.
        let flag = arg.trim_start_matches('-');
        if flag.len() == arg.len() {
            return Err(format!("unexpected argument '{arg}'"));
        }
        let (name, inline) = match flag.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (flag, None),
        };
        if name == "use-listen-fd" {
            use_listen_fd = !matches!(inline.as_deref(), Some("false" | "0"));
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .cloned()
                .ok_or_else(|| format!("-{name} needs a value"))?,
        };
        let ip = |v: &str| {
            v.trim_matches(|c| c == '[' || c == ']')
                .parse::<IpAddr>()
                .map_err(|_| format!("-{name}: '{v}' is not an IP address"))
        };
        let port = |v: &str| match v.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("-{name}: '{v}' is not a port (1-65535)")),
        };
        match name {
            "proto" => {
                proto = Some(match value.as_str() {
                    "tcp" => RelayProto::Tcp,
                    "udp" => RelayProto::Udp,
                    "sctp" => RelayProto::Sctp,
                    other => {
                        return Err(format!(
                            "-proto: unknown protocol '{other}' (tcp, udp or sctp)"
                        ))
                    }
                })
            }
            "host-ip" => host_ip = Some(ip(&value)?),
            "host-port" => host_port = Some(port(&value)?),
            "container-ip" => container_ip = Some(ip(&value)?),
            "container-port" => container_port = Some(port(&value)?),
            other => return Err(format!("unknown flag -{other}")),
        }
    }
    fn need<T>(v: Option<T>, what: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("-{what} is missing"))
    }
    Ok(Args {
        proto: need(proto, "proto")?,
        host: SocketAddr::new(need(host_ip, "host-ip")?, need(host_port, "host-port")?),
        container: SocketAddr::new(
            need(container_ip, "container-ip")?,
            need(container_port, "container-port")?,
        ),
        use_listen_fd,
    })
}

/// Takes descriptor `fd` if the process was given it.
fn inherited(fd: i32) -> Option<OwnedFd> {
    // SAFETY: F_GETFD only reads the descriptor's flags.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: the descriptor is open and nothing else in this process owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Answers Docker on the status pipe (if there is one).
fn answer(status: &mut Option<OwnedFd>, text: &str) {
    if let Some(fd) = status.take() {
        let mut pipe = std::fs::File::from(fd);
        let _ = pipe.write_all(text.as_bytes());
    }
}

/// SIGINT and SIGTERM, blocked in every thread so that `sigwait` takes them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: the set is a valid sigset_t; blocking is per thread, done
    // before any thread starts so that they inherit it.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    set
}

fn wait_for_signal(set: &libc::sigset_t) {
    let mut sig = 0;
    // SAFETY: sigwait on a valid set of blocked signals.
    while unsafe { libc::sigwait(set, &mut sig) } != 0 {}
}

/// How the port is served.
enum Served {
    Datapath(Mapping),
    Relay(std::path::PathBuf),
}

fn main() -> ExitCode {
    let signals = block_signals();
    let mut status = inherited(STATUS_FD);
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let fail = |status: &mut Option<OwnedFd>, msg: &str| {
        answer(status, &format!("1\n{msg}"));
        eprintln!("{NAME}: error: {msg}");
        ExitCode::FAILURE
    };
    let args = match parse(&argv) {
        Ok(a) => a,
        Err(e) => return fail(&mut status, &e),
    };
    let listen = if args.use_listen_fd {
        match inherited(LISTEN_FD) {
            Some(fd) => Some(socket2::Socket::from(fd)),
            None => return fail(&mut status, "-use-listen-fd given but fd 4 is not open"),
        }
    } else {
        None
    };
    let served = match serve(&args, listen) {
        Ok(s) => s,
        Err(e) => return fail(&mut status, &e),
    };
    answer(&mut status, "0\n");
    wait_for_signal(&signals);
    match served {
        Served::Datapath(m) => {
            if let Err(e) = ops::unpublish(None, &m) {
                eprintln!("{NAME}: error: unpublishing {m}: {e}");
                return ExitCode::FAILURE;
            }
        }
        Served::Relay(record) => relayed::forget(&record),
    }
    ExitCode::SUCCESS
}

/// Publishes through the datapath, or relays what it cannot serve.
fn serve(args: &Args, listen: Option<socket2::Socket>) -> Result<Served, String> {
    let proto = match args.proto {
        RelayProto::Tcp => Some(Proto::Tcp),
        RelayProto::Udp => Some(Proto::Udp),
        RelayProto::Sctp => None,
    };
    let same_family = args.host.is_ipv4() == args.container.is_ipv4();
    let why = match proto {
        None => "the datapath serves TCP and UDP only".to_string(),
        Some(_) if !same_family => format!(
            "{} host address, {} container: the datapath does no NAT between families",
            family(args.host.ip()),
            family(args.container.ip())
        ),
        Some(proto) => {
            let m = Mapping {
                host: HostPort {
                    proto,
                    addr: args.host.ip(),
                    port: args.host.port(),
                },
                container_ip: args.container.ip(),
                container_port: args.container.port(),
            };
            // With -use-listen-fd dockerd holds the port: ours to publish.
            match ops::publish(&ops::PublishRequest {
                netns: None,
                mapping: m,
                force: listen.is_some(),
            }) {
                // The passed socket is closed: the datapath holds the port.
                Ok(_) => return Ok(Served::Datapath(m)),
                Err(e) if e.is_usage() => return Err(e.to_string()),
                Err(e) => format!("the datapath failed: {e}"),
            }
        }
    };
    let listeners = match listen {
        Some(sock) => {
            // Bound by dockerd; listening already or not (listen(2) again
            // only sets the backlog).
            if args.proto != RelayProto::Udp {
                sock.listen(1024)
                    .map_err(|e| format!("listen on the socket passed as fd 4: {e}"))?;
            }
            vec![sock]
        }
        None => relay::bind(args.proto, args.host)
            .map_err(|e| format!("cannot listen on {}/{}: {e}", args.host, args.proto.name()))?,
    };
    let record = relayed::record(&Relayed {
        pid: std::process::id(),
        proto: args.proto.name().into(),
        host_ip: args.host.ip().to_string(),
        host_port: args.host.port(),
        container_ip: args.container.ip().to_string(),
        container_port: args.container.port(),
        by: NAME.into(),
        why,
    })
    .map_err(|e| e.to_string())?;
    relay::start(args.proto, listeners, args.container);
    Ok(Served::Relay(record))
}

fn family(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}
