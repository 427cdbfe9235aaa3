//! `alwayson decap`: the decap program on a backend of tunnel VIPs —
//! attached and pinned (it runs on once the command exits, as the balancer
//! does with `--keep-running-on-exit`), its counters, detached.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};

use crate::dataplane::{
    attach_decap, decap_counters, default_decap_pin_dir, detach_decap, AttachMode, DecapAttached,
};

pub enum Action {
    Attach(AttachMode),
    Stats,
    Detach,
}

/// The `--xdp-mode` value (clap admits only these three).
pub fn xdp_mode(name: &str) -> AttachMode {
    match name {
        "native" => AttachMode::Native,
        "generic" => AttachMode::Generic,
        _ => AttachMode::Auto,
    }
}

pub fn run(interface: &str, pin_path: Option<PathBuf>, action: Action) -> Result<()> {
    let dir = pin_path.unwrap_or_else(|| default_decap_pin_dir(interface));
    let shown = dir.display();
    match action {
        Action::Attach(mode) => {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                bail!("needs root (CAP_BPF and CAP_NET_ADMIN, to load and attach an XDP program)");
            }
            let name = std::ffi::CString::new(interface)?;
            // SAFETY: a valid C string. Asks this process's network namespace.
            if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
                bail!("interface {interface:?} does not exist on this host");
            }
            let how =
                |fallback: bool| if fallback { " (generic: native XDP failed, see the log)" } else { "" };
            match attach_decap(interface, &dir, mode).with_context(|| format!("on {interface}"))? {
                DecapAttached::Running => println!("decap already runs on {interface} (pinned at {shown})"),
                DecapAttached::Attached { generic_fallback } => {
                    println!("decap attached to {interface}, pinned at {shown}{}", how(generic_fallback))
                }
                DecapAttached::Reattached { generic_fallback } => println!(
                    "decap attached to {interface} again (its pinned link had lost the interface), \
                     pinned at {shown}{}",
                    how(generic_fallback)
                ),
            }
        }
        Action::Stats => {
            let counters = decap_counters(&dir)
                .with_context(|| format!("reading the counters pinned at {shown} (is decap attached?)"))?;
            for (counter, n) in counters {
                println!("{} {n}", counter.name());
            }
        }
        Action::Detach => {
            if detach_decap(&dir).with_context(|| format!("removing {shown}"))? {
                println!("decap detached from {interface}; {shown} removed");
            } else {
                println!("nothing pinned at {shown}: decap was not attached");
            }
        }
    }
    Ok(())
}
