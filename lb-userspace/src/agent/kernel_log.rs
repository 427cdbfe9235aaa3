//! The XDP program's notices (aya-log) into the agent's log.

use tokio::io::{unix::AsyncFd, Interest};
use tracing::warn;

/// Forwards the notices of program `id` for as long as the agent runs.
pub fn forward(id: u32) {
    let logger = match aya_log::EbpfLogger::init_from_id(id) {
        Ok(logger) => logger,
        Err(e) => {
            warn!("the program's notices will not be logged: {e}");
            return;
        }
    };
    // SAFETY: the logger owns its ring buffer's fd for as long as AsyncFd holds it.
    let fd = match unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) } {
        Ok(fd) => fd,
        Err(e) => {
            warn!("the program's notices will not be logged: {e}");
            return;
        }
    };
    tokio::spawn(async move {
        let mut fd = fd;
        loop {
            let Ok(mut ready) = fd.readable_mut().await else { return };
            ready.get_inner_mut().flush();
            ready.clear_ready();
        }
    });
}
