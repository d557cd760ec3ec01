//! Typed access to the maps, and the checks that pinned maps have this
//! build's layouts.
use std::{collections::BTreeMap, io, net::IpAddr};

use aya::{
    maps::{Array, HashMap, Map, MapData, PerCpuArray},
    Ebpf,
};
use portfwd_common::{
    stat, Backend, CtEntry, CtKey, MapKey, MapStats, PortKey, LAYOUT_VERSION, MAPS, MAP_HOT,
    MAP_MAPPING_STATS, MAP_META, MAP_PORTS, MAP_SLOTS, MAP_STATS, META_GENERATION, META_LAYOUT,
    META_NETNS_INO, V4, V6,
};

use crate::{
    error::{Error, Result},
    family::Family,
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

/// One family's maps (see `crate::family::Family`).
pub struct FamilyMaps<A: Family> {
    pub mappings: HashMap<MapData, MapKey<A>, Backend<A>>,
    pub conntrack: HashMap<MapData, CtKey<A>, CtEntry<A>>,
    pub local_addrs: HashMap<MapData, A, u32>,
}

impl<A: Family> FamilyMaps<A> {
    fn new(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            mappings: typed(A::MAP_MAPPINGS, HashMap::try_from(get(A::MAP_MAPPINGS)?))?,
            conntrack: typed(A::MAP_CONNTRACK, HashMap::try_from(get(A::MAP_CONNTRACK)?))?,
            local_addrs: typed(
                A::MAP_LOCAL_ADDRS,
                HashMap::try_from(get(A::MAP_LOCAL_ADDRS)?),
            )?,
        })
    }

    /// Every mapping of the family.
    pub fn mapping_entries(&self) -> Vec<(MapKey<A>, Backend<A>)> {
        self.mappings.iter().filter_map(|r| r.ok()).collect()
    }

    /// Makes the family's `pf_local` hold exactly its addresses of `addrs`;
    /// true if that changed anything.
    fn sync_local_addrs(&mut self, addrs: &BTreeMap<IpAddr, u32>) -> Result<bool> {
        let wanted: BTreeMap<A, u32> = addrs
            .iter()
            .filter_map(|(a, i)| Some((A::from_ip(*a)?, *i)))
            .collect();
        let stale: Vec<A> = self
            .local_addrs
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !wanted.contains_key(k))
            .collect();
        let mut changed = !stale.is_empty();
        for k in stale {
            let _ = self.local_addrs.remove(&k);
        }
        for (k, v) in wanted {
            if self.local_addrs.get(&k, 0).ok() == Some(v) {
                continue;
            }
            changed = true;
            self.local_addrs
                .insert(k, v, 0)
                .map_err(|e| Error::ebpf(format!("updating {}", A::MAP_LOCAL_ADDRS), e))?;
        }
        Ok(changed)
    }
}

fn typed<T>(name: &str, r: std::result::Result<T, aya::maps::MapError>) -> Result<T> {
    r.map_err(|e| Error::ebpf(format!("map {name}"), e))
}

/// Typed handles on the maps.
pub struct Maps {
    pub v4: FamilyMaps<V4>,
    pub v6: FamilyMaps<V6>,
    pub stats: PerCpuArray<MapData, u64>,
    /// Per-mapping counters by `Backend::stats_slot`, both families.
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
        Self::from_maps(|name| {
            ebpf.take_map(name).ok_or_else(|| {
                Error::ebpf(
                    name.to_string(),
                    io::Error::other("map missing from object"),
                )
            })
        })
    }

    /// Opens the maps pinned in a state directory, after checking they have
    /// this build's layouts.
    pub fn open(state: &StateDir) -> Result<Self> {
        check_layouts(state)?;
        Self::from_maps(|name| {
            let data = open_checked(state, name)?;
            Map::from_map_data(data).map_err(|e| Error::ebpf(format!("map {name}"), e))
        })
    }

    fn from_maps(mut get: impl FnMut(&str) -> Result<Map>) -> Result<Self> {
        Ok(Self {
            v4: FamilyMaps::new(&mut get)?,
            v6: FamilyMaps::new(&mut get)?,
            stats: typed(MAP_STATS, PerCpuArray::try_from(get(MAP_STATS)?))?,
            mapping_stats: typed(
                MAP_MAPPING_STATS,
                PerCpuArray::try_from(get(MAP_MAPPING_STATS)?),
            )?,
            slots: typed(MAP_SLOTS, Array::try_from(get(MAP_SLOTS)?))?,
            meta: typed(MAP_META, Array::try_from(get(MAP_META)?))?,
            ports: typed(MAP_PORTS, HashMap::try_from(get(MAP_PORTS)?))?,
            hot: typed(MAP_HOT, Array::try_from(get(MAP_HOT)?))?,
        })
    }

    /// Makes `pf_local4` and `pf_local6` hold exactly `addrs` (address ->
    /// interface index).
    pub fn sync_local_addrs(&mut self, addrs: &BTreeMap<IpAddr, u32>) -> Result<()> {
        let v4 = self.v4.sync_local_addrs(addrs)?;
        if self.v6.sync_local_addrs(addrs)? || v4 {
            self.table_changed();
        }
        Ok(())
    }

    /// Moves the table's generation on (`META_GENERATION`): the datapath
    /// looks up again the endpoint of every UDP flow checked before. Called
    /// after each change to the mappings or the host's addresses. The
    /// datapath reads 32 bits, and 0 marks a flow never checked: the
    /// generation goes round 1..=u32::MAX.
    pub fn table_changed(&mut self) {
        let g = self.meta.get(&META_GENERATION, 0).unwrap_or(0) as u32;
        let g = u64::from(g.checked_add(1).unwrap_or(1));
        // A lost write only leaves the generation where it was, which
        // another change moves on; never an error for the change itself.
        let _ = self.meta.set(META_GENERATION, g, 0);
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
