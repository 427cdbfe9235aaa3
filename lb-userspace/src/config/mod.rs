//! The agent's TOML config: schema, defaults, validation, errors.
//!
//! Two layers. [`raw`] is the file as written (serde, unknown keys rejected,
//! integers as `i64` and choices as strings, every value `Spanned`);
//! [`resolve`] checks it and builds the types below, with every default filled
//! in. Serde rejects what is not TOML or not our schema ([`ConfigError::Syntax`]);
//! everything else is a [`Problem`], and all of them are reported at once
//! ([`ConfigError::Invalid`]) so an operator fixes a file in one pass.
//!
//! Adding a setting: a field in the raw struct, a check in `resolve` that
//! returns `Option<T>` and records a problem, a field here. Health-check and
//! slow-start keys (HAProxy's `check`, `inter`, `rise`, ...) sit flat in
//! `[[vip]]` (defaults for its backends) and `[[vip.backend]]` (overrides);
//! [`health`] layers them: backend, else VIP, else built-in default.

pub mod bgp;
pub mod capture;
pub mod cluster;
mod error;
mod health;
pub mod listeners;
pub mod mtu;
pub mod nat;
mod problems;
mod raw;
mod repeats;
mod resolve;
#[cfg(test)]
mod tests;
pub(crate) mod values;

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    VipKey,
};
use serde::{Deserialize, Serialize};

pub use self::{
    error::{field_of, ConfigError, Location, Problem},
    values::{show_duration, WEIGHT},
};

/// Default flow-hash seed ("AVON"). Every LB node of a cluster must use the
/// same seed, or a flow that moves between nodes lands on another backend.
pub const DEFAULT_HASH_SEED: u32 = 0x4156_4f4e;
/// Exec checks run as this user unless `global.check_user` names another.
pub const DEFAULT_CHECK_USER: &str = "nobody";
/// Where maps and the XDP link are pinned, one directory per interface.
pub const DEFAULT_PIN_ROOT: &str = "/sys/fs/bpf/alwayson";

/// The agent's configuration, validated, with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub global: Global,
    pub api: Api,
    pub web: Web,
    /// `[bgp]`: `None` = announce nothing (a single node, or routes set by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<bgp::Bgp>,
    /// `[cluster]`: `None` = this node's checks alone decide.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<cluster::Cluster>,
    /// `[[vip]]` tables, in file order. Shared: a config that differs in one
    /// VIP shares the others (API changes at scale copy pointers, not VIPs).
    #[serde(rename = "vip", default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<Arc<Vip>>,
}

/// `[api]`: the control API (read/write).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Api {
    /// Unix socket, mode 0600: only root may connect.
    pub socket: PathBuf,
    /// Optional TCP listener; requires the bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tcp: Option<SocketAddr>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
    /// Where changes made through the API are kept across agent restarts.
    pub runtime_file: PathBuf,
    /// Whether API changes may set `exec_command` and `check_address` (a
    /// command the agent runs, a place it connects to). Off: only the file may.
    pub allow_exec: bool,
    /// Connections each API listener serves at once; more are refused.
    pub max_connections: u32,
}

/// The TCP listener's bearer token: given in the file, or read from another one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Token {
    #[serde(rename = "token")]
    Value(String),
    #[serde(rename = "token_file")]
    File(PathBuf),
}

/// `[web]`: the read-only listener (dashboard, `/metrics`, `/api/stats`).
#[derive(Clone, Debug, PartialEq)]
pub struct Web {
    /// `None` = off.
    pub listen: Option<SocketAddr>,
    /// Connections served at once; more are refused.
    pub max_connections: u32,
}

impl Serialize for Web {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("Web", 2)?;
        st.serialize_field("listen", &self.listen.map_or_else(|| "off".to_string(), |a| a.to_string()))?;
        st.serialize_field("max_connections", &self.max_connections)?;
        st.end()
    }
}

/// The resolved form back (the agent moves configs between processes as JSON).
impl<'de> Deserialize<'de> for Web {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            listen: String,
            max_connections: u32,
        }
        let raw = Raw::deserialize(d)?;
        let listen = match raw.listen.as_str() {
            "off" => None,
            addr => Some(addr.parse().map_err(serde::de::Error::custom)?),
        };
        Ok(Web { listen, max_connections: raw.max_connections })
    }
}

/// `[global]`: the node, its data plane sizes and the flow hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Global {
    /// The interface the XDP program attaches to.
    pub interface: String,
    pub xdp_mode: XdpMode,
    /// Seed of the flow hash; must be equal on every LB node of a cluster.
    pub hash_seed: u32,
    /// Maglev ring slots per VIP, prime.
    pub ring_size: u32,
    pub max_vips: u32,
    /// Backend slots summed over all VIPs.
    pub max_backends: u32,
    pub conn_table_size: u32,
    /// Which flows the connection table records.
    pub flow_recording: FlowRecording,
    /// Flows one CPU may record per second; 0 = no limit.
    pub flow_record_limit: u32,
    /// How long a flow may stay silent and still keep its backend across a
    /// change of its ring slot; recorded flows idle for longer are forgotten.
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub flow_idle_timeout: Duration,
    /// bpffs directory for pinned maps and the XDP link (absolute).
    pub pin_path: PathBuf,
    /// Whether the agent turns on IP forwarding on `interface`, for the
    /// families of its VIPs (`bpf_fib_lookup` needs it), and restores it when
    /// it detaches.
    pub set_forwarding: bool,
    /// Held locked by the agent running on `interface`: it names that agent's
    /// pid and the host settings it changed (to restore them).
    pub lock_file: PathBuf,
    /// The user exec checks run as (never root unless this says so).
    pub check_user: String,
    /// Outer sources of tunnel VIPs' IPv4 packets: the flow fills the host bits.
    pub tunnel_source_v4: Prefix,
    /// The same for IPv6.
    pub tunnel_source_v6: Prefix,
    /// `mode = "nat"`: addresses, ports, table size, timeouts (`nat_*` keys).
    #[serde(flatten)]
    pub nat: nat::NatSettings,
    /// ICMP too-big errors one CPU may send per second for tunnel VIPs
    /// (packets too big for the egress once encapsulated); 0 = none.
    pub icmp_too_big_limit: u32,
}

/// An address prefix, `address/len`, its host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    pub address: IpAddr,
    pub len: u8,
}

impl Prefix {
    /// The address with its host bits cleared.
    pub fn network(self) -> IpAddr {
        match self.address {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::from((u32::from(a) & mask).to_be_bytes())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                IpAddr::from((u128::from(a) & mask).to_be_bytes())
            }
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.len)
    }
}

impl Serialize for Prefix {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The resolved form back (the agent moves configs between processes as JSON).
impl<'de> Deserialize<'de> for Prefix {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let bad = || serde::de::Error::custom(format!("not a prefix: {text:?}"));
        let (address, len) = text.split_once('/').ok_or_else(bad)?;
        Ok(Prefix { address: address.parse().map_err(|_| bad())?, len: len.parse().map_err(|_| bad())? })
    }
}

impl Global {
    /// The outer sources of tunnel VIPs, as the kernel holds them.
    pub fn tunnel_source(&self) -> lb_common::TunnelSource {
        let (v4, v6) = (self.tunnel_source_v4, self.tunnel_source_v6);
        match (v4.address, v6.address) {
            (IpAddr::V4(a4), IpAddr::V6(a6)) => lb_common::TunnelSource::new(a4, v4.len, a6, v6.len),
            _ => unreachable!("the config checks each prefix's family"),
        }
    }
}

/// `[[vip]]`: a service, HAProxy's frontend + backend in one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Vip {
    /// Unique; defaults to `<address>:<port>/<protocol>`.
    pub name: String,
    pub address: IpAddr,
    /// 0 = every port of this address and protocol.
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    /// `mode = "nat"`: this VIP's own address to leave from; `None`: `[global]`'s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nat_address: Option<IpAddr>,
    /// With no primary backend up: `false` = only the first usable backup (by
    /// address:port) takes traffic, `true` = all usable backups (HAProxy's
    /// `option allbackups`).
    pub allbackups: bool,
    /// What to do when no backend of the VIP is up.
    pub on_all_down: OnAllDown,
    /// `[[vip.backend]]` tables, in file order (the ring orders them itself).
    #[serde(rename = "backend", default, skip_serializing_if = "Vec::is_empty")]
    pub backends: Vec<Backend>,
}

/// `[[vip.backend]]`: a server behind a VIP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Unique within its VIP; defaults to `<address>:<port>`.
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    /// 0..=256; 0 = drain: established flows stay, no new ones.
    pub weight: u32,
    /// Only takes traffic when no primary backend of the VIP is up.
    pub backup: bool,
    /// This backend's health check: its own keys, else its VIP's, else the
    /// defaults. Written flat into the backend's table (`check = "tcp"`,
    /// `inter = "250ms"`, ...), as the file spells the keys.
    #[serde(flatten)]
    pub check: HealthCheck,
    /// After coming back UP the weight ramps from 1 to `weight` over this
    /// time; zero = off.
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub slowstart: Duration,
}

/// How a backend is checked, HAProxy-style: every `inter` a check that must
/// succeed within `timeout`; `rise` successes in a row make a DOWN backend UP,
/// `fall` failures in a row make an UP backend DOWN.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HealthCheck {
    #[serde(rename = "check")]
    pub kind: CheckKind,
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub inter: Duration,
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub timeout: Duration,
    /// 1..=100.
    pub rise: u32,
    /// 1..=100.
    pub fall: u32,
    /// Where checks go: check_address/check_port, defaulted from the backend.
    #[serde(rename = "check_address")]
    pub address: IpAddr,
    /// 0 only for a port-0 backend whose check uses no port (exec, none);
    /// then left out of `to_toml`, which defaults it back to 0.
    #[serde(rename = "check_port", default, skip_serializing_if = "is_zero")]
    pub port: u16,
    /// Request target of an HTTP check: starts with '/', no whitespace.
    pub http_path: String,
    /// Status codes an HTTP check accepts; empty = any 2xx or 3xx.
    pub http_status: Vec<u16>,
    /// Host header of an HTTP check; `None` = the check address and port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    /// Run with `/bin/sh -c`; exit status 0 = success. Always `Some` when
    /// `kind` is [`CheckKind::Exec`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exec_command: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A TCP connect to the check address and port.
    Tcp,
    /// An HTTP/1.1 GET of `http_path`; the status must be in `http_status`.
    Http,
    /// `exec_command`; exit status 0 = up.
    Exec,
    /// No check: the backend is always considered up.
    None,
}

/// What a VIP does when none of its backends is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnAllDown {
    /// Drop its new flows (counted as no_backend).
    Drop,
    /// Keep sending to the backends it had, as if they were up.
    Keep,
}

/// How the XDP program is attached.
/// Which flows the connection table records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FlowRecording {
    /// Only flows on ring slots in flux: a settled slot sends every flow to
    /// its owner without a lookup, and a packet of an older flow on a slot in
    /// flux goes to the slot's prior owner.
    ChangedSlots,
    /// Every flow on its first packet; a flow not found goes to the ring's
    /// owner (as Katran does). Kept to measure against.
    EveryFlow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver (fast; the NIC driver must support XDP).
    Native,
    /// In the generic network stack (works everywhere, slower).
    Generic,
    /// Native if the driver supports it, else generic.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

/// Forwarding mode of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Dsr,
    Tunnel,
    Nat,
}

impl Protocol {
    /// The IP protocol number, as the maps store it.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => PROTO_TCP,
            Protocol::Udp => PROTO_UDP,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Dsr => "dsr",
            Mode::Tunnel => "tunnel",
            Mode::Nat => "nat",
        })
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Mode> for lb_common::Mode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Dsr => lb_common::Mode::Dsr,
            Mode::Tunnel => lb_common::Mode::Tunnel,
            Mode::Nat => lb_common::Mode::Nat,
        }
    }
}

impl Vip {
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    /// The VIP's key in the kernel's `VIPS` map.
    pub fn key(&self) -> VipKey {
        VipKey::new(self.address, self.port, self.protocol.number())
    }
}

impl Backend {
    pub fn socket(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

impl HealthCheck {
    /// Where TCP and HTTP checks connect.
    pub fn target(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }
}

fn is_zero(port: &u16) -> bool {
    *port == 0
}

impl Config {
    /// Parses and validates a config. Nothing is partially accepted: either
    /// the whole file is valid or every problem in it is reported.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: raw::RawConfig =
            serde_path_to_error::deserialize(toml::Deserializer::new(text)).map_err(|e| {
                ConfigError::Syntax { field: field_of(e.path()), error: Box::new(e.into_inner()) }
            })?;
        resolve::resolve(&raw, text).map_err(ConfigError::Invalid)
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|error| ConfigError::Read { path: path.to_owned(), error })?;
        Config::from_toml(&text)
    }

    /// The resolved config as TOML, every default written out; `from_toml`
    /// of it gives back an equal `Config`.
    pub fn to_toml(&self) -> String {
        // Every field is a string, integer, bool, table or array of tables.
        toml::to_string(self).expect("a resolved config is always representable in TOML")
    }
}
