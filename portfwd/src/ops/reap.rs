//! State of network namespaces that no longer exist: removed by every
//! operation (and by `watch` from time to time).
//!
//! A namespace deleted without `detach` leaves its state directory behind,
//! with links that keep programs on the cgroup2 root and tens of MiB of
//! pinned maps; its cookie is never reused, so nothing would ever take them
//! over. The loader records each namespace's nsfs inode in its `pf_meta`,
//! and `host::netns::gone` tells which of them nothing holds any more.
use std::path::PathBuf;

use crate::{
    bpf,
    error::Result,
    host::netns::{self, Known},
    state::StateDir,
    table,
};

/// The state of a namespace that was gone, removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadNamespace {
    /// Its cookie (SO_NETNS_COOKIE), as in the name of its state directory.
    pub cookie: u64,
    /// The state directory that was removed.
    pub dir: PathBuf,
}

/// Removes the state of every namespace, other than the current one, that
/// no longer exists: its links first (BPF_LINK_DETACH, so the cgroup
/// programs stop at once), then the directory with its maps. Best effort: a
/// directory that cannot be removed is left for the next command, and
/// nothing is removed when liveness cannot be told for sure.
pub fn remove_dead_namespaces() -> Vec<DeadNamespace> {
    let Ok(current) = netns::cookie() else {
        return Vec::new();
    };
    let others: Vec<(u64, StateDir)> = StateDir::all()
        .into_iter()
        .filter(|(cookie, _)| *cookie != current)
        .collect();
    let known: Vec<Known> = others
        .iter()
        .map(|(cookie, state)| Known {
            cookie: *cookie,
            inode: bpf::recorded_netns_inode(state),
        })
        .collect();
    let Some(gone) = netns::gone(&known) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for (cookie, state) in others {
        if gone.contains(&cookie) && remove(&state).unwrap_or(false) {
            removed.push(DeadNamespace {
                cookie,
                dir: state.path,
            });
        }
    }
    removed
}

/// Removes one dead namespace's state, under its lock; false if it was gone
/// already (another command may be removing it too).
fn remove(state: &StateDir) -> Result<bool> {
    let _lock = table::lock(state)?;
    if !state.exists() {
        return Ok(false);
    }
    for link in state.all_links() {
        // A TC link whose device went with the namespace is already off its
        // hook; removing the pin is all there is left to do.
        let _ = bpf::detach_pinned(&link);
    }
    state.remove().map(|()| true)
}
