use std::{collections::BTreeMap, time::Duration};

use super::*;
use crate::{
    config::Config,
    stats::{Topology, VipInfo},
};

/// A sample's name and its labels, unescaped and sorted (their order means nothing).
type Key = (String, Vec<(String, String)>);

/// Reads an exposition as OpenMetrics 1.0 lays it out, failing on anything
/// else: every sample is in the family declared last before it, with a suffix
/// its type allows; label values are quoted and escaped; `# EOF` ends it.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let body = text.strip_suffix("# EOF\n").unwrap_or_else(|| panic!("no final # EOF:\n{text}"));
    let mut family: Option<(String, String)> = None;
    let mut declared = Vec::new();
    let mut samples = BTreeMap::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut words = rest.splitn(3, ' ');
            let (what, name, tail) =
                (words.next().unwrap(), words.next().unwrap(), words.next().unwrap_or(""));
            match what {
                "HELP" => {}
                "UNIT" => assert!(name.ends_with(&format!("_{tail}")), "{line}"),
                "TYPE" => {
                    assert!(!declared.contains(&name.to_owned()), "family {name} declared twice");
                    declared.push(name.to_owned());
                    family = Some((name.to_owned(), tail.to_owned()));
                }
                _ => panic!("unknown line {line}"),
            }
            continue;
        }
        let (name, kind) = family.as_ref().unwrap_or_else(|| panic!("sample before any family: {line}"));
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("no value: {line}"));
        let (sample, mut labels) = match series.split_once('{') {
            Some((sample, labels)) => (sample, labels_of(labels.strip_suffix('}').expect("closing brace"))),
            None => (series, Vec::new()),
        };
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "gauge" => &[""],
            "histogram" => &["_bucket", "_sum", "_count"],
            other => panic!("type {other}"),
        };
        assert!(
            suffixes.iter().any(|s| sample == format!("{name}{s}")),
            "{line} is not of family {name} ({kind})"
        );
        labels.sort();
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(samples.insert((sample.to_owned(), labels), value).is_none(), "{line} twice");
    }
    samples
}

/// `k="v",…` with `\\`, `\"` and `\n` escapes.
fn labels_of(mut text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    while !text.is_empty() {
        let (key, rest) = text.split_once("=\"").expect("key=\"");
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next().expect("unterminated value") {
                (i, '"') => break i,
                (_, '\\') => value.push(match chars.next().expect("escape").1 {
                    'n' => '\n',
                    c @ ('\\' | '"') => c,
                    c => panic!("unknown escape \\{c}"),
                }),
                (_, c) => value.push(c),
            }
        };
        labels.push((key.to_owned(), value));
        text = rest[end + 1..].strip_prefix(',').unwrap_or(&rest[end + 1..]);
    }
    labels
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let mut labels: Vec<_> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    labels.sort();
    (name.to_owned(), labels)
}

/// A VIP and a backend whose names need escaping, with traffic, checks and drops.
fn scrape() -> (String, String, String) {
    let vip_name = "we\"b\\1";
    let backend_name = "b\\\"2";
    let toml = format!(
        "[global]\ninterface = \"lo\"\n[[vip]]\nname = {vip_name:?}\naddress = \"10.77.100.1\"\nport = 80\n\
         [[vip.backend]]\nname = {backend_name:?}\naddress = \"10.77.1.10\"\nweight = 2\n"
    );
    let config = Config::from_toml(&toml).unwrap();
    let vip = Arc::clone(&config.vips[0]);
    let info = BackendInfo {
        slot: 0,
        admin: Admin::Ready,
        health: Some(true),
        reason: "ok".into(),
        transitions: 4,
        in_ring: true,
    };
    let topology = Topology {
        vips: vec![VipInfo { key: vip.key(), vip, index: 0, backends: vec![info] }],
        conn_table_capacity: 1024,
        ..Default::default()
    };
    let mut snapshot = Snapshot {
        topology: Arc::new(topology),
        traffic: vec![(
            Traffic { packets: 7, new_flows: 3, ..Default::default() },
            vec![Traffic { bytes: 1500, ..Default::default() }],
        )],
        ..Default::default()
    };
    snapshot.counters.drops[DropReason::NoBackend as usize] = 3;
    snapshot.conn_table.capacity = 1024;
    let timings = Timings::default();
    for ms in [3, 3, 70] {
        timings.reconciled(Duration::from_millis(ms));
    }
    for ms in [0.2, 9000.0] {
        timings.health_check(vip_name, backend_name, Duration::from_secs_f64(ms / 1000.0));
    }
    timings.check_not_run(vip_name, backend_name, "emfile");
    timings.check_not_run(vip_name, backend_name, "emfile");
    timings.listener("web").refused.store(5, Ordering::Relaxed);
    let text = render(Arc::new(snapshot), Arc::new(timings)).unwrap();
    (text, vip_name.into(), backend_name.into())
}

#[test]
fn the_exposition_parses_and_carries_the_snapshot_and_timings() {
    let (text, vip, backend) = scrape();
    let m = parse(&text);
    let at = |name: &str, labels: &[(&str, &str)]| {
        *m.get(&key(name, labels)).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"))
    };
    let both = [("vip", vip.as_str()), ("backend", backend.as_str())];
    assert_eq!(at("alwayson_vip_packets_total", &[("vip", &vip)]), 7.0);
    assert_eq!(at("alwayson_vip_new_flows_total", &[("vip", &vip)]), 3.0);
    assert_eq!(at("alwayson_backend_bytes_total", &both), 1500.0);
    assert_eq!(at("alwayson_backend_up", &both), 1.0);
    assert_eq!(at("alwayson_backend_weight", &both), 2.0);
    assert_eq!(at("alwayson_backend_health_transitions_total", &both), 4.0);
    assert_eq!(at("alwayson_drops_total", &[("reason", "no_backend")]), 3.0);
    assert_eq!(at("alwayson_drops_total", &[("reason", "fragment")]), 0.0);
    assert_eq!(at("alwayson_conn_table_capacity", &[]), 1024.0);
    let not_run = [("vip", vip.as_str()), ("backend", backend.as_str()), ("reason", "emfile")];
    assert_eq!(at("alwayson_health_checks_not_run_total", &not_run), 2.0);
    assert_eq!(at("alwayson_listener_refused_total", &[("listener", "web")]), 5.0);

    // Buckets are cumulative, `+Inf` counts everything.
    let reconcile = "alwayson_reconcile_duration_seconds";
    assert_eq!(at(&format!("{reconcile}_bucket"), &[("le", "0.0025")]), 0.0);
    assert_eq!(at(&format!("{reconcile}_bucket"), &[("le", "0.005")]), 2.0);
    assert_eq!(at(&format!("{reconcile}_bucket"), &[("le", "0.05")]), 2.0);
    assert_eq!(at(&format!("{reconcile}_bucket"), &[("le", "0.1")]), 3.0);
    assert_eq!(at(&format!("{reconcile}_bucket"), &[("le", "+Inf")]), 3.0);
    assert_eq!(at(&format!("{reconcile}_count"), &[]), 3.0);
    assert!((at(&format!("{reconcile}_sum"), &[]) - 0.076).abs() < 1e-9);
    let checks = "alwayson_health_check_duration_seconds";
    let le = |bound: &'static str| [both[0], both[1], ("le", bound)];
    assert_eq!(at(&format!("{checks}_bucket"), &le("0.0005")), 1.0);
    assert_eq!(at(&format!("{checks}_bucket"), &le("2.5")), 1.0);
    assert_eq!(at(&format!("{checks}_bucket"), &le("+Inf")), 2.0);
    assert_eq!(at(&format!("{checks}_count"), &both), 2.0);
}

#[test]
fn label_values_are_escaped_and_families_typed() {
    let (text, ..) = scrape();
    // As written on the wire: backslash and quote escaped.
    assert!(text.contains("alwayson_vip_packets_total{vip=\"we\\\"b\\\\1\"} 7\n"), "{text}");
    assert!(text.contains("{vip=\"we\\\"b\\\\1\",backend=\"b\\\\\\\"2\"}"), "{text}");
    assert!(text.contains("# TYPE alwayson_vip_packets counter\n"), "{text}");
    assert!(text.contains("# TYPE alwayson_reconcile_duration_seconds histogram\n"), "{text}");
    assert!(text.contains("# UNIT alwayson_reconcile_duration_seconds seconds\n"), "{text}");
    assert!(text.ends_with("\n# EOF\n"));
}

#[test]
fn the_parser_refuses_what_openmetrics_does_not_allow() {
    let bad = [
        "# TYPE a counter\na 1\n# EOF\n",
        "# TYPE a gauge\na 1\n",
        "# TYPE a gauge\nb 1\n# EOF\n",
        "# TYPE a gauge\na{x=\"\\q\"} 1\n# EOF\n",
        "# TYPE a gauge\n# TYPE a gauge\n# EOF\n",
    ];
    for text in bad {
        assert!(std::panic::catch_unwind(|| parse(text)).is_err(), "accepted {text:?}");
    }
    let good = parse("# TYPE a gauge\na{x=\"q\\\"\\\\\"} 1\n# EOF\n");
    assert_eq!(good[&key("a", &[("x", "q\"\\")])], 1.0);
}
