//! Which VIP addresses this node announces, kept in BIRD. The reconcile loop
//! says what it wants after every apply; talking to BIRD runs as a task that
//! reports back, one at a time, so the loop never waits on BIRD.
//!
//! An address is announced while the data plane is attached and at least one
//! VIP on it has a backend in its ring. A clean stop tags the routes with
//! GRACEFUL_SHUTDOWN, waits `drain_time`, withdraws them, then detaches.

use std::{collections::BTreeSet, net::IpAddr, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::{
    bird::{self, Protocol, Style},
    keeper::Keeper,
};
use crate::{config::bgp::Bgp, health::ExecUser};

/// How often the loop calls [`Announcer::tick`]: well inside the smallest
/// `grace_time`, so a live agent is never taken for a dead one.
pub const TICK: Duration = Duration::from_millis(50);
const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long one exchange with BIRD may take.
const BIRD_TIMEOUT: Duration = Duration::from_secs(5);

/// What a BIRD task reports back to the loop.
#[derive(Debug)]
pub enum BirdReport {
    Loaded { target: Target, result: Result<(), String> },
    Polled(Result<Vec<Protocol>, String>),
}

/// What BIRD's file should say.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    bgp: Arc<Bgp>,
    routes: BTreeSet<IpAddr>,
    style: Style,
}

/// For stats, the API, the dashboard and metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BgpStatus {
    pub enabled: bool,
    pub routes: Vec<RouteStatus>,
    pub sessions: Vec<SessionStatus>,
    /// The last failure talking to BIRD; `None` while it answers.
    pub bird_error: Option<String>,
    /// Whether the device the routes hang on exists.
    pub keeper_alive: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    pub address: IpAddr,
    /// announced, draining, pending (BIRD has not loaded it yet), withdrawn
    pub state: String,
    pub reason: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub neighbor: IpAddr,
    pub asn: u32,
    /// BIRD's protocol state (up, start, down) and its info (Established, Active, ...).
    pub state: String,
    pub info: String,
    pub established: bool,
}

pub struct Announcer {
    keeper: Option<Keeper>,
    user: Option<ExecUser>,
    want: Option<Target>,
    /// Every VIP address configured (for the routes not announced).
    addresses: BTreeSet<IpAddr>,
    eligible: BTreeSet<IpAddr>,
    held_back: Option<String>,
    loaded: Option<Target>,
    loading: bool,
    polling: bool,
    last_poll: Option<std::time::Instant>,
    bird_error: Option<String>,
    protocols: Vec<Protocol>,
    reports: mpsc::Sender<BirdReport>,
    status: watch::Sender<Arc<BgpStatus>>,
}

impl Announcer {
    pub fn new(
        user: Option<ExecUser>,
        reports: mpsc::Sender<BirdReport>,
    ) -> (Self, watch::Receiver<Arc<BgpStatus>>) {
        let (status, rx) = watch::channel(Arc::new(BgpStatus::default()));
        let announcer = Self {
            keeper: None,
            user,
            want: None,
            addresses: BTreeSet::new(),
            eligible: BTreeSet::new(),
            held_back: None,
            loaded: None,
            loading: false,
            polling: false,
            last_poll: None,
            bird_error: None,
            protocols: Vec::new(),
            reports,
            status,
        };
        (announcer, rx)
    }

    /// What should be announced now: `routes` of `addresses` under `bgp`
    /// (`None`: no `[bgp]`, nothing is announced and BIRD is left alone).
    /// `eligible`: the addresses with a backend in a ring; `held_back`: why
    /// none of them may be announced now (the cluster's rules), if so.
    pub fn want(
        &mut self,
        bgp: Option<&Bgp>,
        eligible: BTreeSet<IpAddr>,
        addresses: BTreeSet<IpAddr>,
        held_back: Option<String>,
    ) {
        self.addresses = addresses;
        let routes = if held_back.is_some() { BTreeSet::new() } else { eligible.clone() };
        self.eligible = eligible;
        self.held_back = held_back;
        let Some(bgp) = bgp else {
            if self.want.is_some() {
                info!("[bgp] removed: withdrawing every route");
                self.want = self.want.take().map(|t| Target { routes: BTreeSet::new(), ..t });
                self.kick();
            }
            return;
        };
        let same_bgp = self.want.as_ref().is_some_and(|t| *t.bgp == *bgp);
        if !same_bgp {
            self.ensure_keeper(bgp);
        }
        let bgp = match &self.want {
            Some(t) if same_bgp => Arc::clone(&t.bgp),
            _ => Arc::new(bgp.clone()),
        };
        let target = Target { bgp, routes, style: Style::Normal };
        if self.want.as_ref() != Some(&target) {
            self.want = Some(target);
            self.kick();
        }
    }

    fn ensure_keeper(&mut self, bgp: &Bgp) {
        if self.keeper.as_ref().is_some_and(|k| k.device == bgp.device) {
            return;
        }
        match Keeper::spawn(&bgp.device, bgp.grace_time, self.user) {
            Ok(keeper) => {
                info!(device = %bgp.device, "routes hang on {}; they outlive this agent by at most {:?}", bgp.device, bgp.grace_time);
                if let Some(old) = self.keeper.replace(keeper) {
                    old.quit();
                }
            }
            Err(e) => warn!("cannot hold the device the routes hang on, nothing is announced: {e:#}"),
        }
    }

    /// Sends BIRD the wanted file unless it has it or a load is under way.
    fn kick(&mut self) {
        if self.loading || self.want.is_none() || self.want == self.loaded {
            self.publish();
            return;
        }
        let target = self.want.clone().expect("checked above");
        self.loading = true;
        let reports = self.reports.clone();
        tokio::spawn(async move {
            let result = load(&target).await;
            let _ = reports.send(BirdReport::Loaded { target, result }).await;
        });
        self.publish();
    }

    /// Often (every [`TICK`]) from the loop: heartbeat and keeper check; each
    /// [`POLL_EVERY`], a poll of BIRD's sessions.
    pub fn tick(&mut self) {
        let Some(bgp) = self.want.as_ref().map(|t| Arc::clone(&t.bgp)) else { return };
        let alive = self.keeper.as_mut().is_some_and(Keeper::alive_now);
        match self.keeper.as_mut() {
            Some(k) if alive => k.heartbeat(),
            _ => {
                warn!("the route keeper is gone: starting another (routes were withdrawn meanwhile)");
                self.keeper = None;
                self.ensure_keeper(&bgp);
                // BIRD saw the device vanish; make sure it has the current file.
                self.loaded = None;
                self.kick();
            }
        }
        let due = self.last_poll.is_none_or(|t| t.elapsed() >= POLL_EVERY);
        if !self.polling && due {
            self.polling = true;
            self.last_poll = Some(std::time::Instant::now());
            let reports = self.reports.clone();
            tokio::spawn(async move {
                let result = bird::protocols(&bgp.bird_socket, BIRD_TIMEOUT).await.map_err(|e| e.to_string());
                let _ = reports.send(BirdReport::Polled(result)).await;
            });
        }
    }

    pub fn report(&mut self, report: BirdReport) {
        match report {
            BirdReport::Loaded { target, result } => {
                self.loading = false;
                match result {
                    Ok(()) => {
                        if self.loaded.as_ref().map(|t| &t.routes) != Some(&target.routes) {
                            info!(routes = ?target.routes, "BIRD announces {} address(es)", target.routes.len());
                        }
                        self.bird_error = None;
                        self.loaded = Some(target);
                    }
                    Err(e) => {
                        if self.bird_error.as_ref() != Some(&e) {
                            if self.loaded.is_none() && e.contains("No such file") {
                                // BIRD starts with the file we just wrote: not yet a problem.
                                info!("waiting for BIRD: {e}");
                            } else {
                                warn!("BIRD did not take the new announcements: {e}");
                            }
                        }
                        self.bird_error = Some(e);
                        // Try again on the next tick rather than spinning.
                        self.publish();
                        return;
                    }
                }
                self.kick();
            }
            BirdReport::Polled(result) => {
                self.polling = false;
                match result {
                    Ok(protocols) => {
                        self.protocols = protocols;
                        if self.loaded.is_none() || self.loaded != self.want {
                            self.kick();
                        }
                    }
                    Err(e) => {
                        self.protocols.clear();
                        if self.bird_error.as_ref() != Some(&e) && self.loaded.is_some() {
                            warn!("{e}");
                        }
                        self.bird_error = Some(e);
                    }
                }
                self.publish();
            }
        }
    }

    fn publish(&self) {
        let Some(want) = &self.want else {
            self.status.send_replace(Arc::new(BgpStatus::default()));
            return;
        };
        let loaded = self.loaded.as_ref();
        let routes = self
            .addresses
            .iter()
            .chain(want.routes.iter().filter(|a| !self.addresses.contains(a)))
            .map(|&address| {
                let wanted = want.routes.contains(&address);
                let in_bird = loaded.is_some_and(|t| t.routes.contains(&address));
                let (state, reason) = match (wanted, in_bird) {
                    (true, true) if loaded.is_some_and(|t| t.style == Style::Draining) => {
                        ("draining", "stopping: tagged GRACEFUL_SHUTDOWN")
                    }
                    (true, true) => ("announced", "a backend is in its ring"),
                    (true, false) => ("pending", "BIRD has not loaded it yet"),
                    (false, true) => ("pending", "BIRD has not withdrawn it yet"),
                    (false, false) => match &self.held_back {
                        Some(why) if self.eligible.contains(&address) => ("withdrawn", why.as_str()),
                        _ => ("withdrawn", "no VIP on this address has a usable backend"),
                    },
                };
                RouteStatus { address, state: state.to_owned(), reason: reason.to_owned() }
            })
            .collect();
        let sessions = want
            .bgp
            .neighbors
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let name = bird::peer_name(i);
                let p = self.protocols.iter().find(|p| p.name == name);
                SessionStatus {
                    neighbor: n.address,
                    asn: n.asn,
                    state: p.map_or_else(|| "unknown".into(), |p| p.state.clone()),
                    info: p.map_or_else(String::new, |p| p.info.clone()),
                    established: p.is_some_and(|p| p.info.starts_with("Established")),
                }
            })
            .collect();
        self.status.send_replace(Arc::new(BgpStatus {
            enabled: true,
            routes,
            sessions,
            bird_error: self.bird_error.clone(),
            keeper_alive: self.keeper.is_some(),
        }));
    }

    /// A clean stop: GRACEFUL_SHUTDOWN for `drain_time`, then withdrawal,
    /// then the device goes. Returns once routers have been told.
    pub async fn withdraw_all(mut self) {
        let Some(want) = self.want.take() else { return };
        let draining = Target { style: Style::Draining, ..want.clone() };
        if !draining.routes.is_empty() {
            match load(&draining).await {
                Ok(()) => {
                    info!("routes tagged GRACEFUL_SHUTDOWN; withdrawing in {:?}", want.bgp.drain_time);
                    tokio::time::sleep(want.bgp.drain_time).await;
                }
                Err(e) => warn!("could not tag the routes for a graceful shutdown: {e}"),
            }
        }
        let empty = Target { routes: BTreeSet::new(), style: Style::Normal, ..want };
        if let Err(e) = load(&empty).await {
            warn!("could not withdraw through BIRD ({e}); removing the device withdraws them anyway");
        }
        if let Some(keeper) = self.keeper.take() {
            keeper.quit();
        }
        info!("routes withdrawn");
    }

    /// A stop that leaves the data plane running: the routes stay for
    /// `grace_time`, for the next agent to take over.
    pub fn leave(self) {
        if let Some(want) = &self.want {
            info!("routes stay announced for {:?} unless another agent takes them over", want.bgp.grace_time);
        }
    }
}

async fn load(target: &Target) -> Result<(), String> {
    let text = bird::render(&target.bgp, &target.routes, target.style);
    let path = &target.bgp.bird_config;
    bird::write_config(path, &text).await.map_err(|e| format!("writing {}: {e}", path.display()))?;
    bird::configure(&target.bgp.bird_socket, BIRD_TIMEOUT).await.map_err(|e| e.to_string())
}
