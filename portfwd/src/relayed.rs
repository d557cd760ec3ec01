//! The record of the ports a userspace relay serves (`relay`), so that
//! `portfwd list` names them: one small JSON file per relaying process under
//! /run/portfwd/relayed/, named by network namespace cookie and pid, removed
//! when the process stops (one whose process is gone is not listed).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

const DIR: &str = "/run/portfwd/relayed";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Relayed {
    pub pid: u32,
    /// tcp, udp or sctp.
    pub proto: String,
    pub host_ip: String,
    pub host_port: u16,
    pub container_ip: String,
    pub container_port: u16,
    /// Who relays it (a program name).
    pub by: String,
    /// Why the datapath does not serve it.
    pub why: String,
}

fn file(cookie: u64, pid: u32) -> PathBuf {
    Path::new(DIR).join(format!("{cookie}.{pid}.json"))
}

/// Records `r` for the current namespace; the path to pass to `forget`.
pub fn record(r: &Relayed) -> Result<PathBuf> {
    let path = file(crate::host::netns::cookie()?, r.pid);
    std::fs::create_dir_all(DIR).map_err(|e| Error::io(format!("creating {DIR}"), e))?;
    remove_dead();
    let text = serde_json::to_string(r).expect("plain data serialises");
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    Ok(path)
}

/// Removes a record, and the directories if they are left empty.
pub fn forget(path: &Path) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_dir(DIR);
    let _ = std::fs::remove_dir("/run/portfwd");
}

/// The relays of the current namespace whose process is alive, by host port.
pub fn current() -> Vec<Relayed> {
    let Ok(cookie) = crate::host::netns::cookie() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(DIR) else {
        return Vec::new();
    };
    let prefix = format!("{cookie}.");
    let mut out: Vec<Relayed> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".json"))
        })
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .filter(|r: &Relayed| Path::new(&format!("/proc/{}", r.pid)).exists())
        .collect();
    out.sort_by(|a, b| {
        (a.host_port, &a.proto, &a.host_ip).cmp(&(b.host_port, &b.proto, &b.host_ip))
    });
    out
}

/// Removes the records of relays whose process is gone (killed with no
/// chance to `forget`).
fn remove_dead() {
    let Ok(entries) = std::fs::read_dir(DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let pid = name.to_str().and_then(|n| n.split('.').nth(1));
        if pid.is_some_and(|pid| !Path::new("/proc").join(pid).exists()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
