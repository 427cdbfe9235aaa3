//! The test bed: network namespaces, crafted frames, and the rule for tests
//! that need root.

pub mod agent;
pub mod api;
pub mod bed;
pub mod bench;
pub mod browser;
pub mod cluster;
pub mod decap;
pub mod demo;
pub mod fixture;
pub mod http;
pub mod mariadb;
pub mod netns;
pub mod openapi;
pub mod packet;
pub mod proc_scan;
pub mod process;
pub mod ring;
pub mod routed;
pub mod spoof;
pub mod traffic;
pub mod wait;

pub use wait::{try_wait_until, wait_until};

/// Fails the calling test unless it runs as root (namespaces, BPF). Tests that
/// call it are `#[ignore = "needs root"]`, so a plain `cargo test` without root
/// lists them as ignored; `cargo xtask test` runs them when it is root or under
/// `CI=true`, where a missing privilege must fail, never pass unseen.
pub fn require_root(test: &str) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("{test} needs root (CAP_NET_ADMIN, CAP_BPF); run it as root");
    }
}

/// Runs a command; an error carries its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| anyhow::anyhow!("running {program}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
