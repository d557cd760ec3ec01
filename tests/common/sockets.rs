//! Sockets and traffic: listeners, HTTP servers and clients, connections
//! from inside a namespace, and deterministic payloads.
use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::atomic::Ordering,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::in_netns;

/// A TCP listener inside a namespace, bound before this returns (so a
/// client can connect right away).
pub fn tcp_listener(ns: &str, port: u16) -> TcpListener {
    tcp_listener_at(ns, Ipv4Addr::UNSPECIFIED.into(), port)
}

/// `tcp_listener` on address `addr` (`::` for an IPv6 server).
pub fn tcp_listener_at(ns: &str, addr: IpAddr, port: u16) -> TcpListener {
    let l = in_netns(ns, move || {
        TcpListener::bind((addr, port)).unwrap_or_else(|e| panic!("bind {addr} port {port}: {e}"))
    });
    l.set_nonblocking(true).expect("nonblocking");
    l
}

/// Accepts one connection, giving up (None) after `timeout`.
pub fn accept_within(l: &TcpListener, timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    let deadline = Instant::now() + timeout;
    loop {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false).expect("blocking");
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                return Some((s, peer));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// An HTTP server in namespace `ns` on `port` that answers up to `max`
/// requests, each with "<name> saw <peer ip>", then stops (also by itself
/// after `timeout` without a connection). Returns the peers it saw.
pub fn http_server(
    ns: &str,
    port: u16,
    name: &'static str,
    max: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    http_server_at(ns, Ipv4Addr::UNSPECIFIED.into(), port, name, max)
}

/// `http_server` listening on `addr` (`::` for an IPv6 server).
pub fn http_server_at(
    ns: &str,
    addr: IpAddr,
    port: u16,
    name: &'static str,
    max: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let l = tcp_listener_at(ns, addr, port);
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        while peers.len() < max {
            let Some((mut s, peer)) = accept_within(&l, Duration::from_secs(15)) else {
                break;
            };
            answer_http(&mut s, peer, name);
            peers.push(peer);
        }
        peers
    })
}

/// Reads one request and answers "<name> saw <peer ip>", then closes.
fn answer_http(s: &mut TcpStream, peer: SocketAddr, name: &str) {
    read_http_head(s);
    let body = format!("{name} saw {}", peer.ip());
    let resp = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(resp.as_bytes());
}

/// Reads until the end of an HTTP request head.
pub fn read_http_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") && buf.len() < 64 * 1024 {
        match s.read(&mut byte) {
            Ok(0) | Err(_) => break,
            Ok(_) => buf.push(byte[0]),
        }
    }
    buf
}

/// Connects from namespace `ns` to `addr:port`.
pub fn connect_from(ns: &str, addr: impl Into<IpAddr>, port: u16) -> std::io::Result<TcpStream> {
    let target = SocketAddr::new(addr.into(), port);
    in_netns(ns, move || {
        let s = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        Ok(s)
    })
}

/// One HTTP GET from namespace `ns`; returns the body.
pub fn http_get(ns: &str, addr: impl Into<IpAddr>, port: u16) -> std::io::Result<String> {
    let mut s = connect_from(ns, addr, port)?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    assert!(
        resp.starts_with("HTTP/1.1 200"),
        "unexpected response: {resp:?}"
    );
    Ok(body)
}

/// Deterministic pseudorandom bytes (xorshift), so both ends can agree on
/// content without sharing a buffer.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// An HTTP server like `http_server` that keeps answering until `stop` is
/// set (or nothing connects for 20 s). Returns how many requests it answered.
pub fn http_server_until(
    ns: &str,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<usize> {
    http_server_until_at(ns, Ipv4Addr::UNSPECIFIED.into(), port, name, stop)
}

/// `http_server_until` listening on `addr` (`::` for an IPv6 server).
pub fn http_server_until_at(
    ns: &str,
    addr: IpAddr,
    port: u16,
    name: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> JoinHandle<usize> {
    let l = tcp_listener_at(ns, addr, port);
    std::thread::spawn(move || {
        let mut served = 0;
        let mut idle_since = Instant::now();
        while !stop.load(Ordering::Relaxed) && idle_since.elapsed() < Duration::from_secs(20) {
            let Some((mut s, peer)) = accept_within(&l, Duration::from_millis(100)) else {
                continue;
            };
            idle_since = Instant::now();
            answer_http(&mut s, peer, name);
            served += 1;
        }
        served
    })
}

/// A UDP server in namespace `ns` on `addr:port` answering each datagram
/// with "echo:" and the payload, for up to `max` datagrams (or until nothing
/// came for 15 s). Returns the peers it answered.
pub fn udp_echo(
    ns: &str,
    addr: impl Into<IpAddr>,
    port: u16,
    max: usize,
) -> JoinHandle<Vec<SocketAddr>> {
    let addr = addr.into();
    let sock = in_netns(ns, move || {
        UdpSocket::bind((addr, port)).expect("bind the UDP echo server")
    });
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::thread::spawn(move || {
        let mut peers = Vec::new();
        let mut buf = [0u8; 2048];
        let mut idle_since = Instant::now();
        while peers.len() < max && idle_since.elapsed() < Duration::from_secs(15) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            idle_since = Instant::now();
            let mut reply = b"echo:".to_vec();
            reply.extend_from_slice(&buf[..n]);
            sock.send_to(&reply, peer).expect("echo");
            peers.push(peer);
        }
        peers
    })
}

/// One datagram from namespace `ns` to `to` and its reply, through a plain
/// (unhooked) socket of the test: (reply, where it came from).
pub fn udp_exchange(ns: &str, to: SocketAddr, payload: &str) -> (String, SocketAddr) {
    let payload = payload.to_string();
    in_netns(ns, move || {
        let any: IpAddr = if to.is_ipv4() {
            super::Stack::V4.any()
        } else {
            super::Stack::V6.any()
        };
        let s = UdpSocket::bind((any, 0)).expect("bind the UDP client");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.send_to(payload.as_bytes(), to).expect("send");
        let mut buf = [0u8; 2048];
        let (n, from) = s
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("no UDP reply from {to}: {e}"));
        (String::from_utf8_lossy(&buf[..n]).into_owned(), from)
    })
}
