//! `[cluster]`: one of several LB nodes that share backend health through
//! etcd. Absent: the node's own checks decide alone, no etcd needed.

use std::{collections::HashSet, net::SocketAddr, ops::RangeInclusive, time::Duration};

use serde::{Deserialize, Serialize};

use super::{
    problems::Problems,
    raw::RawCluster,
    values::{self, duration},
};

const DEFAULT_PREFIX: &str = "/alwayson";
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);
const DEFAULT_QUORUM_GRACE: Duration = Duration::from_secs(10);
const DEFAULT_ODD_ONE_OUT_AFTER: Duration = Duration::from_secs(3);
const LEASE_TTL: RangeInclusive<Duration> = Duration::from_secs(2)..=Duration::from_secs(60);
const GRACE: RangeInclusive<Duration> = Duration::from_secs(1)..=Duration::from_secs(3600);

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cluster {
    /// This node's name, unique in the cluster.
    pub node: String,
    /// etcd client URLs (`http://host:port`).
    pub etcd: Vec<String>,
    /// Keys live under this prefix; nodes of one cluster share it.
    pub prefix: String,
    /// A node whose agent stops refreshing its view drops out after this.
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub lease_ttl: Duration,
    /// Cut off from etcd: keep the last effective state this long, then
    /// withdraw (unless etcd is down for every node: then local views rule).
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub quorum_grace: Duration,
    /// Seeing DOWN a backend the others keep: withdraw after this.
    #[serde(
        serialize_with = "values::serialize_duration",
        deserialize_with = "values::deserialize_duration"
    )]
    pub odd_one_out_after: Duration,
    /// Where this agent hears the others' heartbeats (UDP), and where they are.
    pub listen: SocketAddr,
    #[serde(default)]
    pub peers: Vec<SocketAddr>,
    /// Send the flows recorded on ring slots in flux to the peers, and take
    /// theirs, so flows survive a node's failure after a ring change.
    pub share_flows: bool,
}

/// It becomes part of etcd keys and of logs.
fn node_name(s: &str) -> Result<String, String> {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if s.is_empty() || s.len() > 63 || !s.chars().all(ok) {
        return Err("1..=63 characters of letters, digits, '-', '_' and '.'".into());
    }
    Ok(s.to_owned())
}

fn etcd_url(s: &str) -> Result<String, String> {
    let rest = s.strip_prefix("http://").unwrap_or(s);
    if s.starts_with("https://") {
        return Err("TLS to etcd is not supported yet: reach it over a private network".into());
    }
    rest.trim_end_matches('/')
        .parse::<SocketAddr>()
        .map(|_| s.to_owned())
        .map_err(|_| "not an etcd client URL: write http://IP:PORT, e.g. http://10.0.0.1:2379".into())
}

fn prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') || s.len() < 2 || s.ends_with('/') {
        return Err("must start with '/', not end with one, e.g. \"/alwayson/edge1\"".into());
    }
    Ok(s.to_owned())
}

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| "not an address:port, e.g. 10.0.0.1:7947".into())
}

pub(super) fn cluster(raw: Option<&RawCluster>, p: &mut Problems) -> Option<Option<Cluster>> {
    let Some(raw) = raw else { return Some(None) };
    let field = |name: &str| format!("cluster.{name}");
    let node = p.check(field("node"), &raw.node, |s| node_name(s));
    let etcd: Vec<Option<String>> = raw
        .etcd
        .iter()
        .enumerate()
        .map(|(i, e)| p.check(format!("cluster.etcd[{i}]"), e, |s| etcd_url(s)))
        .collect();
    if raw.etcd.is_empty() {
        p.add(field("etcd"), "[]".into(), "needs at least one etcd client URL".into(), None);
    }
    let prefix = p.check_or(field("prefix"), raw.prefix.as_ref(), DEFAULT_PREFIX.into(), |s| prefix(s));
    let lease_ttl =
        p.check_or(field("lease_ttl"), raw.lease_ttl.as_ref(), DEFAULT_LEASE_TTL, duration(LEASE_TTL));
    let quorum_grace =
        p.check_or(field("quorum_grace"), raw.quorum_grace.as_ref(), DEFAULT_QUORUM_GRACE, duration(GRACE));
    let odd_one_out_after = p.check_or(
        field("odd_one_out_after"),
        raw.odd_one_out_after.as_ref(),
        DEFAULT_ODD_ONE_OUT_AFTER,
        duration(GRACE),
    );
    let listen = p.check(field("listen"), &raw.listen, |s| socket_addr(s));
    let mut seen = HashSet::new();
    let peers: Vec<Option<SocketAddr>> = raw
        .peers
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let at = format!("cluster.peers[{i}]");
            let addr = p.check(at.clone(), s, |s| socket_addr(s))?;
            if !seen.insert(addr) || listen.as_ref() == Some(&addr) {
                p.add_repeat(
                    at,
                    addr.to_string(),
                    "listed twice (or this node's own listen address)".into(),
                    s.span(),
                );
                return None;
            }
            Some(addr)
        })
        .collect();
    Some(Some(Cluster {
        node: node?,
        etcd: etcd.into_iter().collect::<Option<_>>()?,
        prefix: prefix?,
        lease_ttl: lease_ttl?,
        quorum_grace: quorum_grace?,
        odd_one_out_after: odd_one_out_after?,
        listen: listen?,
        peers: peers.into_iter().collect::<Option<_>>()?,
        share_flows: raw.share_flows.unwrap_or(true),
    }))
}
