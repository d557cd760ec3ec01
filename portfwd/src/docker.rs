//! Container names in SPECs (`8080=web:80`): the container's addresses (IPv4
//! and, on an `--ipv6` network, IPv6), asked of the Docker Engine API on its
//! unix socket.
//!
//! Everything here runs on a tokio current-thread runtime, which starts no
//! thread: the caller may have entered a network namespace with setns (it
//! moves only the calling thread), and the socket is a filesystem path that
//! the network namespace does not affect.
use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use bollard::{
    errors::Error as ApiError,
    models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum, NetworkInspect},
    query_parameters::EventsOptions,
    Docker, API_DEFAULT_VERSION,
};

/// Where the Docker engine listens.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// How long one request to the engine may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Docker's bridge driver option that names the bridge interface.
const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the Docker engine at {socket}: {why}")]
    NoEngine { socket: String, why: String },
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    #[error("container {0} is not running")]
    NotRunning(String),
    #[error("container {0} has no IP address")]
    NoAddress(String),
    #[error("the Docker engine failed to inspect {what}: {why}")]
    Engine { what: String, why: String },
}

impl Error {
    /// True if the caller must fix something (a name, a container, the
    /// engine), as with `crate::Error::is_usage`; false if the engine failed
    /// a request it should have answered.
    pub fn is_usage(&self) -> bool {
        !matches!(self, Self::Engine { .. })
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A connection to the Docker engine, with the runtime its requests run on.
pub struct Engine {
    runtime: tokio::runtime::Runtime,
    docker: Docker,
    socket: String,
}

impl Engine {
    /// Connects to the engine at `socket` (a path) and checks that it
    /// answers, agreeing on an API version both sides speak.
    pub fn connect(socket: &str) -> Result<Self> {
        let no_engine = |why: String| Error::NoEngine {
            socket: socket.to_string(),
            why,
        };
        // A current-thread runtime runs its tasks on this thread only.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .map_err(|e| no_engine(format!("cannot start an I/O runtime: {e}")))?;
        let docker = Docker::connect_with_unix(socket, TIMEOUT.as_secs(), API_DEFAULT_VERSION)
            .map_err(|e| no_engine(describe(&e)))?;
        let docker = runtime
            .block_on(docker.negotiate_version())
            .map_err(|e| no_engine(describe(&e)))?;
        Ok(Self {
            runtime,
            docker,
            socket: socket.to_string(),
        })
    }

    /// The addresses of the running container `name` (a name or an id) on
    /// one network: its IPv4 address, then its IPv6 one, whichever it has.
    /// A container on several networks: the network whose bridge interface
    /// is one of `bridges`, else the first one by network name.
    pub fn container_addresses(&self, name: &str, bridges: &[String]) -> Result<Vec<IpAddr>> {
        let found = self
            .find(name, bridges)?
            .ok_or_else(|| Error::NoSuchContainer(name.to_string()))?;
        if !found.running {
            return Err(Error::NotRunning(name.to_string()));
        }
        if found.ips.is_empty() {
            return Err(Error::NoAddress(name.to_string()));
        }
        Ok(found.ips)
    }

    /// The container `name` (a name or an id) as it is now, its addresses
    /// chosen as `container_addresses` does (none unless it runs); None if
    /// there is no such container.
    pub fn find(&self, name: &str, bridges: &[String]) -> Result<Option<Found>> {
        let info = match self
            .runtime
            .block_on(self.docker.inspect_container(name, None))
        {
            Ok(info) => info,
            Err(ApiError::DockerResponseServerError {
                status_code: 404, ..
            }) => return Ok(None),
            Err(e) => return Err(self.request_failed(&format!("container {name}"), &e)),
        };
        let running = is_running(&info);
        let ips = if running {
            self.network_addresses(&info, bridges)?
        } else {
            Vec::new()
        };
        Ok(Some(Found {
            id: info.id.clone().unwrap_or_default(),
            // The engine writes names with a leading slash.
            name: info
                .name
                .as_deref()
                .unwrap_or(name)
                .trim_start_matches('/')
                .to_string(),
            running,
            ips,
        }))
    }

    /// The running container's addresses on one network (see
    /// `container_addresses`); empty if it has none.
    fn network_addresses(
        &self,
        info: &ContainerInspectResponse,
        bridges: &[String],
    ) -> Result<Vec<IpAddr>> {
        let addresses = addresses(info);
        let Some(first) = addresses.values().next() else {
            return Ok(Vec::new());
        };
        if addresses.len() == 1 || bridges.is_empty() {
            return Ok(first.ips.clone());
        }
        // Several networks: find the one on a bridge we are attaching to.
        for on in addresses.values() {
            let network = self
                .runtime
                .block_on(self.docker.inspect_network(&on.network_id, None))
                .map_err(|e| self.request_failed(&format!("network {}", on.network_id), &e))?;
            if bridge_interface(&network).is_some_and(|b| bridges.contains(&b)) {
                return Ok(on.ips.clone());
            }
        }
        Ok(first.ips.clone())
    }

    /// Subscribes to the engine's container and network events, from now on.
    pub fn events(&self) -> Events {
        let filters = [(
            "type".to_string(),
            vec!["container".to_string(), "network".to_string()],
        )]
        .into();
        let options = EventsOptions {
            filters: Some(filters),
            ..Default::default()
        };
        Events(Box::pin(self.docker.events(Some(options))))
    }

    /// The next event of `events` that concerns a container, waiting at
    /// most `wait` (Ok(None): none came). An error: the stream ended (the
    /// engine stopped or restarted); subscribe again.
    pub fn next_event(&self, events: &mut Events, wait: Duration) -> Result<Option<Event>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = self.runtime.block_on(async {
                tokio::time::timeout_at(deadline, futures_util::StreamExt::next(&mut events.0))
                    .await
            });
            let message = match next {
                Err(_elapsed) => return Ok(None),
                Ok(None) => {
                    return Err(Error::NoEngine {
                        socket: self.socket.clone(),
                        why: "the event stream ended".into(),
                    })
                }
                Ok(Some(Err(e))) => return Err(self.request_failed("events", &e)),
                Ok(Some(Ok(message))) => message,
            };
            if let Some(event) = Event::of(message) {
                return Ok(Some(event));
            }
        }
    }

    /// An error for a request that did not get an answer: the engine is
    /// unreachable unless it answered with an error.
    fn request_failed(&self, what: &str, e: &ApiError) -> Error {
        match e {
            ApiError::DockerResponseServerError { message, .. } => Error::Engine {
                what: what.to_string(),
                why: message.clone(),
            },
            ApiError::JsonDataError { .. } | ApiError::JsonSerdeError { .. } => Error::Engine {
                what: what.to_string(),
                why: describe(e),
            },
            _ => Error::NoEngine {
                socket: self.socket.clone(),
                why: describe(e),
            },
        }
    }
}

/// A container as `Engine::find` saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    pub id: String,
    /// Without Docker's leading slash.
    pub name: String,
    pub running: bool,
    /// Its addresses on one network (IPv4 first); empty unless it runs.
    pub ips: Vec<IpAddr>,
}

/// The engine's event stream (`Engine::events`).
pub struct Events(
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<EventMessage, ApiError>>>>,
);

/// Something happened to a container: it started, stopped, was renamed,
/// joined or left a network... (`action`, in the engine's words).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub container_id: String,
    pub action: String,
    /// Its name after the event, when the engine tells it.
    pub name: Option<String>,
}

impl Event {
    /// The container an event message concerns: the actor of a container
    /// event, the `container` attribute of a network one.
    fn of(message: EventMessage) -> Option<Self> {
        let actor = message.actor?;
        let attributes = actor.attributes.unwrap_or_default();
        let container_id = match message.typ? {
            EventMessageTypeEnum::CONTAINER => actor.id?,
            EventMessageTypeEnum::NETWORK => attributes.get("container")?.clone(),
            _ => return None,
        };
        let name = match message.typ? {
            EventMessageTypeEnum::CONTAINER => attributes.get("name").cloned(),
            _ => None,
        };
        Some(Self {
            container_id,
            action: message.action.unwrap_or_default(),
            name,
        })
    }
}

/// Resolves every name in `names` once; see `Engine::container_addresses`.
/// Connects only if there is a name to resolve.
pub fn resolve<'a>(
    socket: &str,
    names: impl IntoIterator<Item = &'a str>,
    bridges: &[String],
) -> Result<HashMap<String, Vec<IpAddr>>> {
    let mut engine = None;
    let mut out = HashMap::new();
    for name in names {
        if out.contains_key(name) {
            continue;
        }
        let engine = match &mut engine {
            Some(e) => e,
            None => engine.insert(Engine::connect(socket)?),
        };
        out.insert(name.to_string(), engine.container_addresses(name, bridges)?);
    }
    Ok(out)
}

fn is_running(info: &ContainerInspectResponse) -> bool {
    info.state.as_ref().and_then(|s| s.running).unwrap_or(false)
}

/// A container's addresses on one network: IPv4 first, then IPv6.
#[derive(Debug, Clone, PartialEq, Eq)]
struct OnNetwork {
    network_id: String,
    ips: Vec<IpAddr>,
}

/// The container's addresses by network name (in name order, so that "the
/// first" is the same on every run); networks where it has none (host,
/// none) are left out.
fn addresses(info: &ContainerInspectResponse) -> BTreeMap<String, OnNetwork> {
    let Some(networks) = info
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
    else {
        return BTreeMap::new();
    };
    networks
        .iter()
        .filter_map(|(name, endpoint)| {
            let v4 = endpoint
                .ip_address
                .as_deref()
                .and_then(|a| a.parse::<Ipv4Addr>().ok())
                .map(IpAddr::V4);
            let v6 = endpoint
                .global_ipv6_address
                .as_deref()
                .and_then(|a| a.parse::<Ipv6Addr>().ok())
                .map(IpAddr::V6);
            let ips: Vec<IpAddr> = [v4, v6]
                .into_iter()
                .flatten()
                .filter(|ip| !ip.is_unspecified())
                .collect();
            if ips.is_empty() {
                return None;
            }
            let network_id = endpoint
                .network_id
                .clone()
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| name.clone());
            Some((name.clone(), OnNetwork { network_id, ips }))
        })
        .collect()
}

/// The bridge interface of a network of Docker's bridge driver: the one its
/// options name (the default network's docker0 among them), else Docker's
/// default name for it, `br-` and the first 12 digits of the network id.
fn bridge_interface(network: &NetworkInspect) -> Option<String> {
    if let Some(name) = network
        .options
        .as_ref()
        .and_then(|o| o.get(BRIDGE_NAME_OPTION))
    {
        if !name.is_empty() {
            return Some(name.clone());
        }
    }
    if network.driver.as_deref() != Some("bridge") {
        return None;
    }
    let id = network.id.as_deref()?;
    Some(format!("br-{}", id.get(..12)?))
}

/// One line for a bollard error: its own message and, for the transport
/// errors whose message says little ("client error (Connect)"), the
/// innermost cause too ("Connection refused (os error 111)").
fn describe(e: &ApiError) -> String {
    match e {
        ApiError::SocketNotFoundError(_) => "no socket there (is dockerd running?)".to_string(),
        ApiError::RequestTimeoutError => format!("no answer within {} s", TIMEOUT.as_secs()),
        _ => {
            let outer = e.to_string();
            let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(e);
            let mut innermost = None;
            while let Some(c) = cause {
                innermost = Some(c);
                cause = c.source();
            }
            match innermost.map(|c| c.to_string()) {
                Some(inner) if !outer.contains(&inner) => format!("{outer}: {inner}"),
                _ => outer,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::{ContainerState, EndpointSettings, NetworkSettings};

    fn endpoint(id: &str, ip: &str) -> EndpointSettings {
        EndpointSettings {
            network_id: Some(id.to_string()),
            ip_address: Some(ip.to_string()),
            ..Default::default()
        }
    }

    fn dual(id: &str, ip: &str, ip6: &str) -> EndpointSettings {
        EndpointSettings {
            global_ipv6_address: Some(ip6.to_string()),
            ..endpoint(id, ip)
        }
    }

    fn container(running: bool, networks: &[(&str, EndpointSettings)]) -> ContainerInspectResponse {
        ContainerInspectResponse {
            state: Some(ContainerState {
                running: Some(running),
                ..Default::default()
            }),
            network_settings: Some(NetworkSettings {
                networks: Some(
                    networks
                        .iter()
                        .map(|(n, e)| (n.to_string(), e.clone()))
                        .collect(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn addresses_of_both_families() {
        let info = container(
            true,
            &[
                ("zeta", endpoint("z1", "10.9.0.2")),
                ("bridge", dual("b1", "172.17.0.2", "fd00:17::2")),
                ("host", endpoint("h1", "")),
                ("v6only", dual("v1", "", "fd00:18::3")),
                // What Docker reports for a network without IPv6.
                ("nov6", dual("n1", "10.8.0.2", "")),
            ],
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let got: Vec<_> = addresses(&info)
            .into_iter()
            .map(|(n, on)| (n, on.ips))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "bridge".to_string(),
                    vec![ip("172.17.0.2"), ip("fd00:17::2")]
                ),
                ("nov6".to_string(), vec![ip("10.8.0.2")]),
                ("v6only".to_string(), vec![ip("fd00:18::3")]),
                ("zeta".to_string(), vec![ip("10.9.0.2")]),
            ]
        );
        assert!(addresses(&container(true, &[])).is_empty());
        assert!(addresses(&ContainerInspectResponse::default()).is_empty());
    }

    #[test]
    fn running_state() {
        assert!(is_running(&container(true, &[])));
        assert!(!is_running(&container(false, &[])));
        assert!(!is_running(&ContainerInspectResponse::default()));
    }

    #[test]
    fn bridge_interface_names() {
        let mut default = NetworkInspect {
            name: Some("bridge".into()),
            id: Some("0123456789abcdef0123".into()),
            driver: Some("bridge".into()),
            options: Some([(BRIDGE_NAME_OPTION.to_string(), "docker0".to_string())].into()),
            ..Default::default()
        };
        assert_eq!(bridge_interface(&default).as_deref(), Some("docker0"));
        default.options = None;
        assert_eq!(
            bridge_interface(&default).as_deref(),
            Some("br-0123456789ab")
        );
        default.driver = Some("macvlan".into());
        assert_eq!(bridge_interface(&default), None);
    }

    #[test]
    fn an_absent_socket_is_no_engine() {
        let dir = std::env::temp_dir().join(format!("portfwd-no-docker-{}", std::process::id()));
        let socket = dir.join("docker.sock");
        let socket = socket.to_str().unwrap();
        let err = resolve(socket, ["web"], &[]).unwrap_err();
        assert!(matches!(err, Error::NoEngine { .. }), "{err:?}");
        assert!(err.is_usage());
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("cannot reach the Docker engine at {socket}: ")),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn a_dead_socket_is_no_engine() {
        // A socket file nobody listens on: connection refused.
        let dir = std::env::temp_dir().join(format!("portfwd-dead-docker-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("docker.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = resolve(path.to_str().unwrap(), ["web"], &[]).unwrap_err();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(matches!(err, Error::NoEngine { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("refused"), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn no_names_no_connection() {
        let got = resolve("/nonexistent/docker.sock", std::iter::empty(), &[]).unwrap();
        assert!(got.is_empty());
    }
}
