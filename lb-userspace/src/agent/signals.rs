//! Signals as events: SIGHUP becomes a validated `Reload` (a bad file is
//! logged and dropped here, so the reconcile loop only ever sees good configs),
//! SIGTERM/SIGINT become `Shutdown`.

use std::path::PathBuf;

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::error;

use super::Event;
use crate::config::Config;

pub async fn forward(path: PathBuf, events: mpsc::Sender<Event>) {
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers");
        let _ = events.send(Event::Shutdown).await;
        return;
    };
    loop {
        let event = tokio::select! {
            _ = hup.recv() => match Config::load(&path) {
                Ok(config) => Event::Reload(Box::new(config)),
                Err(e) => {
                    error!("reload of {} refused, the running config stays:\n{e}", path.display());
                    continue;
                }
            },
            _ = term.recv() => Event::Shutdown,
            _ = int.recv() => Event::Shutdown,
        };
        let stop = matches!(event, Event::Shutdown);
        if events.send(event).await.is_err() || stop {
            return;
        }
    }
}
