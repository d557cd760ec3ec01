//! What each ADD published, so that DEL removes exactly that: one JSON file
//! per attachment, `<dir>/<network>/<container id>/<ifname>.json`, and one
//! marker per interface that an ADD attached, `<dir>/attached/<ifindex>`.
//! Files are written whole (a temporary file renamed over), and every
//! command holds an exclusive lock on `<dir>/lock`, so concurrent commands
//! of a runtime do not interleave.
use std::{
    fs::File,
    io::Write as _,
    net::IpAddr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use portfwd::spec::{HostPort, Mapping, Proto};
use serde::{Deserialize, Serialize};

use super::error::{CniError, FAILED, TRY_AGAIN};

/// Where the state lives unless PORTFWD_CNI_STATE_DIR says otherwise.
pub const DEFAULT_DIR: &str = "/var/lib/portfwd/cni";
pub const DIR_ENV: &str = "PORTFWD_CNI_STATE_DIR";
/// How long a command waits for another one's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// One attachment's published mappings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    pub network: String,
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
    pub mappings: Vec<Entry>,
}

/// A mapping and the host interface it forwards through.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(with = "proto")]
    pub protocol: Proto,
    #[serde(rename = "hostIP")]
    pub host_ip: IpAddr,
    pub host_port: u16,
    #[serde(rename = "containerIP")]
    pub container_ip: IpAddr,
    pub container_port: u16,
    pub ifindex: u32,
}

impl Entry {
    pub fn new(m: &Mapping, ifindex: u32) -> Self {
        Self {
            protocol: m.host.proto,
            host_ip: m.host.addr,
            host_port: m.host.port,
            container_ip: m.container_ip,
            container_port: m.container_port,
            ifindex,
        }
    }

    pub fn mapping(&self) -> Mapping {
        Mapping {
            host: HostPort {
                proto: self.protocol,
                addr: self.host_ip,
                port: self.host_port,
            },
            container_ip: self.container_ip,
            container_port: self.container_port,
        }
    }
}

/// A protocol as the CNI writes it: "tcp" or "udp".
mod proto {
    use portfwd::spec::Proto;
    use serde::{Deserialize as _, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(p: &Proto, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&p.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Proto, D::Error> {
        let text = String::deserialize(d)?;
        super::super::parse_protocol(&text).map_err(serde::de::Error::custom)
    }
}

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> CniError {
    move |e| CniError::new(FAILED, format!("{what}: {e}"))
}

/// The state directory, locked for the life of the value.
pub struct Store {
    pub dir: PathBuf,
    _lock: File,
}

impl Store {
    /// The directory PORTFWD_CNI_STATE_DIR names, else `configured` (the
    /// configuration's `stateDir`), else the default.
    pub fn open(configured: Option<&Path>) -> Result<Self, CniError> {
        let dir = std::env::var_os(DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .or_else(|| configured.map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DIR));
        std::fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let lock_path = dir.join("lock");
        let lock =
            File::create(&lock_path).map_err(io_err(format!("opening {}", lock_path.display())))?;
        // Bounded: a runtime retries a plugin that says "try again later"
        // rather than waiting on one that hangs.
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self { dir, _lock: lock });
            }
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(io_err(format!("locking {}", lock_path.display()))(e));
            }
            if std::time::Instant::now() > deadline {
                return Err(CniError::new(
                    TRY_AGAIN,
                    format!("{} is held by another portfwd", lock_path.display()),
                ));
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    fn record_path(&self, network: &str, container_id: &str, ifname: &str) -> PathBuf {
        self.dir
            .join(network)
            .join(container_id)
            .join(format!("{ifname}.json"))
    }

    /// The record of an attachment, None if ADD published nothing for it.
    pub fn load(
        &self,
        network: &str,
        container_id: &str,
        ifname: &str,
    ) -> Result<Option<Record>, CniError> {
        read_record(&self.record_path(network, container_id, ifname))
    }

    pub fn save(&self, r: &Record) -> Result<(), CniError> {
        let path = self.record_path(&r.network, &r.container_id, &r.ifname);
        let text = serde_json::to_vec_pretty(r).expect("plain data serialises");
        write_atomically(&path, &text)
    }

    /// Removes an attachment's record (and its container's directory once
    /// empty).
    pub fn forget(&self, r: &Record) -> Result<(), CniError> {
        let path = self.record_path(&r.network, &r.container_id, &r.ifname);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io_err(format!("removing {}", path.display()))(e))
            }
            _ => {}
        }
        if let Some(parent) = path.parent() {
            let _ = std::fs::remove_dir(parent);
        }
        Ok(())
    }

    /// Every record of `network`.
    pub fn all(&self, network: &str) -> Result<Vec<Record>, CniError> {
        let mut out = Vec::new();
        let Ok(containers) = std::fs::read_dir(self.dir.join(network)) else {
            return Ok(out);
        };
        for c in containers.filter_map(|e| e.ok()) {
            let Ok(files) = std::fs::read_dir(c.path()) else {
                continue;
            };
            for f in files.filter_map(|e| e.ok()) {
                let path = f.path();
                if path.extension().is_some_and(|x| x == "json") {
                    out.extend(read_record(&path)?);
                }
            }
        }
        Ok(out)
    }

    fn marker(&self, ifindex: u32) -> PathBuf {
        self.dir.join("attached").join(ifindex.to_string())
    }

    /// Notes that an ADD attached interface `ifindex` (named `name`).
    pub fn mark_attached(&self, ifindex: u32, name: &str) -> Result<(), CniError> {
        write_atomically(&self.marker(ifindex), name.as_bytes())
    }

    pub fn attached_by_us(&self, ifindex: u32) -> bool {
        self.marker(ifindex).exists()
    }

    pub fn unmark_attached(&self, ifindex: u32) {
        let _ = std::fs::remove_file(self.marker(ifindex));
    }
}

fn read_record(path: &Path) -> Result<Option<Record>, CniError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            CniError::new(
                FAILED,
                format!("corrupt state file {}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
    }
}

/// Writes `path` whole or not at all: a temporary file in the same
/// directory, synced, then renamed over.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CniError> {
    let dir = path.parent().expect("state files live in a directory");
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().expect("a file name").to_string_lossy()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io_err(format!("writing {}", path.display()))(e)
    })
}
