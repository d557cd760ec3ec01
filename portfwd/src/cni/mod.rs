//! portfwd as a CNI plugin (chained where `portmap` stood), entered from
//! main.rs when CNI_COMMAND is set: one file per command over
//! `portfwd::ops::pod`, the configuration types in `types`, the error JSON
//! in `error`, and what each ADD published in `state`.
//!
//! The plugin runs in the runtime's (the host's) network namespace; the
//! container's namespace (CNI_NETNS) is never entered: the addresses come
//! from the previous plugin's result.
mod add;
mod check;
mod del;
mod error;
mod gc;
mod state;
mod status;
mod types;
mod version;

use std::{io::Read as _, net::IpAddr, process::ExitCode};

use portfwd::{
    family::Af,
    host::ifaces::is_link_local,
    spec::{HostPort, Mapping, Proto},
};

use error::{CniError, INVALID_CONFIG, INVALID_ENV};
use types::NetConf;

/// The variable whose presence makes portfwd a CNI plugin.
pub const COMMAND_ENV: &str = "CNI_COMMAND";

/// The CNI_* variables of one invocation.
pub struct Env {
    pub container_id: Option<String>,
    pub ifname: Option<String>,
}

impl Env {
    fn read() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Self {
            container_id: var("CNI_CONTAINERID"),
            ifname: var("CNI_IFNAME"),
        }
    }

    /// The container id and interface name, which name the state; missing
    /// or unusable ones are invalid environment variables.
    pub fn attachment(&self) -> Result<(&str, &str), CniError> {
        fn need<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, CniError> {
            match v.as_deref() {
                Some(s) if types::valid_name(s) => Ok(s),
                Some(s) => Err(CniError::new(INVALID_ENV, format!("invalid {name} {s:?}"))),
                None => Err(CniError::new(INVALID_ENV, format!("{name} is not set"))),
            }
        }
        Ok((
            need(&self.container_id, "CNI_CONTAINERID")?,
            need(&self.ifname, "CNI_IFNAME")?,
        ))
    }
}

/// Runs the command CNI_COMMAND names: its result on stdout and exit 0, or
/// the error JSON on stdout (and one line on stderr) and exit 1.
pub fn main() -> ExitCode {
    let command = std::env::var(COMMAND_ENV).unwrap_or_default();
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    let env = Env::read();
    let result = match read {
        Err(e) => Err(CniError::new(
            error::DECODE,
            format!("cannot read stdin: {e}"),
        )),
        Ok(_) => match command.as_str() {
            "ADD" => add::run(&env, &stdin),
            "DEL" => del::run(&env, &stdin),
            "CHECK" => check::run(&env, &stdin),
            "VERSION" => Ok(version::run(&stdin)),
            "GC" => gc::run(&stdin),
            "STATUS" => status::run(&stdin),
            other => Err(CniError::new(
                INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}"),
            )),
        },
    };
    match result {
        Ok(out) => {
            let _ = std::io::Write::write_all(&mut std::io::stdout(), out.as_bytes());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("portfwd: error: {e}");
            println!("{}", e.to_json(&reply_version(&stdin)));
            ExitCode::FAILURE
        }
    }
}

/// The cniVersion to answer in: the configuration's if it is a supported
/// one, else the newest.
fn reply_version(stdin: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .filter(|v| types::SUPPORTED_VERSIONS.contains(&v.as_str()))
        .unwrap_or_else(|| types::SUPPORTED_VERSIONS.last().unwrap().to_string())
}

/// "tcp" or "udp", in any case.
pub fn parse_protocol(text: &str) -> Result<Proto, String> {
    match text.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(format!("protocol {text:?} is not supported (tcp or udp)")),
    }
}

/// The mappings a configuration asks for a container at `addrs`: per port
/// mapping, one for the first address of each family (a host IP of the
/// other family skips that family).
pub fn wanted_mappings(conf: &NetConf, addrs: &[IpAddr]) -> Result<Vec<Mapping>, CniError> {
    let bad = |why: String| CniError::new(INVALID_CONFIG, why);
    let mut out = Vec::new();
    for pm in &conf.runtime_config.port_mappings {
        let proto = parse_protocol(pm.protocol.as_deref().unwrap_or("tcp")).map_err(bad)?;
        let host_ip = match pm.host_ip.as_deref() {
            None | Some("") => None,
            Some(text) => Some(
                text.parse::<IpAddr>()
                    .map_err(|_| bad(format!("invalid hostIP {text:?}")))?,
            ),
        };
        if pm.host_port == 0 || pm.container_port == 0 {
            return Err(bad(format!(
                "port mapping {}:{}: ports must be 1 to 65535",
                pm.host_port, pm.container_port
            )));
        }
        for af in [Af::V4, Af::V6] {
            let Some(container_ip) = addrs
                .iter()
                .copied()
                .find(|a| Af::of(*a) == af && !is_link_local(*a))
            else {
                continue;
            };
            if host_ip.is_some_and(|h| Af::of(h) != af) {
                continue;
            }
            out.push(Mapping {
                host: HostPort {
                    proto,
                    addr: host_ip.unwrap_or(af.unspecified()),
                    port: pm.host_port,
                },
                container_ip,
                container_port: pm.container_port,
            });
        }
    }
    Ok(out)
}
