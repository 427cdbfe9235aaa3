//! The network-namespace test bed itself, without a balancer: wiring,
//! addresses, the backends' servers, their control, and teardown.

use std::{
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    sync::Mutex,
    time::{Duration, Instant},
};

use alwayson_tests::{
    bed::{TestBed, HTTP_PORT, TCP_PORTS, UDP_PORT},
    require_root, run,
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn build(bed: alwayson_tests::bed::TestBedBuilder) -> TestBed {
    let start = Instant::now();
    let bed = bed.build().expect("building the test bed");
    eprintln!("bed built in {:?}", start.elapsed());
    bed
}

fn listed_namespaces() -> String {
    run("ip", &["netns", "list"]).expect("ip netns list")
}

fn assert_gone(names: &[String], temp_dir: &std::path::Path) {
    let listed = listed_namespaces();
    for name in names {
        assert!(
            !listed.lines().any(|line| line.split_whitespace().next() == Some(name.as_str())),
            "namespace {name} survived the bed:\n{listed}"
        );
    }
    assert!(!temp_dir.exists(), "{} survived the bed", temp_dir.display());
}

#[test]
#[ignore = "needs root"]
fn clients_reach_every_backend_directly_over_tcp_and_udp() {
    require_root("clients_reach_every_backend_directly_over_tcp_and_udp");
    let bed = build(TestBed::builder().clients(2).backends(3));
    for client in 0..bed.clients() {
        for i in 0..bed.backends() {
            let name = bed.backend_name(i);
            for ip in [bed.backend_v4(i), bed.backend_v6(i)] {
                for port in TCP_PORTS {
                    let got = bed.tcp_name(client, SocketAddr::new(ip, port), TIMEOUT);
                    assert_eq!(got.expect("tcp"), name, "client {client} -> {ip} tcp/{port}");
                }
                let got = bed.udp_name(client, SocketAddr::new(ip, UDP_PORT), TIMEOUT);
                assert_eq!(got.expect("udp"), name, "client {client} -> {ip} udp/{UDP_PORT}");
            }
        }
    }
}

#[test]
#[ignore = "needs root"]
fn a_vip_routed_straight_to_a_backend_is_answered_from_the_vip() {
    require_root("a_vip_routed_straight_to_a_backend_is_answered_from_the_vip");
    let bed = build(TestBed::builder().backends(2));
    let client = bed.client_ns(0);
    // What a DSR balancer does, by hand: the VIP's next hop is backend 1 itself.
    // Its wildcard servers answer for the VIP on lo, UDP from the VIP.
    for vip in bed.vips().to_vec() {
        let (host, via) = match vip {
            IpAddr::V4(_) => (format!("{vip}/32"), bed.backend_v4(1)),
            IpAddr::V6(_) => (format!("{vip}/128"), bed.backend_v6(1)),
        };
        client.ip(&["route", "replace", &host, "via", &via.to_string(), "dev", "eth0"]).expect("route");
        assert_eq!(bed.tcp_name(0, SocketAddr::new(vip, 80), TIMEOUT).expect("tcp"), "backend1");
        assert_eq!(bed.udp_name(0, SocketAddr::new(vip, UDP_PORT), TIMEOUT).expect("udp"), "backend1");
    }
}

#[test]
#[ignore = "needs root"]
fn http_answers_the_status_from_the_status_file() {
    require_root("http_answers_the_status_from_the_status_file");
    let bed = build(TestBed::builder().backends(2));
    for ip in [bed.backend_v4(1), bed.backend_v6(1)] {
        let addr = SocketAddr::new(ip, HTTP_PORT);
        assert_eq!(bed.http_get(0, addr, TIMEOUT).expect("get"), (200, "backend1\n".to_string()));
        bed.set_http_status(1, Some(503)).expect("status file");
        assert_eq!(bed.http_get(0, addr, TIMEOUT).expect("get").0, 503);
        // The other backend is not affected.
        let other = SocketAddr::new(bed.backend_v4(0), HTTP_PORT);
        assert_eq!(bed.http_get(0, other, TIMEOUT).expect("get"), (200, "backend0\n".to_string()));
        bed.set_http_status(1, None).expect("status file");
        assert_eq!(bed.http_get(0, addr, TIMEOUT).expect("get"), (200, "backend1\n".to_string()));
    }
}

#[test]
#[ignore = "needs root"]
fn stopped_servers_refuse_connections_until_started_again() {
    require_root("stopped_servers_refuse_connections_until_started_again");
    let bed = build(TestBed::builder().backends(2));
    let v4 = SocketAddr::new(bed.backend_v4(0), 80);
    let v6 = SocketAddr::new(bed.backend_v6(0), 80);
    assert_eq!(bed.tcp_name(0, v4, TIMEOUT).expect("before stop"), "backend0");

    bed.stop_servers(0).expect("stop");
    assert!(!bed.servers_running(0));
    for addr in [v4, v6] {
        let err = bed.tcp_connect(0, addr, TIMEOUT).expect_err("connect to a stopped backend");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{addr}: {err}");
    }
    // The other backend keeps serving.
    assert_eq!(bed.tcp_name(0, SocketAddr::new(bed.backend_v4(1), 80), TIMEOUT).expect("other"), "backend1");

    bed.start_servers(0).expect("start");
    assert!(bed.servers_running(0));
    for addr in [v4, v6] {
        assert_eq!(bed.tcp_name(0, addr, TIMEOUT).expect("after start"), "backend0");
    }
    assert!(bed.server_log(0).contains("ready"));
}

#[test]
#[ignore = "needs root"]
fn tcp_connect_from_uses_the_given_source_port() {
    require_root("tcp_connect_from_uses_the_given_source_port");
    let bed = build(TestBed::builder().backends(1));
    for (ip, port) in [(bed.backend_v4(0), 41000), (bed.backend_v6(0), 41001)] {
        let stream = bed.tcp_connect_from(0, port, SocketAddr::new(ip, 80), TIMEOUT).expect("connect");
        assert_eq!(stream.local_addr().expect("local").port(), port);
    }
}

#[test]
#[ignore = "needs root"]
fn dropping_a_bed_removes_its_namespaces_and_temp_dir() {
    require_root("dropping_a_bed_removes_its_namespaces_and_temp_dir");
    let bed = build(TestBed::builder().clients(1).backends(2));
    let names = bed.namespace_names();
    let temp_dir = bed.temp_dir().to_path_buf();
    assert_eq!(names.len(), 5, "bridge, LB, a client and two backends: {names:?}");
    let listed = listed_namespaces();
    for name in &names {
        assert!(listed.contains(name.as_str()), "{name} missing while the bed lives:\n{listed}");
    }
    assert!(temp_dir.is_dir());
    // What an agent under test would leave: a pin directory with a subdirectory.
    let pin_dir = bed.pin_dir().to_path_buf();
    assert!(!pin_dir.exists(), "the bed does not create the pin directory");
    std::fs::create_dir_all(pin_dir.join("maps")).expect("mkdir under /sys/fs/bpf");
    let start = Instant::now();
    drop(bed);
    eprintln!("bed dropped in {:?}", start.elapsed());
    assert_gone(&names, &temp_dir);
    assert!(!pin_dir.exists(), "{} survived the bed", pin_dir.display());
}

#[test]
#[ignore = "needs root"]
fn a_panicking_test_still_tears_its_bed_down() {
    require_root("a_panicking_test_still_tears_its_bed_down");
    let seen: Mutex<Option<(Vec<String>, std::path::PathBuf)>> = Mutex::new(None);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let bed = TestBed::builder().backends(1).build().expect("bed");
        *seen.lock().unwrap() = Some((bed.namespace_names(), bed.temp_dir().to_path_buf()));
        panic!("the test body fails while the bed lives");
    }));
    assert!(result.is_err(), "the closure panics");
    let (names, temp_dir) = seen.lock().unwrap().take().expect("the bed was built");
    assert_gone(&names, &temp_dir);
    // The turn was given back: another bed can be built.
    drop(TestBed::builder().backends(1).build().expect("a bed after the panic"));
}

#[test]
#[ignore = "needs root"]
fn a_client_reaches_the_lb_address() {
    require_root("a_client_reaches_the_lb_address");
    let bed = build(TestBed::builder().backends(1));
    let args = ["--tcp", "0.0.0.0:9000", "--tcp", "[::]:9000", "--udp", "0.0.0.0:9000", "--udp", "[::]:9000"];
    let mut server = bed.spawn_testsrv(bed.lb_ns(), "lb", &args).expect("testsrv in the LB namespace");
    for ip in [bed.lb_v4(), bed.lb_v6()] {
        assert_eq!(bed.tcp_name(0, SocketAddr::new(ip, 9000), TIMEOUT).expect("tcp"), "lb");
        assert_eq!(bed.udp_name(0, SocketAddr::new(ip, 9000), TIMEOUT).expect("udp"), "lb");
    }
    server.signal(libc::SIGTERM).expect("SIGTERM");
    let status = server.wait(TIMEOUT).expect("testsrv exits on SIGTERM");
    assert!(status.success(), "{status}; log:\n{}", server.log());
}

#[test]
#[ignore = "needs root"]
fn many_concurrent_and_short_connections() {
    require_root("many_concurrent_and_short_connections");
    let bed = build(TestBed::builder().backends(1));
    let addr = SocketAddr::new(bed.backend_v4(0), 80);
    let start = Instant::now();
    let open: Vec<_> = (0..250).map(|_| bed.tcp_connect(0, addr, TIMEOUT).expect("connect")).collect();
    for stream in &open {
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut name = [0u8; 9];
        std::io::Read::read_exact(&mut &*stream, &mut name).expect("name");
        assert_eq!(&name, b"backend0\n");
    }
    drop(open);
    eprintln!("250 concurrent connections in {:?}", start.elapsed());
    let start = Instant::now();
    for _ in 0..2000 {
        assert_eq!(bed.tcp_name(0, addr, TIMEOUT).expect("short connection"), "backend0");
    }
    eprintln!("2000 short connections in {:?}", start.elapsed());
}

#[test]
#[ignore = "needs root"]
fn the_wiring_is_as_documented() {
    require_root("the_wiring_is_as_documented");
    let bed = build(TestBed::builder().clients(1).backends(1));
    let lb_port = bed.bridge_ns().ip(&["-d", "link", "show", "lb"]).expect("lb port");
    assert!(lb_port.contains("prog/xdp"), "xdp_pass on the LB's bridge port:\n{lb_port}");
    let lb = bed.lb_ns().ip(&["link", "show", "eth0"]).expect("LB eth0");
    assert!(lb.contains("02:77:00:00:00:02"), "{lb}");
    let features = bed.client_ns(0).exec("ethtool", &["-k", "eth0"]).expect("ethtool -k");
    assert!(features.contains("tx-checksumming: off"), "{features}");
    let routes = bed.client_ns(0).ip(&["route", "show", "10.77.100.1"]).expect("route");
    assert!(routes.contains("via 10.77.0.2"), "{routes}");
    let routes = bed.client_ns(0).ip(&["-6", "route", "show", "fd77::100"]).expect("route");
    assert!(routes.contains("via fd77::2"), "{routes}");
    let lo = bed.backend_ns(0).ip(&["addr", "show", "lo"]).expect("lo");
    assert!(lo.contains("10.77.100.1/32") && lo.contains("fd77::100/128"), "{lo}");
    let arp = bed.backend_ns(0).exec("sysctl", &["-n", "net.ipv4.conf.all.arp_ignore"]).expect("sysctl");
    assert_eq!(arp.trim(), "1");
    assert_eq!(bed.backend_v6(3).to_string(), "fd77::1:13");
    assert_eq!(bed.client_v6(0).to_string(), "fd77::2:10");
}
