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

/// The nsfs inode of the calling thread's network namespace (st_ino of
/// /proc/thread-self/ns/net). Unlike the cookie it can be looked for in
/// /proc and in mounts, but it is reused once the namespace is gone.
pub fn inode() -> Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/thread-self/ns/net")
        .map(|m| m.ino())
        .map_err(|e| Error::io("stat /proc/thread-self/ns/net", e))
}

/// A network namespace portfwd has state for: its cookie and, if recorded,
/// its nsfs inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Known {
    pub cookie: u64,
    pub inode: Option<u64>,
}

/// The inode of the initial PID namespace (PROC_PID_INIT_INO): only from
/// there does /proc show every process.
const INIT_PID_NS: &str = "pid:[4026531836]";

/// The cookies of `known` whose network namespace no longer exists.
///
/// A namespace exists while something holds it: an nsfs mount (`ip netns
/// add`, Docker, CNI), a process or thread in it, or an open descriptor.
/// Each place found with a wanted inode is entered (in a short-lived thread)
/// to compare cookies, so a reused inode is not taken for the namespace it
/// once was. A namespace without a recorded inode is compared with every
/// namespace found. Cheap places are searched first and the search stops as
/// soon as every namespace is found.
///
/// None (nothing may be removed) unless the search can see everything: the
/// process must be in the initial PID namespace and /proc readable.
pub fn gone(known: &[Known]) -> Option<Vec<u64>> {
    if known.is_empty() {
        return Some(Vec::new());
    }
    if std::fs::read_link("/proc/self/ns/pid").ok()? != std::path::Path::new(INIT_PID_NS) {
        return None;
    }
    let mut search = Search {
        open: known.to_vec(),
        seen: std::collections::HashSet::new(),
    };
    let pids: Vec<String> = std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    // Cheap places first: the mounts of our own mount namespace, then each
    // process's namespace; then threads and descriptors; last the mounts of
    // every other mount namespace.
    search.mounts("/proc/self/mountinfo", "");
    for pid in &pids {
        search.link(&format!("/proc/{pid}/ns/net"));
    }
    for pid in &pids {
        for (dir, tail) in [("task", "/ns/net"), ("fd", "")] {
            let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/{dir}")) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name();
                search.link(&format!(
                    "/proc/{pid}/{dir}/{}{tail}",
                    name.to_string_lossy()
                ));
            }
        }
    }
    let mut mount_namespaces = std::collections::HashSet::new();
    if let Ok(own) = std::fs::read_link("/proc/self/ns/mnt") {
        mount_namespaces.insert(own);
    }
    for pid in &pids {
        let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/mnt")) else {
            continue;
        };
        if mount_namespaces.insert(ns) {
            search.mounts(
                &format!("/proc/{pid}/mountinfo"),
                &format!("/proc/{pid}/root"),
            );
        }
    }
    Some(search.open.iter().map(|k| k.cookie).collect())
}

/// The namespaces not found yet, and the inodes already entered.
struct Search {
    open: Vec<Known>,
    seen: std::collections::HashSet<u64>,
}

impl Search {
    /// A place holding the namespace of inode `inode`, openable at `path`:
    /// entered if a namespace still looked for may be it.
    fn found(&mut self, inode: u64, path: &std::path::Path) {
        if self.open.is_empty() {
            return;
        }
        let wanted = self.open.iter().any(|k| k.inode.is_none_or(|i| i == inode));
        if !wanted || self.seen.contains(&inode) {
            return;
        }
        if let Ok(cookie) = cookie_at(path) {
            self.seen.insert(inode);
            self.open.retain(|k| k.cookie != cookie);
        }
    }

    /// A magic link (/proc/PID/ns/net, /proc/PID/fd/N) to a network
    /// namespace, "net:[INODE]".
    fn link(&mut self, path: &str) {
        if self.open.is_empty() {
            return;
        }
        let Ok(target) = std::fs::read_link(path) else {
            return;
        };
        if let Some(inode) = net_inode(&target.to_string_lossy()) {
            self.found(inode, std::path::Path::new(path));
        }
    }

    /// The nsfs mounts of network namespaces in a mountinfo file, whose
    /// mount points are under `root`.
    fn mounts(&mut self, mountinfo: &str, root: &str) {
        if self.open.is_empty() {
            return;
        }
        let Ok(info) = std::fs::read_to_string(mountinfo) else {
            return;
        };
        for line in info.lines() {
            // ID PARENT MAJ:MIN ROOT MOUNT_POINT ... - FSTYPE SOURCE OPTIONS
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            if right.split_whitespace().next() != Some("nsfs") {
                continue;
            }
            let mut fields = left.split_whitespace().skip(3);
            let (Some(ns), Some(point)) = (fields.next(), fields.next()) else {
                continue;
            };
            if let Some(inode) = net_inode(ns) {
                let path = format!("{root}{}", unescape_mount_point(point));
                self.found(inode, std::path::Path::new(&path));
            }
        }
    }
}

/// The inode in "net:[INODE]".
fn net_inode(text: &str) -> Option<u64> {
    text.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// mountinfo writes space, tab, newline and backslash in mount points as
/// octal escapes (\040 ...).
fn unescape_mount_point(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cookie of the network namespace at `path`, read by a thread that
/// enters it and exits (setns moves only that thread).
fn cookie_at(path: &std::path::Path) -> Result<u64> {
    let file = File::open(path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    std::thread::spawn(move || {
        // SAFETY: setns on an open descriptor; the kernel checks that it is
        // a network namespace, and only this short-lived thread moves.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::io("setns", std::io::Error::last_os_error()));
        }
        cookie()
    })
    .join()
    .unwrap_or_else(|_| Err(Error::io("setns thread", std::io::ErrorKind::Other.into())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_namespace_links_and_mount_points() {
        assert_eq!(net_inode("net:[4026532179]"), Some(4_026_532_179));
        assert_eq!(net_inode("mnt:[4026532179]"), None);
        assert_eq!(net_inode("socket:[12]"), None);
        assert_eq!(unescape_mount_point("/run/netns/a\\040b"), "/run/netns/a b");
        assert_eq!(unescape_mount_point("/run/netns/plain"), "/run/netns/plain");
        assert_eq!(unescape_mount_point("/x\\"), "/x\\");
    }

    #[test]
    fn nothing_known_nothing_gone() {
        assert_eq!(gone(&[]), Some(Vec::new()));
    }
}
