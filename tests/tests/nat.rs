//! `mode = "nat"` end to end on the namespace bed, with backends as a plain
//! server has them: no VIP anywhere, default ARP sysctls, no route but their
//! segment's. TCP and UDP over IPv4 and IPv6; a SIGKILL and restart of the
//! agent under load; a port range run out.

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml_with, Agent, Tables, VipConf},
    bed::{TestBed, UDP_PORT},
    require_root,
    traffic::{Opener, Streams},
    wait_until,
};
use lb_common::{DropReason, Event};

const NAT4: &str = "10.77.100.5";
const NAT6: &str = "fd77::105";
const CONNECTIONS: usize = 300;
const DATAGRAMS: usize = 60;
const TIMEOUT: Duration = Duration::from_secs(3);

/// A bed whose clients route [`NAT4`] and [`NAT6`] via the LB and whose
/// backends know nothing of them: the VIPs the bed puts on their `lo` are
/// taken off, and the DSR ARP sysctls put back to Linux's defaults.
fn plain_backends(backends: usize) -> TestBed {
    let bed = TestBed::builder().clients(1).backends(backends).vip(NAT4).vip(NAT6).build().expect("bed");
    for i in 0..backends {
        let ns = bed.backend_ns(i);
        for vip in [format!("{NAT4}/32"), format!("{NAT6}/128")] {
            ns.ip(&["addr", "del", &vip, "dev", "lo"]).expect("VIP off lo");
        }
        for key in ["all", "eth0"] {
            ns.sysctl(&format!("net.ipv4.conf.{key}.arp_ignore"), "0").expect("sysctl");
            ns.sysctl(&format!("net.ipv4.conf.{key}.arp_announce"), "0").expect("sysctl");
        }
        let lo = ns.ip(&["addr", "show", "dev", "lo"]).unwrap();
        assert!(!lo.contains("10.77.100") && !lo.contains("fd77::1"), "backend {i} lo: {lo}");
    }
    bed
}

/// NAT VIPs on port 80 (TCP) and 53 (UDP) of both families, on `backends`,
/// leaving from the LB's own addresses; `global`: more `[global]` keys.
fn config(bed: &TestBed, backends: usize, global: &str) -> String {
    let vips: Vec<VipConf> = [NAT4, NAT6]
        .into_iter()
        .flat_map(|vip| {
            [
                VipConf::new(vip, 80, "tcp").backends(0..backends).keys("mode = \"nat\""),
                VipConf::new(vip, UDP_PORT, "udp").backends(0..backends).keys("mode = \"nat\""),
            ]
        })
        .collect();
    let global = format!("nat_address = [\"{}\", \"{}\"]\n{global}", bed.lb_v4(), bed.lb_v6());
    config_toml_with(bed, &vips, Tables { global: &global, ..Default::default() })
}

fn spread(names: impl IntoIterator<Item = String>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for n in names {
        *by.entry(n).or_default() += 1;
    }
    by
}

#[test]
#[ignore = "needs root"]
fn plain_backends_serve_nat_vips_over_tcp_and_udp_v4_and_v6() {
    require_root("plain_backends_serve_nat_vips_over_tcp_and_udp_v4_and_v6");
    let bed = plain_backends(3);
    let agent = Agent::start(&bed, &config(&bed, 3, ""), &[]).expect("agent");
    for vip in [NAT4, NAT6] {
        let ip: IpAddr = vip.parse().unwrap();
        let tcp = spread((0..CONNECTIONS).map(|k| {
            bed.tcp_name(0, SocketAddr::new(ip, 80), TIMEOUT)
                .unwrap_or_else(|e| panic!("TCP connection {k} to {vip}: {e}\n{}", agent.log()))
        }));
        let udp = spread((0..DATAGRAMS).map(|k| {
            bed.udp_name(0, SocketAddr::new(ip, UDP_PORT), TIMEOUT)
                .unwrap_or_else(|e| panic!("UDP datagram {k} to {vip}: {e}\n{}", agent.log()))
        }));
        println!("{vip}: tcp {tcp:?}, udp {udp:?}");
        assert_eq!(tcp.len(), 3, "{vip}: every backend answers TCP: {tcp:?}");
        assert!(tcp.values().all(|&n| n >= CONNECTIONS / 6), "{vip}: {tcp:?}");
        assert_eq!(udp.len(), 3, "{vip}: every backend answers UDP: {udp:?}");
    }
    let stats = agent.stats().unwrap();
    let counters = stats.counters().unwrap();
    println!("balancer: {counters}; NAT mappings now {}", stats.nat_mappings());
    assert_eq!(counters.drops.iter().sum::<u64>(), 0, "{counters}");
    // A mapping per TCP connection; datagrams from a reused port share one.
    assert!(counters.event(Event::NatMapped) > 2 * CONNECTIONS as u64, "{counters}");
    assert!(stats.nat_mappings() > 0, "the mappings are in the table");
}

#[test]
#[ignore = "needs root"]
fn sigkill_and_restart_under_nat_load_lose_no_connection() {
    require_root("sigkill_and_restart_under_nat_load_lose_no_connection");
    let bed = plain_backends(3);
    let mut agent = Agent::start(&bed, &config(&bed, 3, ""), &[]).expect("agent");
    let vip = SocketAddr::new(NAT4.parse().unwrap(), 80);
    let streams = Streams::open(&bed, 0, vip, 30, Duration::from_millis(10)).expect("streams");
    let opener = Opener::start(&bed, 0, vip, Duration::from_millis(10));
    std::thread::sleep(Duration::from_secs(1));
    let mappings = agent.stats().unwrap().nat_mappings();

    agent.kill().expect("SIGKILL");
    std::thread::sleep(Duration::from_millis(500));
    agent.restart().expect("restart");
    std::thread::sleep(Duration::from_secs(1));

    let opened = opener.stop();
    let report = streams.stop();
    let log = agent.log();
    println!(
        "{mappings} mappings before the kill; {} connections opened, {} streams, {} round trips, longest wait {:?}",
        opened.ok,
        report.streams.len(),
        report.round_trips,
        report.max_gap
    );
    assert!(mappings >= 30, "the streams' mappings: {mappings}");
    assert!(report.errors.is_empty(), "streams broke: {:#?}\n{log}", report.errors);
    assert!(opened.failed.is_empty(), "new connections failed: {:#?}\n{log}", opened.failed);
    assert!(opened.ok > 100, "{} connections opened", opened.ok);
    assert!(log.contains("adopted the running data plane"), "restart did not adopt:\n{log}");
}

#[test]
#[ignore = "needs root"]
fn a_port_range_run_out_is_a_counted_drop_and_a_log_line() {
    require_root("a_port_range_run_out_is_a_counted_drop_and_a_log_line");
    let bed = plain_backends(1);
    // Eight ports toward the one backend: eight connections, then no more.
    let agent = Agent::start(&bed, &config(&bed, 1, "nat_ports = \"20000-20007\""), &[]).expect("agent");
    let vip = SocketAddr::new(NAT4.parse().unwrap(), 80);
    let held: Vec<_> = (0..8)
        .map(|k| {
            let s = bed.tcp_connect(0, vip, TIMEOUT).unwrap_or_else(|e| panic!("connection {k}: {e}"));
            s.set_read_timeout(Some(TIMEOUT)).unwrap();
            let mut banner = [0u8; 9];
            std::io::Read::read_exact(&mut &s, &mut banner)
                .unwrap_or_else(|e| panic!("connection {k} got no banner: {e}\n{}", agent.log()));
            s
        })
        .collect();
    let refused = bed.tcp_connect(0, vip, Duration::from_millis(1500));
    assert!(refused.is_err(), "a ninth connection found a port");
    let counters = agent.stats().unwrap().counters().unwrap();
    assert!(counters.drop(DropReason::NatNoPort) >= 1, "{counters}");
    wait_until(
        "the agent to log the run-out range",
        Duration::from_secs(5),
        Duration::from_millis(100),
        || agent.log().contains("nat_no_port").then_some(()),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", agent.log()));
    // The mapped flows are unharmed: each still echoes.
    for (k, s) in held.iter().enumerate() {
        std::io::Write::write_all(&mut &*s, b"still here\n").unwrap();
        let mut echo = [0u8; 11];
        std::io::Read::read_exact(&mut &*s, &mut echo).unwrap_or_else(|e| panic!("connection {k}: {e}"));
        assert_eq!(&echo, b"still here\n", "connection {k}");
    }
}

#[test]
#[ignore = "needs root"]
fn closed_mappings_expire_and_their_ports_come_back() {
    require_root("closed_mappings_expire_and_their_ports_come_back");
    let bed = plain_backends(1);
    let global = "nat_ports = \"20000-20007\"\nnat_tcp_closing_timeout = \"1s\"";
    let agent = Agent::start(&bed, &config(&bed, 1, global), &[]).expect("agent");
    let vip = SocketAddr::new(NAT4.parse().unwrap(), 80);
    for round in 0..3 {
        // Eight connections, one per port, each closed after its answer.
        for k in 0..8 {
            bed.tcp_name(0, vip, TIMEOUT)
                .unwrap_or_else(|e| panic!("round {round}, connection {k}: {e}\n{}", agent.log()));
        }
        let at_most = Duration::from_secs(6);
        wait_until("the closed mappings to expire", at_most, Duration::from_millis(100), || {
            (agent.stats().unwrap().nat_mappings() == 0).then_some(())
        })
        .unwrap_or_else(|e| panic!("round {round}: {e}\n{}", agent.log()));
    }
    let counters = agent.stats().unwrap().counters().unwrap();
    assert_eq!(counters.drop(DropReason::NatNoPort), 0, "{counters}");
    assert_eq!(counters.event(Event::NatMapped), 24, "{counters}");
}
