//! A read-only look at a data plane pinned by a running agent: counters and
//! tables, for `alwayson stats` and for tests.

use std::path::Path;

use aya::maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray};
use lb_common::{maps as names, Backend, ConnValue, FlowKey, TrafficStats, VipKey, VipValue};

use super::{counters, Counters, DataplaneError};

pub struct PinnedStats {
    counters: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, TrafficStats>,
    backend_stats: PerCpuArray<MapData, TrafficStats>,
    vips: HashMap<MapData, VipKey, VipValue>,
    backends: Array<MapData, Backend>,
    conns: HashMap<MapData, FlowKey, ConnValue>,
}

fn open<T: TryFrom<Map, Error = MapError>>(
    dir: &Path,
    name: &'static str,
    wrap: fn(MapData) -> Map,
) -> Result<T, DataplaneError> {
    let err = |source| DataplaneError::Map { name, source };
    let data = MapData::from_pin(dir.join(name)).map_err(err)?;
    T::try_from(wrap(data)).map_err(err)
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
        })
    }

    pub fn counters(&self) -> Result<Counters, DataplaneError> {
        Counters::read(&self.counters).map_err(|source| DataplaneError::Map { name: names::COUNTERS, source })
    }

    pub fn vip(&self, key: &VipKey) -> Result<Option<VipValue>, DataplaneError> {
        match self.vips.get(key, 0) {
            Ok(v) => Ok(Some(v)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(DataplaneError::Map { name: names::VIPS, source }),
        }
    }

    pub fn vip_stats(&self, index: u32) -> Result<TrafficStats, DataplaneError> {
        counters::sum_stats(&self.vip_stats, index)
            .map_err(|source| DataplaneError::Map { name: names::VIP_STATS, source })
    }

    pub fn backend_stats(&self, slot: u32) -> Result<TrafficStats, DataplaneError> {
        counters::sum_stats(&self.backend_stats, slot)
            .map_err(|source| DataplaneError::Map { name: names::BACKEND_STATS, source })
    }

    pub fn backend(&self, slot: u32) -> Result<Backend, DataplaneError> {
        self.backends.get(&slot, 0).map_err(|source| DataplaneError::Map { name: names::BACKENDS, source })
    }

    /// Every backend slot in use, with its contents.
    pub fn backends(&self) -> Result<Vec<(u32, Backend)>, DataplaneError> {
        let mut used = Vec::new();
        for (slot, backend) in self.backends.iter().enumerate() {
            let backend = backend.map_err(|source| DataplaneError::Map { name: names::BACKENDS, source })?;
            if backend.state != lb_common::BackendState::Unused as u8 {
                used.push((slot as u32, backend));
            }
        }
        Ok(used)
    }

    /// Entries in the connection table (walks it: for tests and occasional stats).
    pub fn connections(&self) -> usize {
        self.conns.keys().filter(|k| k.is_ok()).count()
    }
}
