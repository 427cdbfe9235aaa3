//! Signals as events: SIGHUP asks for a reload (the loop re-reads and
//! validates the file), SIGTERM/SIGINT for a shutdown.

use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::error;

use super::Event;

pub async fn forward(events: mpsc::Sender<Event>) {
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers");
        let _ = events.send(Event::Shutdown).await;
        return;
    };
    loop {
        let event = tokio::select! {
            _ = hup.recv() => Event::Reload,
            _ = term.recv() => Event::Shutdown,
            _ = int.recv() => Event::Shutdown,
        };
        let stop = matches!(event, Event::Shutdown);
        if events.send(event).await.is_err() || stop {
            return;
        }
    }
}
