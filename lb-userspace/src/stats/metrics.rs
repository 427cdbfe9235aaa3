//! Prometheus text exposition (format 0.0.4) of the stats and timings.
//! Names follow Prometheus conventions: `alwayson_` prefix, `_total` counters,
//! `_seconds` durations, labels `vip`, `backend`, `reason`, `verdict`, `event`.

use std::fmt::Write as _;

use super::{Histogram, Stats, Timings};

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

pub fn render(stats: &Stats, timings: &Timings) -> String {
    let mut out = Out(String::with_capacity(4096));
    type Pick = fn(&super::Traffic) -> u64;
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
        for vip in &stats.vips {
            out.sample(&name, &[("vip", &vip.name)], pick(&vip.traffic));
        }
        let name = format!("alwayson_backend_{suffix}");
        out.family(&name, "counter", &format!("{help}, per backend."));
        for vip in &stats.vips {
            for b in &vip.backends {
                out.sample(&name, &[("vip", &vip.name), ("backend", &b.name)], pick(&b.traffic));
            }
        }
    }
    type Gauge = (&'static str, &'static str, &'static str, fn(&super::BackendStats) -> u64);
    let per_backend: [Gauge; 3] = [
        (
            "alwayson_backend_up",
            "gauge",
            "1 if the backend is healthy (or unchecked) and not in maintenance.",
            |b| u64::from(b.health != "down" && b.admin != super::Admin::Maint),
        ),
        ("alwayson_backend_weight", "gauge", "Configured weight (0 = drain).", |b| u64::from(b.weight)),
        (
            "alwayson_backend_health_transitions_total",
            "counter",
            "UP/DOWN transitions seen by health checks.",
            |b| b.transitions,
        ),
    ];
    for (name, kind, help, pick) in per_backend {
        out.family(name, kind, help);
        for vip in &stats.vips {
            for b in &vip.backends {
                out.sample(name, &[("vip", &vip.name), ("backend", &b.name)], pick(b));
            }
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

    let globals: [(&str, &str, &str, &std::collections::BTreeMap<String, u64>); 3] = [
        ("alwayson_verdicts_total", "verdict", "Packets by XDP verdict.", &stats.verdicts),
        ("alwayson_drops_total", "reason", "Dropped packets by reason.", &stats.drops),
        ("alwayson_events_total", "event", "Counted events that are not drops.", &stats.events),
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

    out.family("alwayson_conn_table_entries", "gauge", "Flows in the connection table (counted every 10 s).");
    out.sample("alwayson_conn_table_entries", &[], stats.conn_table.entries);
    out.family(
        "alwayson_conn_table_capacity",
        "gauge",
        "Connection-table size (LRU: the idlest flows go first).",
    );
    out.sample("alwayson_conn_table_capacity", &[], stats.conn_table.capacity);
    out.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{BackendStats, Traffic, VipStats};

    #[test]
    fn renders_families_with_labels_escaped() {
        let stats = Stats {
            drops: [("no_backend".to_string(), 3)].into(),
            vips: vec![VipStats {
                name: "we\"b".into(),
                address: "10.77.100.1".parse().unwrap(),
                port: 80,
                protocol: "tcp".into(),
                mode: "dsr".into(),
                traffic: Traffic { packets: 7, ..Default::default() },
                backends: vec![BackendStats {
                    name: "b1".into(),
                    address: "10.77.1.10".parse().unwrap(),
                    port: 80,
                    weight: 2,
                    backup: false,
                    admin: crate::stats::Admin::Ready,
                    health: "up".into(),
                    state: "up".into(),
                    in_ring: true,
                    reason: String::new(),
                    transitions: 0,
                    traffic: Traffic { bytes: 1500, ..Default::default() },
                }],
            }],
            ..Default::default()
        };
        let timings = Timings::default();
        timings.reconciled(std::time::Duration::from_millis(3));
        let text = render(&stats, &timings);
        assert!(text.contains(
            "# TYPE alwayson_vip_packets_total counter\nalwayson_vip_packets_total{vip=\"we\\\"b\"} 7\n"
        ));
        assert!(text.contains("alwayson_backend_bytes_total{vip=\"we\\\"b\",backend=\"b1\"} 1500\n"));
        assert!(text.contains("alwayson_backend_up{vip=\"we\\\"b\",backend=\"b1\"} 1\n"));
        assert!(text.contains("alwayson_backend_weight{vip=\"we\\\"b\",backend=\"b1\"} 2\n"));
        assert!(text.contains("alwayson_drops_total{reason=\"no_backend\"} 3\n"));
        assert!(text.contains("alwayson_reconcile_duration_seconds_bucket{le=\"0.005\"} 1\n"));
        assert!(text.contains("alwayson_reconcile_duration_seconds_count 1\n"));
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
