//! One agent serving a VIP of each forwarding mode at once, on the namespace
//! bed: DSR (backends on the link, VIP on `lo`), tunnel (the same backends
//! strip IPIP with `alwayson decap`) and NAT (to the backends' own addresses;
//! the NAT VIP is on no backend). TCP and UDP through each, spread over every
//! backend; each mode's counters show it was that mode that carried them.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml_with, Agent, Tables, VipConf},
    bed::{TestBed, UDP_PORT},
    decap::DecapAll,
    require_root,
};
use lb_common::{Event, Verdict};

const DSR_VIP: &str = "10.77.100.1";
const TUNNEL_VIP: &str = "10.77.100.2";
/// On no backend: NAT sends to their own addresses.
const NAT_VIP: &str = "10.77.100.3";
/// Outer sources: inside the test ranges, no address of the bed.
const TUNNEL_SOURCE: &str = "10.77.108.0/24";
const CONNECTIONS: usize = 300;
const DATAGRAMS: usize = 60;
const TIMEOUT: Duration = Duration::from_secs(3);

fn spread(names: &[String]) -> BTreeMap<&str, usize> {
    let mut by = BTreeMap::new();
    for n in names {
        *by.entry(n.as_str()).or_default() += 1;
    }
    by
}

#[test]
#[ignore = "needs root"]
fn one_agent_serves_a_dsr_a_tunnel_and_a_nat_vip_at_once() {
    require_root("one_agent_serves_a_dsr_a_tunnel_and_a_nat_vip_at_once");
    let bed = TestBed::builder().clients(1).backends(3).vip(DSR_VIP).vip(TUNNEL_VIP).build().expect("bed");
    // The NAT VIP is routed to the LB like the others, and held by no backend.
    let lb = bed.lb_v4().to_string();
    bed.client_ns(0)
        .ip(&["route", "add", &format!("{NAT_VIP}/32"), "via", &lb, "dev", "eth0"])
        .expect("route");
    let decap = DecapAll::attach(&bed).expect("decap on the backends");

    let mode = |m: &str| format!("mode = \"{m}\"");
    let vips: Vec<VipConf> = [(DSR_VIP, "dsr"), (TUNNEL_VIP, "tunnel"), (NAT_VIP, "nat")]
        .into_iter()
        .flat_map(|(address, m)| {
            [
                VipConf::new(address, 80, "tcp").backends(0..3).keys(&mode(m)),
                VipConf::new(address, UDP_PORT, "udp").backends(0..3).keys(&mode(m)),
            ]
        })
        .collect();
    let global = format!("tunnel_source_v4 = \"{TUNNEL_SOURCE}\"\nnat_address = [\"{lb}\"]");
    let config = config_toml_with(&bed, &vips, Tables { global: &global, ..Default::default() });
    let agent = Agent::start(&bed, &config, &[]).expect("agent");

    for address in [DSR_VIP, TUNNEL_VIP, NAT_VIP] {
        let ip: IpAddr = address.parse().unwrap();
        let tcp: Vec<String> = (0..CONNECTIONS)
            .map(|k| {
                bed.tcp_name(0, SocketAddr::new(ip, 80), TIMEOUT)
                    .unwrap_or_else(|e| panic!("TCP connection {k} to {address}: {e}\n{}", agent.log()))
            })
            .collect();
        let by = spread(&tcp);
        println!("{address} tcp: {by:?}");
        assert_eq!(by.len(), 3, "every backend answers TCP on {address}: {by:?}");
        assert!(by.values().all(|&n| n >= CONNECTIONS / 6), "{address}: {by:?}");
        let udp: Vec<String> = (0..DATAGRAMS)
            .map(|k| {
                bed.udp_name(0, SocketAddr::new(ip, UDP_PORT), TIMEOUT)
                    .unwrap_or_else(|e| panic!("UDP datagram {k} to {address}: {e}\n{}", agent.log()))
            })
            .collect();
        let by = spread(&udp);
        println!("{address} udp: {by:?}");
        assert_eq!(by.len(), 3, "every backend answers UDP on {address}: {by:?}");
    }

    let counters = agent.stats().unwrap().counters().unwrap();
    println!("balancer: {counters}");
    assert_eq!(counters.drops.iter().sum::<u64>(), 0, "nothing dropped: {counters}");
    // NAT: a mapping per TCP connection (each from a port of its own) and
    // some for the datagrams (whose sockets may reuse a port, and so a mapping).
    let mapped = counters.event(Event::NatMapped);
    assert!(mapped > CONNECTIONS as u64, "NAT mapped {mapped}: {counters}");
    // Tunnel: every backend stripped its share.
    let stripped: Vec<u64> = (0..3).map(|i| decap.decapsulated(i).expect("decap stats")).collect();
    println!("decapsulated per backend: {stripped:?}");
    assert!(stripped.iter().all(|&n| n >= (CONNECTIONS / 6) as u64), "{stripped:?}");
    // DSR, tunnel and the NAT's client side all leave by XDP_TX.
    assert!(counters.verdict(Verdict::Tx) > stripped.iter().sum::<u64>(), "{counters}");
}
