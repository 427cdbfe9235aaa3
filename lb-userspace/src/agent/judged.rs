//! What the reconcile loop knows about backends beyond the config: the health
//! of each checked backend whose first check has answered, and the addresses
//! whose neighbour entries are still being resolved. Reports from checkers and
//! neighbour rounds change it; reports from tasks that were replaced since they
//! sent them change nothing.

use std::{collections::HashMap, net::IpAddr, time::Instant};

use tracing::{debug, info, warn};

use crate::{
    desired::BackendHealth,
    health::{BackendRef, Report, Supervisor},
};

#[derive(Debug, Default)]
pub(super) struct Judged {
    /// Checked backends without an entry wait for their first check.
    pub health: HashMap<BackendRef, BackendHealth>,
    /// Address → the neighbour round that resolves it.
    pub resolving: HashMap<IpAddr, u64>,
}

impl Judged {
    /// Takes `report` in; whether it changed anything (then the desired state
    /// must be applied again).
    pub fn take(&mut self, report: Report, checks: &Supervisor) -> bool {
        let t = match report {
            Report::Resolved(round) => {
                let before = self.resolving.len();
                self.resolving.retain(|_, r| *r != round);
                return self.resolving.len() != before;
            }
            Report::Check(t) => t,
        };
        if !checks.is_current(&t) {
            debug!(
                "health: {} {} from a replaced checker dropped: {}",
                t.label,
                if t.up { "UP" } else { "DOWN" },
                t.reason
            );
            return false;
        }
        match (t.first, t.up) {
            (true, true) => {}
            (true, false) => warn!("health: {} starts DOWN: {}", t.label, t.reason),
            (false, true) => info!("health: {} DOWN -> UP: {}", t.label, t.reason),
            (false, false) => warn!("health: {} UP -> DOWN: {}", t.label, t.reason),
        }
        let h = self.health.entry(t.backend).or_insert_with(|| BackendHealth {
            up: t.up,
            came_up: None,
            transitions: 0,
            reason: "".into(),
        });
        if !t.first {
            h.came_up = t.up.then(Instant::now);
            h.transitions += 1;
        }
        h.up = t.up;
        h.reason = t.reason.into();
        true
    }

    /// Backends and addresses still waited for: checked backends without a
    /// first result, addresses being resolved.
    pub fn awaited(&self, checks: &Supervisor) -> usize {
        let unjudged = checks.backends().filter(|b| !self.health.contains_key(b)).count();
        unjudged + self.resolving.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, time::Duration};

    use tokio::sync::mpsc;

    use super::*;
    use crate::{
        config::Config,
        health::{targets, Target, Transition},
        stats::Timings,
    };

    /// One exec-checked backend, failing or passing, down after one failure.
    fn target(command: &str) -> Vec<Target> {
        let toml = format!(
            "[global]\ninterface = \"lo\"\n[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
             check = \"exec\"\nexec_command = {command:?}\nfall = 1\ninter = \"20ms\"\n\
             [[vip.backend]]\naddress = \"10.77.1.10\"\n"
        );
        targets(&Config::from_toml(&toml).unwrap())
    }

    async fn next_check(rx: &mut mpsc::Receiver<Report>) -> Transition {
        match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
            Ok(Some(Report::Check(t))) => t,
            other => panic!("no check reported: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_transition_queued_by_a_replaced_checker_is_not_applied() {
        let (tx, mut rx) = mpsc::channel(16);
        let mut checks = Supervisor::new(tx, Arc::new(Timings::default()), None);
        let mut judged = Judged::default();

        // Nobody has judged the backend: its first check decides.
        checks.sync(&target("exit 1"), |_| None);
        let first = next_check(&mut rx).await;
        let backend = first.backend;
        assert!(judged.take(Report::Check(first), &checks));
        assert!(!judged.health[&backend].up);
        assert_eq!(judged.awaited(&checks), 0);

        // It comes UP by an operator's fix... (rise 2 of a passing command).
        checks.sync(&target("true"), |b| judged.health.get(b).map(|h| h.up));
        let up = next_check(&mut rx).await;
        assert!(up.up && !up.first, "{up:?}");
        assert!(judged.take(Report::Check(up), &checks));
        assert!(judged.health[&backend].up);

        // The command breaks: its checker queues UP -> DOWN, and before the
        // loop reads it, a reload changes the check to one that passes.
        checks.sync(&target("exit 2"), |b| judged.health.get(b).map(|h| h.up));
        let stale = next_check(&mut rx).await;
        assert!(!stale.up, "{stale:?}");
        checks.sync(&target("exit 0"), |b| judged.health.get(b).map(|h| h.up));
        // The new checker starts from UP and, passing, never says so again:
        // applied, the stale DOWN would hold the backend DOWN for good.
        assert!(!judged.take(Report::Check(stale), &checks), "a stale transition was applied");
        assert!(judged.health[&backend].up);
        assert_eq!(judged.health[&backend].transitions, 1);
    }

    #[tokio::test]
    async fn a_neighbour_round_resolves_only_what_is_still_its_own() {
        let (tx, _rx) = mpsc::channel(16);
        let checks = Supervisor::new(tx, Arc::new(Timings::default()), None);
        let a: IpAddr = "10.77.1.10".parse().unwrap();
        let b: IpAddr = "10.77.1.11".parse().unwrap();
        // a was removed and added again since round 1 probed it: round 2 resolves it.
        let mut judged = Judged { resolving: HashMap::from([(a, 2), (b, 1)]), ..Judged::default() };
        assert_eq!(judged.awaited(&checks), 2);
        assert!(judged.take(Report::Resolved(1), &checks));
        assert_eq!(judged.resolving, HashMap::from([(a, 2)]));
        assert!(!judged.take(Report::Resolved(1), &checks), "nothing left of round 1");
        assert!(judged.take(Report::Resolved(2), &checks));
        assert_eq!(judged.awaited(&checks), 0);
    }
}
