//! Health checking, like HAProxy's: every checked backend has its own tokio
//! task probing it every `inter`; the rise/fall tracker turns results into
//! UP/DOWN transitions, which are logged once with their reason and sent to
//! the reconcile loop. Checks never touch the maps themselves.

pub mod check;
mod state;

use std::{collections::HashMap, net::SocketAddr, sync::Arc, time::Duration};

use lb_common::VipKey;
use tokio::{
    sync::mpsc,
    task::{JoinHandle, JoinSet},
    time::MissedTickBehavior,
};
use tracing::{info, warn};

pub use self::state::Tracker;
use crate::{
    config::{CheckKind, Config, HealthCheck},
    stats::Timings,
};

/// A backend as health checking knows it: the same server behind two VIPs is
/// checked twice, with each VIP's settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendRef {
    pub vip: VipKey,
    pub addr: SocketAddr,
}

/// A backend to check.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub backend: BackendRef,
    pub vip_name: String,
    pub backend_name: String,
    /// For the log: `VIP web backend web1 (10.77.1.10:80)`.
    pub label: String,
    pub check: HealthCheck,
}

/// A backend changed state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub backend: BackendRef,
    pub up: bool,
    pub reason: String,
}

/// Every backend of `config` that has a check (`check = "none"` means always up).
pub fn targets(config: &Config) -> Vec<Target> {
    config
        .vips
        .iter()
        .flat_map(|vip| {
            vip.backends.iter().filter(|b| b.check.kind != CheckKind::None).map(move |b| Target {
                backend: BackendRef { vip: vip.key(), addr: b.socket() },
                vip_name: vip.name.clone(),
                backend_name: b.name.clone(),
                label: format!("VIP {} backend {} ({})", vip.name, b.name, b.socket()),
                check: b.check.clone(),
            })
        })
        .collect()
}

/// One check of each target, all at once, for at most `wait`: the state a
/// backend nobody has judged yet starts in (it takes traffic once it has
/// answered a check). A check still running at the deadline has no result
/// (it is dropped); those that finished keep theirs.
pub async fn first_results(targets: &[Target], wait: Duration) -> HashMap<BackendRef, Result<(), String>> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut set = JoinSet::new();
    for t in targets {
        let (backend, check) = (t.backend, t.check.clone());
        set.spawn(async move { (backend, check::probe(&check, backend.addr).await) });
    }
    let mut results = HashMap::new();
    while let Ok(Some(done)) = tokio::time::timeout_at(deadline, set.join_next()).await {
        if let Ok((backend, result)) = done {
            results.insert(backend, result);
        }
    }
    results
}

struct Running {
    target: Target,
    task: JoinHandle<()>,
}

/// The checker tasks: one per target, restarted when its settings change.
pub struct Supervisor {
    running: HashMap<BackendRef, Running>,
    transitions: mpsc::Sender<Transition>,
    timings: Arc<Timings>,
}

impl Supervisor {
    pub fn new(transitions: mpsc::Sender<Transition>, timings: Arc<Timings>) -> Self {
        Self { running: HashMap::new(), transitions, timings }
    }

    /// Makes exactly `targets` checked. New or changed ones start from `is_up`.
    pub fn sync(&mut self, targets: &[Target], is_up: impl Fn(&BackendRef) -> bool) {
        let wanted: HashMap<BackendRef, &Target> = targets.iter().map(|t| (t.backend, t)).collect();
        self.running.retain(|backend, running| {
            let keep = wanted.get(backend).is_some_and(|t| **t == running.target);
            if !keep {
                running.task.abort();
            }
            keep
        });
        for (backend, target) in wanted {
            if self.running.contains_key(&backend) {
                continue;
            }
            let task = tokio::spawn(watch(
                target.clone(),
                is_up(&backend),
                self.transitions.clone(),
                self.timings.clone(),
            ));
            self.running.insert(backend, Running { target: target.clone(), task });
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
    }
}

async fn watch(target: Target, up: bool, transitions: mpsc::Sender<Transition>, timings: Arc<Timings>) {
    let check = &target.check;
    let mut tracker = Tracker::new(up, check.rise, check.fall);
    let mut ticker = tokio::time::interval(check.inter);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate; the state we start from was just judged.
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let started = std::time::Instant::now();
        let result = check::probe(check, target.backend.addr).await;
        timings.health_check(&target.vip_name, &target.backend_name, started.elapsed());
        let Some(now_up) = tracker.record(result.is_ok()) else { continue };
        let reason = match result {
            Ok(()) => format!("{} consecutive checks passed", check.rise),
            Err(why) => format!("{why} ({} consecutive checks failed)", check.fall),
        };
        if now_up {
            info!("health: {} DOWN -> UP: {reason}", target.label);
        } else {
            warn!("health: {} UP -> DOWN: {reason}", target.label);
        }
        let transition = Transition { backend: target.backend, up: now_up, reason };
        if transitions.send(transition).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn first_results_keep_what_finished_by_the_deadline() {
        let config = Config::from_toml(
            "[global]\ninterface = \"lo\"\n[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
             check = \"exec\"\nexec_command = \"true\"\ntimeout = \"10s\"\ninter = \"20s\"\n\
             [[vip.backend]]\naddress = \"10.77.1.10\"\n\
             [[vip.backend]]\naddress = \"10.77.1.11\"\nexec_command = \"exit 1\"\n\
             [[vip.backend]]\naddress = \"10.77.1.12\"\nexec_command = \"sleep 10.123; true\"\n",
        )
        .unwrap();
        let targets = targets(&config);
        let started = std::time::Instant::now();
        let results = first_results(&targets, Duration::from_millis(500)).await;
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "waited for the slow check: {:?}",
            started.elapsed()
        );
        let by_address = |last: u8| {
            let addr = SocketAddr::new(std::net::Ipv4Addr::new(10, 77, 1, last).into(), 80);
            results.iter().find(|(b, _)| b.addr == addr).map(|(_, r)| r.clone())
        };
        assert_eq!(by_address(10), Some(Ok(())), "{results:?}");
        assert!(matches!(by_address(11), Some(Err(_))), "{results:?}");
        assert_eq!(by_address(12), None, "{results:?}");
        // The unfinished check's command went with it, also what its shell started.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0010.123\x00"));
        assert!(!left, "the slow check's sleep outlived it");
    }
}
