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
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parsed {
    Config(Box<Config>),
    /// Well-formed, with wrong values.
    Invalid(Vec<Problem>),
    /// Unreadable, or not our schema: the message, and the key that failed
    /// if serde got to one.
    Error {
        message: String,
        problems: Vec<Problem>,
    },
}

impl From<Result<Config, ConfigError>> for Parsed {
    fn from(result: Result<Config, ConfigError>) -> Self {
        match result {
            Ok(config) => Parsed::Config(Box::new(config)),
            Err(ConfigError::Invalid(problems)) => Parsed::Invalid(problems),
            Err(e) => {
                Parsed::Error { message: e.to_string(), problems: e.key_problem().into_iter().collect() }
            }
        }
    }
}

impl From<Parsed> for Result<Config, ConfigError> {
    fn from(parsed: Parsed) -> Self {
        match parsed {
            Parsed::Config(config) => Ok(*config),
            Parsed::Invalid(problems) => Err(ConfigError::Invalid(problems)),
            Parsed::Error { message, problems } => Err(ConfigError::Reported { message, problems }),
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
        Ok(parsed) => parsed.into(),
        Err(e) => Err(failed(path, format!("printed what is not a parsed config: {e}"))),
    }
}

fn failed(path: &Path, what: String) -> ConfigError {
    let message = format!("reading {}: the config parser (alwayson parse-config) {what}", path.display());
    ConfigError::Reported { message, problems: Vec::new() }
}

fn ended(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        (None, None) => format!("ended: {status}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the agent makes of what the child printed: through JSON, as between the processes.
    fn across(result: Result<Config, ConfigError>) -> Result<Config, ConfigError> {
        let json = serde_json::to_vec(&Parsed::from(result)).unwrap();
        serde_json::from_slice::<Parsed>(&json).unwrap().into()
    }

    const FILE: &str = "[global]\ninterface = \"eth0\"\n[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
        [[vip.backend]]\naddress = \"10.77.1.10\"\n";

    #[test]
    fn a_config_and_its_problems_cross_intact() {
        let config = Config::from_toml(FILE).unwrap();
        assert_eq!(across(Ok(config.clone())).unwrap(), config);
        let invalid = FILE.replace("[[vip.backend]]\n", "[[vip.backend]]\nweight = 999\n");
        let local = Config::from_toml(&invalid).unwrap_err();
        let crossed = across(Config::from_toml(&invalid)).unwrap_err();
        assert!(matches!(crossed, ConfigError::Invalid(_)), "{crossed:?}");
        assert_eq!(crossed.problems(), local.problems());
        assert!(crossed.problems().iter().any(|p| p.field.ends_with("weight")), "{crossed}");
    }

    /// A key serde refused (unknown, wrong type) is named by its path, not only in the message.
    #[test]
    fn a_syntax_error_names_its_key_across() {
        let bad = FILE.replace("[[vip.backend]]\n", "[[vip.backend]]\nwieght = 2\n");
        let local = Config::from_toml(&bad).unwrap_err();
        let crossed = across(Config::from_toml(&bad)).unwrap_err();
        assert_eq!(crossed.to_string(), local.to_string());
        let fields: Vec<&str> = crossed.problems().iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["vip[0].backend[0].wieght"], "{crossed}");
        // Not TOML at all: a message, no key.
        let crossed = across(Config::from_toml("[global\n")).unwrap_err();
        assert!(crossed.problems().is_empty() && !crossed.to_string().is_empty(), "{crossed:?}");
    }
}
