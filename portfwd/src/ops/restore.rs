//! `restore`: builds again, from the files `persist` keeps, what a boot
//! (bpffs starts empty) or an upgrade (pinned maps of another layout) took
//! away: the bridges with their options, then every mapping, those that
//! follow a container pointed at where it is now (held if it does not run).
//!
//! Idempotent: on a namespace that is already as the file says, attach swaps
//! the programs in place (maps, flows and counters kept) and no mapping
//! changes. Every file is read and checked before anything changes.
use std::path::PathBuf;

use super::{attach, follow, AttachReport, AttachRequest, Followed};
use crate::{
    bpf::Maps,
    docker::{self, Engine},
    error::{Error, Result},
    host::netns::NETNS_RUN_DIR,
    persist::{Doc, Netns},
    spec::SpecTemplate,
    state::StateDir,
    table,
};

#[derive(Clone, Debug, Default)]
pub struct RestoreRequest {
    /// Only this namespace of `ip netns`; None: every namespace with a file.
    pub netns: Option<String>,
}

#[derive(Clone, Debug, Default)]
pub struct RestoreReport {
    /// One per namespace with a file, the initial one first.
    pub restored: Vec<Restored>,
}

impl RestoreReport {
    /// The bridges that could not be restored, in every namespace.
    pub fn failures(&self) -> usize {
        self.restored.iter().map(|r| r.failed.len()).sum()
    }
}

#[derive(Clone, Debug)]
pub struct Restored {
    pub netns: Netns,
    /// Why nothing was done there (the namespace does not exist now).
    pub skipped: Option<String>,
    /// The pinned state of another portfwd version that was removed first.
    pub replaced_stale: Option<PathBuf>,
    /// The bridges attached again, in name order.
    pub bridges: Vec<AttachReport>,
    /// The bridges that could not be, with why (their file entry is kept).
    pub failed: Vec<(String, String)>,
    /// The mappings that follow containers and were pointed again (`to`
    /// None: held, the container does not run or the engine is away).
    pub followed: Vec<Followed>,
    /// Why the Docker engine could not be asked, if it was needed.
    pub engine_unreachable: Option<String>,
    /// State of other namespaces that no longer existed, removed first.
    pub dead_namespaces: Vec<super::DeadNamespace>,
}

/// Restores every namespace that has a file (or the one asked for).
pub fn restore(req: &RestoreRequest) -> Result<RestoreReport> {
    let targets = match &req.netns {
        Some(name) => vec![Netns::Named(name.clone())],
        None => Netns::all()?,
    };
    let mut docs = Vec::new();
    for ns in targets {
        // Every SPEC in it is checked as it is read.
        let doc = Doc::load_from(&ns.path())?;
        docs.push((ns, doc));
    }
    let mut report = RestoreReport::default();
    for (ns, doc) in docs {
        if doc.bridges.is_empty() {
            continue;
        }
        let name = match &ns {
            Netns::Host => None,
            Netns::Named(name) => Some(name.as_str()),
        };
        if let Some(name) = name {
            if !std::path::Path::new(NETNS_RUN_DIR).join(name).exists() {
                report
                    .restored
                    .push(Restored::skipped(ns, "it does not exist".into()));
                continue;
            }
        }
        let dead_namespaces = super::enter(name)?;
        if Netns::current().as_ref() != Some(&ns) {
            let why = "this process is not in it (run restore from the initial namespace)";
            report.restored.push(Restored::skipped(ns, why.into()));
            continue;
        }
        let mut restored = restore_here(ns, &doc)?;
        restored.dead_namespaces = dead_namespaces;
        report.restored.push(restored);
    }
    Ok(report)
}

impl Restored {
    fn skipped(netns: Netns, why: String) -> Self {
        Self {
            netns,
            skipped: Some(why),
            replaced_stale: None,
            bridges: Vec::new(),
            failed: Vec::new(),
            followed: Vec::new(),
            engine_unreachable: None,
            dead_namespaces: Vec::new(),
        }
    }
}

/// Restores the current namespace from `doc`.
fn restore_here(netns: Netns, doc: &Doc) -> Result<Restored> {
    let mut out = Restored::skipped(netns, String::new());
    out.skipped = None;
    out.replaced_stale = remove_stale()?;
    for (bridge, b) in &doc.bridges {
        // By address here; those that follow a container below.
        let specs: Vec<SpecTemplate> = b
            .mappings
            .iter()
            .filter(|e| e.container().is_none())
            .filter_map(|e| e.spec().ok())
            .collect();
        let req = AttachRequest {
            netns: None,
            bridge: bridge.clone(),
            specs,
            external: b.external.clone(),
            cgroup: b.cgroup.clone(),
            no_local: b.no_local,
            // What the user published before the boot, a host process
            // started since must not keep from being published again.
            force: true,
        };
        match attach(&req) {
            Ok(r) => out.bridges.push(r),
            Err(e) => out.failed.push((bridge.clone(), e.to_string())),
        }
    }
    let follows = doc.entries().any(|(_, e)| e.container().is_some());
    if follows && !out.bridges.is_empty() {
        let engine = Engine::connect(docker::DEFAULT_SOCKET)
            .map_err(|e| out.engine_unreachable = Some(e.to_string()))
            .ok();
        let mut at = super::open_attached()?;
        out.followed = follow::sync(&mut at, engine.as_ref(), None)?;
    }
    Ok(out)
}

/// Removes the namespace's pinned state if another portfwd version made it
/// (an upgrade that changed the maps' layout): this one cannot read it, and
/// the file holds everything to build it again. Returns where it was.
fn remove_stale() -> Result<Option<PathBuf>> {
    let state = StateDir::current()?;
    if !state.exists() {
        return Ok(None);
    }
    let _lock = table::lock(&state)?;
    match Maps::open(&state) {
        Err(Error::StaleState { .. }) => {
            super::detach::remove_everything(&state)?;
            Ok(Some(state.path))
        }
        _ => Ok(None),
    }
}
