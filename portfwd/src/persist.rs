//! What survives a reboot: the attached bridges with their options and
//! every mapping (by container address or by container name), one JSON file
//! per network namespace under /var/lib/portfwd (`PORTFWD_STATE_DIR`
//! overrides it). bpffs, where the maps and links live, is empty after a
//! boot; `portfwd restore` builds everything again from these files.
//!
//! A namespace's file is named after what names it across a reboot: the
//! initial namespace is `host.json`, a namespace of `ip netns` (the one `-n
//! NAME` enters) `netns-NAME.json`. A namespace with no such name (a
//! container's own) has no file: nothing would find it again.
//!
//! Every command that changes the state edits its namespace's file while it
//! holds the namespace's lock (`table::lock`), and writes it whole:
//! a temporary file, fsync, rename over the old one, fsync of the directory.
//! A crash leaves the old file or the new one, never a mix.
use std::{
    collections::{BTreeMap, BTreeSet},
    io::Write as _,
    net::IpAddr,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{Error, Result},
    family::endpoint,
    host::netns::NETNS_RUN_DIR,
    spec::{Container, HostPort, Mapping, Proto, SpecTemplate},
};

/// Where the files live unless `PORTFWD_STATE_DIR` says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/portfwd";
/// Overrides `DEFAULT_DIR` (the tests point it at a directory of their own).
pub const DIR_ENV: &str = "PORTFWD_STATE_DIR";
/// The file of the initial network namespace, without `.json`.
pub const HOST: &str = "host";
/// Files of named namespaces: `netns-NAME.json`.
const NETNS_PREFIX: &str = "netns-";
/// The nsfs inode of the initial network namespace (PROC_NET_INIT_INO, fixed
/// in the kernel): /proc/1/ns/net may not be readable, this always is.
const INIT_NET_INO: u64 = 0xEFFF_FFF9;
/// The format of the file; a file of another format is refused, not guessed.
const FORMAT: u32 = 1;

pub fn dir() -> PathBuf {
    std::env::var_os(DIR_ENV)
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_DIR), PathBuf::from)
}

/// Which namespace a file is for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Netns {
    /// The initial network namespace.
    Host,
    /// /var/run/netns/NAME.
    Named(String),
}

impl Netns {
    pub fn path(&self) -> PathBuf {
        dir().join(match self {
            Self::Host => format!("{HOST}.json"),
            Self::Named(name) => format!("{NETNS_PREFIX}{name}.json"),
        })
    }

    /// The namespace of a file name, if it is one of ours.
    fn of_file(file: &str) -> Option<Self> {
        let stem = file.strip_suffix(".json")?;
        if stem == HOST {
            return Some(Self::Host);
        }
        let name = stem.strip_prefix(NETNS_PREFIX)?;
        (!name.is_empty()).then(|| Self::Named(name.to_string()))
    }

    /// The calling thread's network namespace, if something names it
    /// across a reboot: it is the initial one, or /var/run/netns holds it
    /// (the first such name, in name order).
    pub fn current() -> Option<Self> {
        let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
        let me = id(Path::new("/proc/thread-self/ns/net"))?;
        if me.1 == INIT_NET_INO {
            return Some(Self::Host);
        }
        let mut names: Vec<String> = std::fs::read_dir(NETNS_RUN_DIR)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        names.sort_unstable();
        names
            .into_iter()
            .find(|n| id(&Path::new(NETNS_RUN_DIR).join(n)) == Some(me))
            .map(Self::Named)
    }

    /// The namespaces that have a file, the initial one first.
    pub fn all() -> Result<Vec<Self>> {
        let dir = dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("reading {}", dir.display()), e)),
        };
        let mut out: Vec<Self> = entries
            .filter_map(|e| Self::of_file(e.ok()?.file_name().to_str()?))
            .collect();
        out.sort();
        Ok(out)
    }
}

impl std::fmt::Display for Netns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host => f.write_str("the host's network namespace"),
            Self::Named(name) => write!(f, "network namespace {name}"),
        }
    }
}

/// The containers mappings were asked for by name: name and id (if the
/// engine knew it), by host port.
pub type Names = BTreeMap<HostPort, (String, Option<String>)>;

/// One namespace's file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doc {
    pub format: u32,
    /// By bridge name.
    pub bridges: BTreeMap<String, Bridge>,
    /// Where it is kept; None: the namespace has no name, nothing is kept.
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// An attached bridge: the options it was attached with, and its mappings.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    /// As asked (`--external`); empty: portfwd's default.
    #[serde(default)]
    pub external: Vec<String>,
    /// As asked (`--cgroup`); None: portfwd's default.
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub mappings: Vec<Entry>,
}

/// One mapping: a host port and where it goes, as the user gave it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `tcp` or `udp`.
    pub proto: String,
    /// The family's unspecified address: every address of the family.
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub to: Target,
    pub container_port: u16,
}

/// Where a mapping goes: an address, or a Docker container followed by name
/// (and by id once known, so that a rename does not lose it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Address(IpAddr),
    Container {
        name: String,
        #[serde(default)]
        id: Option<String>,
    },
}

impl Entry {
    /// The entry for `m`; `named` is the container it was asked for by
    /// name, with its id.
    pub fn of(m: &Mapping, named: Option<&(String, Option<String>)>) -> Self {
        Self {
            proto: m.host.proto.to_string(),
            host_ip: m.host.addr,
            host_port: m.host.port,
            to: match named {
                Some((name, id)) => Target::Container {
                    name: name.clone(),
                    id: id.clone(),
                },
                None => Target::Address(m.container_ip),
            },
            container_port: m.container_port,
        }
    }

    /// The entry as a SPEC (the container side by id when known), parsed
    /// as any SPEC is: what the file holds is checked as the command line
    /// would be.
    pub fn spec(&self) -> std::result::Result<SpecTemplate, String> {
        let target = match &self.to {
            Target::Address(ip) => endpoint(*ip, self.container_port),
            Target::Container { name, .. } => format!("{name}:{}", self.container_port),
        };
        let text = format!(
            "{}={target}/{}",
            endpoint(self.host_ip, self.host_port),
            self.proto
        );
        let spec: SpecTemplate = text.parse().map_err(|e: Error| e.to_string())?;
        if spec.host_ports.clone().count() != 1 {
            return Err(format!("{text} is not one port"));
        }
        Ok(spec)
    }

    /// The host port (None if the protocol is not one portfwd knows, which
    /// `spec` refuses).
    pub fn host(&self) -> Option<HostPort> {
        let proto = [Proto::Tcp, Proto::Udp]
            .into_iter()
            .find(|p| p.to_string() == self.proto)?;
        Some(HostPort {
            proto,
            addr: self.host_ip,
            port: self.host_port,
        })
    }

    /// The container name the entry follows, if it follows one.
    pub fn container(&self) -> Option<&str> {
        match &self.to {
            Target::Container { name, .. } => Some(name),
            Target::Address(_) => None,
        }
    }
}

impl Doc {
    /// The calling thread's namespace's file (an empty one if there is
    /// none yet, or if the namespace has no name).
    pub fn load() -> Result<Self> {
        match Netns::current() {
            Some(ns) => Self::load_from(&ns.path()),
            None => Ok(Self::default()),
        }
    }

    /// The file at `path`, every entry checked; empty if there is none.
    pub fn load_from(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::BadStateFile {
            path: path.to_path_buf(),
            why,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Self {
                    format: FORMAT,
                    path: Some(path.to_path_buf()),
                    ..Default::default()
                })
            }
            Err(e) => return Err(bad(e.to_string())),
        };
        let mut doc: Self = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if doc.format != FORMAT {
            return Err(bad(format!(
                "format {} (this portfwd reads format {FORMAT})",
                doc.format
            )));
        }
        let mut hosts = Vec::new();
        for (bridge, b) in &doc.bridges {
            for e in &b.mappings {
                let spec = e
                    .spec()
                    .map_err(|why| bad(format!("bridge {bridge}: {why}")))?;
                hosts.extend(spec.host_ports());
            }
        }
        crate::spec::check_unique_hosts(hosts).map_err(|e| bad(e.to_string()))?;
        doc.path = Some(path.to_path_buf());
        Ok(doc)
    }

    /// Records an attach: the bridge with its options (its mappings kept).
    pub fn set_bridge(
        &mut self,
        name: &str,
        external: &[String],
        cgroup: Option<&Path>,
        no_local: bool,
    ) {
        let b = self.bridges.entry(name.to_string()).or_default();
        b.external = external.to_vec();
        b.cgroup = cgroup.map(Path::to_path_buf);
        b.no_local = no_local;
    }

    /// Records a detach: the bridge and its mappings are gone.
    pub fn remove_bridge(&mut self, name: &str) {
        self.bridges.remove(name);
    }

    /// Records `mappings` on `bridge`, replacing any entry of the same host
    /// port; `names` holds the container (name and id) of those asked for
    /// by name, by host port. One pass, whatever the number of entries.
    pub fn record(&mut self, bridge: &str, mappings: &[Mapping], names: &Names) {
        let hosts: Vec<HostPort> = mappings.iter().map(|m| m.host).collect();
        self.remove(&hosts);
        let b = self.bridges.entry(bridge.to_string()).or_default();
        b.mappings
            .extend(mappings.iter().map(|m| Entry::of(m, names.get(&m.host))));
    }

    /// Records that `hosts` are no longer published.
    pub fn remove(&mut self, hosts: &[HostPort]) {
        let hosts: BTreeSet<&HostPort> = hosts.iter().collect();
        for b in self.bridges.values_mut() {
            b.mappings
                .retain(|e| e.host().is_none_or(|h| !hosts.contains(&h)));
        }
    }

    /// Every entry, with its bridge.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.bridges
            .iter()
            .flat_map(|(name, b)| b.mappings.iter().map(move |e| (name.as_str(), e)))
    }

    /// Every entry that follows a container, with its bridge.
    pub fn entries_mut(&mut self) -> impl Iterator<Item = (&str, &mut Entry)> {
        self.bridges
            .iter_mut()
            .flat_map(|(name, b)| b.mappings.iter_mut().map(move |e| (name.as_str(), e)))
    }

    /// The container a host port follows, if it follows one.
    pub fn container_of(&self, host: &HostPort) -> Option<&str> {
        self.entries()
            .find(|(_, e)| e.host().as_ref() == Some(host))
            .and_then(|(_, e)| e.container())
    }

    /// Writes the file atomically; with no bridge left, removes it. A
    /// namespace without a name has no file: nothing to do.
    pub fn save(&self) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        if self.bridges.is_empty() {
            return match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(Error::io(format!("removing {}", path.display()), e))
                }
                _ => Ok(()),
            };
        }
        let parent = path.parent().unwrap_or(Path::new("."));
        let io = |what: &str, e| Error::io(format!("{what} {}", path.display()), e);
        std::fs::create_dir_all(parent).map_err(|e| io("creating the directory of", e))?;
        let doc = Self {
            format: FORMAT,
            ..self.clone()
        };
        let text = serde_json::to_string_pretty(&doc).expect("plain data serialises") + "\n";
        let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            std::fs::File::open(parent)?.sync_all()
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(|e| io("writing", e))
    }
}

/// The container side of `m` as recorded: the container it follows, if
/// `spec` named one.
pub fn named_in<'a>(specs: &'a [SpecTemplate], m: &Mapping) -> Option<&'a str> {
    specs.iter().find_map(|s| match &s.container {
        Container::Name(name) if s.host_ports_in(m.host.af()).any(|h| h == m.host) => {
            Some(name.as_str())
        }
        _ => None,
    })
}
