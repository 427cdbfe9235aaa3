//! Path MTU discovery through the tunnel, end to end on the routed bed: the
//! balancer's own interface is lowered to the clients' MTU (1500), so a
//! client's full-size packet no longer fits once encapsulated. The balancer
//! answers with ICMP fragmentation-needed / packet-too-big, the client's
//! kernel lowers its path MTU to the VIP, and a 1 MB upload echoed by a
//! backend still completes, over IPv4 and IPv6. Then the 1320 rule: with the
//! interface at 1300, a reload of the same config (an IPv6 tunnel VIP) is
//! refused, naming the VIP and the MTU, and the running config stays.

use std::{net::SocketAddr, time::Duration};

use alwayson_tests::{
    agent::{Agent, REFUSED},
    require_root,
    routed::{RoutedBed, VIP4, VIP6},
};
use lb_common::{DropReason, Event};

const BACKENDS: usize = 2;
const BULK: usize = 1 << 20;
/// The balancer's egress: the clients' MTU, no room for an outer header.
const LB_MTU: &str = "1500";

/// What the client's kernel holds for the route to `vip` (its path MTU among it).
fn client_route(bed: &RoutedBed, vip: &str) -> String {
    let family = if vip.contains(':') { "-6" } else { "-4" };
    bed.bed().client_ns(0).ip(&[family, "route", "get", vip]).expect("ip route get")
}

#[test]
#[ignore = "needs root"]
fn clients_learn_the_tunnels_path_mtu_from_the_balancer_and_bulk_uploads_complete() {
    require_root("clients_learn_the_tunnels_path_mtu_from_the_balancer_and_bulk_uploads_complete");
    let bed = RoutedBed::build(1, BACKENDS).expect("routed bed");
    for i in 0..BACKENDS {
        let out = bed.decap(i, &[]).expect("alwayson decap");
        assert!(out.status.success(), "decap on backend {i}: {}{}", out.stdout, out.stderr);
    }
    let lb = bed.bed().lb_ns();
    // Both ends of its link, so a frame past it is really lost, not carried anyway.
    lb.ip(&["link", "set", "eth0", "mtu", LB_MTU]).expect("lowering the balancer's MTU");
    bed.bed().bridge_ns().ip(&["link", "set", "lb", "mtu", LB_MTU]).expect("lowering its peer's MTU");
    let vips = [(VIP4, 80, "tcp"), (VIP6, 80, "tcp")];
    let config = bed.config(&vips).replace("[api]", "icmp_too_big_limit = 200\n\n[api]");
    let mut agent = Agent::start(bed.bed(), &config, &[]).expect("agent");
    for vip in [VIP4, VIP6] {
        let route = client_route(&bed, vip);
        assert!(!route.contains(" mtu "), "no path MTU learned yet: {route}");
    }

    for vip in [VIP4, VIP6] {
        bed.bulk_echo(SocketAddr::new(vip.parse().unwrap(), 80), BULK, Duration::from_secs(20));
    }

    // The kernel took the MTUs the errors carried: 1500 less the outer header.
    let v4 = client_route(&bed, VIP4);
    assert!(v4.contains("mtu 1480"), "IPv4 path MTU to the VIP: {v4}");
    let v6 = client_route(&bed, VIP6);
    assert!(v6.contains("mtu 1460"), "IPv6 path MTU to the VIP: {v6}");
    let counters = agent.stats().unwrap().counters().unwrap();
    let sent = counters.event(Event::TooBigSent);
    assert!(sent >= 2, "at least one error per family: {counters}");
    assert_eq!(counters.event(Event::TooBigLimited), 0, "{counters}");
    // Every too-big packet answered. (A first IPv6 SYN may still drop as
    // no_backend: on this bed the IPv6 backends' first checks can time out
    // while the router resolves its neighbours; the client sends it again.)
    assert_eq!(counters.drop(DropReason::EncapTooBig), 0, "{counters}");
    eprintln!("balancer: {counters}");

    // Below 1320 an IPv6 tunnel VIP is refused, and what runs stays.
    lb.ip(&["link", "set", "eth0", "mtu", "1300"]).expect("lowering the MTU further");
    agent.reload_expecting(&config, REFUSED).expect("reload refused");
    let log = agent.log();
    let refusal = log.lines().rev().find(|l| l.contains("1320")).unwrap_or_else(|| panic!("log:\n{log}"));
    for part in [VIP6, "interface eth0 has MTU 1300", "1280"] {
        assert!(log.contains(part), "{part:?} missing from the refusal ({refusal}); log:\n{log}");
    }
    lb.ip(&["link", "set", "eth0", "mtu", LB_MTU]).expect("restoring the MTU");
    bed.bulk_echo(SocketAddr::new(VIP4.parse().unwrap(), 80), BULK, Duration::from_secs(20));
    agent.stop().expect("agent stop");
}
