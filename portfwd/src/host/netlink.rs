//! The little of netlink portfwd needs: a socket, and a dump request whose
//! answer is handed over message by message. Used for rtnetlink (addresses)
//! and NETLINK_SOCK_DIAG (listening sockets).
use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

/// Size of struct nlmsghdr.
pub const NLMSG_HDR: usize = 16;

/// A netlink socket of `protocol` (NETLINK_ROUTE, NETLINK_SOCK_DIAG...).
pub fn socket(protocol: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); ownership moves to OwnedFd right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            protocol,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends a dump request of type `kind` whose body (after the nlmsghdr) is
/// `body`, and calls `each(type, payload)` for every message of the answer
/// until NLMSG_DONE. A NLMSG_ERROR or a malformed message is an error; what
/// `each` saw before it stays seen.
pub fn dump(
    protocol: libc::c_int,
    kind: u16,
    body: &[u8],
    mut each: impl FnMut(u16, &[u8]),
) -> io::Result<()> {
    let sock = socket(protocol)?;
    let len = NLMSG_HDR + body.len();
    let mut req = vec![0u8; len];
    req[0..4].copy_from_slice(&(len as u32).to_ne_bytes());
    req[4..6].copy_from_slice(&kind.to_ne_bytes());
    req[6..8].copy_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16).to_ne_bytes());
    req[NLMSG_HDR..].copy_from_slice(body);
    // SAFETY: send a buffer of its own length.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 64 << 10];
    loop {
        // SAFETY: recv into a buffer of the given length.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        let data = &buf[..n as usize];
        let mut off = 0;
        while off + NLMSG_HDR <= data.len() {
            let len = u32::from_ne_bytes(data[off..off + 4].try_into().unwrap()) as usize;
            let kind = u16::from_ne_bytes(data[off + 4..off + 6].try_into().unwrap());
            if len < NLMSG_HDR || off + len > data.len() {
                return Err(io::Error::other("truncated netlink message"));
            }
            let payload = &data[off + NLMSG_HDR..off + len];
            if kind == libc::NLMSG_DONE as u16 {
                return Ok(());
            }
            if kind == libc::NLMSG_ERROR as u16 {
                let code = payload
                    .get(..4)
                    .map_or(0, |b| i32::from_ne_bytes(b.try_into().unwrap()));
                return Err(io::Error::from_raw_os_error(-code));
            }
            each(kind, payload);
            off += (len + 3) & !3;
        }
    }
}

/// The attributes of a netlink message whose fixed header ends at `start`:
/// (type, payload) pairs, each aligned to 4 bytes, up to the first one that
/// does not fit.
pub fn attributes(msg: &[u8], start: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut a = start;
    std::iter::from_fn(move || {
        let head = msg.get(a..a + 4)?;
        let alen = u16::from_ne_bytes([head[0], head[1]]) as usize;
        let atype = u16::from_ne_bytes([head[2], head[3]]);
        let data = msg.get(a + 4..a + alen).filter(|_| alen >= 4)?;
        a += (alen + 3) & !3;
        Some((atype, data))
    })
}
