//! Samples the pinned maps: counters summed over CPUs, rates since the last sample.

use std::{
    collections::HashMap,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::TrafficStats;

use super::{ConnTable, Snapshot, Topology, Traffic};
use crate::dataplane::{DataplaneError, PinnedStats};

/// A VIP index, with a backend slot for a backend's counters.
type Slot = (u32, Option<u32>);

/// How often the connection table is counted at most. Counting walks it key
/// by key, so a big table is counted less often: the walk may take at most
/// 1/`CONN_COUNT_BUDGET` of the time.
const CONN_COUNT_EVERY: Duration = Duration::from_secs(10);
const CONN_COUNT_BUDGET: u32 = 100;

/// Reads the pinned maps and keeps what rates need.
pub struct Sampler {
    maps: PinnedStats,
    started: Instant,
    previous: Option<(Instant, HashMap<Slot, TrafficStats>)>,
    conn_entries: u64,
    nat_entries: u64,
    /// When the connection and NAT tables are next counted.
    conn_count_due: Instant,
}

impl Sampler {
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            maps: PinnedStats::open(pin_dir)?,
            started: Instant::now(),
            previous: None,
            conn_entries: 0,
            nat_entries: 0,
            conn_count_due: Instant::now(),
        })
    }

    /// One sample: counters for everything in `topology`, rates since the last sample.
    pub fn sample(&mut self, topology: &Arc<Topology>) -> Result<Snapshot, DataplaneError> {
        let counting = Instant::now();
        if counting >= self.conn_count_due {
            self.conn_entries = self.maps.connections() as u64;
            self.nat_entries = self.maps.nat_mappings() as u64;
            let took = counting.elapsed();
            self.conn_count_due = counting + CONN_COUNT_EVERY.max(took * CONN_COUNT_BUDGET);
        }
        // After the walk, which may take seconds: rates are over the time the counters were read at.
        let now = Instant::now();
        let counters = self.maps.counters()?;
        let mut totals = HashMap::with_capacity(self.previous.as_ref().map_or(0, |(_, t)| t.len()));
        let mut traffic = Vec::with_capacity(topology.vips.len());
        for vip in &topology.vips {
            let vip_total = self.maps.vip_stats(vip.index)?;
            totals.insert((vip.index, None), vip_total);
            let mut backends = Vec::with_capacity(vip.backends.len());
            for b in &vip.backends {
                let total = self.maps.backend_stats(b.slot)?;
                totals.insert((vip.index, Some(b.slot)), total);
                backends.push(self.traffic(now, (vip.index, Some(b.slot)), total));
            }
            traffic.push((self.traffic(now, (vip.index, None), vip_total), backends));
        }
        let interval = self.previous.as_ref().map_or(0.0, |(at, _)| now.duration_since(*at).as_secs_f64());
        self.previous = Some((now, totals));
        Ok(Snapshot {
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            interval_seconds: interval,
            counters,
            conn_table: ConnTable {
                entries: self.conn_entries,
                capacity: u64::from(topology.conn_table_capacity),
            },
            nat_table: ConnTable {
                entries: self.nat_entries,
                capacity: u64::from(topology.nat_table_capacity),
            },
            topology: Arc::clone(topology),
            traffic,
            bgp: Arc::default(),
            cluster: Arc::default(),
        })
    }

    fn traffic(&self, now: Instant, key: Slot, total: TrafficStats) -> Traffic {
        let rate = self.previous.as_ref().and_then(|(at, before)| {
            let secs = now.duration_since(*at).as_secs_f64();
            let prev = before.get(&key)?;
            // A counter that went down was zeroed for a reused VIP index or slot (the
            // reconciler does when it hands one out): no rate this time.
            (secs > 0.0 && total.packets >= prev.packets && total.bytes >= prev.bytes).then(|| {
                ((total.packets - prev.packets) as f64 / secs, (total.bytes - prev.bytes) as f64 * 8.0 / secs)
            })
        });
        let (pps, bps) = rate.unwrap_or((0.0, 0.0));
        Traffic { packets: total.packets, bytes: total.bytes, new_flows: total.new_flows, pps, bps }
    }
}
