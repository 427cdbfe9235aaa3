//! Reading a config in a child process. Parsing a big config takes far more
//! memory than the result: the TOML parser holds the whole document (200 MB
//! for a 100,000-backend file), and what a process's heap once held it rarely
//! gives back. So the agent runs itself as `alwayson parse-config FILE`, which
//! parses and validates the file and prints the resolved config (or its
//! problems) as JSON, and reads that into compact memory.
//!
//! The child is `/proc/self/exe`: the very binary the agent runs, even after
//! an upgrade replaced the file on disk. When the child fails (killed by the
//! OOM killer, crashed, printed nonsense), so does the load: parsing in the
//! agent instead is what the child exists to avoid. Only when there is no
//! executable to run (no /proc) does the agent parse in its own process, and
//! it says so.

use std::{
    io,
    os::unix::process::{CommandExt as _, ExitStatusExt as _},
    path::Path,
    process::{Command, ExitStatus, Stdio},
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::config::{Config, ConfigError, Problem};

/// This process's own binary, also when its file was replaced or removed.
const SELF_EXE: &str = "/proc/self/exe";

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

/// The config at `path`, parsed and validated by a child process.
pub fn load_config(path: &Path) -> Result<Config, ConfigError> {
    let child = Command::new(SELF_EXE)
        .arg0("alwayson")
        .arg("parse-config")
        .arg(path)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output();
    let out = match child {
        Ok(out) => out,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            warn!("cannot run {SELF_EXE} to parse {} ({e}): parsing in the agent", path.display());
            return Config::load(path);
        }
        Err(e) => return Err(failed(path, format!("could not be started: {e}"))),
    };
    if !out.status.success() {
        return Err(failed(path, format!("{}; its messages are in the log above", ended(out.status))));
    }
    match serde_json::from_slice::<Parsed>(&out.stdout) {
        Ok(Parsed::Config(config)) => Ok(*config),
        Ok(Parsed::Error { problems, .. }) if !problems.is_empty() => Err(ConfigError::Invalid(problems)),
        Ok(Parsed::Error { message, .. }) => Err(ConfigError::Reported(message)),
        Err(e) => Err(failed(path, format!("printed what is not a parsed config: {e}"))),
    }
}

fn failed(path: &Path, what: String) -> ConfigError {
    ConfigError::Reported(format!(
        "reading {}: the config parser (alwayson parse-config) {what}",
        path.display()
    ))
}

fn ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended: {status}"),
    }
}
