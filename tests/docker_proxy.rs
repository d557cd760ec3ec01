//! portfwd-docker-proxy without a dockerd: the test plays Docker's part of
//! the userland-proxy contract (Docker 28's `-use-listen-fd` included): it
//! binds the host port in the topology's host namespace, starts the proxy
//! there with the status pipe on fd 3 and the bound socket on fd 4, reads
//! the answer, sends traffic from a client namespace, then SIGINT.
mod common;

use std::{
    io::Read as _,
    net::{IpAddr, Ipv4Addr, TcpListener},
    os::{
        fd::{AsRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use common::{docker::connections_of, *};

const PROXY: &str = env!("CARGO_BIN_EXE_portfwd-docker-proxy");

/// A proxy started as dockerd starts it, in namespace `ns`.
struct Proxy {
    child: Child,
    /// The read end of its status pipe (fd 3).
    status: Option<std::fs::File>,
}

impl Proxy {
    /// Starts the proxy in `ns` with `args`, the status pipe as fd 3 and,
    /// if given, `listen` as fd 4.
    fn start(ns: &str, args: &[&str], listen: Option<OwnedFd>) -> Self {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors, owned right below.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors from pipe2, owned once each.
        let (r, w) = unsafe {
            use std::os::fd::FromRawFd as _;
            (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1]))
        };
        let netns = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
        let (w_fd, netns_fd) = (w.as_raw_fd(), netns.as_raw_fd());
        let listen_fd = listen.as_ref().map(|l| l.as_raw_fd());
        let mut cmd = Command::new(PROXY);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: between fork and exec only async-signal-safe calls (setns,
        // dup2) on descriptors that stay open in the parent until spawn
        // returns.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(netns_fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // dup2 clears FD_CLOEXEC on the copies.
                if libc::dup2(w_fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(l) = listen_fd {
                    if libc::dup2(l, 4) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("start portfwd-docker-proxy");
        drop((w, listen, netns));
        Self {
            child,
            status: Some(std::fs::File::from(r)),
        }
    }

    /// Everything the proxy writes on fd 3 until it closes it (it answers
    /// once), within 20 s.
    fn answer(&mut self) -> String {
        let mut pipe = self.status.take().expect("answer read once");
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        while !reader.is_finished() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the proxy did not answer on fd 3 within 20 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reader.join().unwrap()
    }

    /// SIGINT (as dockerd stops it), then its exit status and stderr
    /// within 10 s.
    fn interrupt(mut self) -> (std::process::ExitStatus, String) {
        // SAFETY: kill(2) on our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.wait()
    }

    fn wait(&mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status, err);
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the proxy did not exit within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn docker28_args(port: u16, container: &str) -> Vec<String> {
    [
        "-proto",
        "tcp",
        "-host-ip",
        "0.0.0.0",
        "-host-port",
        &port.to_string(),
        "-container-ip",
        container,
        "-container-port",
        "80",
        "-use-listen-fd",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn docker28_listen_fd_publish_serve_and_sigint() {
    require_privileges!();
    let topo = Topology::new("dp28", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 3);
    // Docker 28 binds the host port itself before it starts the proxy.
    let listener: TcpListener = in_netns(&topo.host.name, || {
        TcpListener::bind((Ipv4Addr::UNSPECIFIED, 18090)).expect("bind 0.0.0.0:18090")
    });
    let args = docker28_args(18090, "172.30.0.10");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut proxy = Proxy::start(&topo.host.name, &args, Some(OwnedFd::from(listener)));
    assert_eq!(proxy.answer(), "0\n", "the proxy must answer exactly 0\\n");

    // Nobody named h0: the bridge was found from the container address and
    // attached with the default external interfaces.
    let rows = list_json(&topo);
    assert_eq!(rows.len(), 1, "one mapping expected: {rows:#?}");
    assert_eq!(rows[0]["container_ip"], "172.30.0.10", "{rows:#?}");
    assert_eq!(rows[0]["bridge"], "docker0", "{rows:#?}");
    let body =
        http_get(&topo.client.name, HOST_EXT_IP, 18090).expect("GET through the proxy's port");
    assert_eq!(body, format!("web saw {CLIENT_IP}"), "client address kept");
    // A connection held open while the proxy is looked at: no socket of the
    // proxy carries it.
    let held = connect_from(&topo.client.name, HOST_EXT_IP, 18090).expect("connect");
    std::thread::sleep(Duration::from_millis(200));
    let conns = connections_of(proxy.child.id());
    assert!(
        conns.is_empty(),
        "the proxy must hold no TCP connection: {conns:?}"
    );
    drop(held);

    let (status, err) = proxy.interrupt();
    assert!(
        status.success(),
        "the proxy must exit 0 on SIGINT: {status}, {err}"
    );
    let out = ok(topo.portfwd(&["list"]), "list");
    assert!(
        out.contains("nothing attached"),
        "the proxy attached docker0 for its port: after its port is gone nothing must be \
         left: {out}"
    );
    assert!(
        http_get(&topo.client.name, HOST_EXT_IP, 18090).is_err(),
        "18090 still answers after the proxy stopped"
    );
    drop(server);
}

#[test]
fn two_proxies_unpublish_only_their_own_mapping() {
    require_privileges!();
    let topo = Topology::new("dpown", 2);
    let server = http_server(&topo.containers[1].name, 80, "second", 1);
    let start = |port: u16, container: &str| {
        let l: TcpListener = in_netns(&topo.host.name, move || {
            TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind")
        });
        let args = docker28_args(port, container);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = Proxy::start(&topo.host.name, &args, Some(OwnedFd::from(l)));
        assert_eq!(p.answer(), "0\n", "proxy for {port}");
        p
    };
    let first = start(18091, "172.30.0.10");
    let second = start(18092, "172.30.0.11");
    let (status, _) = first.interrupt();
    assert!(status.success());
    let rows = list_json(&topo);
    assert_eq!(rows.len(), 1, "only 18092 must be left: {rows:#?}");
    assert_eq!(rows[0]["host_port"], 18092, "{rows:#?}");
    let body = http_get(&topo.client.name, HOST_EXT_IP, 18092).expect("GET 18092");
    assert_eq!(body, format!("second saw {CLIENT_IP}"));
    let (status, _) = second.interrupt();
    assert!(status.success());
    server.join().unwrap();
}

#[test]
fn ipv6_host_with_ipv4_container_is_relayed_and_listed() {
    require_privileges!();
    let topo = Topology::dual("dprelay", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    // Docker 20.10: one proxy for 0.0.0.0, one for [::] to the same IPv4
    // container address; the second is relayed in userspace.
    let v4 = [
        "-proto",
        "tcp",
        "-host-ip",
        "0.0.0.0",
        "-host-port",
        "18093",
        "-container-ip",
        "172.30.0.10",
        "-container-port",
        "80",
    ];
    let mut p4 = Proxy::start(&topo.host.name, &v4, None);
    assert_eq!(p4.answer(), "0\n");
    let v6 = [
        "-proto",
        "tcp",
        "-host-ip",
        "::",
        "-host-port",
        "18093",
        "-container-ip",
        "172.30.0.10",
        "-container-port",
        "80",
    ];
    let mut p6 = Proxy::start(&topo.host.name, &v6, None);
    assert_eq!(p6.answer(), "0\n");
    let out = ok(topo.portfwd(&["list"]), "list");
    assert!(
        out.contains("relayed by portfwd-docker-proxy") && out.contains("[::]:18093/tcp"),
        "list must name the relayed port: {out}"
    );
    let body = http_get(&topo.client.name, IpAddr::V6(HOST_EXT_IP6), 18093).expect("GET over IPv6");
    // Relayed: the container sees the relay's address, as with docker-proxy.
    assert!(body.starts_with("web saw "), "{body}");
    let body = http_get(&topo.client.name, HOST_EXT_IP, 18093).expect("GET over IPv4");
    assert_eq!(body, format!("web saw {CLIENT_IP}"), "IPv4 by the datapath");
    let (s6, e6) = p6.interrupt();
    assert!(s6.success(), "{e6}");
    let out = ok(topo.portfwd(&["list"]), "list");
    assert!(!out.contains("relayed by"), "the relay is gone: {out}");
    assert!(
        connect_from(&topo.client.name, IpAddr::V6(HOST_EXT_IP6), 18093).is_err(),
        "[::]:18093 still answers after its proxy stopped"
    );
    let (s4, e4) = p4.interrupt();
    assert!(s4.success(), "{e4}");
    server.join().unwrap();
}

#[test]
fn bad_arguments_answer_1_on_fd3_and_exit_1() {
    require_privileges!();
    let ns = Netns::new(format!("pft-{}-dpbad", std::process::id()));
    for (args, needle) in [
        (
            &["-proto", "tcp", "-host-ip", "0.0.0.0", "-host-port", "x"][..],
            "-host-port: 'x' is not a port",
        ),
        (&["-proto", "icmp"][..], "unknown protocol 'icmp'"),
        (
            &[
                "-proto",
                "tcp",
                "-host-ip",
                "0.0.0.0",
                "-host-port",
                "80",
                "-container-ip",
                "10.0.0.2",
            ][..],
            "-container-port is missing",
        ),
    ] {
        let mut p = Proxy::start(&ns.name, args, None);
        let answer = p.answer();
        assert!(
            answer.starts_with("1\n") && answer.contains(needle),
            "{args:?}: expected 1\\n and '{needle}' on fd 3, got {answer:?}"
        );
        let (status, err) = p.wait();
        assert_eq!(status.code(), Some(1), "{args:?}: exit code 1 expected");
        assert_eq!(
            err.lines().count(),
            1,
            "{args:?}: one line on stderr: {err:?}"
        );
    }
}

/// An SCTP one-to-one socket in namespace `ns`, if the kernel has SCTP.
fn sctp_socket(ns: &str) -> Option<socket2::Socket> {
    in_netns(ns, || {
        socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::SCTP),
        )
        .ok()
    })
}

#[test]
fn sctp_is_relayed_in_userspace_or_refused_in_words() {
    require_privileges!();
    let topo = Topology::new("dpsctp", 1);
    let args = [
        "-proto",
        "sctp",
        "-host-ip",
        "0.0.0.0",
        "-host-port",
        "18094",
        "-container-ip",
        "172.30.0.10",
        "-container-port",
        "80",
    ];
    let Some(server) = sctp_socket(&topo.containers[0].name) else {
        // No SCTP in this kernel: Docker must get the reason.
        let mut p = Proxy::start(&topo.host.name, &args, None);
        let answer = p.answer();
        assert!(
            answer.starts_with("1\n") && answer.contains("sctp"),
            "without SCTP the proxy must answer 1 and say why: {answer:?}"
        );
        return;
    };
    server
        .bind(&std::net::SocketAddr::from((Ipv4Addr::UNSPECIFIED, 80)).into())
        .unwrap();
    server.listen(4).unwrap();
    let serving = std::thread::spawn(move || {
        let (conn, _) = server.accept().expect("the relay's SCTP association");
        std::io::Write::write_all(&mut &conn, b"sctp through the relay").unwrap();
    });
    let mut p = Proxy::start(&topo.host.name, &args, None);
    assert_eq!(p.answer(), "0\n");
    let out = ok(topo.portfwd(&["list"]), "list");
    assert!(
        out.contains("relayed by portfwd-docker-proxy") && out.contains("0.0.0.0:18094/sctp"),
        "list must name the SCTP relay: {out}"
    );
    let client = sctp_socket(&topo.client.name).expect("SCTP in the client namespace");
    client
        .connect_timeout(
            &std::net::SocketAddr::from((HOST_EXT_IP, 18094)).into(),
            Duration::from_secs(5),
        )
        .expect("SCTP connect through the relay");
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut got = String::new();
    (&client)
        .read_to_string(&mut got)
        .expect("read the container's bytes");
    assert_eq!(got, "sctp through the relay");
    serving.join().unwrap();
    let (status, err) = p.interrupt();
    assert!(status.success(), "{err}");
    let out = ok(topo.portfwd(&["list"]), "list");
    assert!(
        !out.contains("relayed by"),
        "the relay record is gone: {out}"
    );
}

#[test]
fn docker28_relays_ipv6_from_the_passed_socket() {
    require_privileges!();
    let topo = Topology::dual("dp28v6", 1);
    let server = http_server(&topo.containers[0].name, 80, "web", 2);
    // dockerd binds both families' sockets (bound, not listening), then
    // starts one proxy for each with -use-listen-fd.
    let (v4_sock, v6_sock) = in_netns(&topo.host.name, || {
        let bind = |addr: std::net::SocketAddr| {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )
            .unwrap();
            if addr.is_ipv6() {
                s.set_only_v6(true).unwrap();
            }
            s.bind(&addr.into())
                .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
            OwnedFd::from(s)
        };
        (
            bind((Ipv4Addr::UNSPECIFIED, 18095).into()),
            bind((std::net::Ipv6Addr::UNSPECIFIED, 18095).into()),
        )
    });
    let args4 = docker28_args(18095, "172.30.0.10");
    let args4: Vec<&str> = args4.iter().map(String::as_str).collect();
    let mut p4 = Proxy::start(&topo.host.name, &args4, Some(v4_sock));
    assert_eq!(p4.answer(), "0\n", "IPv4: by the datapath");
    let mut args6 = docker28_args(18095, "172.30.0.10");
    args6[3] = "::".into();
    let args6: Vec<&str> = args6.iter().map(String::as_str).collect();
    let mut p6 = Proxy::start(&topo.host.name, &args6, Some(v6_sock));
    assert_eq!(p6.answer(), "0\n", "IPv6 host, IPv4 container: relayed");
    let out = ok(topo.portfwd(&["list"]), "list");
    assert!(
        out.contains("relayed by portfwd-docker-proxy") && out.contains("[::]:18095/tcp"),
        "list must name the relayed port: {out}"
    );
    let body = http_get(&topo.client.name, IpAddr::V6(HOST_EXT_IP6), 18095)
        .expect("GET over IPv6 through the socket dockerd passed");
    assert!(body.starts_with("web saw "), "{body}");
    let body = http_get(&topo.client.name, HOST_EXT_IP, 18095).expect("GET over IPv4");
    assert_eq!(body, format!("web saw {CLIENT_IP}"), "IPv4 by the datapath");
    for p in [p6, p4] {
        let (status, err) = p.interrupt();
        assert!(status.success(), "{err}");
    }
    server.join().unwrap();
}
