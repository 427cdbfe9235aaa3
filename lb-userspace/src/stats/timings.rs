//! What the agent measures of itself for `/metrics`: how long health checks
//! and reconciles take, checks it could not run, its listeners' connections.
//! Kept in prometheus-client's metric types: they take observations through a
//! shared reference and encode themselves at scrape time.

use std::{
    sync::{atomic::AtomicU64, Arc, Mutex},
    time::Duration,
};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
};

/// Bucket upper bounds in seconds: health checks and reconciles both live
/// between a fraction of a millisecond and a few seconds.
pub const BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub vip: String,
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotRunLabels {
    pub vip: String,
    pub backend: String,
    /// The errno's name, e.g. `emfile`.
    pub reason: &'static str,
}

fn histogram() -> Histogram {
    Histogram::new(BOUNDS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Debug)]
pub struct Timings {
    pub health_checks: Histograms<BackendLabels>,
    pub reconcile: Histogram,
    /// Checks this host could not run: not held against the backend.
    pub checks_not_run: Family<NotRunLabels, Counter>,
    /// Connections of each listener, by its name.
    pub listeners: Mutex<Vec<(&'static str, Arc<ConnCounts>)>>,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            health_checks: Family::new_with_constructor(histogram),
            reconcile: histogram(),
            checks_not_run: Family::default(),
            listeners: Mutex::default(),
        }
    }
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
        let labels = BackendLabels { vip: vip.to_owned(), backend: backend.to_owned() };
        self.health_checks.get_or_create(&labels).observe(took.as_secs_f64());
    }

    pub fn check_not_run(&self, vip: &str, backend: &str, cause: &'static str) {
        let labels = NotRunLabels { vip: vip.to_owned(), backend: backend.to_owned(), reason: cause };
        self.checks_not_run.get_or_create(&labels).inc();
    }

    pub fn reconciled(&self, took: Duration) {
        self.reconcile.observe(took.as_secs_f64());
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
