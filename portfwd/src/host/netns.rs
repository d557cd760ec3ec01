//! Network namespaces: entering one by name (like `ip -n`) and naming the
//! current one for the pin directory.
use std::{fs::File, os::fd::AsRawFd as _, path::PathBuf};

use crate::error::{Error, Result};

pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Moves the calling thread into the named network namespace. Only the
/// network namespace changes: the mount namespace (and so bpffs) stays, which
/// is why this is not `ip netns exec`. Call it before starting other threads.
pub fn enter(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(Error::NoSuchNetns(name.to_string()));
    }
    let path = PathBuf::from(NETNS_RUN_DIR).join(name);
    let file = File::open(&path).map_err(|_| Error::NoSuchNetns(name.to_string()))?;
    // SAFETY: setns on an open namespace file descriptor; the kernel checks
    // that it is a network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        let err = std::io::Error::last_os_error();
        return Err(match err.raw_os_error() {
            Some(libc::EINVAL) => Error::NoSuchNetns(name.to_string()),
            Some(libc::EPERM) => {
                Error::NotPrivileged("entering a network namespace needs CAP_SYS_ADMIN".into())
            }
            _ => Error::io(format!("setns {}", path.display()), err),
        });
    }
    Ok(())
}

/// The current network namespace's cookie: a 64-bit id the kernel never
/// reuses (unlike inode numbers), so pins of different namespaces never collide.
pub fn cookie() -> Result<u64> {
    // SAFETY: plain socket(2); the fd is owned by `sock` right after.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::io("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: SO_NETNS_COOKIE writes a u64 into `cookie`, whose size is `len`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(Error::io(
            "getsockopt(SO_NETNS_COOKIE)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(cookie)
}
