//! Keeping the agent small. Parsing a big config takes far more memory than
//! the result: the TOML parser holds the whole document (200 MB for a
//! 100,000-backend file), and what a process's heap once held it rarely gives
//! back. So the agent has a child process (itself, `alwayson parse-config`)
//! parse and validate the file and hand back the resolved config as JSON,
//! which the agent reads into compact memory.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use crate::config::{Config, ConfigError, Problem};

/// What `alwayson parse-config` prints.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parsed {
    Config(Box<Config>),
    Error { message: String, problems: Vec<Problem> },
}

impl From<Result<Config, ConfigError>> for Parsed {
    fn from(result: Result<Config, ConfigError>) -> Self {
        match result {
            Ok(config) => Parsed::Config(Box::new(config)),
            Err(e) => Parsed::Error { message: e.to_string(), problems: e.problems().to_vec() },
        }
    }
}

/// Tunes glibc's malloc, before any thread exists: one arena (the agent's
/// threads are few and cold, and `malloc_trim` returns free pages of the main
/// heap, not of thread heaps) and fixed thresholds (glibc otherwise raises them
/// after big frees and then keeps freed memory).
pub fn settle_allocator() {
    // SAFETY: mallopt only tunes the allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}

/// The config at `path`, parsed and validated by a child process when there
/// is one to run (in this process otherwise).
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let child = std::env::current_exe().and_then(|exe| {
        Command::new(exe).arg("parse-config").arg(path).stdin(Stdio::null()).stderr(Stdio::inherit()).output()
    });
    let parsed = match child {
        Ok(out) if out.status.success() => serde_json::from_slice::<Parsed>(&out.stdout).ok(),
        _ => None,
    };
    match parsed {
        Some(Parsed::Config(config)) => Ok(*config),
        Some(Parsed::Error { problems, .. }) if !problems.is_empty() => Err(ConfigError::Invalid(problems)),
        Some(Parsed::Error { message, .. }) => Err(ConfigError::Reported(message)),
        // No child to run (a library user, a missing binary): parse here.
        None => Config::load(path),
    }
}

/// Returns freed heap to the system (glibc keeps it otherwise).
pub fn give_back() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe { libc::malloc_trim(0) };
}
