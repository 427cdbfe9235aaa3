//! What the balancer is doing, for people: the reconcile loop publishes the
//! topology (names, weights, states), a sampler adds the kernel's per-CPU
//! counters summed and turned into rates, and the API, `alwayson stats`, the
//! dashboard and `/metrics` all read the result.

mod histogram;
pub mod metrics;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use lb_common::{DropReason, Event, TrafficStats, Verdict, VipKey};
use serde::{Deserialize, Serialize};

pub use self::histogram::Histogram;
use crate::dataplane::{DataplaneError, PinnedStats};

/// An operator's say over a backend, beside its health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Admin {
    #[default]
    Ready,
    /// No new flows; established ones continue.
    Drain,
    /// Out of service: established flows are re-selected.
    Maint,
}

/// The data plane's layout as the reconcile loop last applied it.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub vips: Vec<VipInfo>,
    pub max_backends: u32,
    pub conn_table_capacity: u32,
}

#[derive(Clone, Debug)]
pub struct VipInfo {
    pub name: String,
    pub key: VipKey,
    pub index: u32,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    pub backends: Vec<BackendInfo>,
}

#[derive(Clone, Debug)]
pub struct BackendInfo {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub slot: u32,
    pub weight: u32,
    pub backup: bool,
    pub admin: Admin,
    /// `None`: not checked (always up).
    pub health: Option<bool>,
    pub reason: String,
    pub transitions: u64,
    pub in_ring: bool,
}

impl BackendInfo {
    /// One word for admin state and health together.
    pub fn state(&self) -> &'static str {
        match (self.admin, self.health) {
            (Admin::Maint, _) => "maint",
            (_, Some(false)) => "down",
            (Admin::Drain, _) => "drain",
            _ if self.weight == 0 => "drain",
            _ => "up",
        }
    }
}

/// Counters and rates: the `/v1/stats` document (see docs/api.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats {
    pub uptime_seconds: f64,
    pub interval_seconds: f64,
    pub verdicts: BTreeMap<String, u64>,
    pub drops: BTreeMap<String, u64>,
    pub events: BTreeMap<String, u64>,
    pub conn_table: ConnTable,
    pub vips: Vec<VipStats>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ConnTable {
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VipStats {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: String,
    pub mode: String,
    #[serde(flatten)]
    pub traffic: Traffic,
    pub backends: Vec<BackendStats>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendStats {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub backup: bool,
    pub admin: Admin,
    /// `up`, `down` or `none` (not checked).
    pub health: String,
    pub state: String,
    pub in_ring: bool,
    pub reason: String,
    pub transitions: u64,
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Totals since the data plane was created, and rates over the last interval.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
}

/// Durations the agent measures itself, for `/metrics`.
#[derive(Debug, Default)]
pub struct Timings {
    /// By (VIP name, backend name).
    pub health_checks: Mutex<HashMap<(String, String), Histogram>>,
    pub reconcile: Mutex<Histogram>,
}

impl Timings {
    pub fn health_check(&self, vip: &str, backend: &str, took: Duration) {
        let mut all = self.health_checks.lock().unwrap_or_else(|e| e.into_inner());
        all.entry((vip.to_owned(), backend.to_owned())).or_default().observe(took);
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconcile.lock().unwrap_or_else(|e| e.into_inner()).observe(took);
    }
}

/// A VIP index, with a backend slot for a backend's counters.
type Slot = (u32, Option<u32>);

/// How often the connection table is counted (it is walked key by key).
const CONN_COUNT_EVERY: u32 = 10;

/// Reads the pinned maps and keeps what rates need.
pub struct Sampler {
    maps: PinnedStats,
    started: Instant,
    previous: Option<(Instant, HashMap<Slot, TrafficStats>)>,
    samples: u32,
    conn_entries: u64,
}

impl Sampler {
    pub fn open(pin_dir: &Path) -> Result<Self, DataplaneError> {
        Ok(Self {
            maps: PinnedStats::open(pin_dir)?,
            started: Instant::now(),
            previous: None,
            samples: 0,
            conn_entries: 0,
        })
    }

    /// One sample: counters for everything in `topology`, rates since the last sample.
    pub fn sample(&mut self, topology: &Topology) -> Result<Stats, DataplaneError> {
        let now = Instant::now();
        if self.samples.is_multiple_of(CONN_COUNT_EVERY) {
            self.conn_entries = self.maps.connections() as u64;
        }
        self.samples += 1;
        let counters = self.maps.counters()?;
        let mut totals = HashMap::new();
        let mut vips = Vec::with_capacity(topology.vips.len());
        for vip in &topology.vips {
            let vip_total = self.maps.vip_stats(vip.index)?;
            totals.insert((vip.index, None), vip_total);
            let mut backends = Vec::with_capacity(vip.backends.len());
            for b in &vip.backends {
                let total = self.maps.backend_stats(b.slot)?;
                totals.insert((vip.index, Some(b.slot)), total);
                backends.push(BackendStats {
                    name: b.name.clone(),
                    address: b.address,
                    port: b.port,
                    weight: b.weight,
                    backup: b.backup,
                    admin: b.admin,
                    health: match b.health {
                        None => "none",
                        Some(true) => "up",
                        Some(false) => "down",
                    }
                    .into(),
                    state: b.state().into(),
                    in_ring: b.in_ring,
                    reason: b.reason.clone(),
                    transitions: b.transitions,
                    traffic: self.traffic(now, (vip.index, Some(b.slot)), total),
                });
            }
            vips.push(VipStats {
                name: vip.name.clone(),
                address: vip.address,
                port: vip.port,
                protocol: vip.protocol.clone(),
                mode: vip.mode.clone(),
                traffic: self.traffic(now, (vip.index, None), vip_total),
                backends,
            });
        }
        let interval = self.previous.as_ref().map_or(0.0, |(at, _)| now.duration_since(*at).as_secs_f64());
        self.previous = Some((now, totals));
        Ok(Stats {
            uptime_seconds: now.duration_since(self.started).as_secs_f64(),
            interval_seconds: interval,
            verdicts: Verdict::ALL.iter().map(|v| (v.name().into(), counters.verdict(*v))).collect(),
            drops: DropReason::ALL.iter().map(|r| (r.name().into(), counters.drop(*r))).collect(),
            events: Event::ALL.iter().map(|e| (e.name().into(), counters.event(*e))).collect(),
            conn_table: ConnTable {
                entries: self.conn_entries,
                capacity: u64::from(topology.conn_table_capacity),
            },
            vips,
        })
    }

    fn traffic(&self, now: Instant, key: Slot, total: TrafficStats) -> Traffic {
        let rate = self.previous.as_ref().and_then(|(at, before)| {
            let secs = now.duration_since(*at).as_secs_f64();
            let prev = before.get(&key)?;
            // A counter that went down belongs to a reused slot: no rate this time.
            (secs > 0.0 && total.packets >= prev.packets && total.bytes >= prev.bytes).then(|| {
                ((total.packets - prev.packets) as f64 / secs, (total.bytes - prev.bytes) as f64 * 8.0 / secs)
            })
        });
        let (pps, bps) = rate.unwrap_or((0.0, 0.0));
        Traffic { packets: total.packets, bytes: total.bytes, new_flows: total.new_flows, pps, bps }
    }
}

/// Where the latest numbers are published.
pub type Published = tokio::sync::watch::Receiver<Arc<Stats>>;
