//! The real agent on the namespace test bed: real sockets through the VIP get
//! spread over the backends by weight, for TCP, UDP and IPv6, and the host's
//! own traffic is untouched.

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{vip4, TestBed, VIP4},
    require_root,
};

const TIMEOUT: Duration = Duration::from_secs(3);
const FLOWS: usize = 3000;

/// Checks each backend's share is within ±15% of its weight's share.
fn assert_shares(counts: &BTreeMap<String, usize>, weights: &[(String, u32)], what: &str) {
    let total: usize = counts.values().sum();
    let weight_sum: u32 = weights.iter().map(|(_, w)| w).sum();
    for (name, weight) in weights {
        let want = total as f64 * f64::from(*weight) / f64::from(weight_sum);
        let got = *counts.get(name).unwrap_or(&0) as f64;
        assert!(
            (got - want).abs() <= 0.15 * want,
            "{what}: {name} got {got} of {total}, want {want:.0} ± 15% ({counts:?})"
        );
    }
    let unknown: Vec<_> = counts.keys().filter(|n| !weights.iter().any(|(w, _)| w == *n)).collect();
    assert!(unknown.is_empty(), "{what}: answers from {unknown:?}");
}

fn tcp_spread(bed: &TestBed, vip: SocketAddr) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..FLOWS {
        let name =
            bed.tcp_name(0, vip, TIMEOUT).unwrap_or_else(|e| panic!("TCP connection {i} to {vip}: {e}"));
        *counts.entry(name).or_default() += 1;
    }
    counts
}

fn udp_spread(bed: &TestBed, vip: SocketAddr) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for i in 0..FLOWS {
        let name = bed.udp_name(0, vip, TIMEOUT).unwrap_or_else(|e| panic!("UDP flow {i} to {vip}: {e}"));
        *counts.entry(name).or_default() += 1;
    }
    counts
}

#[test]
#[ignore = "needs root"]
fn tcp_connections_spread_by_weight_1_1_1_and_1_2_1() {
    require_root("tcp_connections_spread_by_weight_1_1_1_and_1_2_1");
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let vip = vip4(80);
    let equal = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..3)]);
    let mut agent = Agent::start(&bed, &equal, &[]).expect("agent");
    let names: Vec<String> = (0..3).map(|i| bed.backend_name(i)).collect();
    let counts = tcp_spread(&bed, vip);
    assert_shares(&counts, &names.iter().map(|n| (n.clone(), 1)).collect::<Vec<_>>(), "1:1:1");

    let weighted = config_toml(
        &bed,
        &[VipConf::new(VIP4, 80, "tcp").backend(0, 1, false).backend(1, 2, false).backend(2, 1, false)],
    );
    agent.reload(&weighted).expect("reload");
    let counts = tcp_spread(&bed, vip);
    let weights = vec![(names[0].clone(), 1), (names[1].clone(), 2), (names[2].clone(), 1)];
    assert_shares(&counts, &weights, "1:2:1");

    // The kernel counted every connection as one new flow on the VIP.
    let stats = agent.stats().unwrap();
    let key = lb_common::VipKey::new(vip.ip(), 80, lb_common::types::PROTO_TCP);
    let index = stats.vip(&key).unwrap().expect("VIP in the map").index;
    assert_eq!(stats.vip_stats(index).unwrap().new_flows, 2 * FLOWS as u64);
    agent.stop().unwrap();
}

#[test]
#[ignore = "needs root"]
fn udp_flows_and_an_ipv6_vip_spread_evenly() {
    require_root("udp_flows_and_an_ipv6_vip_spread_evenly");
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let config = config_toml(
        &bed,
        &[
            VipConf::new(VIP4, 53, "udp").backends(0..3),
            VipConf::new("fd77::100", 80, "tcp").backends(0..3),
            VipConf::new("fd77::100", 53, "udp").backends(0..3),
        ],
    );
    let agent = Agent::start(&bed, &config, &[]).expect("agent");
    let weights: Vec<(String, u32)> = (0..3).map(|i| (bed.backend_name(i), 1)).collect();
    assert_shares(&udp_spread(&bed, vip4(53)), &weights, "UDP over IPv4");
    assert_shares(&tcp_spread(&bed, "[fd77::100]:80".parse().unwrap()), &weights, "TCP over IPv6");
    assert_shares(&udp_spread(&bed, "[fd77::100]:53".parse().unwrap()), &weights, "UDP over IPv6");
    let counters = agent.stats().unwrap().counters().unwrap();
    assert_eq!(counters.drops.iter().sum::<u64>(), 0, "drops: {counters}");
}

#[test]
#[ignore = "needs root"]
fn the_hosts_own_traffic_still_works_while_attached() {
    require_root("the_hosts_own_traffic_still_works_while_attached");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..2)]);
    let agent = Agent::start(&bed, &config, &[]).expect("agent");
    let _server = bed
        .spawn_testsrv(
            bed.lb_ns(),
            "lb-host",
            &["--tcp", "0.0.0.0:22", "--tcp", "[::]:22", "--udp", "0.0.0.0:5353"],
        )
        .expect("server on the LB host");
    for addr in [SocketAddr::new(bed.lb_v4(), 22), SocketAddr::new(bed.lb_v6(), 22)] {
        for _ in 0..20 {
            assert_eq!(bed.tcp_name(0, addr, TIMEOUT).expect("TCP to the LB itself"), "lb-host");
        }
    }
    assert_eq!(bed.udp_name(0, SocketAddr::new(bed.lb_v4(), 5353), TIMEOUT).expect("UDP"), "lb-host");
    // The host's own traffic went through the XDP program: passed, none dropped.
    let counters = agent.stats().unwrap().counters().unwrap();
    assert!(counters.verdict(lb_common::Verdict::Pass) > 0, "{counters}");
    assert_eq!(counters.drops.iter().sum::<u64>(), 0, "{counters}");
}
