//! Expiring NAT mappings: every second the NAT tables are swept on a
//! blocking thread (one system call per entry, so not in the loop), with the
//! timeouts in force. A mapping's port is free again once it is swept.

use std::time::Duration;

use tokio::sync::mpsc;
use tracing::debug;

use super::one_at_a_time::OneAtATime;
use crate::{
    config::nat::NatTimeouts,
    dataplane::{NatScanner, NatSweep},
};

/// Often enough that a closed flow's port comes back within a second or two
/// of its timeout; a sweep of an empty table is two system calls.
pub(super) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// A sweep's result, and the scanner back for the next one.
pub(super) type Swept = (NatScanner, NatSweep);

pub(super) struct NatSweeper {
    scanner: OneAtATime<NatScanner, NatSweep>,
}

impl NatSweeper {
    pub fn new(scanner: NatScanner, done: mpsc::Sender<Swept>) -> Self {
        Self { scanner: OneAtATime::new(scanner, done) }
    }

    /// Starts a sweep unless one is running.
    pub fn sweep(&mut self, timeouts: NatTimeouts) {
        self.scanner.start(move |scanner| scanner.sweep(|proto, flags| timeouts.of(proto, flags)));
    }

    pub fn swept(&mut self, swept: Swept) {
        let sweep = self.scanner.finished(swept);
        if sweep.expired + sweep.orphans > 0 {
            debug!(
                mappings = sweep.mappings,
                expired = sweep.expired,
                orphans = sweep.orphans,
                "NAT mappings swept"
            );
        }
    }
}
