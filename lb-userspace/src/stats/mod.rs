//! What the balancer is doing, for people: the reconcile loop publishes the
//! topology (which VIP and backend sits where, with its state), a sampler adds
//! the kernel's per-CPU counters summed and turned into rates, and the API,
//! `alwayson stats`, the dashboard and `/metrics` read the result.

mod document;
pub mod metrics;
mod sampler;
mod timings;

use std::sync::Arc;

use lb_common::VipKey;

pub use self::{
    document::{BackendStats, ConnTable, Counts, Health, State, Stats, Traffic, VipStats},
    sampler::Sampler,
    timings::{ConnCounts, Timings},
};
use crate::{
    cluster::{announce::BgpStatus, member::ClusterStatus},
    config::Vip,
    dataplane::Counters,
    runtime::Admin,
};

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
    pub fn state(&self, weight: u32) -> State {
        match (self.admin, self.health) {
            (Admin::Maint, _) => State::Maint,
            (_, Some(false)) => State::Down,
            (Admin::Drain, _) => State::Drain,
            _ if weight == 0 => State::Drain,
            _ => State::Up,
        }
    }

    pub fn health(&self) -> Health {
        match self.health {
            None => Health::Unchecked,
            Some(true) => Health::Up,
            Some(false) => Health::Down,
        }
    }
}

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
