//! Where portfwd keeps its state: one directory per network namespace under
//! /sys/fs/bpf/portfwd/, named by the namespace cookie, holding the pinned
//! maps and one pinned TCX link per attached interface.
use std::path::{Path, PathBuf};

use crate::{
    error::{Error, Result},
    host::bpffs::BPFFS,
};

/// Pinned link names: `br_<ifindex>` for a bridge, `ext_<ifindex>` for an
/// external interface. Indices, not names, so renames cannot confuse us.
const BRIDGE_PREFIX: &str = "br_";
const EXTERNAL_PREFIX: &str = "ext_";
const CGROUP_PREFIX: &str = "cg_";
/// A directory (bpffs holds no plain files) whose presence says that the
/// external interfaces were not named: `watch` serves the ones that appear
/// later. Its prefix keeps it out of the maps and out of the links.
const AUTO_EXTERNAL: &str = "ext_auto";
/// State directories: `netns-<cookie>`.
const NETNS_PREFIX: &str = "netns-";

pub fn root() -> PathBuf {
    Path::new(BPFFS).join("portfwd")
}

#[derive(Clone, Debug)]
pub struct StateDir {
    pub path: PathBuf,
}

impl StateDir {
    pub fn for_cookie(cookie: u64) -> Self {
        Self {
            path: root().join(format!("{NETNS_PREFIX}{cookie}")),
        }
    }

    /// Every namespace's state directory, with its cookie.
    pub fn all() -> Vec<(u64, Self)> {
        let Ok(entries) = std::fs::read_dir(root()) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, Self)> = entries
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_prefix(NETNS_PREFIX)?
                    .parse()
                    .ok()
            })
            .map(|cookie| (cookie, Self::for_cookie(cookie)))
            .collect();
        out.sort_unstable_by_key(|(cookie, _)| *cookie);
        out
    }

    pub fn current() -> Result<Self> {
        Ok(Self::for_cookie(crate::host::netns::cookie()?))
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    pub fn create(&self) -> Result<()> {
        std::fs::create_dir_all(&self.path)
            .map_err(|e| Error::io(format!("creating {}", self.path.display()), e))
    }

    pub fn map_pin(&self, map: &str) -> PathBuf {
        self.path.join(map)
    }

    /// A directory whose presence says that `ops::publish` attached the
    /// bridge (not a user's `attach`): the last `unpublish` of its mappings
    /// detaches it again. Not a link: `_proxy` keeps it out of `bridges`
    /// (bpffs refuses names with a dot).
    pub fn proxy_mark(&self, ifindex: u32) -> PathBuf {
        self.path.join(format!("{BRIDGE_PREFIX}{ifindex}_proxy"))
    }

    pub fn bridge_link(&self, ifindex: u32) -> PathBuf {
        self.path.join(format!("{BRIDGE_PREFIX}{ifindex}"))
    }

    /// The link of a cgroup program, named after the program.
    pub fn cgroup_link(&self, prog: &str) -> PathBuf {
        self.path.join(format!("{CGROUP_PREFIX}{prog}"))
    }

    pub fn external_link(&self, ifindex: u32) -> PathBuf {
        self.path.join(format!("{EXTERNAL_PREFIX}{ifindex}"))
    }

    fn links(&self, prefix: &str) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut out: Vec<u32> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
            .collect();
        out.sort_unstable();
        out
    }

    /// Interface indices of the attached bridges.
    pub fn bridges(&self) -> Vec<u32> {
        self.links(BRIDGE_PREFIX)
    }

    /// The pinned links of the cgroup programs.
    pub fn cgroup_links(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with(CGROUP_PREFIX))
            })
            .map(|e| e.path())
            .collect()
    }

    /// Every pinned link: bridges', external interfaces' and cgroup ones.
    pub fn all_links(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .bridges()
            .into_iter()
            .map(|i| self.bridge_link(i))
            .chain(self.externals().into_iter().map(|i| self.external_link(i)))
            .collect();
        out.extend(self.cgroup_links());
        out
    }

    /// Names of the pinned maps: every entry that is not a link.
    pub fn pinned_maps(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.path) else {
            return Vec::new();
        };
        let mut out: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| {
                ![BRIDGE_PREFIX, EXTERNAL_PREFIX, CGROUP_PREFIX]
                    .iter()
                    .any(|p| n.starts_with(p))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// True if the external interfaces are every one with a host address
    /// (none was named at attach).
    pub fn auto_external(&self) -> bool {
        self.path.join(AUTO_EXTERNAL).is_dir()
    }

    pub fn set_auto_external(&self, on: bool) -> Result<()> {
        set_mark(&self.path.join(AUTO_EXTERNAL), on)
    }

    /// Interface indices of the external interfaces.
    pub fn externals(&self) -> Vec<u32> {
        self.links(EXTERNAL_PREFIX)
    }

    /// Removes the directory and everything in it (bpffs pins are plain
    /// files to unlink), then the parent if it is left empty.
    pub fn remove(&self) -> Result<()> {
        if self.exists() {
            std::fs::remove_dir_all(&self.path)
                .map_err(|e| Error::io(format!("removing {}", self.path.display()), e))?;
        }
        let _ = std::fs::remove_dir(root());
        Ok(())
    }
}

/// Creates (`on`) or removes the marker directory `path`; either done
/// already is fine.
pub fn set_mark(path: &Path, on: bool) -> Result<()> {
    let done = if on {
        std::fs::create_dir(path)
    } else {
        std::fs::remove_dir(path)
    };
    match done {
        Err(e)
            if e.kind() != std::io::ErrorKind::AlreadyExists
                && e.kind() != std::io::ErrorKind::NotFound =>
        {
            Err(Error::io(format!("updating {}", path.display()), e))
        }
        _ => Ok(()),
    }
}
