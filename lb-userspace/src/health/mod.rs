//! Health checking, like HAProxy's: every checked backend has its own tokio
//! task probing it every `inter`; the rise/fall tracker turns results into
//! UP/DOWN transitions, which are sent to the reconcile loop. A backend nobody
//! has judged yet is decided by its first check at once. Checks never touch
//! the maps themselves, and the loop never waits for one: everything the
//! network says reaches it as a [`Report`], including that new backends'
//! neighbour entries had time to resolve.

pub mod check;
mod exec_user;
mod not_run;
mod state;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Instant,
};

use lb_common::VipKey;
use tokio::{sync::mpsc, task::JoinHandle, time::MissedTickBehavior};

use self::{check::Failure, not_run::NotRunLog};
pub use self::{exec_user::ExecUser, state::Tracker};
use crate::{
    config::{CheckKind, Config, HealthCheck},
    neighbours,
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

/// What a checker found: a backend changed state, or its first check answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub backend: BackendRef,
    /// The checker that found it (see [`Supervisor::is_current`]).
    pub generation: u64,
    /// For the log.
    pub label: String,
    pub up: bool,
    pub reason: String,
    /// The first check of a backend nobody had judged: its starting state.
    pub first: bool,
}

/// What the tasks of the [`Supervisor`] tell the reconcile loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    Check(Transition),
    /// The addresses of neighbour round `n` were probed and had time to resolve.
    Resolved(u64),
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

struct Running {
    target: Target,
    generation: u64,
    task: JoinHandle<()>,
}

/// What every checker task shares.
struct Shared {
    reports: mpsc::Sender<Report>,
    exec_user: Option<ExecUser>,
    timings: Arc<Timings>,
    not_run: NotRunLog,
}

/// The checker tasks, one per target, restarted when its settings change, and
/// the neighbour rounds of new addresses. Every task has a generation of its
/// own, which its reports carry: what a replaced checker queued is stale.
pub struct Supervisor {
    running: HashMap<BackendRef, Running>,
    /// The last generation given out (checkers and neighbour rounds share them).
    generation: u64,
    rounds: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Supervisor {
    pub fn new(reports: mpsc::Sender<Report>, timings: Arc<Timings>, exec_user: Option<ExecUser>) -> Self {
        let shared = Arc::new(Shared { reports, exec_user, timings, not_run: NotRunLog::default() });
        Self { running: HashMap::new(), generation: 0, rounds: Vec::new(), shared }
    }

    /// Makes exactly `targets` checked. New or changed ones start from
    /// `state`: `Some(up)`, or `None` for a backend nobody has judged, whose
    /// first check then decides at once.
    pub fn sync(&mut self, targets: &[Target], state: impl Fn(&BackendRef) -> Option<bool>) {
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
            self.generation += 1;
            let generation = self.generation;
            let task =
                tokio::spawn(watch(target.clone(), generation, state(&backend), Arc::clone(&self.shared)));
            self.running.insert(backend, Running { target: target.clone(), generation, task });
        }
    }

    /// Whether `t` comes from the checker that checks its backend now, not
    /// from one replaced or stopped since it was sent.
    pub fn is_current(&self, t: &Transition) -> bool {
        self.running.get(&t.backend).is_some_and(|r| r.generation == t.generation)
    }

    /// The backends being checked.
    pub fn backends(&self) -> impl Iterator<Item = &BackendRef> {
        self.running.keys()
    }

    /// Probes `addresses` in a task of its own, which reports
    /// [`Report::Resolved`] with the round's number (returned) once the
    /// kernel had time to resolve them.
    pub fn resolve(&mut self, addresses: Vec<IpAddr>) -> u64 {
        self.generation += 1;
        let round = self.generation;
        let reports = self.shared.reports.clone();
        self.rounds.retain(|task| !task.is_finished());
        self.rounds.push(tokio::spawn(async move {
            neighbours::resolve(addresses).await;
            let _ = reports.send(Report::Resolved(round)).await;
        }));
        round
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for running in self.running.values() {
            running.task.abort();
        }
        for task in &self.rounds {
            task.abort();
        }
    }
}

/// One backend's checker: its first check if nobody has judged it (`start`
/// is `None`), then one check every `inter`, through the rise/fall tracker.
async fn watch(target: Target, generation: u64, start: Option<bool>, shared: Arc<Shared>) {
    let check = &target.check;
    let send = |up: bool, reason: String, first: bool| {
        let label = target.label.clone();
        let t = Transition { backend: target.backend, generation, label, up, reason, first };
        shared.reports.send(Report::Check(t))
    };
    let mut ticker = tokio::time::interval(check.inter);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: the first check, if there is one to make.
    ticker.tick().await;
    let up = match start {
        Some(up) => up,
        None => loop {
            let (up, reason) = match run(&target, &shared).await {
                Some(Ok(())) => (true, "first check passed".to_string()),
                Some(Err(why)) => (false, why),
                None => {
                    ticker.tick().await;
                    continue;
                }
            };
            if send(up, reason, true).await.is_err() {
                return;
            }
            break up;
        },
    };
    let mut tracker = Tracker::new(up, check.rise, check.fall);
    loop {
        ticker.tick().await;
        let Some(result) = run(&target, &shared).await else { continue };
        let Some(now_up) = tracker.record(result.is_ok()) else { continue };
        let reason = match result {
            Ok(()) => format!("{} consecutive checks passed", check.rise),
            Err(why) => format!("{why} ({} consecutive checks failed)", check.fall),
        };
        if send(now_up, reason, false).await.is_err() {
            return;
        }
    }
}

/// One check, timed; `None` if this host could not run it (logged and
/// counted, and no result for or against the backend).
async fn run(target: &Target, shared: &Shared) -> Option<Result<(), String>> {
    let started = Instant::now();
    let result = match check::probe(&target.check, target.backend.addr, shared.exec_user).await {
        Ok(()) => Ok(()),
        Err(Failure::Backend(why)) => Err(why),
        Err(Failure::NotRun(why)) => {
            shared.timings.check_not_run(&target.vip_name, &target.backend_name, why.cause);
            shared.not_run.note(&target.label, &why, Instant::now());
            return None;
        }
    };
    shared.timings.health_check(&target.vip_name, &target.backend_name, started.elapsed());
    Some(result)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Config;

    const WAIT: Duration = Duration::from_secs(5);

    /// Exec-checked backends 10.77.1.10, .11, … of one VIP, one per command.
    fn exec_targets(keys: &str, commands: &[&str]) -> Vec<Target> {
        let mut toml = format!(
            "[global]\ninterface = \"lo\"\n[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
             check = \"exec\"\nexec_command = \"true\"\n{keys}\n"
        );
        for (i, command) in commands.iter().enumerate() {
            toml.push_str(&format!(
                "[[vip.backend]]\naddress = \"10.77.1.{}\"\nexec_command = {command:?}\n",
                10 + i
            ));
        }
        targets(&Config::from_toml(&toml).unwrap())
    }

    fn supervisor() -> (Supervisor, mpsc::Receiver<Report>) {
        let (tx, rx) = mpsc::channel(16);
        (Supervisor::new(tx, Arc::new(Timings::default()), None), rx)
    }

    async fn next_check(rx: &mut mpsc::Receiver<Report>) -> Transition {
        match tokio::time::timeout(WAIT, rx.recv()).await {
            Ok(Some(Report::Check(t))) => t,
            other => panic!("no check reported: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_backend_nobody_judged_is_decided_by_its_first_check_at_once() {
        // rise and fall of 10 every 20 s: only a first check can decide within the test.
        let targets = exec_targets("rise = 10\nfall = 10\ninter = \"20s\"", &["true", "exit 1"]);
        let (mut checks, mut rx) = supervisor();
        checks.sync(&targets, |_| None);
        let mut got = [next_check(&mut rx).await, next_check(&mut rx).await];
        got.sort_by_key(|t| t.backend.addr);
        assert!(got.iter().all(|t| t.first && checks.is_current(t)), "{got:#?}");
        assert_eq!((got[0].up, got[0].reason.as_str()), (true, "first check passed"));
        assert_eq!((got[1].up, got[1].reason.as_str()), (false, "exit 1"));
    }

    #[tokio::test]
    async fn what_a_replaced_checker_queued_is_stale() {
        let failing = exec_targets("fall = 1\ninter = \"20ms\"", &["exit 1"]);
        let (mut checks, mut rx) = supervisor();
        checks.sync(&failing, |_| Some(true));
        // Its UP -> DOWN waits in the channel while the loop is busy with a reload...
        let queued = next_check(&mut rx).await;
        assert!(!queued.up && !queued.first && checks.is_current(&queued), "{queued:#?}");
        // ... that changes the check: its new checker starts from UP, and the
        // old checker's DOWN no longer counts.
        let passing = exec_targets("fall = 1\ninter = \"20ms\"", &["true"]);
        checks.sync(&passing, |_| Some(true));
        assert!(!checks.is_current(&queued), "a replaced checker's transition still counts");
        // Unchanged settings keep the checker, and its reports stay current.
        let failing_again = exec_targets("fall = 1\ninter = \"20ms\"", &["exit 1"]);
        checks.sync(&failing_again, |_| Some(true));
        let current = next_check(&mut rx).await;
        checks.sync(&failing_again, |_| Some(true));
        assert!(checks.is_current(&current), "{current:#?}");
        checks.sync(&[], |_| None);
        assert!(!checks.is_current(&current), "a stopped checker's transition still counts");
    }

    #[tokio::test]
    async fn a_neighbour_round_reports_under_its_own_number() {
        let targets = exec_targets("inter = \"20s\"", &["true"]);
        let (mut checks, mut rx) = supervisor();
        checks.sync(&targets, |_| Some(true));
        let round = checks.resolve(vec![std::net::Ipv4Addr::LOCALHOST.into()]);
        let got = tokio::time::timeout(WAIT, rx.recv()).await.expect("a report");
        assert_eq!(got, Some(Report::Resolved(round)));
        assert!(checks.running.values().all(|r| r.generation != round));
    }

    #[tokio::test]
    async fn a_stopped_checker_takes_what_its_command_started_with_it() {
        let targets = exec_targets("timeout = \"10s\"", &["sleep 10.123; true"]);
        let (mut checks, _rx) = supervisor();
        let sleeping = || {
            std::fs::read_dir("/proc")
                .unwrap()
                .filter_map(|e| e.ok())
                .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == b"sleep\x0010.123\x00"))
        };
        checks.sync(&targets, |_| None);
        for _ in 0..100 {
            if sleeping() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(sleeping(), "the first check never started its command");
        checks.sync(&[], |_| None);
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!sleeping(), "the stopped check's sleep outlived it");
    }
}
