//! Finding the cgroup2 hierarchy the socket hooks attach to.
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// The cgroup2 root: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified
/// on hybrid ones; otherwise the first cgroup2 mount listed.
pub fn default_root() -> Result<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("reading /proc/self/mountinfo", e))?;
    let mut mounts = Vec::new();
    for line in info.lines() {
        // ... mount_point ... - fstype source options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        if let Some(mp) = left.split_whitespace().nth(4) {
            mounts.push(PathBuf::from(mp));
        }
    }
    for preferred in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Some(m) = mounts.iter().find(|m| m.as_path() == Path::new(preferred)) {
            return Ok(m.clone());
        }
    }
    mounts.into_iter().next().ok_or(Error::NoCgroup2)
}

/// Fails unless `path` is a directory on a cgroup2 filesystem.
pub fn require_cgroup2(path: &Path) -> Result<()> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::NotCgroup(path.display().to_string()))?;
    // SAFETY: statfs fills a zeroed struct from a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let ok = unsafe { libc::statfs(c.as_ptr(), &mut st) } == 0
        && st.f_type as i64 == CGROUP2_SUPER_MAGIC;
    if ok && path.is_dir() {
        Ok(())
    } else {
        Err(Error::NotCgroup(path.display().to_string()))
    }
}
