//! Drops an operator must act on, said in the log: the kernel only counts
//! them. Read from each stats sample (the counters are read anyway), and
//! said at most every [`EVERY`] per reason, with how many since last said.

use std::time::{Duration, Instant};

use lb_common::DropReason;
use tracing::warn;

use crate::dataplane::Counters;

const EVERY: Duration = Duration::from_secs(10);

/// The reasons, and what to do about each.
const WATCHED: [(DropReason, &str); 2] = [
    (
        DropReason::NatNoPort,
        "new NAT flows dropped: every source port tried toward their backend is taken \
         (widen global.nat_ports, or add backends)",
    ),
    (
        DropReason::NatTableFull,
        "new NAT flows dropped: the NAT table is full (raise global.nat_table_size, or lower the NAT timeouts)",
    ),
];

pub(super) struct Pressure {
    /// Per watched reason: the count last said (or first seen), and when it was said.
    said: [(Option<u64>, Option<Instant>); WATCHED.len()],
}

impl Pressure {
    pub fn new() -> Self {
        Self { said: [(None, None); WATCHED.len()] }
    }

    pub fn sample(&mut self, counters: &Counters, now: Instant) {
        for ((reason, advice), (count, at)) in WATCHED.iter().zip(&mut self.said) {
            let total = counters.drop(*reason);
            let Some(before) = *count else {
                // The first sample: drops of an earlier agent's are not news.
                *count = Some(total);
                continue;
            };
            if total > before && at.is_none_or(|at| now.duration_since(at) >= EVERY) {
                warn!(dropped = total - before, total, "{advice} ({})", reason.name());
                (*count, *at) = (Some(total), Some(now));
            }
        }
    }
}
