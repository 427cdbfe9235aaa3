//! A read-only look at a data plane pinned by a running agent: counters and
//! tables, for `alwayson stats` and for tests.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use lb_common::{maps as names, Backend, ConnValue, FlowKey, NatForward, TrafficStats, VipKey, VipValue};

use super::{count_flows, counters, found, map_err, used_backends, Counters, DataplaneError};

pub struct PinnedStats {
    counters: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, TrafficStats>,
    backend_stats: PerCpuArray<MapData, TrafficStats>,
    vips: HashMap<MapData, VipKey, VipValue>,
    backends: Array<MapData, Backend>,
    conns: HashMap<MapData, FlowKey, ConnValue>,
    nat_forward: HashMap<MapData, FlowKey, NatForward>,
}

fn open<T: TryFrom<Map, Error = MapError>>(
    dir: &Path,
    name: &'static str,
    wrap: fn(MapData) -> Map,
) -> Result<T, DataplaneError> {
    let data = MapData::from_pin(dir.join(name)).map_err(map_err(name))?;
    T::try_from(wrap(data)).map_err(map_err(name))
}

impl PinnedStats {
    pub fn open(dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            counters: open(dir, names::COUNTERS, Map::PerCpuArray)?,
            vip_stats: open(dir, names::VIP_STATS, Map::PerCpuArray)?,
            backend_stats: open(dir, names::BACKEND_STATS, Map::PerCpuArray)?,
            vips: open(dir, names::VIPS, Map::HashMap)?,
            backends: open(dir, names::BACKENDS, Map::Array)?,
            conns: open(dir, names::CONNS, Map::LruHashMap)?,
            nat_forward: open(dir, names::NAT_FORWARD, Map::HashMap)?,
        })
    }

    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        Counters::read(&self.counters).map_err(map_err(names::COUNTERS))
    }

    pub fn vip(&self, key: &VipKey) -> Result<Option<VipValue>, DataplaneError> {
        found(self.vips.get(key, 0), names::VIPS)
    }

    pub fn vip_stats(&self, index: u32) -> Result<TrafficStats, DataplaneError> {
        counters::sum_stats(&self.vip_stats, index).map_err(map_err(names::VIP_STATS))
    }

    pub fn backend_stats(&self, slot: u32) -> Result<TrafficStats, DataplaneError> {
        counters::sum_stats(&self.backend_stats, slot).map_err(map_err(names::BACKEND_STATS))
    }

    pub fn backend(&self, slot: u32) -> Result<Backend, DataplaneError> {
        self.backends.get(&slot, 0).map_err(map_err(names::BACKENDS))
    }

    /// Every backend slot in use, with its contents.
    pub fn backends(&self) -> Result<Vec<(u32, Backend)>, DataplaneError> {
        used_backends(&self.backends)
    }

    /// Entries in the connection table. Walks it key by key (the kernel keeps
    /// no count of an LRU table): for tests and rationed stats.
    pub fn connections(&self) -> usize {
        count_flows(&self.conns)
    }

    /// NAT mappings (client flows), walking `NAT_FORWARD` key by key.
    pub fn nat_mappings(&self) -> usize {
        self.nat_forward.keys().filter(|k| k.is_ok()).count()
    }
}
