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
    /// Written as SPECs, a run of consecutive ports as one range (see
    /// `stored`).
    #[serde(default, with = "stored")]
    pub mappings: Vec<Entry>,
}

/// One mapping: a host port and where it goes, as the user gave it.
#[derive(Clone, Debug, PartialEq, Eq)]
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
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    Address(IpAddr),
    Container { name: String, id: Option<String> },
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
        self.spec_text(1).parse().map_err(|e: Error| e.to_string())
    }

    /// The SPEC of this entry and the `len - 1` that follow it port by
    /// port: `HOST_IP:PORT[-END]=TARGET:PORT[-END]/PROTO`.
    fn spec_text(&self, len: u16) -> String {
        let end = |port: u16| match len {
            1 => String::new(),
            _ => format!("-{}", u32::from(port) + u32::from(len) - 1),
        };
        let target = match &self.to {
            Target::Address(ip) => endpoint(*ip, self.container_port),
            Target::Container { name, .. } => format!("{name}:{}", self.container_port),
        };
        format!(
            "{}{}={target}{}/{}",
            endpoint(self.host_ip, self.host_port),
            end(self.host_port),
            end(self.container_port),
            self.proto
        )
    }

    /// True if `next` continues this entry's run of `len` entries: the same
    /// but each port `len` further.
    fn continued_by(&self, len: u16, next: &Self) -> bool {
        let plus = |port: u16| port.checked_add(len);
        self.proto == next.proto
            && self.host_ip == next.host_ip
            && self.to == next.to
            && plus(self.host_port) == Some(next.host_port)
            && plus(self.container_port) == Some(next.container_port)
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
        // The format first: another one may not have this one's fields.
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        match value.get("format").and_then(serde_json::Value::as_u64) {
            Some(f) if f == u64::from(FORMAT) => {}
            f => {
                return Err(bad(format!(
                    "format {} (this portfwd reads format {FORMAT})",
                    f.map_or_else(|| "missing".to_string(), |f| f.to_string())
                )))
            }
        }
        let mut doc: Self = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
        let hosts = doc.entries().filter_map(|(_, e)| e.host());
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

    /// Every entry, with its bridge, to change in place.
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

/// How mappings are written: each run of entries that differ only by their
/// ports, one after the other on both sides, as one SPEC (a published range
/// stays one line however long it is), with the container's id beside a
/// SPEC that names one. Read back, every SPEC is parsed and checked as on
/// the command line.
mod stored {
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    use super::{Entry, Target};
    use crate::spec::{Container, SpecTemplate};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Stored {
        Spec(String),
        Followed { spec: String, id: Option<String> },
    }

    pub fn serialize<S: Serializer>(entries: &[Entry], s: S) -> Result<S::Ok, S::Error> {
        let mut sorted: Vec<&Entry> = entries.iter().collect();
        sorted.sort_by_key(|e| (&e.proto, e.host_ip, &e.to, e.host_port));
        let mut runs: Vec<(&Entry, u16)> = Vec::new();
        for e in sorted {
            match runs.last_mut() {
                Some((first, len)) if first.continued_by(*len, e) => *len += 1,
                _ => runs.push((e, 1)),
            }
        }
        s.collect_seq(runs.into_iter().map(|(e, len)| {
            let spec = e.spec_text(len);
            match &e.to {
                Target::Container { id: Some(id), .. } => Stored::Followed {
                    spec,
                    id: Some(id.clone()),
                },
                _ => Stored::Spec(spec),
            }
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
        let mut out = Vec::new();
        for stored in Vec::<Stored>::deserialize(d)? {
            let (text, id) = match stored {
                Stored::Spec(spec) => (spec, None),
                Stored::Followed { spec, id } => (spec, id),
            };
            let t: SpecTemplate = text
                .parse()
                .map_err(|e: crate::Error| D::Error::custom(e))?;
            let af = match (t.host_addr, t.af()) {
                (Some(_), Some(af)) => af,
                _ => return Err(D::Error::custom(format!("{text}: no host address"))),
            };
            let to = match &t.container {
                Container::Ip(ip) => Target::Address(*ip),
                Container::Name(name) => Target::Container {
                    name: name.clone(),
                    id: id.clone(),
                },
            };
            out.extend(t.host_ports_in(af).zip(t.container_ports.clone()).map(
                |(host, container_port)| Entry {
                    proto: t.proto.to_string(),
                    host_ip: host.addr,
                    host_port: host.port,
                    to: to.clone(),
                    container_port,
                },
            ));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(spec: &str) -> Vec<Mapping> {
        spec.parse::<crate::spec::Spec>().unwrap().mappings
    }

    fn doc_with(specs: &[&str], names: &Names) -> Doc {
        let mut doc = Doc::default();
        doc.set_bridge("docker0", &["eth0".into()], None, false);
        for spec in specs {
            doc.record("docker0", &mapping(spec), names);
        }
        doc
    }

    fn round_trip(doc: &Doc) -> (serde_json::Value, Doc) {
        let text = serde_json::to_string(&Doc {
            format: FORMAT,
            ..doc.clone()
        })
        .unwrap();
        let dir = std::env::temp_dir().join(format!("portfwd-persist-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("t-{}.json", text.len()));
        std::fs::write(&path, &text).unwrap();
        let back = Doc::load_from(&path).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        (serde_json::from_str(&text).unwrap(), back)
    }

    #[test]
    fn runs_of_ports_are_one_spec_and_read_back_whole() {
        let doc = doc_with(
            &[
                "8000-8099=172.17.0.2:9000-9099",
                "8100=172.17.0.3:80",
                "[::]:53=[fd00::2]:53/udp",
            ],
            &Names::new(),
        );
        let (json, back) = round_trip(&doc);
        assert_eq!(
            json["bridges"]["docker0"]["mappings"],
            serde_json::json!([
                "0.0.0.0:8000-8099=172.17.0.2:9000-9099/tcp",
                "0.0.0.0:8100=172.17.0.3:80/tcp",
                "[::]:53=[fd00::2]:53/udp",
            ])
        );
        assert_eq!(back.bridges["docker0"].mappings.len(), 102);
        let mut want = doc.bridges["docker0"].mappings.clone();
        let mut got = back.bridges["docker0"].mappings.clone();
        let key = |e: &Entry| (e.proto.clone(), e.host_ip, e.host_port);
        want.sort_by_key(key);
        got.sort_by_key(key);
        assert_eq!(got, want);
        assert_eq!(back.bridges["docker0"].external, ["eth0"]);
    }

    #[test]
    fn a_followed_container_keeps_its_name_and_id() {
        let ms = mapping("8080=172.17.0.2:80");
        let names: Names = [(ms[0].host, ("web".to_string(), Some("abc123".to_string())))].into();
        let mut doc = doc_with(&["8080=172.17.0.2:80", "8081=172.17.0.2:81"], &names);
        let (json, back) = round_trip(&doc);
        assert_eq!(
            json["bridges"]["docker0"]["mappings"][1],
            serde_json::json!({"spec": "0.0.0.0:8080=web:80/tcp", "id": "abc123"})
        );
        let host = ms[0].host;
        assert_eq!(back.container_of(&host), Some("web"));
        // Published again by address: the name is gone.
        doc.record("docker0", &ms, &Names::new());
        assert_eq!(doc.container_of(&host), None);
        doc.remove(&[host]);
        assert_eq!(doc.bridges["docker0"].mappings.len(), 1);
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_the_path() {
        let dir = std::env::temp_dir().join(format!("portfwd-persist-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("host.json");
        for text in [
            "{",
            r#"{"format": 2, "bridges": {}}"#,
            r#"{"format": 1, "bridges": {"docker0": {"mappings": ["8080=10.0.0.2:80"]}}}"#,
            r#"{"format": 1, "bridges": {"docker0": {"mappings": ["0.0.0.0:8080=127.0.0.1:80/tcp"]}}}"#,
            r#"{"format": 1, "bridges": {"a": {"mappings": ["0.0.0.0:80=10.0.0.2:80/tcp"]},
                "b": {"mappings": ["0.0.0.0:80=10.0.0.3:80/tcp"]}}}"#,
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Doc::load_from(&path).unwrap_err();
            assert!(err.is_usage(), "{text}: {err}");
            let msg = err.to_string();
            assert!(msg.contains(&path.display().to_string()), "{text}: {msg}");
            assert!(!msg.contains('\n'), "{text}: {msg}");
        }
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            Doc::load_from(&path).unwrap().bridges.is_empty(),
            "no file: empty"
        );
    }

    #[test]
    fn file_names() {
        assert_eq!(Netns::of_file("host.json"), Some(Netns::Host));
        assert_eq!(
            Netns::of_file("netns-blue.json"),
            Some(Netns::Named("blue".into()))
        );
        assert_eq!(Netns::of_file("netns-.json"), None);
        assert_eq!(Netns::of_file("host.json.tmp-12"), None);
        assert_eq!(Netns::of_file("other.json"), None);
    }
}
