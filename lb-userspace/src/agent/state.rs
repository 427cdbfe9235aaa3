//! The reconcile loop's state and its one way of changing the data plane:
//! effective config + health + admin states → desired state → reconciler.

use std::{
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Result;
use lb_common::BackendState;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{
    backend_addresses,
    cluster::{local_view, ring_digests},
    host,
    judged::Judged,
    lock::InterfaceLock,
};
use crate::{
    agent::inbox::Applied,
    cluster::member::Member,
    config::{CheckKind, Config},
    desired::{desired, BackendHealth},
    health::{self, BackendRef, Report, Supervisor},
    reconcile::{ApplyReport, Reconciler},
    runtime::{AdminStates, Op},
    stats::{BackendInfo, Timings, Topology, VipInfo},
};

/// How long a starting agent waits for the first checks of its backends
/// before it applies its config.
const FIRST_CHECK_WAIT: Duration = Duration::from_secs(5);
/// Logged, with the time and the report, once a neighbour round's addresses
/// are applied (the scale benchmark waits for it).
const NEIGHBOURS_RESOLVED: &str = "neighbours of new backends resolved, applied in";

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
    pub judged: Judged,
    pub checks: Supervisor,
    /// This interface's lock, also where changed host settings are remembered.
    pub lock: InterfaceLock,
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
    /// VIP addresses with a backend in some ring: what this node may announce.
    pub routes: BTreeSet<IpAddr>,
    /// Bumped when `routes` or the config in force change (the announcer looks).
    pub routes_generation: u64,
    /// With `[cluster]`: the other nodes' views, and what they decide.
    pub member: Option<Member>,
}

/// What was in force before [`Agent::stage`], to put back.
struct InForce {
    config: Arc<Config>,
    admin: AdminStates,
    judged: Judged,
}

impl Agent {
    /// The first apply: the config and its checkers, then up to
    /// [`FIRST_CHECK_WAIT`] of `reports` so that backends are judged (and
    /// their neighbours resolved) before the VIPs are served, then the maps.
    pub async fn start(
        &mut self,
        config: Arc<Config>,
        admin: AdminStates,
        reports: &mut mpsc::Receiver<Report>,
    ) -> Result<()> {
        self.stage(config, admin);
        self.enable_forwarding()?;
        self.sync_checks();
        let deadline = tokio::time::Instant::now() + FIRST_CHECK_WAIT;
        while self.judged.awaited(&self.checks) > 0 {
            match tokio::time::timeout_at(deadline, reports.recv()).await {
                Ok(Some(report)) => {
                    self.judged.take(report, &self.checks);
                }
                Ok(None) | Err(_) => break,
            }
        }
        let left = self.judged.awaited(&self.checks);
        if left > 0 {
            info!(
                "{left} backends or addresses not judged after {}s: each takes flows once its first check passes",
                FIRST_CHECK_WAIT.as_secs()
            );
        }
        self.try_apply()
    }

    /// Moves to `next` with `admin` at once. Backends nobody has judged yet
    /// stay out of the rings until their first check answers and their
    /// neighbour entries had time to resolve, which the loop hears as reports.
    /// If the maps cannot be written, what was in force stays in force: the
    /// config, admin states, health and checkers are as before, and the maps
    /// are written back to them (once something of ours was in force).
    pub fn switch_to(&mut self, next: Arc<Config>, admin: AdminStates) -> Result<()> {
        let before = self.stage(next, admin);
        if let Err(e) = self.enable_forwarding().and_then(|()| self.try_apply()) {
            (self.config, self.admin, self.judged) = (before.config, before.admin, before.judged);
            if self.applied {
                self.apply("putting back what was in force");
            }
            return Err(e);
        }
        self.sync_checks();
        Ok(())
    }

    /// Forwarding on the interface for the families of the VIPs in force
    /// (before their first packet needs it).
    fn enable_forwarding(&mut self) -> Result<()> {
        if self.config.global.set_forwarding {
            host::enable_forwarding(&mut self.lock, &self.config)?;
        }
        Ok(())
    }

    /// Puts `next` and `admin` in force without applying them: health kept for
    /// the backends that stay; before the first apply, the kernel's state
    /// counts as a judgement for the backends the agent adopted; new addresses
    /// go to a neighbour round. What was in force is returned.
    fn stage(&mut self, next: Arc<Config>, admin: AdminStates) -> InForce {
        let targets = health::targets(&next);
        let wanted: HashSet<BackendRef> = targets.iter().map(|t| t.backend).collect();
        let mut health: HashMap<BackendRef, BackendHealth> = self
            .judged
            .health
            .iter()
            .filter(|(b, _)| wanted.contains(b))
            .map(|(b, h)| (*b, h.clone()))
            .collect();
        if !self.applied {
            for t in &targets {
                let adopted = self.reconciler.backend_state(&t.backend.vip, t.backend.addr);
                let (false, Some(state)) = (health.contains_key(&t.backend), adopted) else { continue };
                let up = state != BackendState::Down as u8;
                let reason = "state kept from the running data plane";
                if !up {
                    warn!("health: {} starts DOWN: {reason}", t.label);
                }
                health.insert(
                    t.backend,
                    BackendHealth { up, came_up: None, transitions: 0, reason: reason.into() },
                );
            }
        }

        let known: HashSet<IpAddr> = backend_addresses(&self.config).collect();
        let next_addresses: HashSet<IpAddr> = backend_addresses(&next).collect();
        let new: Vec<IpAddr> = next_addresses.iter().filter(|a| !known.contains(a)).copied().collect();
        let mut resolving: HashMap<IpAddr, u64> = self
            .judged
            .resolving
            .iter()
            .filter(|(a, _)| next_addresses.contains(a))
            .map(|(a, r)| (*a, *r))
            .collect();
        if !new.is_empty() {
            let round = self.checks.resolve(new.clone());
            resolving.extend(new.into_iter().map(|a| (a, round)));
        }
        InForce {
            config: std::mem::replace(&mut self.config, next),
            admin: std::mem::replace(&mut self.admin, admin),
            judged: std::mem::replace(&mut self.judged, Judged { health, resolving }),
        }
    }

    /// Checks exactly the backends in force; those without health yet start with a first check.
    fn sync_checks(&mut self) {
        let health = &self.judged.health;
        self.checks.sync(&health::targets(&self.config), |b| health.get(b).map(|h| h.up));
    }

    /// A report of a checker or a neighbour round.
    pub fn report(&mut self, report: Report) {
        let resolved = matches!(report, Report::Resolved(_));
        if !self.judged.take(report, &self.checks) {
            return;
        }
        match self.try_apply() {
            // The second half of a config change with new addresses: say when it is all in.
            Ok(()) if resolved => info!(
                "{NEIGHBOURS_RESOLVED} {:.1} ms: {:?}",
                self.last_apply.as_secs_f64() * 1000.0,
                self.last_report
            ),
            Ok(()) => {}
            Err(e) => tracing::error!("applying the desired state (health) failed: {e:#}"),
        }
    }

    pub fn apply(&mut self, why: &str) {
        if let Err(e) = self.try_apply() {
            tracing::error!("applying the desired state ({why}) failed: {e:#}");
        }
    }

    pub fn try_apply(&mut self) -> Result<()> {
        let started = Instant::now();
        let resolving = &self.judged.resolving;
        let shared;
        let health = match self.member.as_ref().and_then(|m| Some((m.effective()?, m.came_up()))) {
            Some((effective, came_up)) => {
                shared = self.shared_health(effective, &came_up);
                &shared
            }
            None => &self.judged.health,
        };
        let want = desired(&self.config, health, &self.admin, started, |a| resolving.contains_key(&a));
        self.ramping = want.ramping;
        if want.kept != self.kept {
            for vip in want.kept.iter().filter(|v| !self.kept.contains(v)) {
                warn!("VIP {vip}: every backend is DOWN; on_all_down = keep, so they all stay in service");
            }
            self.kept = want.kept.clone();
        }
        self.last_report = self.reconciler.apply(&want.vips)?;
        if let Some(member) = self.member.as_mut() {
            let (up, came_up) = local_view(&self.config, &self.judged.health);
            member.set_local(up, came_up, ring_digests(&self.config, &want.vips));
        }
        let recording = super::recording(&self.config.global);
        if self.reconciler.dataplane().settings().recording != recording {
            self.reconciler.dataplane_mut().set_recording(recording)?;
            info!("flow recording now {recording:?}");
        }
        let tunnel = self.config.global.tunnel_source();
        if self.reconciler.dataplane().settings().tunnel != tunnel {
            self.reconciler.dataplane_mut().set_tunnel_source(tunnel)?;
            let g = &self.config.global;
            info!("tunnel sources now {} and {}", g.tunnel_source_v4, g.tunnel_source_v6);
        }
        let too_big_limit = self.config.global.icmp_too_big_limit;
        if self.reconciler.dataplane().settings().too_big_limit != too_big_limit {
            self.reconciler.dataplane_mut().set_too_big_limit(too_big_limit)?;
            info!("ICMP too-big errors now at most {too_big_limit} a second per CPU");
        }
        self.applied = true;
        self.last_apply = started.elapsed();
        self.timings.reconciled(self.last_apply);
        self.publish();
        let routes = self.announceable();
        if routes != self.routes {
            self.routes = routes;
        }
        // A new config may change [bgp] or the addresses shown.
        self.routes_generation += 1;
        Ok(())
    }

    /// Addresses of the VIPs that have a backend in their ring.
    fn announceable(&self) -> BTreeSet<IpAddr> {
        self.config
            .vips
            .iter()
            .filter(|vip| {
                let key = vip.key();
                vip.backends.iter().any(|b| self.reconciler.in_ring(&key, b.socket()))
            })
            .map(|vip| vip.address)
            .collect()
    }

    /// Tells the API and the stats sampler what is in force now.
    fn publish(&self) {
        let applied = Applied { config: Arc::clone(&self.config), admin: self.admin.clone() };
        self.published_config.send_replace(Arc::new(applied));
        let settings = self.reconciler.dataplane().settings();
        let unchecked: Arc<str> = Arc::from("not checked");
        let waiting: Arc<str> = Arc::from("waiting for its first check");
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
                        let known = self.judged.health.get(&BackendRef { vip: key, addr });
                        BackendInfo {
                            // Every configured backend has a slot once applied.
                            slot: self.reconciler.backend_slot(&key, addr).unwrap_or(u32::MAX),
                            admin: self.admin.get(&vip.name, &b.name),
                            health: (b.check.kind != CheckKind::None).then(|| known.is_some_and(|h| h.up)),
                            reason: match known {
                                Some(h) => Arc::clone(&h.reason),
                                None if b.check.kind == CheckKind::None => Arc::clone(&unchecked),
                                None => Arc::clone(&waiting),
                            },
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
            nat_table_capacity: settings.nat_table_size,
        }));
    }
}
