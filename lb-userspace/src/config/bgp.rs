//! `[bgp]`: announcing VIPs to routers through BIRD. Absent: a single node,
//! nothing announced, no BIRD needed.

use std::{
    collections::HashSet,
    net::{IpAddr, Ipv4Addr},
    ops::RangeInclusive,
    path::{Path, PathBuf},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use super::{
    listeners::DEFAULT_RUN_DIR,
    problems::{Problems, Shown},
    raw::RawBgp,
    values::{self, absolute, duration, in_range, interface_name, ip},
};

/// Debian's bird2 listens here.
pub const DEFAULT_BIRD_SOCKET: &str = "/run/bird/bird.ctl";
const DEFAULT_GRACE: Duration = Duration::from_secs(3);
const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
const DEFAULT_BFD_INTERVAL: Duration = Duration::from_millis(100);
const DEFAULT_BFD_MULTIPLIER: u32 = 3;
/// At least a second: a large apply holds the loop (and its heartbeats) that long.
const GRACE: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(300);
const DRAIN: RangeInclusive<Duration> = Duration::ZERO..=Duration::from_secs(600);
const BFD_INTERVAL: RangeInclusive<Duration> = Duration::from_millis(10)..=Duration::from_secs(10);
/// 0 is invalid in BGP, 23456 is AS_TRANS, 4294967295 is reserved (RFC 7300).
const ASN: RangeInclusive<i64> = 1..=4_294_967_294;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bgp {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// The BIRD config the agent writes and keeps current; BIRD runs with it.
    pub bird_config: PathBuf,
    /// BIRD's control socket: the agent reloads BIRD and reads sessions through it.
    pub bird_socket: PathBuf,
    /// The interface the announced routes hang on. It exists only while this
    /// agent, or its keeper for `grace_time` after the agent stops answering,
    /// is alive, so BIRD withdraws everything when neither is.
    pub device: String,
    /// How long routes outlive an agent that died or hangs.
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub grace_time: Duration,
    /// On a clean stop: how long routes stay announced with the
    /// GRACEFUL_SHUTDOWN community before they are withdrawn.
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub drain_time: Duration,
    /// BFD on every session, so a router drops a silent node within
    /// `bfd_interval × bfd_multiplier`, not the BGP hold time.
    pub bfd: bool,
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub bfd_interval: Duration,
    pub bfd_multiplier: u32,
    #[serde(rename = "neighbor")]
    pub neighbors: Vec<Neighbor>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbor {
    pub address: IpAddr,
    #[serde(rename = "as")]
    pub asn: u32,
}

fn router_id(s: &str) -> Result<Ipv4Addr, String> {
    s.parse().map_err(|_| "not an IPv4 address (BGP router ids are written as one)".into())
}

fn asn(value: &i64) -> Result<u32, String> {
    if *value == 23_456 {
        return Err("23456 is AS_TRANS, not a real AS number".into());
    }
    in_range(ASN)(value)
}

pub(super) fn bgp(raw: Option<&RawBgp>, interface: Option<&str>, p: &mut Problems) -> Option<Option<Bgp>> {
    let Some(raw) = raw else { return Some(None) };
    let field = |name: &str| format!("bgp.{name}");
    let router_id = p.check(field("router_id"), &raw.router_id, |s| router_id(s));
    let local_as = p.check(field("local_as"), &raw.local_as, asn);
    let bird_config = match &raw.bird_config {
        Some(s) => p.check(field("bird_config"), s, |s| absolute(s)),
        None => interface.map(|i| Path::new(DEFAULT_RUN_DIR).join(format!("bird-{i}.conf"))),
    };
    let bird_socket =
        p.check_or(field("bird_socket"), raw.bird_socket.as_ref(), DEFAULT_BIRD_SOCKET.into(), |s| {
            absolute(s)
        });
    let device = match &raw.device {
        Some(s) => p.check(field("device"), s, |s| interface_name(s)).and_then(|d| {
            if Some(d.as_str()) == interface {
                p.add(
                    field("device"),
                    d.shown(),
                    "must not be global.interface: it is created and removed by the agent".into(),
                    Some(s.span()),
                );
                None
            } else {
                Some(d)
            }
        }),
        None => interface.map(default_device),
    };
    let grace_time = p.check_or(field("grace_time"), raw.grace_time.as_ref(), DEFAULT_GRACE, duration(GRACE));
    let drain_time = p.check_or(field("drain_time"), raw.drain_time.as_ref(), DEFAULT_DRAIN, duration(DRAIN));
    let interval = p.check_or(
        field("bfd_interval"),
        raw.bfd_interval.as_ref(),
        DEFAULT_BFD_INTERVAL,
        duration(BFD_INTERVAL),
    );
    let multiplier = p.check_or(
        field("bfd_multiplier"),
        raw.bfd_multiplier.as_ref(),
        DEFAULT_BFD_MULTIPLIER,
        in_range(1..=255),
    );
    let mut seen = HashSet::new();
    let neighbors: Vec<Option<Neighbor>> = raw
        .neighbor
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let at = |key: &str| format!("bgp.neighbor[{i}].{key}");
            let address = p.check(at("address"), &n.address, |s| ip(s)).and_then(|a| {
                if seen.insert(a) {
                    Some(a)
                } else {
                    p.add_repeat(
                        at("address"),
                        a.to_string(),
                        "duplicate neighbour: another [[bgp.neighbor]] has this address".into(),
                        n.address.span(),
                    );
                    None
                }
            });
            let asn = p.check(at("as"), &n.asn, asn);
            Some(Neighbor { address: address?, asn: asn? })
        })
        .collect();
    if raw.neighbor.is_empty() {
        p.add(
            field("neighbor"),
            "none".into(),
            "announcing needs at least one [[bgp.neighbor]]".into(),
            None,
        );
    }
    Some(Some(Bgp {
        router_id: router_id?,
        local_as: local_as?,
        bird_config: bird_config?,
        bird_socket: bird_socket?,
        device: device?,
        grace_time: grace_time?,
        drain_time: drain_time?,
        bfd: raw.bfd.unwrap_or(true),
        bfd_interval: interval?,
        bfd_multiplier: multiplier?,
        neighbors: neighbors.into_iter().collect::<Option<_>>()?,
    }))
}

/// `ao-` and the interface's name, cut to Linux's 15 bytes.
fn default_device(interface: &str) -> String {
    let mut name = format!("ao-{interface}");
    while name.len() > 15 {
        name.pop();
    }
    name
}
