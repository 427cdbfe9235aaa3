//! What the balancer is doing, for people: the reconcile loop publishes the
//! topology (which VIP and backend sits where, with its state), a sampler adds
//! the kernel's per-CPU counters summed and turned into rates, and the API,
//! `alwayson stats`, the dashboard and `/metrics` read the result. `Stats` is
//! the document's owned form, for clients that read it back.

mod histogram;
pub mod metrics;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::Path,
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::{Duration, Instant},
};

use lb_common::{DropReason, Event, TrafficStats, Verdict, VipKey};
use serde::{Deserialize, Serialize};

pub use self::histogram::Histogram;
use crate::{
    cluster::{announce::BgpStatus, member::ClusterStatus},
    config::{Mode, Protocol, Vip},
    dataplane::{Counters, DataplaneError, PinnedStats},
};

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

/// The data plane's layout as the reconcile loop last applied it. VIPs are the
/// config's own (shared, not copied): what changes per backend is kept beside.
#[derive(Clone, Debug, Default)]
pub struct Topology {
    pub vips: Vec<VipInfo>,
    pub max_backends: u32,
    pub conn_table_capacity: u32,
    pub nat_table_capacity: u32,
}

#[derive(Clone, Debug)]
pub struct VipInfo {
    pub vip: Arc<Vip>,
    pub key: VipKey,
    pub index: u32,
    /// In the order of `vip.backends`.
    pub backends: Vec<BackendInfo>,
}

#[derive(Clone, Debug)]
pub struct BackendInfo {
    pub slot: u32,
    pub admin: Admin,
    /// `None`: not checked (always up).
    pub health: Option<bool>,
    pub reason: Arc<str>,
    pub transitions: u64,
    pub in_ring: bool,
}

impl BackendInfo {
    /// One word for admin state, health and weight together.
    pub fn state(&self, weight: u32) -> &'static str {
        match (self.admin, self.health) {
            (Admin::Maint, _) => "maint",
            (_, Some(false)) => "down",
            (Admin::Drain, _) => "drain",
            _ if weight == 0 => "drain",
            _ => "up",
        }
    }

    pub fn health_word(&self) -> &'static str {
        match self.health {
            None => "none",
            Some(true) => "up",
            Some(false) => "down",
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
    /// NAT mappings (`mode = "nat"`): one per NATed flow.
    pub nat_table: ConnTable,
    pub vips: Vec<VipStats>,
    /// Present with `[bgp]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<BgpStatus>,
    /// Present with `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
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

/// Durations the agent measures itself, and checks it could not run, for `/metrics`.
#[derive(Debug, Default)]
pub struct Timings {
    /// By (VIP name, backend name).
    pub health_checks: Mutex<HashMap<(String, String), Histogram>>,
    pub reconcile: Mutex<Histogram>,
    /// By (VIP name, backend name, errno name): checks this host could not run.
    pub checks_not_run: Mutex<HashMap<(String, String, &'static str), u64>>,
    /// Connections of each listener, by its name.
    pub listeners: Mutex<Vec<(&'static str, Arc<ConnCounts>)>>,
}

/// Connections of one listener.
#[derive(Debug, Default)]
pub struct ConnCounts {
    /// Being served now.
    pub open: AtomicU64,
    /// Closed at once because `max_connections` were being served.
    pub refused: AtomicU64,
    /// Ended by the header or idle timeout.
    pub timed_out: AtomicU64,
}

impl Timings {
    pub fn health_check(&self, vip: &str, backend: &str, took: Duration) {
        let mut all = self.health_checks.lock().unwrap_or_else(|e| e.into_inner());
        all.entry((vip.to_owned(), backend.to_owned())).or_default().observe(took);
    }

    pub fn check_not_run(&self, vip: &str, backend: &str, cause: &'static str) {
        let mut all = self.checks_not_run.lock().unwrap_or_else(|e| e.into_inner());
        *all.entry((vip.to_owned(), backend.to_owned(), cause)).or_default() += 1;
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconcile.lock().unwrap_or_else(|e| e.into_inner()).observe(took);
    }

    /// The counts of listener `name`, registered on first use.
    pub fn listener(&self, name: &'static str) -> Arc<ConnCounts> {
        let mut all = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, counts)) = all.iter().find(|(n, _)| *n == name) {
            return Arc::clone(counts);
        }
        let counts = Arc::new(ConnCounts::default());
        all.push((name, Arc::clone(&counts)));
        counts
    }
}

/// A VIP index, with a backend slot for a backend's counters.
type Slot = (u32, Option<u32>);

/// How often the connection table is counted at most. Counting walks it key
/// by key, so a big table is counted less often: the walk may take at most
/// 1/`CONN_COUNT_BUDGET` of the time.
const CONN_COUNT_EVERY: Duration = Duration::from_secs(10);
const CONN_COUNT_BUDGET: u32 = 100;

/// One sample: the counters and rates, beside the topology they belong to.
/// Numbers only: names come from the topology when the JSON is asked for.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub uptime_seconds: f64,
    pub interval_seconds: f64,
    pub counters: Counters,
    pub conn_table: ConnTable,
    pub nat_table: ConnTable,
    pub topology: Arc<Topology>,
    /// Per VIP of the topology: its traffic, and its backends' in order.
    pub traffic: Vec<(Traffic, Vec<Traffic>)>,
    /// Announcements and BGP sessions (`enabled: false` without `[bgp]`).
    pub bgp: Arc<BgpStatus>,
    /// This node in its cluster (`enabled: false` without `[cluster]`).
    pub cluster: Arc<ClusterStatus>,
}

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

/// The `/v1/stats` document, built from a snapshot only when someone asks.
#[derive(Serialize)]
struct SnapshotView<'a> {
    uptime_seconds: f64,
    interval_seconds: f64,
    verdicts: BTreeMap<&'static str, u64>,
    drops: BTreeMap<&'static str, u64>,
    events: BTreeMap<&'static str, u64>,
    conn_table: &'a ConnTable,
    nat_table: &'a ConnTable,
    vips: Vec<VipView<'a>>,
    #[serde(skip_serializing_if = "bgp_off")]
    bgp: &'a BgpStatus,
    #[serde(skip_serializing_if = "cluster_off")]
    cluster: &'a ClusterStatus,
}

fn cluster_off(status: &&ClusterStatus) -> bool {
    !status.enabled
}

fn bgp_off(status: &&BgpStatus) -> bool {
    !status.enabled
}

#[derive(Serialize)]
struct VipView<'a> {
    name: &'a str,
    address: IpAddr,
    port: u16,
    protocol: Protocol,
    mode: Mode,
    #[serde(flatten)]
    traffic: &'a Traffic,
    backends: Vec<BackendView<'a>>,
}

#[derive(Serialize)]
struct BackendView<'a> {
    name: &'a str,
    address: IpAddr,
    port: u16,
    weight: u32,
    backup: bool,
    admin: Admin,
    health: &'static str,
    state: &'static str,
    in_ring: bool,
    reason: &'a str,
    transitions: u64,
    #[serde(flatten)]
    traffic: &'a Traffic,
}

impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let c = &self.counters;
        let vips = self
            .topology
            .vips
            .iter()
            .zip(&self.traffic)
            .map(|(info, (traffic, backends))| VipView {
                name: &info.vip.name,
                address: info.vip.address,
                port: info.vip.port,
                protocol: info.vip.protocol,
                mode: info.vip.mode,
                traffic,
                backends: info
                    .vip
                    .backends
                    .iter()
                    .zip(&info.backends)
                    .zip(backends)
                    .map(|((conf, b), traffic)| BackendView {
                        name: &conf.name,
                        address: conf.address,
                        port: conf.port,
                        weight: conf.weight,
                        backup: conf.backup,
                        admin: b.admin,
                        health: b.health_word(),
                        state: b.state(conf.weight),
                        in_ring: b.in_ring,
                        reason: &b.reason,
                        transitions: b.transitions,
                        traffic,
                    })
                    .collect(),
            })
            .collect();
        SnapshotView {
            uptime_seconds: self.uptime_seconds,
            interval_seconds: self.interval_seconds,
            verdicts: Verdict::ALL.iter().map(|v| (v.name(), c.verdict(*v))).collect(),
            drops: DropReason::ALL.iter().map(|r| (r.name(), c.drop(*r))).collect(),
            events: Event::ALL.iter().map(|e| (e.name(), c.event(*e))).collect(),
            conn_table: &self.conn_table,
            nat_table: &self.nat_table,
            vips,
            bgp: &self.bgp,
            cluster: &self.cluster,
        }
        .serialize(s)
    }
}
