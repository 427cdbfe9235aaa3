//! `alwayson import-haproxy`: an HAProxy configuration turned into an Always
//! On config. What has a key is carried over; everything else is a warning
//! naming the HAProxy file's line, never dropped silently.
//!
//! [`haproxy`] reads the file into sections of lines, [`proxy`] and
//! [`server`] read what each line means, [`convert`] makes VIPs of
//! frontends and their backends and [`emit`] writes the TOML.

mod convert;
mod emit;
pub mod haproxy;
mod proxy;
mod server;
#[cfg(test)]
mod tests;

use std::{fmt, net::IpAddr};

use crate::config::{Config, Mode};

/// What `import-haproxy` was asked for besides the file.
#[derive(Clone, Debug)]
pub struct Options {
    /// Every VIP's mode.
    pub mode: Mode,
    /// `[global] interface`.
    pub interface: String,
    /// The address of `bind :PORT` / `bind *:PORT`, which HAProxy takes on
    /// every address but a VIP cannot; without it such binds are skipped.
    pub vip_address: Option<IpAddr>,
    /// `[global] nat_address`, for `--mode nat`.
    pub nat_address: Vec<IpAddr>,
}

impl Default for Options {
    fn default() -> Self {
        Self { mode: Mode::Dsr, interface: "eth0".into(), vip_address: None, nat_address: Vec::new() }
    }
}

/// Something of the HAProxy file that was not carried over, or changes meaning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    /// 1-based line of the HAProxy file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The warnings of one import, in the order they were found.
#[derive(Debug, Default)]
pub struct Warnings(Vec<Warning>);

impl Warnings {
    pub fn add(&mut self, line: usize, message: impl Into<String>) {
        self.0.push(Warning { line, message: message.into() });
    }
}

/// The imported config as TOML, and what was not carried over.
#[derive(Debug)]
pub struct Import {
    pub toml: String,
    pub warnings: Vec<Warning>,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {reason}")]
    Syntax { line: usize, reason: String },
    /// The result does not validate: a bug of the importer, or a NAT VIP
    /// without an address (the warnings say which).
    #[error("the imported config does not validate: {error}")]
    Invalid { error: crate::config::ConfigError, warnings: Vec<Warning> },
}

/// Imports the HAProxy configuration `text`. The TOML is validated by
/// [`Config::from_toml`]; the printed form is that of `alwayson check-config`
/// minus the defaults, i.e. only what the HAProxy file said.
pub fn import_haproxy(text: &str, options: &Options) -> Result<Import, ImportError> {
    let sections = haproxy::parse(text)?;
    let mut warnings = Warnings::default();
    let vips = convert::vips(&sections, options, &mut warnings);
    let toml = emit::toml(&vips, options);
    // In the file's order; those of one line in the order found.
    warnings.0.sort_by_key(|w| w.line);
    match Config::from_toml(&toml) {
        Ok(_) => Ok(Import { toml, warnings: warnings.0 }),
        Err(error) => Err(ImportError::Invalid { error, warnings: warnings.0 }),
    }
}
