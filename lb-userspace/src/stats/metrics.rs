//! Prometheus text exposition (format 0.0.4) of the stats and timings.
//! Names follow Prometheus conventions: `alwayson_` prefix, `_total` counters,
//! `_seconds` durations, labels `vip`, `backend`, `reason`, `verdict`, `event`.

use std::{
    fmt::Write as _,
    sync::atomic::{AtomicU64, Ordering},
};

use lb_common::{DropReason, Event, Verdict};

use super::{Admin, BackendInfo, ConnCounts, Histogram, Snapshot, Timings, Traffic};
use crate::cluster::member::Source;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Label values escape backslash, double quote and newline.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

struct Out(String);

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            let inner: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            let _ = write!(self.0, "{{{}}}", inner.join(","));
        }
        let _ = writeln!(self.0, " {value}");
    }

    fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &Histogram) {
        for (le, count) in h.cumulative() {
            let mut with_le = labels.to_vec();
            with_le.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &with_le, count);
        }
        self.sample(&format!("{name}_sum"), labels, h.sum());
        self.sample(&format!("{name}_count"), labels, h.count());
    }
}

/// One backend as `/metrics` needs it.
struct Row<'a> {
    vip: &'a str,
    name: &'a str,
    info: &'a BackendInfo,
    weight: u32,
    traffic: &'a Traffic,
}

pub fn render(snapshot: &Snapshot, timings: &Timings) -> String {
    let mut out = Out(String::with_capacity(4096));
    let vips: Vec<(&str, &Traffic)> =
        snapshot.topology.vips.iter().zip(&snapshot.traffic).map(|(v, (t, _))| (&*v.vip.name, t)).collect();
    let rows: Vec<Row> = snapshot
        .topology
        .vips
        .iter()
        .zip(&snapshot.traffic)
        .flat_map(|(v, (_, backends))| {
            v.vip.backends.iter().zip(&v.backends).zip(backends).map(move |((conf, info), traffic)| Row {
                vip: &v.vip.name,
                name: &conf.name,
                info,
                weight: conf.weight,
                traffic,
            })
        })
        .collect();

    type Pick = fn(&Traffic) -> u64;
    let traffic: [(&str, &str, Pick); 3] = [
        ("packets_total", "Packets forwarded", |t| t.packets),
        ("bytes_total", "Bytes forwarded (whole frames)", |t| t.bytes),
        ("new_flows_total", "Flows that picked a backend (TCP SYNs and connection-table misses)", |t| {
            t.new_flows
        }),
    ];
    for (suffix, help, pick) in traffic {
        let name = format!("alwayson_vip_{suffix}");
        out.family(&name, "counter", &format!("{help}, per VIP."));
        for (vip, t) in &vips {
            out.sample(&name, &[("vip", vip)], pick(t));
        }
        let name = format!("alwayson_backend_{suffix}");
        out.family(&name, "counter", &format!("{help}, per backend."));
        for r in &rows {
            out.sample(&name, &[("vip", r.vip), ("backend", r.name)], pick(r.traffic));
        }
    }
    type Gauge = (&'static str, &'static str, &'static str, fn(&Row) -> u64);
    let per_backend: [Gauge; 3] = [
        (
            "alwayson_backend_up",
            "gauge",
            "1 if the backend is healthy (or unchecked) and not in maintenance.",
            |r| u64::from(r.info.health != Some(false) && r.info.admin != Admin::Maint),
        ),
        ("alwayson_backend_weight", "gauge", "Configured weight (0 = drain).", |r| u64::from(r.weight)),
        (
            "alwayson_backend_health_transitions_total",
            "counter",
            "UP/DOWN transitions seen by health checks.",
            |r| r.info.transitions,
        ),
    ];
    for (name, kind, help, pick) in per_backend {
        out.family(name, kind, help);
        for r in &rows {
            out.sample(name, &[("vip", r.vip), ("backend", r.name)], pick(r));
        }
    }

    let name = "alwayson_health_check_duration_seconds";
    out.family(name, "histogram", "Time one health check took.");
    let checks = timings.health_checks.lock().unwrap_or_else(|e| e.into_inner());
    let mut keys: Vec<_> = checks.keys().collect();
    keys.sort();
    for key in keys {
        out.histogram(name, &[("vip", &key.0), ("backend", &key.1)], &checks[key]);
    }
    drop(checks);

    let name = "alwayson_health_checks_not_run_total";
    out.family(
        name,
        "counter",
        "Health checks this host could not run (reason: the errno, e.g. emfile); not held against the backend.",
    );
    let not_run = timings.checks_not_run.lock().unwrap_or_else(|e| e.into_inner());
    let mut keys: Vec<_> = not_run.keys().collect();
    keys.sort();
    for key in keys {
        out.sample(name, &[("vip", &key.0), ("backend", &key.1), ("reason", key.2)], not_run[key]);
    }
    drop(not_run);

    let c = &snapshot.counters;
    type Named = (&'static str, u64);
    let verdicts: Vec<Named> = Verdict::ALL.iter().map(|v| (v.name(), c.verdict(*v))).collect();
    let drops: Vec<Named> = DropReason::ALL.iter().map(|r| (r.name(), c.drop(*r))).collect();
    let events: Vec<Named> = Event::ALL.iter().map(|e| (e.name(), c.event(*e))).collect();
    let globals: [(&str, &str, &str, &[Named]); 3] = [
        ("alwayson_verdicts_total", "verdict", "Packets by XDP verdict.", &verdicts),
        ("alwayson_drops_total", "reason", "Dropped packets by reason.", &drops),
        ("alwayson_events_total", "event", "Counted events that are not drops.", &events),
    ];
    for (name, label, help, values) in globals {
        out.family(name, "counter", help);
        for (k, v) in values {
            out.sample(name, &[(label, k)], v);
        }
    }

    let name = "alwayson_reconcile_duration_seconds";
    out.family(name, "histogram", "Time to compute and write one change of the desired state.");
    out.histogram(name, &[], &timings.reconcile.lock().unwrap_or_else(|e| e.into_inner()));

    out.family(
        "alwayson_conn_table_entries",
        "gauge",
        "Flows in the connection table (counted every 10 s, less often when counting takes over 1% of that).",
    );
    out.sample("alwayson_conn_table_entries", &[], snapshot.conn_table.entries);
    out.family(
        "alwayson_conn_table_capacity",
        "gauge",
        "Connection-table size (LRU: the idlest flows go first).",
    );
    out.sample("alwayson_conn_table_capacity", &[], snapshot.conn_table.capacity);
    out.family(
        "alwayson_nat_table_entries",
        "gauge",
        "NAT mappings (one per NATed flow; counted as the connection table is).",
    );
    out.sample("alwayson_nat_table_entries", &[], snapshot.nat_table.entries);
    out.family(
        "alwayson_nat_table_capacity",
        "gauge",
        "NAT table size: a full table drops new NAT flows (nat_table_full).",
    );
    out.sample("alwayson_nat_table_capacity", &[], snapshot.nat_table.capacity);

    if snapshot.bgp.enabled {
        let name = "alwayson_bgp_route_announced";
        out.family(
            name,
            "gauge",
            "1 while BIRD announces the VIP address (a backend is in its ring), else 0.",
        );
        for r in &snapshot.bgp.routes {
            let announced = u8::from(r.state == "announced");
            out.sample(name, &[("address", &r.address.to_string())], announced);
        }
        let name = "alwayson_bgp_session_established";
        out.family(name, "gauge", "1 while the BGP session with the neighbour is established, else 0.");
        for s in &snapshot.bgp.sessions {
            out.sample(name, &[("neighbor", &s.neighbor.to_string())], u8::from(s.established));
        }
    }

    if snapshot.cluster.enabled {
        let c = &snapshot.cluster;
        let gauges: [(&str, &str, usize); 4] = [
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
        for (name, help, value) in gauges {
            out.family(name, "gauge", help);
            out.sample(name, &[], value);
        }
        let name = "alwayson_cluster_health_source";
        out.family(
            name,
            "gauge",
            "1 for where the rings' health comes from: starting, quorum, last_quorum, local_only.",
        );
        for source in Source::ALL {
            out.sample(name, &[("source", source.name())], u8::from(c.source == Some(source)));
        }
    }

    let listeners = timings.listeners.lock().unwrap_or_else(|e| e.into_inner());
    type Count = fn(&ConnCounts) -> &AtomicU64;
    let per_listener: [(&str, &str, &str, Count); 3] = [
        ("alwayson_listener_connections", "gauge", "Connections a listener is serving.", |c| &c.open),
        (
            "alwayson_listener_refused_total",
            "counter",
            "Connections closed at once because the listener's max_connections were being served.",
            |c| &c.refused,
        ),
        (
            "alwayson_listener_timeouts_total",
            "counter",
            "Connections ended by the header-read or idle timeout.",
            |c| &c.timed_out,
        ),
    ];
    for (name, kind, help, pick) in per_listener {
        out.family(name, kind, help);
        for (listener, counts) in listeners.iter() {
            out.sample(name, &[("listener", listener)], pick(counts).load(Ordering::Relaxed));
        }
    }
    drop(listeners);
    out.0
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{
        config::Config,
        stats::{Topology, VipInfo},
    };

    #[test]
    fn renders_families_with_labels_escaped() {
        let config = Config::from_toml(
            "[global]\ninterface = \"lo\"\n[[vip]]\nname = \"we\\\"b\"\naddress = \"10.77.100.1\"\nport = 80\n\
             [[vip.backend]]\nname = \"b1\"\naddress = \"10.77.1.10\"\nweight = 2\n",
        )
        .unwrap();
        let vip = Arc::clone(&config.vips[0]);
        let info = BackendInfo {
            slot: 0,
            admin: Admin::Ready,
            health: Some(true),
            reason: "ok".into(),
            transitions: 0,
            in_ring: true,
        };
        let topology = Topology {
            vips: vec![VipInfo { key: vip.key(), vip, index: 0, backends: vec![info] }],
            ..Default::default()
        };
        let mut snapshot = Snapshot {
            topology: Arc::new(topology),
            traffic: vec![(
                Traffic { packets: 7, ..Default::default() },
                vec![Traffic { bytes: 1500, ..Default::default() }],
            )],
            ..Default::default()
        };
        snapshot.counters.drops[lb_common::DropReason::NoBackend as usize] = 3;
        let timings = Timings::default();
        timings.reconciled(std::time::Duration::from_millis(3));
        timings.check_not_run("we\"b", "b1", "emfile");
        timings.check_not_run("we\"b", "b1", "emfile");
        let text = render(&snapshot, &timings);
        assert!(
            text.contains(
                "# TYPE alwayson_vip_packets_total counter\nalwayson_vip_packets_total{vip=\"we\\\"b\"} 7\n"
            ),
            "{text}"
        );
        assert!(text.contains("alwayson_backend_bytes_total{vip=\"we\\\"b\",backend=\"b1\"} 1500\n"));
        assert!(text.contains("alwayson_backend_up{vip=\"we\\\"b\",backend=\"b1\"} 1\n"));
        assert!(text.contains("alwayson_backend_weight{vip=\"we\\\"b\",backend=\"b1\"} 2\n"));
        assert!(text.contains("alwayson_drops_total{reason=\"no_backend\"} 3\n"));
        assert!(text.contains("alwayson_reconcile_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("alwayson_reconcile_duration_seconds_count 1\n"));
        assert!(
            text.contains(
                "alwayson_health_checks_not_run_total{vip=\"we\\\"b\",backend=\"b1\",reason=\"emfile\"} 2\n"
            ),
            "{text}"
        );
        // Every sample line belongs to a declared family.
        let declared: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let base = name.trim_end_matches("_bucket").trim_end_matches("_sum").trim_end_matches("_count");
            assert!(declared.contains(&name) || declared.contains(&base), "undeclared sample {line}");
        }
    }
}
