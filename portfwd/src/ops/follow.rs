//! Mappings made by container name follow their container: `watch` listens
//! to the Docker Engine's events and, whenever a container a mapping follows
//! starts, stops, dies, is removed, renamed, or joins or leaves a network,
//! asks the engine where it is now and points the mapping there.
//!
//! A container that does not run (or has no address of the mapping's family
//! on an attached bridge) has its mappings held: the entry stays, its port
//! stays reserved, but it points at the unspecified address, which the
//! datapath forwards nowhere (see `portfwd-ebpf/src/mapping.rs`): new
//! connections get the host's own refusal. A mapping that is re-pointed or
//! held also has its flows ended, so that nothing keeps going to an address
//! the container no longer holds (another container may hold it next).
//!
//! Containers are followed by id (a rename changes nothing), and by name
//! once the id is gone (a container removed and created again under the same
//! name, as compose does, is the one the user meant). `restore` uses the
//! same `sync`, so that a boot never forwards to the addresses of before.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    time::Duration,
};

use crate::{
    docker::{self, Engine, Event, Found},
    error::{Error, Result},
    family::Af,
    host::ifaces,
    persist::{self, Target},
    spec::{HostPort, Mapping, SpecTemplate},
    table,
};

/// A mapping that following changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Followed {
    pub host: HostPort,
    /// The container's name now.
    pub container: String,
    /// Where it forwards now; None: held (the container does not run, is
    /// gone, has no address of the family on an attached bridge, or the
    /// engine could not be asked).
    pub to: Option<IpAddr>,
    pub container_port: u16,
}

/// What the follower tells `watch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FollowEvent {
    /// Connected to the engine and synced every followed mapping.
    Connected,
    /// The engine cannot be reached (told once until it can again); the
    /// follower tries again every `RETRY`.
    Unreachable(String),
    Followed(Followed),
    /// Applying an event failed; the next event or reconnection tries again.
    Failed(String),
}

/// How often the follower tries to reach the engine, and looks for mappings
/// to follow when there are none.
pub const RETRY: Duration = Duration::from_secs(2);

/// The containers `specs` name, for the mappings made from them: by host
/// port, the container's name and id as the engine knows them (the engine is
/// asked only if a SPEC names a container).
pub(crate) fn names(specs: &[SpecTemplate], mappings: &[Mapping]) -> Result<persist::Names> {
    let mut engine = None;
    let mut seen: HashMap<&str, (String, Option<String>)> = HashMap::new();
    let mut out = BTreeMap::new();
    for m in mappings {
        let Some(name) = persist::named_in(specs, m) else {
            continue;
        };
        if !seen.contains_key(name) {
            let engine = match &mut engine {
                Some(e) => e,
                None => engine.insert(Engine::connect(docker::DEFAULT_SOCKET)?),
            };
            let found = engine.find(name, &[])?;
            let named = found.map_or((name.to_string(), None), |f| (f.name, Some(f.id)));
            seen.insert(name, named);
        }
        out.insert(m.host, seen[name].clone());
    }
    Ok(out)
}

/// Points every mapping that follows a container (with `event`, only those
/// of its container) at where the container is now, updating the recorded
/// names and ids; `engine` None (unreachable): every one is held. Returns
/// the mappings that changed.
pub(crate) fn sync(
    at: &mut super::Attached,
    engine: Option<&Engine>,
    event: Option<&Event>,
) -> Result<Vec<Followed>> {
    let bridges = at.state.bridges();
    let bridge_names: Vec<String> = bridges.iter().filter_map(|b| ifaces::ifname(*b)).collect();
    let mut found: HashMap<String, Option<Found>> = HashMap::new();
    let mut wanted = Vec::new();
    let mut renamed = false;
    for (bridge, entry) in at.doc.entries_mut() {
        let (Some(host), Target::Container { name, id }) = (entry.host(), &mut entry.to) else {
            continue;
        };
        if let Some(ev) = event {
            let by_id = id.as_deref() == Some(ev.container_id.as_str());
            let by_name = id.is_none() && ev.name.as_deref() == Some(name.as_str());
            if !by_id && !by_name {
                continue;
            }
        }
        let now = engine.and_then(|e| locate(e, name, id, &bridge_names, &mut found));
        if let Some(f) = &now {
            if *name != f.name || id.as_deref() != Some(f.id.as_str()) {
                *name = f.name.clone();
                *id = Some(f.id.clone());
                renamed = true;
            }
        }
        let ip = now
            .filter(|f| f.running)
            .and_then(|f| f.ips.into_iter().find(|ip| Af::of(*ip) == host.af()));
        wanted.push((
            bridge.to_string(),
            host,
            name.clone(),
            ip,
            entry.container_port,
        ));
    }
    let mut changed = Vec::new();
    for (bridge, host, container, ip, container_port) in wanted {
        let held = Mapping {
            host,
            container_ip: host.af().unspecified(),
            container_port,
        };
        let mut m = Mapping {
            container_ip: ip.unwrap_or(held.container_ip),
            ..held
        };
        let bridge_index = match ip {
            Some(_) => super::bridge_for(&bridges, &at.networks, &m).ok(),
            None => None,
        };
        let current = table::lookup(&at.maps, &host);
        let bridge_index = match bridge_index {
            Some(b) => b,
            None => {
                // Held on its recorded bridge (or where it is now).
                m = held;
                match ifaces::ifindex(&bridge)
                    .ok()
                    .filter(|b| bridges.contains(b))
                {
                    Some(b) => b,
                    None => match current {
                        Some(t) => t.bridge_ifindex,
                        None => continue,
                    },
                }
            }
        };
        let same = current.is_some_and(|t| {
            t.addr == m.container_ip
                && t.port == m.container_port
                && t.bridge_ifindex == bridge_index
        });
        if same {
            continue;
        }
        table::add(&mut at.maps, &[m], bridge_index, true)?;
        if current.is_some_and(|t| !t.addr.is_unspecified()) {
            table::kill_flows(&mut at.maps, &[host])?;
        }
        changed.push(Followed {
            host,
            container,
            to: (!m.container_ip.is_unspecified()).then_some(m.container_ip),
            container_port,
        });
    }
    if renamed {
        at.doc.save()?;
    }
    Ok(changed)
}

/// The container a mapping follows, as it is now: by its id; by its name if
/// the id is gone (or was never known). None if neither finds one, or the
/// engine failed to answer.
fn locate(
    engine: &Engine,
    name: &str,
    id: &Option<String>,
    bridges: &[String],
    cache: &mut HashMap<String, Option<Found>>,
) -> Option<Found> {
    let mut find = |key: &str| -> Option<Found> {
        if let Some(f) = cache.get(key) {
            return f.clone();
        }
        let f = engine.find(key, bridges).ok().flatten();
        cache.insert(key.to_string(), f.clone());
        f
    };
    id.as_deref().and_then(&mut find).or_else(|| find(name))
}

/// The follower `watch` runs beside its address tracking: a thread (started
/// after the namespace was entered, so it is in it too) with a connection
/// of its own to the engine. It stops when dropped.
pub(crate) struct Follower {
    stop: Arc<AtomicBool>,
    events: mpsc::Receiver<FollowEvent>,
}

impl Follower {
    pub(crate) fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, events) = mpsc::channel();
        let flag = stop.clone();
        std::thread::spawn(move || follow(&flag, &tx));
        Self { stop, events }
    }

    /// What happened since the last call.
    pub(crate) fn events(&self) -> Vec<FollowEvent> {
        self.events.try_iter().collect()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The follower's thread: while there are mappings to follow, keep a
/// subscription to the engine's events, sync everything once subscribed,
/// then each container an event concerns.
fn follow(stop: &AtomicBool, tx: &mpsc::Sender<FollowEvent>) {
    let mut told_unreachable = false;
    let pause = || {
        for _ in 0..20 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(RETRY / 20);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let following = persist::Doc::load()
            .map(|d| d.entries().any(|(_, e)| e.container().is_some()))
            .unwrap_or(false);
        if !following {
            pause();
            continue;
        }
        let engine = match Engine::connect(docker::DEFAULT_SOCKET) {
            Ok(engine) => engine,
            Err(e) => {
                if !told_unreachable {
                    let _ = tx.send(FollowEvent::Unreachable(e.to_string()));
                    told_unreachable = true;
                }
                // Hold what follows containers nobody can vouch for.
                apply(None, None, tx);
                pause();
                continue;
            }
        };
        told_unreachable = false;
        let mut events = engine.events();
        // Polling once sends the subscription, so that no event falls
        // between it and the sync.
        let mut pending = engine.next_event(&mut events, Duration::from_millis(200));
        apply(Some(&engine), None, tx);
        let _ = tx.send(FollowEvent::Connected);
        while !stop.load(Ordering::Relaxed) {
            match pending {
                Ok(None) => {}
                Ok(Some(ev)) => apply(Some(&engine), Some(&ev), tx),
                Err(e) => {
                    let _ = tx.send(FollowEvent::Unreachable(e.to_string()));
                    told_unreachable = true;
                    // An engine that ends every stream at once is not
                    // asked again and again.
                    pause();
                    break;
                }
            }
            pending = engine.next_event(&mut events, Duration::from_secs(1));
        }
    }
}

/// One sync under the namespace's lock, its changes told to `tx`.
fn apply(engine: Option<&Engine>, event: Option<&Event>, tx: &mpsc::Sender<FollowEvent>) {
    let result = super::open_attached().and_then(|mut at| sync(&mut at, engine, event));
    match result {
        Ok(changed) => {
            for f in changed {
                let _ = tx.send(FollowEvent::Followed(f));
            }
        }
        // `watch` ends by itself once detached.
        Err(Error::NothingAttached) => {}
        Err(e) => {
            let _ = tx.send(FollowEvent::Failed(e.to_string()));
        }
    }
}
