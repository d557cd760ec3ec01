//! The CNI network configuration portfwd reads on stdin, and the parts of
//! the previous result it uses (the rest is passed on untouched).
use std::net::IpAddr;

use serde::Deserialize;
use serde_json::Value;

use super::error::{CniError, INCOMPATIBLE_VERSION, INVALID_CONFIG};

/// The spec versions portfwd speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The network configuration (one plugin's entry of a conflist, with the
/// runtime's additions).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(default)]
    pub runtime_config: RuntimeConfig,
    /// The result of the plugins before this one in the chain, as they
    /// wrote it.
    pub prev_result: Option<Value>,
    /// portfwd's own: where outside clients arrive, for an interface that
    /// ADD attaches (default: the interfaces with a default route).
    #[serde(default)]
    pub external_interfaces: Vec<String>,
    /// portfwd's own: the cgroup2 directory of the socket hooks, for an
    /// interface that ADD attaches (default: the cgroup2 root).
    pub cgroup: Option<std::path::PathBuf>,
    /// portfwd's own: where the plugin keeps what each ADD published
    /// (default: /var/lib/portfwd/cni; PORTFWD_CNI_STATE_DIR overrides both).
    /// In the configuration, unlike an environment variable, it reaches
    /// every invocation, also a runtime's cleanup process.
    pub state_dir: Option<std::path::PathBuf>,
    /// GC (1.1.0): the attachments the runtime still has.
    #[serde(rename = "cni.dev/valid-attachments", default)]
    pub valid_attachments: Vec<Attachment>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

/// One entry of `runtimeConfig.portMappings` (the `portMappings`
/// capability).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

/// One entry of `cni.dev/valid-attachments`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

impl NetConf {
    /// Parses stdin; a config that is not JSON of this shape is a decode
    /// failure, an unsupported version an incompatible one.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: Self = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(
                super::error::DECODE,
                format!("cannot decode the network configuration: {e}"),
            )
        })?;
        check_version(&conf.cni_version)?;
        if !valid_name(&conf.name) {
            return Err(CniError::new(
                INVALID_CONFIG,
                format!("invalid network name {:?}", conf.name),
            ));
        }
        Ok(conf)
    }

    /// The previous result, which ADD and CHECK need (portfwd is a chained
    /// plugin: the addresses come from the plugin before it).
    pub fn require_prev_result(&self) -> Result<&Value, CniError> {
        self.prev_result.as_ref().ok_or_else(|| {
            CniError::new(
                INVALID_CONFIG,
                "no prevResult: portfwd must be chained after a plugin that gives the \
                 container its addresses (bridge, ptp...)",
            )
        })
    }
}

pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            INCOMPATIBLE_VERSION,
            format!("CNI version {v:?} is not supported"),
        )
        .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))))
    }
}

/// Network names, container ids and interface names become file names.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The container's addresses in a previous result (0.3.0 to 1.1.0 shapes):
/// the `ips` whose `interface` is `ifname` inside the sandbox, and those
/// that name no interface.
pub fn container_addresses(prev: &Value, ifname: &str) -> Result<Vec<IpAddr>, CniError> {
    let bad = |why: &str| CniError::new(INVALID_CONFIG, format!("prevResult: {why}"));
    let interfaces = prev.get("interfaces").and_then(Value::as_array);
    let in_sandbox = |index: u64| -> bool {
        interfaces
            .and_then(|all| all.get(index as usize))
            .is_some_and(|i| {
                i.get("name").and_then(Value::as_str) == Some(ifname)
                    && i.get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
            })
    };
    let mut out = Vec::new();
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => return Ok(out),
        Some(Value::Array(ips)) => ips,
        Some(_) => return Err(bad("ips is not a list")),
    };
    for ip in ips {
        let address = ip
            .get("address")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("an entry of ips has no address"))?;
        let addr: IpAddr = address
            .split_once('/')
            .map_or(address, |(a, _)| a)
            .parse()
            .map_err(|_| bad(&format!("invalid address {address:?}")))?;
        let ours = match ip.get("interface") {
            None | Some(Value::Null) => true,
            Some(v) => v.as_u64().is_some_and(in_sandbox),
        };
        if ours && !out.contains(&addr) {
            out.push(addr);
        }
    }
    Ok(out)
}
