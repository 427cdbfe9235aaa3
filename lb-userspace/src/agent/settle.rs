//! Settling ring slots in flux. Every few seconds the connection table is
//! scanned on a blocking thread (one system call per entry, so not in the
//! loop); the loop then settles the slots that no flow needs any more
//! (`reconcile::settle`). The scan also forgets flows idle for longer than
//! `flow_idle_timeout`.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{one_at_a_time::OneAtATime, state::Agent};
use crate::dataplane::{ConnScanner, DataplaneError, Scan};

/// A scan's result, and the scanner back for the next one.
pub(super) type Scanned = (ConnScanner, Result<Scan, DataplaneError>);

/// How often the table is scanned: often enough that slots settle soon after
/// they may, rarely enough that a full table's scan is a small load.
pub(super) fn scan_every(idle_timeout: Duration) -> Duration {
    (idle_timeout / 4).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

pub(super) struct Settler {
    scanner: OneAtATime<ConnScanner, Result<Scan, DataplaneError>>,
}

impl Settler {
    pub fn new(scanner: ConnScanner, done: mpsc::Sender<Scanned>) -> Self {
        Self { scanner: OneAtATime::new(scanner, done) }
    }

    /// Starts a scan unless one is running.
    pub fn scan(&mut self, idle_timeout: Duration) {
        self.scanner.start(move |scanner| scanner.scan(idle_timeout));
    }

    /// A scan came back: settles what it allows.
    pub fn scanned(&mut self, scanned: Scanned, agent: &mut Agent) {
        let scan = match self.scanner.finished(scanned) {
            Ok(scan) => scan,
            Err(e) => return warn!("scanning the connection table failed: {e}"),
        };
        let timeout = agent.config.global.flow_idle_timeout;
        match agent.reconciler.settle(&scan.live, timeout, Instant::now()) {
            Ok(settled) => debug!(
                settled,
                in_flux = agent.reconciler.in_flux(),
                entries = scan.entries,
                expired = scan.expired,
                "ring slots settled"
            ),
            Err(e) => warn!("settling ring slots failed: {e}"),
        }
    }
}
