//! Checks this host could not run, in the log. They come all at once (a host
//! out of file descriptors fails every check of every backend), so the whole
//! agent logs one line per [`LOG_EVERY`] at most, saying how many it left out;
//! the metrics count every one.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tracing::warn;

use super::check::NotRun;

pub const LOG_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub struct NotRunLog(Mutex<State>);

#[derive(Debug, Default)]
struct State {
    last: Option<Instant>,
    /// Not logged since `last`.
    left_out: u64,
}

impl NotRunLog {
    /// Logs a check of `label` that did not run, unless one was logged less
    /// than [`LOG_EVERY`] before `now`; whether it was logged.
    pub fn note(&self, label: &str, why: &NotRun, now: Instant) -> bool {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if state.last.is_some_and(|last| now.saturating_duration_since(last) < LOG_EVERY) {
            state.left_out += 1;
            return false;
        }
        let left_out = std::mem::take(&mut state.left_out);
        let more = if left_out > 0 {
            format!("; {left_out} more did not run in the last {}s", LOG_EVERY.as_secs())
        } else {
            String::new()
        };
        warn!("health: a check of {label} did not run: {why} (a fault of this host, not held against the backend){more}");
        state.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_per_period_for_the_whole_agent() {
        let log = NotRunLog::default();
        let why = NotRun { cause: "emfile", detail: "Too many open files (os error 24)".into() };
        let start = Instant::now();
        assert!(log.note("VIP web backend a", &why, start));
        let flood: Vec<bool> =
            (1..1000u32).map(|i| log.note("VIP web backend b", &why, start + LOG_EVERY * i / 1000)).collect();
        assert!(flood.iter().all(|logged| !logged), "a flood of failures is logged once per period");
        assert!(log.note("VIP web backend b", &why, start + LOG_EVERY));
        assert_eq!(log.0.lock().unwrap().left_out, 0, "the count of what was left out starts over");
    }
}
