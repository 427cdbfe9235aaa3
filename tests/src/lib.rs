//! The test bed: network namespaces, crafted frames, and the rule for tests
//! that need root.

pub mod agent;
pub mod api;
pub mod bed;
pub mod bench;
pub mod browser;
pub mod fixture;
pub mod http;
pub mod mariadb;
pub mod netns;
pub mod openapi;
pub mod packet;
pub mod proc_scan;
pub mod process;
pub mod traffic;
pub mod wait;

pub use wait::{try_wait_until, wait_until};

/// Whether this process may do what the test needs (root: namespaces, BPF).
/// Under `CI=true` a missing privilege fails the test; on a developer's
/// machine the test says it is skipped and returns early.
pub fn require_root(test: &str) -> bool {
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("{test} needs root (CAP_NET_ADMIN, CAP_BPF) and CI=true: refusing to skip");
    }
    eprintln!("SKIPPED {test}: needs root; run as root or under CI=true to make this a failure");
    false
}

/// Returns from the calling test unless [`require_root`] lets it run.
#[macro_export]
macro_rules! root_or_skip {
    ($name:expr) => {
        if !$crate::require_root($name) {
            return;
        }
    };
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
