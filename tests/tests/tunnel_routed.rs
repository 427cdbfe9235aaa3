//! Tunnel VIPs end to end: backends behind a router (not on the balancer's
//! segment) strip the tunnel with `alwayson decap`; TCP and UDP over IPv4
//! and IPv6 reach them through the real agent, spread evenly, full-size
//! segments included; the balancer drops nothing and the backends
//! decapsulate every packet it sent.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::Agent,
    require_root,
    routed::{RoutedBed, VIP4, VIP6},
};
use lb_common::Verdict;

const TIMEOUT: Duration = Duration::from_secs(3);
const FLOWS: usize = 3000;
const BACKENDS: usize = 3;
/// Echoed through each TCP VIP: many full-size segments, which only fit the
/// path because it has room for the outer header.
const BULK: usize = 1 << 20;

fn assert_even(counts: &BTreeMap<String, usize>, bed: &RoutedBed, what: &str) {
    let total: usize = counts.values().sum();
    let want = total as f64 / BACKENDS as f64;
    for i in 0..BACKENDS {
        let name = bed.bed().backend_name(i);
        let got = *counts.get(&name).unwrap_or(&0) as f64;
        assert!(
            (got - want).abs() <= 0.15 * want,
            "{what}: {name} got {got} of {total}, want {want:.0} ± 15% ({counts:?})"
        );
    }
    assert_eq!(counts.len(), BACKENDS, "{what}: answers from {counts:?}");
}

fn spread(bed: &RoutedBed, vip: SocketAddr, tcp: bool) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..FLOWS {
        let name =
            if tcp { bed.bed().tcp_name(0, vip, TIMEOUT) } else { bed.bed().udp_name(0, vip, TIMEOUT) };
        let name = name.unwrap_or_else(|e| panic!("flow {i} to {vip}: {e}"));
        *counts.entry(name).or_default() += 1;
    }
    counts
}

/// `name value` lines of `alwayson decap --stats`.
fn decap_stats(bed: &RoutedBed, i: usize) -> BTreeMap<String, u64> {
    let out = bed.decap(i, &["--stats"]).expect("alwayson decap --stats");
    assert!(out.status.success(), "decap --stats on backend {i}: {}", out.stderr);
    out.stdout
        .lines()
        .map(|l| {
            let (name, n) = l.split_once(' ').unwrap_or_else(|| panic!("{l:?}"));
            (name.to_string(), n.parse().unwrap_or_else(|_| panic!("{l:?}")))
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn tunnel_vips_reach_routed_backends_through_decap_over_tcp_and_udp_v4_and_v6() {
    require_root("tunnel_vips_reach_routed_backends_through_decap_over_tcp_and_udp_v4_and_v6");
    let bed = RoutedBed::build(1, BACKENDS).expect("routed bed");
    for i in 0..BACKENDS {
        let out = bed.decap(i, &[]).expect("alwayson decap");
        assert!(out.status.success(), "decap on backend {i}: {}{}", out.stdout, out.stderr);
        let link = bed.bed().backend_ns(i).ip(&["link", "show", "eth0"]).unwrap();
        assert!(link.contains("prog/xdp") && link.contains("name decap"), "backend {i}: {link}");
        // Again: it says it runs, and changes nothing.
        let again = bed.decap(i, &[]).unwrap();
        assert!(again.status.success() && again.stdout.contains("already runs"), "{}", again.stdout);
    }

    let vips = [(VIP4, 80, "tcp"), (VIP4, 53, "udp"), (VIP6, 80, "tcp"), (VIP6, 53, "udp")];
    let config = bed.config(&vips);
    let mut agent = Agent::start(bed.bed(), &config, &[]).expect("agent");
    let router_before = bed.router_ns().ip(&["-s", "link", "show", "eth1"]).unwrap();

    for (address, port, protocol) in vips {
        let vip = SocketAddr::new(address.parse().unwrap(), port);
        let counts = spread(&bed, vip, protocol == "tcp");
        assert_even(&counts, &bed, &format!("{protocol} to {vip}"));
    }
    for address in [VIP4, VIP6] {
        bed.bulk_echo(SocketAddr::new(address.parse().unwrap(), 80), BULK, Duration::from_secs(10));
    }
    // The last packets (a closing FIN, a late ACK) may still be on their way
    // when the balancer's counters are read: compare until they have arrived.
    let settled = Instant::now();
    let (counters, sent, decapsulated) = loop {
        let counters = agent.stats().unwrap().counters().unwrap();
        let sent = counters.verdict(Verdict::Tx) + counters.verdict(Verdict::Redirect);
        let mut decapsulated = 0;
        for i in 0..BACKENDS {
            let stats = decap_stats(&bed, i);
            assert_eq!(stats.get("malformed"), Some(&0), "backend {i}: {stats:?}");
            let n = stats["decapsulated"];
            assert!(n >= (4 * FLOWS / BACKENDS) as u64 * 8 / 10, "backend {i} decapsulated {n}: {stats:?}");
            decapsulated += n;
        }
        if decapsulated == sent || settled.elapsed() > Duration::from_secs(3) {
            break (counters, sent, decapsulated);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(counters.drops.iter().sum::<u64>(), 0, "the balancer dropped nothing: {counters}");
    assert!(sent >= 4 * FLOWS as u64, "{counters}");
    assert_eq!(decapsulated, sent, "every packet the balancer tunnelled was stripped by a backend");
    eprintln!("balancer: {counters}; the backends decapsulated {decapsulated}");
    let router_after = bed.router_ns().ip(&["-s", "link", "show", "eth1"]).unwrap();
    assert_ne!(router_before, router_after, "the router carried the tunnels");
    agent.stop().expect("agent stop");

    // Detached: the program and its pins are gone.
    let out = bed.decap(0, &["--detach"]).unwrap();
    assert!(out.status.success(), "{}", out.stderr);
    let link = bed.bed().backend_ns(0).ip(&["link", "show", "eth0"]).unwrap();
    assert!(!link.contains("prog/xdp"), "detached: {link}");
    assert!(!bed.decap_dir(0).exists());
}
