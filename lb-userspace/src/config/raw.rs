//! The file as written, before validation. Integers are `i64` and choices are
//! strings so that a wrong value gets our message naming the field, not a
//! serde type error; `Spanned` keeps where each value sits in the file.
//! Unknown keys are rejected here (a typo must not silently mean "default").

use std::fmt;

use serde::{de, Deserialize, Deserializer};
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub global: RawGlobal,
    pub api: Option<RawApi>,
    pub web: Option<RawWeb>,
    pub bgp: Option<RawBgp>,
    pub cluster: Option<RawCluster>,
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
    pub flow_recording: Option<Spanned<String>>,
    pub flow_record_limit: Option<Spanned<i64>>,
    pub flow_idle_timeout: Option<Spanned<RawDuration>>,
    pub pin_path: Option<Spanned<String>>,
    pub set_forwarding: Option<bool>,
    pub lock_file: Option<Spanned<String>>,
    pub check_user: Option<Spanned<String>>,
    pub tunnel_source_v4: Option<Spanned<String>>,
    pub tunnel_source_v6: Option<Spanned<String>>,
    pub nat_address: Option<Vec<Spanned<String>>>,
    pub nat_ports: Option<Spanned<String>>,
    pub nat_table_size: Option<Spanned<i64>>,
    pub nat_tcp_timeout: Option<Spanned<RawDuration>>,
    pub nat_tcp_opening_timeout: Option<Spanned<RawDuration>>,
    pub nat_tcp_closing_timeout: Option<Spanned<RawDuration>>,
    pub nat_udp_timeout: Option<Spanned<RawDuration>>,
    pub icmp_too_big_limit: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawApi {
    pub socket: Option<Spanned<String>>,
    pub tcp: Option<Spanned<String>>,
    pub token: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub runtime_file: Option<Spanned<String>>,
    pub allow_exec: Option<bool>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWeb {
    pub listen: Option<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawBgp {
    pub router_id: Spanned<String>,
    pub local_as: Spanned<i64>,
    pub bird_config: Option<Spanned<String>>,
    pub bird_socket: Option<Spanned<String>>,
    pub device: Option<Spanned<String>>,
    pub grace_time: Option<Spanned<RawDuration>>,
    pub drain_time: Option<Spanned<RawDuration>>,
    pub bfd: Option<bool>,
    pub bfd_interval: Option<Spanned<RawDuration>>,
    pub bfd_multiplier: Option<Spanned<i64>>,
    #[serde(default)]
    pub neighbor: Vec<RawNeighbor>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawNeighbor {
    pub address: Spanned<String>,
    #[serde(rename = "as")]
    pub asn: Spanned<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub node: Spanned<String>,
    #[serde(default)]
    pub etcd: Vec<Spanned<String>>,
    pub prefix: Option<Spanned<String>>,
    pub lease_ttl: Option<Spanned<RawDuration>>,
    pub quorum_grace: Option<Spanned<RawDuration>>,
    pub odd_one_out_after: Option<Spanned<RawDuration>>,
    pub listen: Spanned<String>,
    #[serde(default)]
    pub peers: Vec<Spanned<String>>,
    pub share_flows: Option<bool>,
}

// The check keys are written out in both `RawVip` and `RawBackend`: serde's
// `flatten` works with neither `deny_unknown_fields` nor `Spanned`.
// `check_keys!` gives the same view of either.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVip {
    pub name: Option<Spanned<String>>,
    pub address: Spanned<String>,
    pub port: Spanned<i64>,
    pub protocol: Option<Spanned<String>>,
    pub mode: Option<Spanned<String>>,
    /// `mode = "nat"`: where this VIP's flows leave from, instead of `[global]`'s.
    pub nat_address: Option<Spanned<String>>,
    pub allbackups: Option<bool>,
    pub on_all_down: Option<Spanned<String>>,
    // Check keys: defaults for the VIP's backends.
    pub check: Option<Spanned<String>>,
    pub inter: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub check_port: Option<Spanned<i64>>,
    pub check_address: Option<Spanned<String>>,
    pub http_path: Option<Spanned<String>>,
    pub http_status: Option<Vec<Spanned<i64>>>,
    pub http_host: Option<Spanned<String>>,
    pub exec_command: Option<Spanned<String>>,
    pub slowstart: Option<Spanned<RawDuration>>,
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
    // Check keys: override the VIP's.
    pub check: Option<Spanned<String>>,
    pub inter: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    pub rise: Option<Spanned<i64>>,
    pub fall: Option<Spanned<i64>>,
    pub check_port: Option<Spanned<i64>>,
    pub check_address: Option<Spanned<String>>,
    pub http_path: Option<Spanned<String>>,
    pub http_status: Option<Vec<Spanned<i64>>>,
    pub http_host: Option<Spanned<String>>,
    pub exec_command: Option<Spanned<String>>,
    pub slowstart: Option<Spanned<RawDuration>>,
}

/// The health-check and slow-start keys of one `[[vip]]` or `[[vip.backend]]`.
#[derive(Clone, Copy)]
pub(super) struct RawCheck<'r> {
    pub check: Option<&'r Spanned<String>>,
    pub inter: Option<&'r Spanned<RawDuration>>,
    pub timeout: Option<&'r Spanned<RawDuration>>,
    pub rise: Option<&'r Spanned<i64>>,
    pub fall: Option<&'r Spanned<i64>>,
    pub check_port: Option<&'r Spanned<i64>>,
    pub check_address: Option<&'r Spanned<String>>,
    pub http_path: Option<&'r Spanned<String>>,
    pub http_status: Option<&'r [Spanned<i64>]>,
    pub http_host: Option<&'r Spanned<String>>,
    pub exec_command: Option<&'r Spanned<String>>,
    pub slowstart: Option<&'r Spanned<RawDuration>>,
}

macro_rules! check_keys {
    ($raw:expr) => {
        RawCheck {
            check: $raw.check.as_ref(),
            inter: $raw.inter.as_ref(),
            timeout: $raw.timeout.as_ref(),
            rise: $raw.rise.as_ref(),
            fall: $raw.fall.as_ref(),
            check_port: $raw.check_port.as_ref(),
            check_address: $raw.check_address.as_ref(),
            http_path: $raw.http_path.as_ref(),
            http_status: $raw.http_status.as_deref(),
            http_host: $raw.http_host.as_ref(),
            exec_command: $raw.exec_command.as_ref(),
            slowstart: $raw.slowstart.as_ref(),
        }
    };
}

impl RawVip {
    pub fn check_keys(&self) -> RawCheck<'_> {
        check_keys!(self)
    }
}

impl RawBackend {
    pub fn check_keys(&self) -> RawCheck<'_> {
        check_keys!(self)
    }
}

/// A duration as written: a string with a unit (`"250ms"`), or an integer of
/// milliseconds. Checked and converted in `values::duration`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum RawDuration {
    Millis(i64),
    Text(String),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = RawDuration;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a duration: a string like \"250ms\", \"2s\" or \"1m\", or an integer of milliseconds",
                )
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Millis(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<RawDuration, E> {
                // Out of i64 range is out of every duration range too.
                Ok(RawDuration::Millis(i64::try_from(value).unwrap_or(i64::MAX)))
            }

            fn visit_str<E: de::Error>(self, value: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(value.to_owned()))
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}
