//! Signals as events: SIGHUP asks for a reload (the loop re-reads and
//! validates the file), SIGTERM/SIGINT for a shutdown, SIGUSR2 for a shutdown
//! that detaches even under `--keep-running-on-exit` (the systemd unit's
//! `ExecStop=` sends it on a real stop, not on a restart).
//!
//! The handlers are installed first thing, before anything that tells the
//! world the agent is up (its socket, its log lines): a `systemctl stop` or a
//! reload right after a start must reach the agent, not end it half way with
//! the signal's default action. What arrives before the loop runs waits for it.

use anyhow::{Context as _, Result};
use tokio::{
    signal::unix::{signal, Signal, SignalKind},
    sync::mpsc,
};

use super::Event;

pub struct Signals {
    hup: Signal,
    term: Signal,
    int: Signal,
    usr2: Signal,
}

impl Signals {
    pub fn install() -> Result<Self> {
        let install = |kind: SignalKind| signal(kind).context("installing the signal handlers");
        Ok(Self {
            hup: install(SignalKind::hangup())?,
            term: install(SignalKind::terminate())?,
            int: install(SignalKind::interrupt())?,
            usr2: install(SignalKind::user_defined2())?,
        })
    }

    pub async fn forward(mut self, events: mpsc::Sender<Event>) {
        loop {
            let event = tokio::select! {
                _ = self.hup.recv() => Event::Reload,
                _ = self.term.recv() => Event::Shutdown { detach: false },
                _ = self.int.recv() => Event::Shutdown { detach: false },
                _ = self.usr2.recv() => Event::Shutdown { detach: true },
            };
            let stop = matches!(event, Event::Shutdown { .. });
            if events.send(event).await.is_err() || stop {
                return;
            }
        }
    }
}
