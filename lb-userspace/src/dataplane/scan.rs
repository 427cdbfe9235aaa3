//! Scanning the connection table on a thread of its own (one system call per
//! entry): which flows are live, on which ring slot, and forgetting those
//! idle for longer than `flow_idle_timeout`. The kernel only ever writes
//! `seen` once a second, so a scan sees whole entries.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{maps::CONNS, types::coarse_seconds, ConnValue, FlowKey};

use super::{error::map_err, Dataplane, DataplaneError, Result};
use crate::reconcile::LiveFlows;

/// Its own handle on the connection table: a scan runs beside the loop that
/// owns the data plane.
pub struct ConnScanner {
    conns: BpfHashMap<MapData, FlowKey, ConnValue>,
    ring_size: u32,
    seed: u32,
}

/// What one scan saw and did.
#[derive(Debug)]
pub struct Scan {
    pub live: LiveFlows,
    /// Entries in the table when it was scanned.
    pub entries: usize,
    /// Entries forgotten as idle.
    pub expired: usize,
}

impl Dataplane {
    /// A handle of its own on map `name`, for a scan on another thread.
    pub(super) fn map_handle(&self, name: &'static str) -> Result<MapData> {
        let (_, fd) =
            self.map_fds.iter().find(|(n, _)| *n == name).ok_or(DataplaneError::MissingMap(name))?;
        let fd = fd.try_clone().map_err(|source| DataplaneError::Dup { name, source })?;
        MapData::from_fd(fd).map_err(map_err(name))
    }

    pub fn conn_scanner(&self) -> Result<ConnScanner> {
        let conns = BpfHashMap::try_from(Map::LruHashMap(self.map_handle(CONNS)?)).map_err(map_err(CONNS))?;
        Ok(ConnScanner { conns, ring_size: self.settings.ring_size, seed: self.settings.hash_seed })
    }
}

/// `timeout` in the kernel's coarse seconds (2^30 ns), rounded up: never early.
pub(super) fn coarse(timeout: Duration) -> u32 {
    u32::try_from((timeout.as_nanos() >> 30) + 1).unwrap_or(u32::MAX)
}

/// Now, in the kernel's [`coarse_seconds`].
pub fn coarse_now() -> u32 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec to fill; CLOCK_MONOTONIC_COARSE is the clock
    // of bpf_ktime_get_coarse_ns.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    coarse_seconds(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

impl ConnScanner {
    /// Entries seen within the last `within` coarse seconds (about 1.07 s each).
    pub fn recent(&mut self, within: u32) -> Vec<(FlowKey, ConnValue)> {
        let now = coarse_now();
        self.conns.iter().filter_map(|e| e.ok()).filter(|(_, v)| now.wrapping_sub(v.seen) <= within).collect()
    }

    pub fn scan(&mut self, idle_timeout: Duration) -> Result<Scan> {
        let taken = Instant::now();
        let now = coarse_now();
        let timeout = coarse(idle_timeout);
        let mut by_slot: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        let mut idle = Vec::new();
        let mut entries = 0;
        for entry in self.conns.iter() {
            // An entry the LRU evicted between key and lookup: gone, not an error.
            let Ok((key, value)) = entry else { continue };
            entries += 1;
            if now.wrapping_sub(value.seen) > timeout {
                idle.push(key);
                continue;
            }
            let offset = key.hash(self.seed) % self.ring_size;
            by_slot.entry((value.vip, offset)).or_default().push(value.backend);
        }
        // Removed after the walk: removing the key a walk stands on restarts it.
        let mut expired = 0;
        for key in &idle {
            expired += usize::from(self.conns.remove(key).is_ok());
        }
        Ok(Scan { live: LiveFlows { taken, by_slot }, entries, expired })
    }
}
