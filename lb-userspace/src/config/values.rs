//! Checks of single values, pure: `Ok(resolved)` or `Err(reason)`.

use std::{net::IpAddr, ops::RangeInclusive, path::PathBuf};

use lb_common::sizes::MAX_RING_SIZE;

use super::{Mode, Protocol, XdpMode, DEFAULT_PIN_ROOT};
use crate::maglev::is_prime;

/// The smallest ring worth having; Maglev needs a prime.
const MIN_RING_SIZE: u32 = 7;
pub(super) const MAX_VIPS: RangeInclusive<i64> = 1..=65_536;
pub(super) const MAX_BACKENDS: RangeInclusive<i64> = 1..=1_048_576;
pub(super) const CONN_TABLE_SIZE: RangeInclusive<i64> = 1_024..=67_108_864;
pub(super) const WEIGHT: RangeInclusive<i64> = 0..=256;
pub(super) const DEFAULT_WEIGHT: u32 = 1;
/// Linux `IFNAMSIZ` is 16 bytes including the terminating NUL.
const MAX_IFNAME_LEN: usize = 15;

pub(super) const XDP_MODES: &[(&str, XdpMode)] =
    &[("native", XdpMode::Native), ("generic", XdpMode::Generic), ("auto", XdpMode::Auto)];
pub(super) const PROTOCOLS: &[(&str, Protocol)] = &[("tcp", Protocol::Tcp), ("udp", Protocol::Udp)];
const MODES: &[(&str, Mode)] = &[("dsr", Mode::Dsr), ("tunnel", Mode::Tunnel), ("nat", Mode::Nat)];

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
    match choice(s, MODES)? {
        Mode::Dsr => Ok(Mode::Dsr),
        Mode::Tunnel | Mode::Nat => Err("not supported yet: only dsr is implemented".into()),
    }
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
