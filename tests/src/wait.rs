//! Polling: the one loop every "until this holds, for at most that long" uses.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Calls `f` every `poll` until it returns `Some`, for at most `timeout`
/// (`f` runs at least once, and once more at the deadline). The error names
/// `what` and the timeout. To know how long it took, return
/// `Instant::elapsed` from `f`.
pub fn wait_until<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    try_wait_until(what, timeout, poll, || Ok(f()))
}

/// [`wait_until`] for an `f` that can also give up: its error is returned at once.
pub fn try_wait_until<T>(
    what: &str,
    timeout: Duration,
    poll: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(poll);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_value_names_the_wait_and_gives_up_early() {
        let mut n = 0;
        let got = wait_until("n to reach 3", Duration::from_secs(5), Duration::ZERO, || {
            n += 1;
            (n == 3).then_some(n)
        });
        assert_eq!(got.unwrap(), 3);
        let err = wait_until("never", Duration::from_millis(20), Duration::from_millis(5), || None::<()>)
            .unwrap_err();
        assert_eq!(err.to_string(), "timed out after 20ms waiting for never");
        let mut calls = 0;
        let err =
            try_wait_until("a failure", Duration::from_secs(5), Duration::ZERO, || -> Result<Option<()>> {
                calls += 1;
                bail!("gave up")
            })
            .unwrap_err();
        assert_eq!((err.to_string(), calls), ("gave up".to_string(), 1));
    }
}
