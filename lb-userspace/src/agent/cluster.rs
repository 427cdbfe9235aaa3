//! The reconcile loop's side of being one of several nodes: what the
//! cluster's reports change here, and what this node tells the cluster.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::VipKey;
use tracing::warn;

use super::state::Agent;
use crate::{
    cluster::{
        flows::SharedFlow,
        member::{self, ClusterStatus, Member},
        share::ClusterReport,
    },
    config::{CheckKind, Config},
    desired::{ring_members, BackendHealth, DesiredVip},
    health::BackendRef,
};

impl Agent {
    /// A report of the cluster's tasks: flows to take, views, heartbeats.
    pub fn cluster_report(&mut self, report: ClusterReport) {
        if let ClusterReport::Flows(flows) = &report {
            return self.adopt_flows(flows);
        }
        let now = Instant::now();
        if self.member.as_mut().is_some_and(|m| m.report(report, now)) {
            self.apply("cluster health");
        }
        if let Some(doc) = self.member.as_mut().and_then(Member::take_runtime) {
            self.adopt_runtime(&doc);
        }
    }

    /// Time passing: the member's decisions, and its status for the stats.
    pub fn cluster_tick(&mut self) -> Option<ClusterStatus> {
        let now = Instant::now();
        let member = self.member.as_mut()?;
        let changed = member.tick(now);
        let status = member.status(now);
        if changed {
            self.apply("cluster health source");
        }
        Some(status)
    }

    /// Takes the flows a peer recorded, where this node has the same VIP and
    /// backend and no entry of its own.
    pub fn adopt_flows(&mut self, flows: &[SharedFlow]) {
        let seen = crate::dataplane::coarse_now();
        let (mut taken, mut unknown) = (0, 0);
        for flow in flows {
            let dst = lb_common::types::words_addr(flow.key.dst, flow.key.family);
            let port = u16::from_be(flow.key.dport_be);
            let found = [port, 0].into_iter().find_map(|p| {
                let key = VipKey::new(dst, p, flow.key.proto);
                Some((self.reconciler.vip_index(&key)?, self.reconciler.backend_slot(&key, flow.backend)?))
            });
            let Some((vip, backend)) = found else {
                unknown += 1;
                continue;
            };
            let value = lb_common::ConnValue { backend, vip, seen, _pad: 0 };
            match self.reconciler.dataplane_mut().adopt_connection(&flow.key, value) {
                Ok(true) => taken += 1,
                Ok(false) => {}
                Err(e) => return warn!("taking a peer's flows: {e}"),
            }
        }
        tracing::debug!(taken, unknown, of = flows.len(), "flows from a peer");
    }

    /// This node's health judgements with the cluster's quorum in their place.
    pub(super) fn shared_health(
        &self,
        effective: &BTreeMap<String, bool>,
        came_up: &BTreeMap<String, u64>,
    ) -> HashMap<BackendRef, BackendHealth> {
        let mut health = self.judged.health.clone();
        for vip in &self.config.vips {
            let key = vip.key();
            for b in vip.backends.iter().filter(|b| b.check.kind != CheckKind::None) {
                let id = member::backend_id(vip, b);
                let Some(&up) = effective.get(&id) else { continue };
                let at = BackendRef { vip: key, addr: b.socket() };
                let mine = health.get(&at).map(|h| h.up);
                if mine == Some(up) {
                    // Slow start from the cluster's moment, not this node's.
                    if let (Some(h), Some(&ms)) = (health.get_mut(&at), came_up.get(&id)) {
                        if h.came_up.is_some() {
                            h.came_up = Some(instant_of(ms));
                        }
                    }
                    continue;
                }
                let reason: Arc<str> = Arc::from(if up {
                    "up by the cluster's quorum (this node's check says down)"
                } else {
                    "down by the cluster's quorum (this node's check says up)"
                });
                let entry = health.entry(at).or_insert_with(|| BackendHealth {
                    up,
                    came_up: None,
                    transitions: 0,
                    reason: Arc::clone(&reason),
                });
                entry.up = up;
                entry.came_up = None;
                entry.reason = reason;
            }
        }
        health
    }
}

/// The Instant of a moment in Unix milliseconds (as nodes exchange them).
fn instant_of(unix_ms: u64) -> Instant {
    let now_ms = unix_ms_of(Instant::now());
    Instant::now()
        .checked_sub(Duration::from_millis(now_ms.saturating_sub(unix_ms)))
        .unwrap_or_else(Instant::now)
}

fn unix_ms_of(at: Instant) -> u64 {
    let ago = Instant::now().saturating_duration_since(at);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    now.saturating_sub(ago).as_millis() as u64
}

/// What this node's own checks say, by backend identity, and when the ones
/// up came up. Backends waiting for their first check say nothing;
/// unchecked ones are always up.
pub(super) fn local_view(
    config: &Config,
    health: &HashMap<BackendRef, BackendHealth>,
) -> (BTreeMap<String, bool>, BTreeMap<String, u64>) {
    let mut up = BTreeMap::new();
    let mut came_up = BTreeMap::new();
    for vip in &config.vips {
        let key = vip.key();
        for b in &vip.backends {
            let said = match b.check.kind {
                CheckKind::None => Some(true),
                _ => health.get(&BackendRef { vip: key, addr: b.socket() }).map(|h| h.up),
            };
            if let Some(said) = said {
                up.insert(member::backend_id(vip, b), said);
            }
            let since = health.get(&BackendRef { vip: key, addr: b.socket() }).and_then(|h| h.came_up);
            if let (Some(true), Some(since)) = (said, since) {
                came_up.insert(member::backend_id(vip, b), unix_ms_of(since));
            }
        }
    }
    (up, came_up)
}

/// Per VIP name, a digest of everything that shapes its ring here.
pub(super) fn ring_digests(config: &Config, vips: &[DesiredVip]) -> BTreeMap<String, String> {
    let seed = config.global.hash_seed.to_string();
    let size = config.global.ring_size.to_string();
    config
        .vips
        .iter()
        .zip(vips)
        .map(|(conf, vip)| {
            let mut members: Vec<String> =
                ring_members(vip).iter().map(|b| format!("{} {}", b.addr, b.weight)).collect();
            members.sort();
            let parts = [seed.clone(), size.clone()].into_iter().chain(members);
            (conf.name.clone(), crate::cluster::quorum::digest(parts))
        })
        .collect()
}
