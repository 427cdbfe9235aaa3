//! The reconcile loop's state and its one way of changing the data plane:
//! effective config + health + admin states → desired state → reconciler.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::BackendState;
use tokio::sync::watch;
use tracing::warn;

use super::backend_addresses;
use crate::{
    api::Applied,
    config::{CheckKind, Config},
    desired::{desired, BackendHealth},
    health::{self, BackendRef, Supervisor, Target, Transition},
    neighbours,
    reconcile::{ApplyReport, Reconciler},
    runtime::{AdminStates, Op},
    stats::{BackendInfo, Timings, Topology, VipInfo},
};

/// The longest a config change waits for the first checks of new backends.
const FIRST_CHECK_WAIT: Duration = Duration::from_secs(5);

pub(super) struct Agent {
    pub reconciler: Reconciler,
    pub config_path: std::path::PathBuf,
    /// The config file as last loaded.
    pub file: Arc<Config>,
    /// The file with the runtime operations applied: what is in force (the
    /// same allocation as `file` while there are none).
    pub config: Arc<Config>,
    pub ops: Vec<Op>,
    pub admin: AdminStates,
    pub health: HashMap<BackendRef, BackendHealth>,
    pub checks: Supervisor,
    /// A weight is still in slow start: recompute soon.
    pub ramping: bool,
    /// VIPs serving from DOWN backends because of `on_all_down = "keep"`.
    pub kept: Vec<String>,
    pub last_report: ApplyReport,
    /// Whether an apply has succeeded. Until then the kernel holds what the
    /// agent adopted, and a failed apply must leave it so, not roll it back to
    /// the empty config the agent starts from.
    pub applied: bool,
    /// How long the last apply took (desired state, rings, map writes).
    pub last_apply: std::time::Duration,
    pub timings: Arc<Timings>,
    pub published_config: watch::Sender<Arc<Applied>>,
    pub published_topology: watch::Sender<Arc<Topology>>,
}

impl Agent {
    /// Moves to `next` with `admin`: backends nobody has judged yet get one check first (the
    /// kernel's state counts as a judgement for adopted ones), so nothing enters
    /// a ring before it has answered; then the maps, then the checker tasks.
    /// If the maps cannot be written, what was in force stays in force: the
    /// config, admin states, health table and checkers are as before, and the
    /// maps are written back to them (once something of ours was in force).
    pub async fn switch_to(&mut self, next: Arc<Config>, admin: AdminStates) -> Result<()> {
        let targets = health::targets(&next);
        let wanted: HashSet<BackendRef> = targets.iter().map(|t| t.backend).collect();
        let mut health: HashMap<BackendRef, BackendHealth> =
            self.health.iter().filter(|(b, _)| wanted.contains(b)).map(|(b, h)| (*b, h.clone())).collect();
        let unjudged: Vec<Target> =
            targets.iter().filter(|t| !health.contains_key(&t.backend)).cloned().collect();
        // A check's timeout may be long; a backend whose first answer takes
        // longer starts DOWN and its checker decides from there.
        let mut first = health::first_results(&unjudged, FIRST_CHECK_WAIT).await;
        for t in &unjudged {
            let adopted = self.reconciler.backend_state(&t.backend.vip, t.backend.addr);
            let (up, reason) = match adopted {
                Some(state) => {
                    (state != BackendState::Down as u8, "state kept from the running data plane".into())
                }
                None => match first.remove(&t.backend) {
                    Some(Ok(())) => (true, "first check passed".to_string()),
                    Some(Err(why)) => (false, why),
                    None => (false, "first check did not finish".to_string()),
                },
            };
            if !up {
                warn!("health: {} starts DOWN: {reason}", t.label);
            }
            health.insert(
                t.backend,
                BackendHealth { up, came_up: None, transitions: 0, reason: reason.into() },
            );
        }

        let known: HashSet<IpAddr> = backend_addresses(&self.config).collect();
        let new: Vec<IpAddr> = backend_addresses(&next).filter(|a| !known.contains(a)).collect();
        if neighbours::probe(new).await > 0 {
            // Give the kernel a moment to resolve them before rings point at them.
            tokio::time::sleep(neighbours::SETTLE).await;
        }
        let config = std::mem::replace(&mut self.config, next);
        let admin = std::mem::replace(&mut self.admin, admin);
        let health = std::mem::replace(&mut self.health, health);
        if let Err(e) = self.try_apply() {
            (self.config, self.admin, self.health) = (config, admin, health);
            if self.applied {
                self.apply("putting back what was in force");
            }
            return Err(e);
        }
        let health = &self.health;
        self.checks.sync(&targets, |b| health.get(b).is_some_and(|h| h.up));
        Ok(())
    }

    pub fn transition(&mut self, t: Transition) {
        let Some(h) = self.health.get_mut(&t.backend) else { return };
        h.up = t.up;
        h.came_up = t.up.then(Instant::now);
        h.transitions += 1;
        h.reason = t.reason.into();
        self.apply("health");
    }

    pub fn apply(&mut self, why: &str) {
        if let Err(e) = self.try_apply() {
            tracing::error!("applying the desired state ({why}) failed: {e:#}");
        }
    }

    pub fn try_apply(&mut self) -> Result<()> {
        let started = Instant::now();
        let want = desired(&self.config, &self.health, &self.admin, started);
        self.ramping = want.ramping;
        if want.kept != self.kept {
            for vip in want.kept.iter().filter(|v| !self.kept.contains(v)) {
                warn!("VIP {vip}: every backend is DOWN; on_all_down = keep, so they all stay in service");
            }
            self.kept = want.kept.clone();
        }
        self.last_report = self.reconciler.apply(&want.vips)?;
        self.applied = true;
        self.last_apply = started.elapsed();
        self.timings.reconciled(self.last_apply);
        self.publish();
        Ok(())
    }

    /// Tells the API and the stats sampler what is in force now.
    fn publish(&self) {
        let applied = Applied { config: Arc::clone(&self.config), admin: self.admin.clone() };
        self.published_config.send_replace(Arc::new(applied));
        let settings = self.reconciler.dataplane().settings();
        let unchecked: Arc<str> = Arc::from("not checked");
        let vips = self
            .config
            .vips
            .iter()
            .filter_map(|vip| {
                let key = vip.key();
                let index = self.reconciler.vip_index(&key)?;
                let backends = vip
                    .backends
                    .iter()
                    .map(|b| {
                        let addr = b.socket();
                        let known = self.health.get(&BackendRef { vip: key, addr });
                        BackendInfo {
                            // Every configured backend has a slot once applied.
                            slot: self.reconciler.backend_slot(&key, addr).unwrap_or(u32::MAX),
                            admin: self.admin.get(&vip.name, &b.name),
                            health: (b.check.kind != CheckKind::None).then(|| known.is_some_and(|h| h.up)),
                            reason: known.map_or_else(|| Arc::clone(&unchecked), |h| Arc::clone(&h.reason)),
                            transitions: known.map_or(0, |h| h.transitions),
                            in_ring: self.reconciler.in_ring(&key, addr),
                        }
                    })
                    .collect();
                Some(VipInfo { vip: Arc::clone(vip), key, index, backends })
            })
            .collect();
        self.published_topology.send_replace(Arc::new(Topology {
            vips,
            max_backends: settings.max_backends,
            conn_table_capacity: settings.conn_table_size,
        }));
    }
}
