//! Checks of single values, pure: `Ok(resolved)` or `Err(reason)`.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::RangeInclusive,
    path::PathBuf,
    time::Duration,
};

use lb_common::sizes::MAX_RING_SIZE;
use serde::Serializer;

use super::{
    raw::RawDuration, CheckKind, FlowRecording, Mode, OnAllDown, Prefix, Protocol, XdpMode, DEFAULT_PIN_ROOT,
};
use crate::maglev::is_prime;

/// The smallest ring worth having; Maglev needs a prime.
const MIN_RING_SIZE: u32 = 7;
pub(super) const MAX_VIPS: RangeInclusive<i64> = 1..=65_536;
pub(super) const MAX_BACKENDS: RangeInclusive<i64> = 1..=1_048_576;
pub(super) const CONN_TABLE_SIZE: RangeInclusive<i64> = 1_024..=67_108_864;
pub(super) const FLOW_RECORD_LIMIT: RangeInclusive<i64> = 0..=100_000_000;
pub(super) const ICMP_TOO_BIG_LIMIT: RangeInclusive<i64> = 0..=100_000_000;
pub(super) const FLOW_RECORDINGS: &[(&str, FlowRecording)] =
    &[("changed-slots", FlowRecording::ChangedSlots), ("every-flow", FlowRecording::EveryFlow)];
pub(super) const DEFAULT_FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(900);
pub(super) const FLOW_IDLE_TIMEOUT: RangeInclusive<Duration> =
    Duration::from_secs(1)..=Duration::from_secs(86_400);
pub const WEIGHT: RangeInclusive<i64> = 0..=256;
pub(super) const DEFAULT_WEIGHT: u32 = 1;
/// Linux `IFNAMSIZ` is 16 bytes including the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

pub(super) const XDP_MODES: &[(&str, XdpMode)] =
    &[("native", XdpMode::Native), ("generic", XdpMode::Generic), ("auto", XdpMode::Auto)];
pub(super) const PROTOCOLS: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
const MODES: &[(&str, Mode)] = &[("dsr", Mode::Dsr), ("tunnel", Mode::Tunnel), ("nat", Mode::Nat)];
pub(super) const CHECK_KINDS: &[(&str, CheckKind)] = &[
    ("tcp", CheckKind::Tcp),
    ("http", CheckKind::Http),
    ("exec", CheckKind::Exec),
    ("none", CheckKind::None),
];
pub(super) const ON_ALL_DOWN: &[(&str, OnAllDown)] = &[("drop", OnAllDown::Drop), ("keep", OnAllDown::Keep)];

// Health checks, in HAProxy's vocabulary; defaults as in the example config.
pub(super) const DEFAULT_INTER: Duration = Duration::from_millis(250);
pub(super) const DEFAULT_TIMEOUT: Duration = Duration::from_millis(200);
pub(super) const DEFAULT_RISE: u32 = 2;
pub(super) const DEFAULT_FALL: u32 = 2;
pub(super) const DEFAULT_HTTP_PATH: &str = "/";
pub(crate) const INTER: RangeInclusive<Duration> = Duration::from_millis(10)..=HOUR;
pub(crate) const TIMEOUT: RangeInclusive<Duration> = Duration::from_millis(1)..=HOUR;
pub(crate) const SLOWSTART: RangeInclusive<Duration> = Duration::ZERO..=HOUR;
pub(crate) const RISE_FALL: RangeInclusive<i64> = 1..=100;
pub(crate) const CHECK_PORT: RangeInclusive<i64> = 1..=65_535;
pub(super) const HTTP_STATUS: RangeInclusive<i64> = 100..=599;
const HOUR: Duration = Duration::from_secs(3600);
/// Duration units, largest last; a value is written with the largest that fits exactly.
const UNITS: &[(&str, u64)] = &[("ms", 1), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)];

pub(super) fn in_range<T: TryFrom<i64>>(
    range: RangeInclusive<i64>,
) -> impl FnOnce(&i64) -> Result<T, String> {
    move |&value| match T::try_from(value) {
        Ok(value_t) if range.contains(&value) => Ok(value_t),
        _ => Err(format!("out of range, must be {}..={}", range.start(), range.end())),
    }
}

pub(super) fn choice<T: Copy>(s: &str, options: &[(&str, T)]) -> Result<T, String> {
    options.iter().find(|(name, _)| *name == s).map(|&(_, value)| value).ok_or_else(|| {
        let names: Vec<String> = options.iter().map(|(name, _)| format!("{name:?}")).collect();
        format!("must be one of {}", names.join(", "))
    })
}

pub(super) fn mode(s: &str) -> Result<Mode, String> {
    choice(s, MODES)
}

/// Katran's outer sources: a backend set up for Katran's tunnels takes ours.
pub(super) const TUNNEL_SOURCE_V4: Prefix =
    Prefix { address: IpAddr::V4(Ipv4Addr::new(172, 16, 0, 0)), len: 16 };
pub(super) const TUNNEL_SOURCE_V6: Prefix =
    Prefix { address: IpAddr::V6(Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0)), len: 64 };
/// The flow fills the last 16 bits of an IPv4 source and the last 32 of an
/// IPv6 one: a shorter prefix would leave bits nobody sets. Longer ones keep
/// fewer of the flow's bits, down to a single address.
pub(super) const TUNNEL_SOURCE_V4_LEN: RangeInclusive<u8> = 16..=32;
pub(super) const TUNNEL_SOURCE_V6_LEN: RangeInclusive<u8> = 64..=128;

/// An outer-source prefix of `default`'s family, its length in `lens`, host bits zero.
pub(super) fn tunnel_source(s: &str, default: Prefix, lens: RangeInclusive<u8>) -> Result<Prefix, String> {
    let example = format!("e.g. \"{default}\"");
    let Some((address, len)) = s.split_once('/') else {
        return Err(format!("not a prefix: write an address, '/' and a length, {example}"));
    };
    let address: IpAddr = address.parse().map_err(|_| format!("{address:?} is not an address, {example}"))?;
    if address.is_ipv4() != default.address.is_ipv4() {
        return Err(format!(
            "an {} prefix where an {} one belongs",
            family(address),
            family(default.address)
        ));
    }
    let len: u8 = len.parse().ok().filter(|len| lens.contains(len)).ok_or_else(|| {
        format!(
            "the length must be {}..={}: the flow fills the last {} bits of the address",
            lens.start(),
            lens.end(),
            if address.is_ipv4() { 16 } else { 32 }
        )
    })?;
    let prefix = Prefix { address, len };
    let network = prefix.network();
    if network != address {
        return Err(format!("host bits set: the prefix is {network}/{len}"));
    }
    Ok(prefix)
}

/// Maglev's permutation needs a prime ring size.
pub(super) fn ring_size(&value: &i64) -> Result<u32, String> {
    let size: u32 = in_range(MIN_RING_SIZE.into()..=MAX_RING_SIZE.into())(&value)?;
    if is_prime(size) {
        return Ok(size);
    }
    let below = (MIN_RING_SIZE..size).rev().find(|&m| is_prime(m));
    let above = (size + 1..=MAX_RING_SIZE).find(|&m| is_prime(m));
    let nearest: Vec<String> = below.into_iter().chain(above).map(|m| m.to_string()).collect();
    Err(format!("not prime (Maglev needs a prime ring size); nearest primes: {}", nearest.join(", ")))
}

/// Linux's `dev_valid_name`: 1..=15 bytes, not `.` or `..`, no `/`, `:` or whitespace.
pub(super) fn interface_name(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > MAX_IFNAME_LEN {
        return Err(format!("too long: {} bytes, Linux allows at most {MAX_IFNAME_LEN}", s.len()));
    }
    if s == "." || s == ".." {
        return Err("not an interface name".into());
    }
    match s.chars().find(|&c| c == '/' || c == ':' || c.is_whitespace() || c.is_control()) {
        Some(c) => Err(format!("contains {c:?}: interface names cannot hold '/', ':' or whitespace")),
        None => Ok(s.to_owned()),
    }
}

/// Pins must not depend on the agent's working directory.
pub(super) fn pin_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(format!("must be an absolute path under bpffs, e.g. {DEFAULT_PIN_ROOT}/eth0"))
    }
}

/// Files the agent keeps must not depend on its working directory.
pub(super) fn absolute(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err("must be an absolute path".into())
    }
}

/// A user name as passwd spells them (whether it exists is the host's to say,
/// when the agent starts).
pub(super) fn user_name(s: &str) -> Result<String, String> {
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    if s.is_empty() || !s.chars().all(valid) || s.starts_with('-') {
        Err("not a user name (letters, digits, '_', '-', '.')".into())
    } else {
        Ok(s.to_owned())
    }
}

pub(super) fn entry_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty (leave the key out for the default name)".into())
    } else {
        Ok(s.to_owned())
    }
}

pub(super) fn ip(s: &str) -> Result<IpAddr, String> {
    s.parse().map_err(|_| "not an IPv4 or IPv6 address".into())
}

pub(super) fn family(address: IpAddr) -> &'static str {
    if address.is_ipv4() {
        "IPv4"
    } else {
        "IPv6"
    }
}

/// A duration within `range`: a string with a unit, or an integer of milliseconds.
pub(super) fn duration(
    range: RangeInclusive<Duration>,
) -> impl FnOnce(&RawDuration) -> Result<Duration, String> {
    move |raw| {
        let value = match raw {
            RawDuration::Millis(ms) => {
                Duration::from_millis(u64::try_from(*ms).map_err(|_| "must not be negative".to_string())?)
            }
            RawDuration::Text(s) => duration_text(s)?,
        };
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(format!(
                "out of range, must be {}..={}",
                show_duration(*range.start()),
                show_duration(*range.end())
            ))
        }
    }
}

/// `"250ms"`, `"2s"`, `"1.5s"`, `"1m"`, `"1h"`: a decimal number and a unit,
/// nothing between them, a whole number of milliseconds in all.
fn duration_text(s: &str) -> Result<Duration, String> {
    const UNIT_NAMES: &str = "\"ms\", \"s\", \"m\" or \"h\"";
    if s.starts_with('-') {
        return Err("must not be negative".into());
    }
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len()));
    if number.is_empty() {
        return Err(
            "not a duration: write a number and a unit, e.g. \"250ms\", \"2s\", \"1.5s\" or \"1m\"".into()
        );
    }
    let known = |unit: &str| UNITS.iter().find(|(name, _)| *name == unit).map(|&(_, ms)| ms);
    let Some(unit_ms) = known(unit) else {
        let trimmed = unit.trim();
        return Err(if trimmed.is_empty() {
            format!("needs a unit: {UNIT_NAMES} (an integer without quotes means milliseconds)")
        } else if known(trimmed).is_some() {
            format!("no space allowed: write {:?}", format!("{number}{trimmed}"))
        } else {
            format!("unknown unit {trimmed:?}: use {UNIT_NAMES}")
        });
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || fraction.contains('.') || (number.contains('.') && fraction.is_empty()) {
        return Err(format!("{number:?} is not a number"));
    }
    // Digits only from here on; too many of them saturate and fail the range check.
    let whole: u128 = whole.parse().unwrap_or(u128::MAX);
    let fraction = fraction.trim_end_matches('0');
    let mut ms = whole.saturating_mul(unit_ms.into());
    if !fraction.is_empty() {
        let scale = u32::try_from(fraction.len()).ok().and_then(|n| 10u128.checked_pow(n));
        let parts = fraction.parse::<u128>().ok().and_then(|f| f.checked_mul(unit_ms.into()));
        match scale.zip(parts) {
            Some((scale, parts)) if parts.is_multiple_of(scale) => ms = ms.saturating_add(parts / scale),
            _ => return Err("finer than a millisecond".into()),
        }
    }
    Ok(Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX)))
}

/// A duration as the config writes it: `"0s"`, `"250ms"`, `"1500ms"`, `"2s"`,
/// `"1m"`: the largest unit that holds it exactly. Whole milliseconds only,
/// which every resolved duration is.
pub fn show_duration(value: Duration) -> String {
    let ms = value.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    let &(unit, size) = UNITS
        .iter()
        .rev()
        .find(|&&(_, size)| ms.is_multiple_of(u128::from(size)))
        .expect("every whole ms fits \"ms\"");
    format!("{}{unit}", ms / u128::from(size))
}

/// Serializes a duration the way the config writes it, so `to_toml` round-trips.
pub(super) fn serialize_duration<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&show_duration(*value))
}

/// The inverse of [`serialize_duration`].
pub(super) fn deserialize_duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <String as serde::Deserialize>::deserialize(d)?;
    duration_text(&text).map_err(serde::de::Error::custom)
}

/// The request target of an HTTP check: an absolute path, as sent.
pub(super) fn http_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("must start with '/', e.g. \"/health\"".into());
    }
    header_safe(s)
}

/// The Host header of an HTTP check.
pub(super) fn http_host(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("must not be empty (leave the key out to send the check address)".into());
    }
    header_safe(s)
}

/// Goes into the request as is: ASCII without spaces, so it cannot end or
/// split the request line or a header.
fn header_safe(s: &str) -> Result<String, String> {
    match s.chars().find(|&c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
        Some(c) if c.is_ascii() => {
            Err(format!("contains {c:?}: no whitespace or control characters allowed"))
        }
        Some(c) => Err(format!("contains {c:?}: only ASCII is allowed (percent-encode, or punycode a host)")),
        None => Ok(s.to_owned()),
    }
}

/// The command of an exec check, run with `/bin/sh -c`.
pub(super) fn exec_command(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}
