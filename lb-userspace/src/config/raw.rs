//! The file as written, before validation. Integers are `i64` and choices are
//! strings so that a wrong value gets our message naming the field, not a
//! serde type error; `Spanned` keeps where each value sits in the file.
//! Unknown keys are rejected here (a typo must not silently mean "default").

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub global: RawGlobal,
    /// No VIPs is valid: the agent attaches and passes everything.
    #[serde(default)]
    pub vip: Vec<RawVip>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGlobal {
    pub interface: Spanned<String>,
    pub xdp_mode: Option<Spanned<String>>,
    pub hash_seed: Option<Spanned<i64>>,
    pub ring_size: Option<Spanned<i64>>,
    pub max_vips: Option<Spanned<i64>>,
    pub max_backends: Option<Spanned<i64>>,
    pub conn_table_size: Option<Spanned<i64>>,
    pub pin_path: Option<Spanned<String>>,
    pub set_forwarding: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub name: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub port: Spanned<i64>,
    pub protocol: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    /// A VIP without backends is valid: its traffic is dropped (no_backend).
    #[serde(default)]
    pub backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBackend {
    pub name: Option<Spanned<String>>,
    pub address: Spanned<String>,
    /// Omitted = the VIP's port.
    pub port: Option<Spanned<i64>>,
    pub weight: Option<Spanned<i64>>,
    pub backup: Option<bool>,
}
