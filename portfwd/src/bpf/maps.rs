//! Typed access to the maps, and the checks that pinned maps have this
//! build's layouts.
use std::{io, net::Ipv4Addr};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    Ebpf,
};
use portfwd_common::{
    stat, Backend, CtEntry, CtKey, MapKey, MapStats, PortKey, LAYOUT_VERSION, MAPS, MAP_CONNTRACK4,
    MAP_HOT, MAP_LOCAL_ADDRS4, MAP_MAPPINGS4, MAP_MAPPING_STATS, MAP_META, MAP_PORTS, MAP_SLOTS,
    MAP_STATS, META_LAYOUT, META_NETNS_INO, V4,
};

use crate::{
    error::{Error, Result},
    state::StateDir,
};

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

/// The network namespace inode the loader recorded in `state`'s pinned
/// `pf_meta`, if there is one (state of older versions has none). Read
/// without the layout checks: it is asked of other namespaces' state, which
/// may be another version's.
pub fn recorded_netns_inode(state: &StateDir) -> Option<u64> {
    let data = MapData::from_pin(state.map_pin(MAP_META)).ok()?;
    let meta: Array<MapData, u64> = Array::try_from(Map::Array(data)).ok()?;
    meta.get(&META_NETNS_INO, 0).ok().filter(|ino| *ino != 0)
}

/// Typed handles on the maps.
pub struct Maps {
    pub mappings: HashMap<MapData, MapKey<V4>, Backend<V4>>,
    pub conntrack: HashMap<MapData, CtKey<V4>, CtEntry<V4>>,
    pub local_addrs: HashMap<MapData, u32, u32>,
    pub stats: PerCpuArray<MapData, u64>,
    /// Per-mapping counters by `Backend::stats_slot`.
    pub mapping_stats: PerCpuArray<MapData, MapStats>,
    /// Which slots mappings hold (see `table`).
    pub slots: Array<MapData, u64>,
    /// `pf_meta`: the layout version, the namespace inode, the slot hint.
    pub meta: Array<MapData, u64>,
    pub ports: HashMap<MapData, PortKey, u32>,
    /// The ports packets may be portfwd's on (see `portfwd_common::HOT_HOST`).
    pub hot: Array<MapData, u64>,
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
            take(MAP_MAPPING_STATS)?,
            take(MAP_PORTS)?,
            take(MAP_HOT)?,
            take(MAP_SLOTS)?,
            take(MAP_META)?,
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
            open(MAP_MAPPING_STATS)?,
            open(MAP_PORTS)?,
            open(MAP_HOT)?,
            open(MAP_SLOTS)?,
            open(MAP_META)?,
        ];
        Self::from_maps(maps)
    }

    fn from_maps(
        [mappings, conntrack, local, stats, mstats, ports, hot, slots, meta]: [Map; 9],
    ) -> Result<Self> {
        let typed = |name: &str, e: aya::maps::MapError| Error::ebpf(format!("map {name}"), e);
        Ok(Self {
            mappings: HashMap::try_from(mappings).map_err(|e| typed(MAP_MAPPINGS4, e))?,
            conntrack: HashMap::try_from(conntrack).map_err(|e| typed(MAP_CONNTRACK4, e))?,
            local_addrs: HashMap::try_from(local).map_err(|e| typed(MAP_LOCAL_ADDRS4, e))?,
            stats: PerCpuArray::try_from(stats).map_err(|e| typed(MAP_STATS, e))?,
            mapping_stats: PerCpuArray::try_from(mstats)
                .map_err(|e| typed(MAP_MAPPING_STATS, e))?,
            slots: Array::try_from(slots).map_err(|e| typed(MAP_SLOTS, e))?,
            meta: Array::try_from(meta).map_err(|e| typed(MAP_META, e))?,
            ports: HashMap::try_from(ports).map_err(|e| typed(MAP_PORTS, e))?,
            hot: Array::try_from(hot).map_err(|e| typed(MAP_HOT, e))?,
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
