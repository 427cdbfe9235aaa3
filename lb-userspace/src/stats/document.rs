//! The `/v1/stats` document (docs/api.md, docs/openapi.json), stated once:
//! the agent serialises it borrowing names from a snapshot's topology, and
//! clients (`alwayson stats`, the tests) read it back owned, as `Stats<'static>`.

use std::{borrow::Cow, collections::BTreeMap, fmt, net::IpAddr};

use lb_common::{DropReason, Event, Verdict};
use serde::{Deserialize, Serialize};

use super::Snapshot;
use crate::{
    cluster::{announce::BgpStatus, member::ClusterStatus},
    config::{Mode, Protocol},
    runtime::Admin,
};

/// Counts by the name of what was counted (a verdict, a drop reason, an event).
pub type Counts<'a> = BTreeMap<Cow<'a, str>, u64>;

/// Counters and rates of the whole data plane.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Stats<'a> {
    pub uptime_seconds: f64,
    pub interval_seconds: f64,
    pub verdicts: Counts<'a>,
    pub drops: Counts<'a>,
    pub events: Counts<'a>,
    pub conn_table: ConnTable,
    /// NAT mappings (`mode = "nat"`): one per NATed flow.
    pub nat_table: ConnTable,
    pub vips: Vec<VipStats<'a>>,
    /// Present with `[bgp]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bgp: Option<Cow<'a, BgpStatus>>,
    /// Present with `[cluster]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Cow<'a, ClusterStatus>>,
}

#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ConnTable {
    pub entries: u64,
    pub capacity: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct VipStats<'a> {
    pub name: Cow<'a, str>,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub mode: Mode,
    #[serde(flatten)]
    pub traffic: Traffic,
    pub backends: Vec<BackendStats<'a>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackendStats<'a> {
    pub name: Cow<'a, str>,
    pub address: IpAddr,
    pub port: u16,
    pub weight: u32,
    pub backup: bool,
    pub admin: Admin,
    pub health: Health,
    pub state: State,
    pub in_ring: bool,
    pub reason: Cow<'a, str>,
    pub transitions: u64,
    #[serde(flatten)]
    pub traffic: Traffic,
}

/// Totals since the data plane was created, and rates over the last interval.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
    pub pps: f64,
    /// Bits per second.
    pub bps: f64,
}

/// What the health checks say of a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Up,
    Down,
    /// The backend has no check: it counts as up.
    #[serde(rename = "none")]
    Unchecked,
}

/// Admin state, health and weight in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Up,
    Down,
    Drain,
    Maint,
}

impl Health {
    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Down => "down",
            Health::Unchecked => "none",
        }
    }
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Down => "down",
            State::Drain => "drain",
            State::Maint => "maint",
        }
    }
}

// `pad`, not `write_str`: `alwayson stats` lays these out in columns.
impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

impl Snapshot {
    /// The document, borrowing names from the topology: built only when asked for.
    pub fn document(&self) -> Stats<'_> {
        let c = &self.counters;
        let vips = self
            .topology
            .vips
            .iter()
            .zip(&self.traffic)
            .map(|(info, (traffic, backends))| VipStats {
                name: Cow::Borrowed(&info.vip.name),
                address: info.vip.address,
                port: info.vip.port,
                protocol: info.vip.protocol,
                mode: info.vip.mode,
                traffic: *traffic,
                backends: info
                    .vip
                    .backends
                    .iter()
                    .zip(&info.backends)
                    .zip(backends)
                    .map(|((conf, b), traffic)| BackendStats {
                        name: Cow::Borrowed(&conf.name),
                        address: conf.address,
                        port: conf.port,
                        weight: conf.weight,
                        backup: conf.backup,
                        admin: b.admin,
                        health: b.health(),
                        state: b.state(conf.weight),
                        in_ring: b.in_ring,
                        reason: Cow::Borrowed(&b.reason),
                        transitions: b.transitions,
                        traffic: *traffic,
                    })
                    .collect(),
            })
            .collect();
        Stats {
            uptime_seconds: self.uptime_seconds,
            interval_seconds: self.interval_seconds,
            verdicts: Verdict::ALL.iter().map(|v| (v.name().into(), c.verdict(*v))).collect(),
            drops: DropReason::ALL.iter().map(|r| (r.name().into(), c.drop(*r))).collect(),
            events: Event::ALL.iter().map(|e| (e.name().into(), c.event(*e))).collect(),
            conn_table: self.conn_table,
            nat_table: self.nat_table,
            vips,
            bgp: self.bgp.enabled.then_some(Cow::Borrowed(&*self.bgp)),
            cluster: self.cluster.enabled.then_some(Cow::Borrowed(&*self.cluster)),
        }
    }
}

impl Serialize for Snapshot {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.document().serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::{
        config::Config,
        stats::{BackendInfo, Topology, VipInfo},
    };

    fn snapshot() -> Snapshot {
        let config = Config::from_toml(
            "[global]\ninterface = \"lo\"\n[[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n\
             [[vip.backend]]\nname = \"b1\"\naddress = \"10.77.1.10\"\n\
             [[vip.backend]]\nname = \"b2\"\naddress = \"10.77.1.11\"\nweight = 0\n",
        )
        .unwrap();
        let vip = Arc::clone(&config.vips[0]);
        let backend = |health, reason: &str| BackendInfo {
            slot: 0,
            admin: Admin::Ready,
            health,
            reason: reason.into(),
            transitions: 1,
            in_ring: true,
        };
        let topology = Topology {
            vips: vec![VipInfo {
                key: vip.key(),
                vip,
                index: 0,
                backends: vec![backend(None, "not checked"), backend(Some(false), "refused")],
            }],
            ..Default::default()
        };
        let packets = |packets| Traffic { packets, ..Default::default() };
        Snapshot {
            topology: Arc::new(topology),
            traffic: vec![(packets(9), vec![packets(4), packets(5)])],
            ..Default::default()
        }
    }

    #[test]
    fn the_agent_writes_what_clients_read_back() {
        let mut snapshot = snapshot();
        let json = serde_json::to_value(&snapshot).unwrap();
        let vip = &json["vips"][0];
        assert_eq!(
            (&vip["protocol"], &vip["mode"], &vip["packets"]),
            (&json!("tcp"), &json!("dsr"), &json!(9))
        );
        let words = |i: usize| {
            let b = &vip["backends"][i];
            (b["health"].clone(), b["state"].clone(), b["admin"].clone(), b["packets"].clone())
        };
        assert_eq!(words(0), (json!("none"), json!("up"), json!("ready"), json!(4)));
        assert_eq!(words(1), (json!("down"), json!("down"), json!("ready"), json!(5)));
        assert!(json.get("bgp").is_none() && json.get("cluster").is_none(), "{json:#}");
        let read: Stats<'static> = serde_json::from_value(json).unwrap();
        assert_eq!(read, snapshot.document());

        Arc::make_mut(&mut snapshot.bgp).enabled = true;
        let json = serde_json::to_value(&snapshot).unwrap();
        assert_eq!(json["bgp"]["enabled"], json!(true));
        let read: Stats<'static> = serde_json::from_value(json).unwrap();
        assert_eq!(read.bgp.as_deref(), Some(&*snapshot.bgp));
    }

    #[test]
    fn drain_and_maint_win_over_health_in_the_state_word() {
        let b = |admin, health| BackendInfo {
            slot: 0,
            admin,
            health,
            reason: "".into(),
            transitions: 0,
            in_ring: false,
        };
        assert_eq!(b(Admin::Maint, Some(false)).state(1), State::Maint);
        assert_eq!(b(Admin::Drain, Some(false)).state(1), State::Down);
        assert_eq!(b(Admin::Drain, Some(true)).state(1), State::Drain);
        assert_eq!(b(Admin::Ready, None).state(0), State::Drain);
        assert_eq!(b(Admin::Ready, None).state(1), State::Up);
        assert_eq!(format!("[{:<6}]", State::Up), "[up    ]");
    }
}
