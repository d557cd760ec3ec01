//! Up-front checks that turn "Operation not permitted" deep in a syscall into
//! one clear line: capabilities and kernel version.
use crate::error::{Error, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_BPF: u32 = 39;

/// TCX links (the multi-program TC attach API) arrived in Linux 6.6.
pub const MIN_KERNEL: (u32, u32) = (6, 6);

fn effective_caps() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| Error::io("reading /proc/self/status", e))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .ok_or_else(|| Error::io("parsing CapEff", std::io::ErrorKind::InvalidData.into()))
}

/// Fails unless the process may load BPF programs and change interfaces
/// (and, with `-n`, enter another namespace and mount bpffs).
pub fn check(need_sys_admin: bool) -> Result<()> {
    let caps = effective_caps()?;
    let has = |c: u32| caps & (1u64 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if need_sys_admin && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_SYS_ADMIN");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::NotPrivileged(format!(
            "missing {} (run it with sudo)",
            missing.join(", ")
        )))
    }
}

/// Parses the leading "MAJOR.MINOR" of a kernel release string.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

pub fn check_kernel() -> Result<()> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_err(|e| Error::io("reading the kernel release", e))?;
    let release = release.trim();
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Ok(()),
        _ => Err(Error::KernelTooOld {
            found: release.to_string(),
            needed: format!("{}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(parse_release("6.18.44-fc-v657"), Some((6, 18)));
        assert_eq!(parse_release("5.15.0-91-generic"), Some((5, 15)));
        assert_eq!(parse_release("6.6"), Some((6, 6)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.15.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("6.6.1").unwrap() >= MIN_KERNEL);
    }
}
