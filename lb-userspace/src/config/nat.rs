//! `mode = "nat"`: the balancer's own addresses NATed flows leave from, the
//! source ports it may use, the size of its NAT tables and how long a
//! mapping lives. The keys sit in `[global]` (`nat_*`), and a VIP may name its
//! own `nat_address`.
//!
//! What only the host can say (is the address really this balancer's, on its
//! interface; does the port range stay clear of the host's own ephemeral
//! ports) is judged by [`host_problems`] with facts the agent gathers.

use std::{fmt, net::IpAddr, ops::RangeInclusive, time::Duration};

use lb_common::sizes::{DEFAULT_NAT_PORTS, DEFAULT_NAT_TABLE_SIZE};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use super::{
    problems::{Problems, Shown},
    raw::{RawGlobal, RawVip},
    values::{duration, family, in_range, ip},
    Config, Mode, Problem,
};

pub(super) const NAT_TABLE_SIZE: RangeInclusive<i64> = 1_024..=67_108_864;
/// TCP mappings that saw their reply, with no FIN or RST yet.
pub(super) const DEFAULT_TCP: Duration = Duration::from_secs(900);
/// TCP mappings whose backend never answered (a SYN alone).
pub(super) const DEFAULT_TCP_OPENING: Duration = Duration::from_secs(10);
/// TCP mappings after a FIN or RST, in either direction: long enough for a
/// few retransmitted FINs, short because a closed connection's port is only
/// free again once its mapping goes, and connections that last one request
/// close thousands a second (a half-closed one still sending stays fresh).
pub(super) const DEFAULT_TCP_CLOSING: Duration = Duration::from_secs(2);
pub(super) const DEFAULT_UDP: Duration = Duration::from_secs(60);
const TIMEOUT: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(86_400);
/// Fewer ports than this per backend is a typo rather than a plan.
const MIN_PORTS: u32 = 8;

/// The NAT keys of `[global]`, resolved; flattened into `Global`, so they
/// are written back under their names in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatSettings {
    /// At most one address per family: where NAT VIPs without their own leave from.
    #[serde(rename = "nat_address")]
    pub address: Vec<IpAddr>,
    #[serde(rename = "nat_ports")]
    pub ports: PortRange,
    /// Entries per direction; fixed while the data plane runs.
    #[serde(rename = "nat_table_size")]
    pub table_size: u32,
    #[serde(flatten)]
    pub timeouts: NatTimeouts,
}

/// How long a mapping may stay silent, by what it has seen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatTimeouts {
    #[serde(rename = "nat_tcp_timeout", with = "text")]
    pub tcp: Duration,
    #[serde(rename = "nat_tcp_opening_timeout", with = "text")]
    pub tcp_opening: Duration,
    #[serde(rename = "nat_tcp_closing_timeout", with = "text")]
    pub tcp_closing: Duration,
    #[serde(rename = "nat_udp_timeout", with = "text")]
    pub udp: Duration,
}

/// Source ports `first ..= last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for NatSettings {
    fn default() -> Self {
        Self {
            address: Vec::new(),
            ports: PortRange { first: DEFAULT_NAT_PORTS.0, last: DEFAULT_NAT_PORTS.1 },
            table_size: DEFAULT_NAT_TABLE_SIZE,
            timeouts: NatTimeouts {
                tcp: DEFAULT_TCP,
                tcp_opening: DEFAULT_TCP_OPENING,
                tcp_closing: DEFAULT_TCP_CLOSING,
                udp: DEFAULT_UDP,
            },
        }
    }
}

impl NatSettings {
    /// The `[global]` address of `family_of`'s family, if there is one.
    pub fn address_like(&self, family_of: IpAddr) -> Option<IpAddr> {
        self.address.iter().copied().find(|a| a.is_ipv4() == family_of.is_ipv4())
    }
}

impl NatTimeouts {
    /// How long a mapping of protocol `proto` with `NAT_SEEN_*` `flags` may stay idle.
    pub fn of(&self, proto: u8, flags: u32) -> Duration {
        use lb_common::{
            nat::{NAT_SEEN_CLOSE, NAT_SEEN_REPLY},
            types::PROTO_TCP,
        };
        if proto != PROTO_TCP {
            self.udp
        } else if flags & NAT_SEEN_CLOSE != 0 {
            self.tcp_closing
        } else if flags & NAT_SEEN_REPLY == 0 {
            self.tcp_opening
        } else {
            self.tcp
        }
    }
}

impl PortRange {
    /// How many ports: never none, a range is checked to hold at least 8.
    pub fn count(self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        port_range(&text).map_err(serde::de::Error::custom)
    }
}

/// Durations as the config writes them.
mod text {
    pub(super) use super::super::values::{
        deserialize_duration as deserialize, serialize_duration as serialize,
    };
}

/// `"20000-29999"`: two ports, the first no larger than the second, 1024 and up.
pub(super) fn port_range(s: &str) -> Result<PortRange, String> {
    let bad = || {
        format!(
            "not a port range: write \"first-last\", e.g. \"{}-{}\"",
            DEFAULT_NAT_PORTS.0, DEFAULT_NAT_PORTS.1
        )
    };
    let (first, last) = s.split_once('-').ok_or_else(bad)?;
    let port = |p: &str| p.trim().parse::<u16>().map_err(|_| bad());
    let range = PortRange { first: port(first)?, last: port(last)? };
    if range.first < 1024 {
        return Err("must start at 1024 or above: lower ports are the host's services'".into());
    }
    if range.first > range.last {
        return Err(format!("{} is above {}", range.first, range.last));
    }
    if range.count() < MIN_PORTS {
        return Err(format!("{} ports: at least {MIN_PORTS} are needed", range.count()));
    }
    Ok(range)
}

/// The `nat_*` keys of `[global]`.
pub(super) fn global(raw: &RawGlobal, p: &mut Problems) -> Option<NatSettings> {
    let field = |name: &str| format!("global.{name}");
    let defaults = NatSettings::default();
    let address = addresses(raw.nat_address.as_deref().unwrap_or_default(), p);
    let ports = p.check_or(field("nat_ports"), raw.nat_ports.as_ref(), defaults.ports, |s| port_range(s));
    let table_size = p.check_or(
        field("nat_table_size"),
        raw.nat_table_size.as_ref(),
        defaults.table_size,
        in_range(NAT_TABLE_SIZE),
    );
    let d = defaults.timeouts;
    let mut timeout = |name: &str, raw: Option<&Spanned<_>>, default| {
        p.check_or(field(name), raw, default, duration(TIMEOUT))
    };
    let tcp = timeout("nat_tcp_timeout", raw.nat_tcp_timeout.as_ref(), d.tcp);
    let tcp_opening = timeout("nat_tcp_opening_timeout", raw.nat_tcp_opening_timeout.as_ref(), d.tcp_opening);
    let tcp_closing = timeout("nat_tcp_closing_timeout", raw.nat_tcp_closing_timeout.as_ref(), d.tcp_closing);
    let udp = timeout("nat_udp_timeout", raw.nat_udp_timeout.as_ref(), d.udp);
    Some(NatSettings {
        address: address?,
        ports: ports?,
        table_size: table_size?,
        timeouts: NatTimeouts { tcp: tcp?, tcp_opening: tcp_opening?, tcp_closing: tcp_closing?, udp: udp? },
    })
}

/// `global.nat_address`: addresses, one per family at most.
fn addresses(raw: &[Spanned<String>], p: &mut Problems) -> Option<Vec<IpAddr>> {
    let mut found: Vec<IpAddr> = Vec::new();
    let mut ok = true;
    for (i, entry) in raw.iter().enumerate() {
        let at = format!("global.nat_address[{i}]");
        let Some(address) = p.check(at.clone(), entry, |s| own_address(s)) else {
            ok = false;
            continue;
        };
        if let Some(other) = found.iter().find(|a| a.is_ipv4() == address.is_ipv4()) {
            let reason =
                format!("a second {} address (the first is {other}): one per family", family(address));
            p.add(at, entry.get_ref().shown(), reason, Some(entry.span()));
            ok = false;
            continue;
        }
        found.push(address);
    }
    ok.then_some(found)
}

/// An address NATed flows can leave from: a unicast address of a host.
fn own_address(s: &str) -> Result<IpAddr, String> {
    let address = ip(s)?;
    if address.is_unspecified() || address.is_loopback() || address.is_multicast() {
        return Err("must be a unicast address of the balancer on its interface".into());
    }
    if let IpAddr::V4(v4) = address {
        if v4.is_broadcast() {
            return Err("must be a unicast address of the balancer on its interface".into());
        }
    }
    Ok(address)
}

/// A VIP's `nat_address`, and the rules of a NAT VIP: it needs an address of
/// its family (its own or `[global]`'s) and a port. `Some(None)`: not NAT,
/// nothing to say.
pub(super) fn vip_address(
    at: &str,
    raw: &RawVip,
    vip: Option<IpAddr>,
    mode: Option<Mode>,
    global: Option<&NatSettings>,
    p: &mut Problems,
) -> Option<Option<IpAddr>> {
    let own = match &raw.nat_address {
        Some(entry) => {
            let field = format!("{at}.nat_address");
            let address = p.check(field.clone(), entry, |s| own_address(s))?;
            match vip {
                Some(vip) if vip.is_ipv4() != address.is_ipv4() => {
                    let reason = format!(
                        "an {} address for the {} VIP {vip}: NAT keeps the family",
                        family(address),
                        family(vip)
                    );
                    p.add(field, entry.get_ref().shown(), reason, Some(entry.span()));
                    return None;
                }
                _ => {}
            }
            if mode != Some(Mode::Nat) {
                let reason = "only a VIP with mode = \"nat\" leaves from a NAT address".to_string();
                p.add(field, entry.get_ref().shown(), reason, Some(entry.span()));
                return None;
            }
            Some(address)
        }
        None => None,
    };
    let (Some(Mode::Nat), Some(vip)) = (mode, vip) else { return Some(own) };
    let span = raw.mode.as_ref().map(Spanned::span);
    if *raw.port.get_ref() == 0 {
        let reason = "a NAT VIP needs a port: port 0 (every port) cannot be translated".to_string();
        p.add(format!("{at}.port"), "0".into(), reason, Some(raw.port.span()));
    }
    // The global list was reported where it is written if it is invalid.
    if own.is_none() && global.is_some_and(|g| g.address_like(vip).is_none()) {
        let reason = format!(
            "a NAT VIP needs a balancer address of its family to leave from: \
             set {at}.nat_address or an {} address in global.nat_address",
            family(vip)
        );
        p.add(format!("{at}.mode"), "\"nat\"".into(), reason, span);
    }
    Some(own)
}

/// What the host says against the config's NAT: every address must be one
/// the balancer holds on its interface (`interface_addresses`), and the port
/// range must stay clear of the host's own ephemeral ports (`local_ports`,
/// `net.ipv4.ip_local_port_range`, which IPv6 shares): the agent's health
/// checks use those, and a reply to one must not be taken for a NAT reply.
pub fn host_problems(
    config: &Config,
    interface_addresses: &[IpAddr],
    local_ports: Option<PortRange>,
) -> Vec<Problem> {
    let global = &config.global;
    let mut problems = Vec::new();
    let nat_vips: Vec<(usize, &super::Vip)> =
        config.vips.iter().map(|v| &**v).enumerate().filter(|(_, v)| v.mode == Mode::Nat).collect();
    if nat_vips.is_empty() {
        return problems;
    }
    let interface = &global.interface;
    let not_here = |address: IpAddr| {
        format!(
            "{address} is not an address of {interface}: replies to a NAT address must come back to \
             this balancer, so it must be one of the interface's own"
        )
    };
    // Each address once, named where it is written: the VIP's own, else [global]'s.
    let mut named: Vec<String> = Vec::new();
    for (i, vip) in &nat_vips {
        let Some(address) = vip.nat_source(&global.nat).filter(|a| !interface_addresses.contains(a)) else {
            continue;
        };
        let field = match vip.nat_address {
            Some(_) => format!("vip[{i}] ({}).nat_address", vip.name),
            None => {
                let j = global.nat.address.iter().position(|a| *a == address).unwrap_or_default();
                format!("global.nat_address[{j}]")
            }
        };
        if !named.contains(&field) {
            problems.push(Problem::new(
                field.clone(),
                format!("{:?}", address.to_string()),
                not_here(address),
            ));
            named.push(field);
        }
    }
    if let Some(local) = local_ports.filter(|l| l.overlaps(global.nat.ports)) {
        problems.push(Problem::new(
            "global.nat_ports",
            format!("{:?}", global.nat.ports.to_string()),
            format!(
                "overlaps the host's ephemeral ports {local} (net.ipv4.ip_local_port_range), which the \
                 agent's own health checks use from the same addresses: choose ports outside them"
            ),
        ));
    }
    problems
}

impl super::Vip {
    /// The address this VIP's NATed flows leave from (`None` unless NAT).
    pub fn nat_source(&self, global: &NatSettings) -> Option<IpAddr> {
        (self.mode == Mode::Nat)
            .then(|| self.nat_address.or_else(|| global.address_like(self.address)))
            .flatten()
    }
}
