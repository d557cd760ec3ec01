//! Loading the eBPF object, attaching its programs with pinned TCX links, and
//! typed access to its maps.
use std::{io, net::Ipv4Addr, path::Path};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap},
    programs::{
        links::{CgroupAttachMode, FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
        CgroupSockAddr, LinkOrder, SchedClassifier, TcAttachType,
    },
    sys::SyscallError,
    Ebpf, EbpfLoader,
};
use portfwd_common::{
    stat, Backend, CtEntry, CtKey, MapKey, MapStats, PortKey, GLOBAL_HOST_NETNS, LAYOUT_VERSION,
    MAPS, MAP_CONNTRACK4, MAP_LOCAL_ADDRS4, MAP_MAPPINGS4, MAP_MAPPING_STATS4, MAP_META, MAP_PORTS,
    MAP_STATS, META_LAYOUT, PROG_BIND4, PROG_BRIDGE_INGRESS, PROG_CONNECT4, PROG_EXTERNAL_INGRESS,
    PROG_GETPEERNAME4, PROG_RECVMSG4, PROG_SENDMSG4, V4,
};

use crate::{
    error::{Error, Result},
    state::StateDir,
};

/// The cgroup sock_addr programs that serve clients on the host itself.
pub const LOCAL_PROGRAMS: [&str; 4] = [
    PROG_CONNECT4,
    PROG_SENDMSG4,
    PROG_RECVMSG4,
    PROG_GETPEERNAME4,
];

/// Fails with `StaleState` if `state` holds maps of another portfwd version:
/// a pinned map this build does not have, one with another key or value
/// size, or a layout version in `pf_meta` other than this build's. Reusing
/// such state would make the programs fail to load or misread entries.
fn check_layouts(state: &StateDir) -> Result<()> {
    for name in state.pinned_maps() {
        if portfwd_common::maps::find(&name).is_none() {
            return Err(Error::StaleState {
                dir: state.path.clone(),
                map: name,
                found: "a map this version does not have".into(),
                expected: "only this version's maps".into(),
            });
        }
    }
    for spec in MAPS {
        if state.map_pin(spec.name).exists() {
            open_checked(state, spec.name)?;
        }
    }
    if state.map_pin(MAP_META).exists() {
        let meta: Array<MapData, u64> = Array::try_from(Map::Array(open_checked(state, MAP_META)?))
            .map_err(|e| Error::ebpf(format!("map {MAP_META}"), e))?;
        let found = meta.get(&META_LAYOUT, 0).unwrap_or(0);
        // 0: made by this version's loader, which writes the version right
        // after loading (an interrupted first attach leaves 0).
        if found != LAYOUT_VERSION && found != 0 {
            return Err(Error::StaleState {
                dir: state.path.clone(),
                map: MAP_META.into(),
                found: format!("layout version {found}"),
                expected: format!("{LAYOUT_VERSION}"),
            });
        }
    } else if !state.pinned_maps().is_empty() {
        return Err(Error::StaleState {
            dir: state.path.clone(),
            map: MAP_META.into(),
            found: "no layout version".into(),
            expected: format!("{LAYOUT_VERSION}"),
        });
    }
    Ok(())
}

/// Opens the map pinned in `state` as `name`, checking its layout.
fn open_checked(state: &StateDir, name: &str) -> Result<MapData> {
    let path = state.map_pin(name);
    let data = MapData::from_pin(&path)
        .map_err(|e| Error::ebpf(format!("opening {}", path.display()), e))?;
    let Some(spec) = portfwd_common::maps::find(name) else {
        return Ok(data);
    };
    let info = data
        .info()
        .map_err(|e| Error::ebpf(format!("reading {}", path.display()), e))?;
    let found = (info.key_size() as usize, info.value_size() as usize);
    if found != (spec.key_size, spec.value_size) {
        return Err(Error::StaleState {
            dir: state.path.clone(),
            map: name.to_string(),
            found: format!("key {} bytes, value {} bytes", found.0, found.1),
            expected: format!("{} and {}", spec.key_size, spec.value_size),
        });
    }
    Ok(data)
}

/// The mapping table alone, for detach, which must work on state of any
/// version.
pub fn open_mappings(state: &StateDir) -> Result<HashMap<MapData, MapKey<V4>, Backend<V4>>> {
    let data = open_checked(state, MAP_MAPPINGS4)?;
    HashMap::try_from(Map::HashMap(data))
        .map_err(|e| Error::ebpf(format!("map {MAP_MAPPINGS4}"), e))
}

/// Loads the object for the current network namespace (whose cookie the
/// socket hooks compare against). With `state`, every map is opened from its
/// pin in the state directory (or created and pinned there), so a reload
/// keeps mappings, conntrack and counters. Without it the maps are private
/// (tests).
pub fn load(state: Option<&StateDir>) -> Result<Ebpf> {
    let host_netns = crate::host::netns::cookie()?;
    let mut loader = EbpfLoader::new();
    loader.override_global(GLOBAL_HOST_NETNS, &host_netns, true);
    let pins: Vec<_> = match state {
        Some(s) => MAPS.iter().map(|m| (m.name, s.map_pin(m.name))).collect(),
        None => Vec::new(),
    };
    for (name, path) in &pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader
        .load(crate::EBPF_OBJECT)
        .map_err(|e| Error::ebpf("loading the eBPF object", e))?;
    let mut meta: Array<&mut MapData, u64> = ebpf
        .map_mut(MAP_META)
        .ok_or_else(|| Error::ebpf(MAP_META, io::Error::other("map missing from object")))
        .and_then(|m| Array::try_from(m).map_err(|e| Error::ebpf(format!("map {MAP_META}"), e)))?;
    meta.set(META_LAYOUT, LAYOUT_VERSION, 0)
        .map_err(|e| Error::ebpf(format!("writing {MAP_META}"), e))?;
    for name in [PROG_EXTERNAL_INGRESS, PROG_BRIDGE_INGRESS] {
        classifier(&mut ebpf, name)?
            .load()
            .map_err(|e| Error::ebpf(format!("loading program {name} (verifier)"), e))?;
    }
    for name in LOCAL_PROGRAMS.into_iter().chain([PROG_BIND4]) {
        sock_addr(&mut ebpf, name)?
            .load()
            .map_err(|e| Error::ebpf(format!("loading program {name} (verifier)"), e))?;
    }
    Ok(ebpf)
}

pub fn sock_addr<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut CgroupSockAddr> {
    program(ebpf, name)
}

/// The program `name` of the object, as its type `P`.
fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = aya::programs::ProgramError>,
{
    ebpf.program_mut(name)
        .ok_or_else(|| {
            Error::ebpf(
                name.to_string(),
                io::Error::other("program missing from object"),
            )
        })?
        .try_into()
        .map_err(|e| Error::ebpf(format!("program {name}"), e))
}

/// Attaches a cgroup sock_addr program to `cgroup` (alongside any others:
/// multi-attach) and pins the link at `pin`. A link already pinned there is
/// removed only after the new one is in place, so no connect(2) in between
/// misses the hook; while both exist the second sees an already rewritten
/// address and does nothing.
pub fn attach_cgroup_pinned(prog: &mut CgroupSockAddr, cgroup: &Path, pin: &Path) -> Result<()> {
    let dir = std::fs::File::open(cgroup)
        .map_err(|e| Error::io(format!("opening cgroup {}", cgroup.display()), e))?;
    let id = prog
        // BPF links on cgroups always coexist with other links; the kernel
        // wants no multi-attach flag with them (EINVAL).
        .attach(&dir, CgroupAttachMode::Single)
        .map_err(|e| Error::ebpf(format!("attaching to cgroup {}", cgroup.display()), e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| Error::ebpf("take_link", e))?;
    let link: FdLink = link
        .try_into()
        .map_err(|e| Error::ebpf(format!("cgroup link on {}", cgroup.display()), e))?;
    // bpffs refuses dots in names: no "x.new".
    let mut tmp = pin.as_os_str().to_owned();
    tmp.push("_new");
    let tmp = std::path::PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    link.pin(&tmp)
        .map_err(|e| Error::ebpf(format!("pinning {}", tmp.display()), e))?;
    detach_pinned(pin)?;
    std::fs::rename(&tmp, pin).map_err(|e| Error::io(format!("renaming {}", tmp.display()), e))?;
    Ok(())
}

pub fn classifier<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    program(ebpf, name)
}

/// Attaches `prog` to `ifname`'s TC ingress through a TCX link pinned at
/// `pin`. If a link is already pinned there, its program is swapped
/// atomically (no packet sees a gap); a stale pin whose interface is gone is
/// replaced by a fresh link.
pub fn attach_pinned(prog: &mut SchedClassifier, ifname: &str, pin: &Path) -> Result<()> {
    match PinnedLink::from_pin(pin) {
        Ok(old) => {
            let link = SchedClassifierLink::try_from(FdLink::from(old))
                .map_err(|e| Error::ebpf(format!("pinned link {}", pin.display()), e));
            let replaced = link.and_then(|link| {
                prog.attach_to_link(link)
                    .map_err(|e| Error::ebpf(format!("replacing the program on {ifname}"), e))
            });
            match replaced {
                Ok(id) => {
                    // The pin keeps the link; dropping our fd is fine.
                    let _link = prog
                        .take_link(id)
                        .map_err(|e| Error::ebpf("take_link", e))?;
                    return Ok(());
                }
                Err(_) => {
                    std::fs::remove_file(pin)
                        .map_err(|e| Error::io(format!("removing stale {}", pin.display()), e))?;
                }
            }
        }
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::ebpf(format!("opening {}", pin.display()), e)),
    }
    let id = prog
        .attach_with_options(
            ifname,
            TcAttachType::Ingress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        )
        .map_err(|e| Error::ebpf(format!("attaching to {ifname} ingress"), e))?;
    let link = prog
        .take_link(id)
        .map_err(|e| Error::ebpf("take_link", e))?;
    let link: FdLink = link
        .try_into()
        .map_err(|e| Error::ebpf(format!("TCX link on {ifname}"), e))?;
    link.pin(pin)
        .map_err(|e| Error::ebpf(format!("pinning {}", pin.display()), e))?;
    Ok(())
}

/// Takes a pinned link's program off its hook at once, then removes the pin.
/// Unlinking the pin alone drops the last reference only after an RCU grace
/// period (bpffs frees the inode then), so the program could still run, and
/// be listed, after `detach` returned; BPF_LINK_DETACH ends it now.
pub fn detach_pinned(pin: &Path) -> Result<()> {
    if !pin.exists() {
        return Ok(());
    }
    if let Ok(fd) = portfwd_sys::obj_get(pin) {
        use std::os::fd::AsFd as _;
        portfwd_sys::link_detach(fd.as_fd())
            .map_err(|e| Error::io(format!("detaching {}", pin.display()), e))?;
    }
    match std::fs::remove_file(pin) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(Error::io(format!("removing {}", pin.display()), e))
        }
        _ => Ok(()),
    }
}

/// Typed handles on the maps.
pub struct Maps {
    pub mappings: HashMap<MapData, MapKey<V4>, Backend<V4>>,
    pub conntrack: HashMap<MapData, CtKey<V4>, CtEntry<V4>>,
    pub local_addrs: HashMap<MapData, u32, u32>,
    pub stats: PerCpuArray<MapData, u64>,
    pub mapping_stats: PerCpuHashMap<MapData, MapKey<V4>, MapStats>,
    pub ports: HashMap<MapData, PortKey, u32>,
}

impl Maps {
    /// Takes the maps out of a loaded object.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self> {
        let mut take = |name: &str| {
            ebpf.take_map(name).ok_or_else(|| {
                Error::ebpf(
                    name.to_string(),
                    io::Error::other("map missing from object"),
                )
            })
        };
        let maps = [
            take(MAP_MAPPINGS4)?,
            take(MAP_CONNTRACK4)?,
            take(MAP_LOCAL_ADDRS4)?,
            take(MAP_STATS)?,
            take(MAP_MAPPING_STATS4)?,
            take(MAP_PORTS)?,
        ];
        Self::from_maps(maps)
    }

    /// Opens the maps pinned in a state directory, after checking they have
    /// this build's layouts.
    pub fn open(state: &StateDir) -> Result<Self> {
        check_layouts(state)?;
        let open = |name: &str| -> Result<Map> {
            let data = open_checked(state, name)?;
            Map::from_map_data(data).map_err(|e| Error::ebpf(format!("map {name}"), e))
        };
        let maps = [
            open(MAP_MAPPINGS4)?,
            open(MAP_CONNTRACK4)?,
            open(MAP_LOCAL_ADDRS4)?,
            open(MAP_STATS)?,
            open(MAP_MAPPING_STATS4)?,
            open(MAP_PORTS)?,
        ];
        Self::from_maps(maps)
    }

    fn from_maps([mappings, conntrack, local, stats, mstats, ports]: [Map; 6]) -> Result<Self> {
        let typed = |name: &str, e: aya::maps::MapError| Error::ebpf(format!("map {name}"), e);
        Ok(Self {
            mappings: HashMap::try_from(mappings).map_err(|e| typed(MAP_MAPPINGS4, e))?,
            conntrack: HashMap::try_from(conntrack).map_err(|e| typed(MAP_CONNTRACK4, e))?,
            local_addrs: HashMap::try_from(local).map_err(|e| typed(MAP_LOCAL_ADDRS4, e))?,
            stats: PerCpuArray::try_from(stats).map_err(|e| typed(MAP_STATS, e))?,
            mapping_stats: PerCpuHashMap::try_from(mstats)
                .map_err(|e| typed(MAP_MAPPING_STATS4, e))?,
            ports: HashMap::try_from(ports).map_err(|e| typed(MAP_PORTS, e))?,
        })
    }

    /// Every mapping in the table.
    pub fn mapping_entries(&self) -> Vec<(MapKey<V4>, Backend<V4>)> {
        self.mappings.iter().filter_map(|r| r.ok()).collect()
    }

    /// Makes `pf_local` hold exactly `addrs`.
    pub fn sync_local_addrs(
        &mut self,
        addrs: &std::collections::BTreeMap<Ipv4Addr, u32>,
    ) -> Result<()> {
        let wanted: std::collections::BTreeMap<u32, u32> = addrs
            .iter()
            .map(|(a, i)| (u32::from_ne_bytes(a.octets()), *i))
            .collect();
        let stale: Vec<u32> = self
            .local_addrs
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains_key(k))
            .collect();
        for k in stale {
            let _ = self.local_addrs.remove(&k);
        }
        for (k, v) in wanted {
            self.local_addrs
                .insert(k, v, 0)
                .map_err(|e| Error::ebpf("updating pf_local", e))?;
        }
        Ok(())
    }

    /// Sum over CPUs of every named counter.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        stat::NAMES
            .iter()
            .map(|(code, name)| {
                let total = self
                    .stats
                    .get(code, 0)
                    .map(|per_cpu| per_cpu.iter().sum())
                    .unwrap_or(0);
                (*name, total)
            })
            .collect()
    }
}
