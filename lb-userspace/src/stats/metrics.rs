//! `/metrics` in the OpenMetrics text format, encoded by prometheus-client.
//! The numbers are already kept elsewhere (the sampler's snapshot, the agent's
//! timings), so a collector writes them out at scrape time: nothing is copied
//! into a registry, which matters with 100,000 backends.
//!
//! Names: `alwayson_` prefix, `_seconds` durations; counters are declared
//! without `_total` and the encoder appends it to their samples. Labels `vip`,
//! `backend`, `reason`, `verdict`, `event`, `listener`, `address`, `neighbor`, `source`.

use std::{
    fmt,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
};

use lb_common::{DropReason, Event, Verdict};
use prometheus_client::{
    collector::Collector,
    encoding::{text::encode, DescriptorEncoder, EncodeLabelSet, EncodeMetric as _, NoLabelSet},
    metrics::MetricType,
    registry::{Registry, Unit},
};

use super::{BackendInfo, ConnCounts, Snapshot, Timings, Traffic};
use crate::{cluster::member::Source, runtime::Admin};

#[cfg(test)]
mod tests;

pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The exposition, `# EOF` included. An error is ours (writing to a string
/// cannot fail): a family the encoder refused.
pub fn render(snapshot: Arc<Snapshot>, timings: Arc<Timings>) -> Result<String, fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape { snapshot, timings }));
    let mut out = String::with_capacity(16 * 1024);
    encode(&mut out, &registry)?;
    Ok(out)
}

/// One scrape's numbers.
#[derive(Debug)]
struct Scrape {
    snapshot: Arc<Snapshot>,
    timings: Arc<Timings>,
}

impl Collector for Scrape {
    fn encode(&self, mut out: DescriptorEncoder) -> fmt::Result {
        traffic(&mut out, &self.snapshot)?;
        backends(&mut out, &self.snapshot)?;
        checks(&mut out, &self.timings)?;
        data_plane(&mut out, &self.snapshot)?;
        let reconcile = &self.timings.reconcile;
        let family = out.encode_descriptor(
            "alwayson_reconcile_duration",
            "Time to compute and write one change of the desired state.",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        reconcile.encode(family)?;
        tables(&mut out, &self.snapshot)?;
        bgp(&mut out, &self.snapshot)?;
        cluster(&mut out, &self.snapshot)?;
        listeners(&mut out, &self.timings)
    }
}

/// A counter family: its descriptor, then a sample per label set.
fn counters<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_counter::<NoLabelSet, _, u64>(&value, None)?;
    }
    Ok(())
}

/// A gauge family: its descriptor, then a sample per label set.
fn gauges<L: EncodeLabelSet>(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut family = out.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in samples {
        family.encode_family(&labels)?.encode_gauge(&value)?;
    }
    Ok(())
}

/// No labels: the family's one sample.
const NONE: [(&str, &str); 0] = [];

/// One backend as `/metrics` needs it.
struct Row<'a> {
    vip: &'a str,
    name: &'a str,
    info: &'a BackendInfo,
    weight: u32,
    traffic: &'a Traffic,
}

impl<'a> Row<'a> {
    fn labels(&self) -> [(&'static str, &'a str); 2] {
        [("vip", self.vip), ("backend", self.name)]
    }
}

fn rows(snapshot: &Snapshot) -> impl Iterator<Item = Row<'_>> {
    snapshot.topology.vips.iter().zip(&snapshot.traffic).flat_map(|(v, (_, backends))| {
        v.vip.backends.iter().zip(&v.backends).zip(backends).map(move |((conf, info), traffic)| Row {
            vip: &v.vip.name,
            name: &conf.name,
            info,
            weight: conf.weight,
            traffic,
        })
    })
}

fn traffic(out: &mut DescriptorEncoder, snapshot: &Snapshot) -> fmt::Result {
    type Pick = fn(&Traffic) -> u64;
    let kinds: [(&str, &str, Pick); 3] = [
        ("packets", "Packets forwarded", |t| t.packets),
        ("bytes", "Bytes forwarded (whole frames)", |t| t.bytes),
        ("new_flows", "Flows that picked a backend (TCP SYNs and connection-table misses)", |t| t.new_flows),
    ];
    for (what, help, pick) in kinds {
        let vips = snapshot.topology.vips.iter().zip(&snapshot.traffic);
        counters(
            out,
            &format!("alwayson_vip_{what}"),
            &format!("{help}, per VIP."),
            vips.map(|(v, (t, _))| ([("vip", &*v.vip.name)], pick(t))),
        )?;
        counters(
            out,
            &format!("alwayson_backend_{what}"),
            &format!("{help}, per backend."),
            rows(snapshot).map(|r| (r.labels(), pick(r.traffic))),
        )?;
    }
    Ok(())
}

fn backends(out: &mut DescriptorEncoder, snapshot: &Snapshot) -> fmt::Result {
    gauges(
        out,
        "alwayson_backend_up",
        "1 if the backend is healthy (or unchecked) and not in maintenance.",
        rows(snapshot)
            .map(|r| (r.labels(), u64::from(r.info.health != Some(false) && r.info.admin != Admin::Maint))),
    )?;
    gauges(
        out,
        "alwayson_backend_weight",
        "Configured weight (0 = drain).",
        rows(snapshot).map(|r| (r.labels(), u64::from(r.weight))),
    )?;
    counters(
        out,
        "alwayson_backend_health_transitions",
        "UP/DOWN transitions seen by health checks.",
        rows(snapshot).map(|r| (r.labels(), r.info.transitions)),
    )
}

fn checks(out: &mut DescriptorEncoder, timings: &Timings) -> fmt::Result {
    let family = out.encode_descriptor(
        "alwayson_health_check_duration",
        "Time one health check took.",
        Some(&Unit::Seconds),
        MetricType::Histogram,
    )?;
    timings.health_checks.encode(family)?;
    let family = out.encode_descriptor(
        "alwayson_health_checks_not_run",
        "Health checks this host could not run (reason: the errno, e.g. emfile); not held against the backend.",
        None,
        MetricType::Counter,
    )?;
    timings.checks_not_run.encode(family)
}

fn data_plane(out: &mut DescriptorEncoder, snapshot: &Snapshot) -> fmt::Result {
    let c = &snapshot.counters;
    counters(
        out,
        "alwayson_verdicts",
        "Packets by XDP verdict.",
        Verdict::ALL.iter().map(|v| ([("verdict", v.name())], c.verdict(*v))),
    )?;
    counters(
        out,
        "alwayson_drops",
        "Dropped packets by reason.",
        DropReason::ALL.iter().map(|r| ([("reason", r.name())], c.drop(*r))),
    )?;
    counters(
        out,
        "alwayson_events",
        "Counted events that are not drops.",
        Event::ALL.iter().map(|e| ([("event", e.name())], c.event(*e))),
    )
}

fn tables(out: &mut DescriptorEncoder, snapshot: &Snapshot) -> fmt::Result {
    let one: [(&str, &str, u64); 4] = [
        (
            "alwayson_conn_table_entries",
            "Flows in the connection table (counted every 10 s, less often when counting takes over 1% of that).",
            snapshot.conn_table.entries,
        ),
        (
            "alwayson_conn_table_capacity",
            "Connection-table size (LRU: the idlest flows go first).",
            snapshot.conn_table.capacity,
        ),
        (
            "alwayson_nat_table_entries",
            "NAT mappings (one per NATed flow; counted as the connection table is).",
            snapshot.nat_table.entries,
        ),
        (
            "alwayson_nat_table_capacity",
            "NAT table size: a full table drops new NAT flows (nat_table_full).",
            snapshot.nat_table.capacity,
        ),
    ];
    for (name, help, value) in one {
        gauges(out, name, help, [(NONE, value)])?;
    }
    Ok(())
}

fn bgp(out: &mut DescriptorEncoder, snapshot: &Snapshot) -> fmt::Result {
    let bgp = &snapshot.bgp;
    if !bgp.enabled {
        return Ok(());
    }
    gauges(
        out,
        "alwayson_bgp_route_announced",
        "1 while BIRD announces the VIP address (a backend is in its ring), else 0.",
        bgp.routes.iter().map(|r| ([("address", r.address.to_string())], u64::from(r.state == "announced"))),
    )?;
    gauges(
        out,
        "alwayson_bgp_session_established",
        "1 while the BGP session with the neighbour is established, else 0.",
        bgp.sessions.iter().map(|s| ([("neighbor", s.neighbor.to_string())], u64::from(s.established))),
    )
}

fn cluster(out: &mut DescriptorEncoder, snapshot: &Snapshot) -> fmt::Result {
    let c = &snapshot.cluster;
    if !c.enabled {
        return Ok(());
    }
    let one: [(&str, &str, usize); 4] = [
        (
            "alwayson_cluster_live_nodes",
            "Nodes whose view etcd holds (this one included).",
            c.live_nodes.len(),
        ),
        ("alwayson_cluster_peers_heard", "Peers whose heartbeats arrive.", c.peers_heard.len()),
        (
            "alwayson_cluster_withdrawn",
            "1 while the cluster rules keep this node's routes withdrawn.",
            usize::from(c.withdrawn_because.is_some()),
        ),
        (
            "alwayson_cluster_digests_differ",
            "VIPs whose ring inputs differ from the majority's.",
            c.digests_differ.len(),
        ),
    ];
    for (name, help, value) in one {
        gauges(out, name, help, [(NONE, value as u64)])?;
    }
    gauges(
        out,
        "alwayson_cluster_health_source",
        "1 for where the rings' health comes from: starting, quorum, last_quorum, local_only.",
        Source::ALL.iter().map(|s| ([("source", s.name())], u64::from(c.source == Some(*s)))),
    )
}

fn listeners(out: &mut DescriptorEncoder, timings: &Timings) -> fmt::Result {
    let listeners = timings.listeners.lock().unwrap_or_else(|e| e.into_inner());
    let each = |count: fn(&ConnCounts) -> &AtomicU64| {
        listeners
            .iter()
            .map(move |(name, counts)| ([("listener", *name)], count(counts).load(Ordering::Relaxed)))
    };
    gauges(out, "alwayson_listener_connections", "Connections a listener is serving.", each(|c| &c.open))?;
    counters(
        out,
        "alwayson_listener_refused",
        "Connections closed at once because the listener's max_connections were being served.",
        each(|c| &c.refused),
    )?;
    counters(
        out,
        "alwayson_listener_timeouts",
        "Connections ended by the header-read or idle timeout.",
        each(|c| &c.timed_out),
    )
}
