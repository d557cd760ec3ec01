//! A plain userspace relay, for the ports the datapath cannot serve (an SCTP
//! port; an IPv6 host address published to an IPv4-only container, since the
//! datapath does no NAT between families): it listens on the host address
//! and copies bytes or datagrams to the container, as Docker's own proxy
//! does. The Docker proxy front end uses it; the datapath never does.
use std::{
    collections::HashMap,
    io,
    net::{IpAddr, Shutdown, SocketAddr, UdpSocket},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

/// What a relay carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayProto {
    Tcp,
    Udp,
    Sctp,
}

impl RelayProto {
    pub fn name(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Sctp => "sctp",
        }
    }

    fn socket_type(self) -> (Type, Protocol) {
        match self {
            Self::Tcp => (Type::STREAM, Protocol::TCP),
            Self::Udp => (Type::DGRAM, Protocol::UDP),
            // One-to-one SCTP sockets (RFC 6458): accept and connect like TCP.
            Self::Sctp => (Type::STREAM, Protocol::SCTP),
        }
    }
}

/// How long a UDP client's flow lives without a datagram either way.
pub const UDP_IDLE: Duration = Duration::from_secs(60);

/// One bound socket of `proto` on `addr` (IPv6 ones IPv6-only: the IPv4
/// side of a port is the datapath's or its own relay's).
fn bind_one(proto: RelayProto, addr: SocketAddr) -> io::Result<Socket> {
    let (ty, protocol) = proto.socket_type();
    let sock = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_reuse_address(true)?;
    sock.bind(&addr.into())?;
    if ty == Type::STREAM {
        sock.listen(1024)?;
    }
    Ok(sock)
}

/// Binds the host side. An IPv6 wildcard that portfwd's bind hook refuses
/// (it takes a `::` bind for dual-stack, and the IPv4 side of the port is
/// published) is bound on each IPv6 address of the host instead.
pub fn bind(proto: RelayProto, host: SocketAddr) -> io::Result<Vec<Socket>> {
    match bind_one(proto, host) {
        Ok(sock) => Ok(vec![sock]),
        Err(e)
            if e.raw_os_error() == Some(libc::EPERM)
                && host.ip().is_unspecified()
                && host.is_ipv6() =>
        {
            let networks = crate::host::ifaces::networks().map_err(io::Error::other)?;
            let mut out = Vec::new();
            for n in networks.iter().filter(|n| n.addr.is_ipv6()) {
                out.push(bind_one(proto, SocketAddr::new(n.addr, host.port()))?);
            }
            if out.is_empty() {
                return Err(e);
            }
            Ok(out)
        }
        Err(e) => Err(e),
    }
}

/// Starts relaying from `listeners` (as `bind` returned them) to `target`,
/// on threads that run until the process exits.
pub fn start(proto: RelayProto, listeners: Vec<Socket>, target: SocketAddr) {
    for listener in listeners {
        match proto {
            RelayProto::Udp => {
                let sock: UdpSocket = listener.into();
                thread::spawn(move || udp(sock, target));
            }
            RelayProto::Tcp | RelayProto::Sctp => {
                thread::spawn(move || stream(proto, listener, target));
            }
        }
    }
}

fn stream(proto: RelayProto, listener: Socket, target: SocketAddr) {
    loop {
        let Ok((client, _)) = listener.accept() else {
            thread::sleep(Duration::from_millis(50));
            continue;
        };
        thread::spawn(move || {
            let (ty, protocol) = proto.socket_type();
            let upstream = Socket::new(Domain::for_address(target), ty, Some(protocol))
                .and_then(|s| s.connect(&target.into()).map(|()| s));
            let Ok(upstream) = upstream else {
                // The container does not answer: the client sees the
                // connection close, as with docker-proxy.
                return;
            };
            let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
                return;
            };
            let back = thread::spawn(move || copy(&u2, &c2));
            copy(&client, &upstream);
            let _ = back.join();
        });
    }
}

/// Copies until EOF or an error, then shuts the writing side down.
fn copy(from: &Socket, to: &Socket) {
    let _ = io::copy(&mut &*from, &mut &*to);
    let _ = to.shutdown(Shutdown::Write);
}

/// Datagrams: one connected upstream socket per client address, so that
/// the container's replies find their client; dropped after `UDP_IDLE`.
fn udp(sock: UdpSocket, target: SocketAddr) {
    type Flows = Arc<Mutex<HashMap<SocketAddr, (Arc<UdpSocket>, Instant)>>>;
    let flows: Flows = Arc::default();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let existing = flows.lock().unwrap().get(&client).map(|(u, _)| u.clone());
        let upstream = match existing {
            Some(u) => u,
            None => {
                let local: SocketAddr = match target.ip() {
                    IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
                    IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let Ok(u) = UdpSocket::bind(local).and_then(|u| u.connect(target).map(|()| u))
                else {
                    continue;
                };
                let _ = u.set_read_timeout(Some(Duration::from_secs(5)));
                let u = Arc::new(u);
                let (reply_sock, reply_up, reply_flows) =
                    (sock.try_clone(), u.clone(), flows.clone());
                if let Ok(reply_sock) = reply_sock {
                    thread::spawn(move || {
                        let mut buf = vec![0u8; 65_536];
                        loop {
                            match reply_up.recv(&mut buf) {
                                Ok(n) => {
                                    let _ = reply_sock.send_to(&buf[..n], client);
                                    if let Some(f) = reply_flows.lock().unwrap().get_mut(&client) {
                                        f.1 = Instant::now();
                                    }
                                }
                                Err(_) => {
                                    let mut f = reply_flows.lock().unwrap();
                                    if f.get(&client).is_some_and(|(_, t)| t.elapsed() >= UDP_IDLE)
                                    {
                                        f.remove(&client);
                                        return;
                                    }
                                }
                            }
                        }
                    });
                }
                flows
                    .lock()
                    .unwrap()
                    .insert(client, (u.clone(), Instant::now()));
                u
            }
        };
        let _ = upstream.send(&buf[..n]);
        if let Some(f) = flows.lock().unwrap().get_mut(&client) {
            f.1 = Instant::now();
        }
    }
}
