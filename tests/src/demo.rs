//! What both demos (`cargo xtask run`, `-- --cluster`) do before they build a
//! bed: insist on root, and turn Ctrl-C / SIGTERM into a flag so the demo
//! ends early but still tears its bed down (Drop needs a normal exit).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Result};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::Relaxed);
}

/// Fails unless root; then catches SIGINT and SIGTERM (see [`interrupted`]).
pub fn start() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo builds network namespaces and loads XDP programs: run it as root");
    }
    // SAFETY: the handler only stores to an atomic.
    unsafe {
        libc::signal(libc::SIGINT, on_interrupt as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_interrupt as *const () as libc::sighandler_t);
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM has arrived since [`start`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}
