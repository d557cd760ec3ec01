//! The library's one error tree. Every variant says whether it is the
//! caller's input that is wrong (exit code 2, nothing changed) or the system
//! that failed (exit code 1).
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid mapping '{spec}': {why}")]
    BadSpec { spec: String, why: String },
    #[error("host port {0} is given twice")]
    DuplicatePort(String),
    #[error("host port {port} is already published as {existing}")]
    PortConflict { port: String, existing: String },
    #[error("nothing is attached in this network namespace; run `portfwd attach BRIDGE` first")]
    NothingAttached,
    #[error("cannot tell which attached bridge {0} is on; attach its bridge with --map instead")]
    NoBridgeFor(String),
    #[error("no interface of this host is on the network of {0}")]
    NoInterfaceFor(String),
    #[error("no host interface reaches {0} (no route to it but a default one)")]
    NoRouteTo(String),
    #[error("{0} is not published")]
    NotPublished(String),
    #[error("host port {port} is in use by {owner}; use --force to publish it anyway")]
    PortInUse { port: String, owner: String },
    #[error(
        "no cgroup2 filesystem found (looked in /proc/self/mountinfo); name one with --cgroup"
    )]
    NoCgroup2,
    #[error("{0} is not a cgroup2 directory")]
    NotCgroup(String),
    #[error("no such interface: {0}")]
    NoSuchInterface(String),
    #[error("interface {0} is not an Ethernet device")]
    NotEthernet(String),
    #[error("no such network namespace: {0}")]
    NoSuchNetns(String),
    #[error(
        "no interface holds a host address (loopback and bridges aside); name one with --external"
    )]
    NoDefaultRoute,
    #[error("{0} is not attached")]
    NotAttached(String),
    #[error("{0} is both the bridge and an external interface")]
    BridgeIsExternal(String),
    #[error("needs root: {0}")]
    NotPrivileged(String),
    #[error("bpffs is not available at {path}: {why}")]
    NoBpffs { path: PathBuf, why: String },
    #[error("kernel {found} is too old: portfwd needs Linux {needed} or later (TCX links)")]
    KernelTooOld { found: String, needed: String },
    #[error(
        "{dir} holds maps made by another portfwd version ({map}: {found}, this portfwd uses \
         {expected}); `portfwd detach BRIDGE` removes them, then attach again"
    )]
    StaleState {
        dir: PathBuf,
        map: String,
        found: String,
        expected: String,
    },
    #[error("the state file {path} is unreadable ({why}); fix it or move it away")]
    BadStateFile { path: PathBuf, why: String },
    #[error("{0} bridge(s) could not be restored (see above)")]
    RestoreIncomplete(usize),
    /// Resolving a container name through the Docker engine.
    #[error(transparent)]
    Docker(#[from] crate::docker::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{context}: {source}")]
    Ebpf {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// True if the error is the caller's (bad input or environment the caller
    /// must fix) rather than a failure while acting.
    pub fn is_usage(&self) -> bool {
        match self {
            Self::Docker(e) => e.is_usage(),
            Self::Io { .. } | Self::Ebpf { .. } | Self::RestoreIncomplete(_) => false,
            _ => true,
        }
    }

    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub fn ebpf(
        context: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Ebpf {
            context: context.into(),
            source: Box::new(source),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
