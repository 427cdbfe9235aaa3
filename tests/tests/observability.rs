//! Stats, metrics and runtime control, end to end: exact counters in
//! `alwayson stats --json` and `/metrics`, and backends registered and removed
//! through the API while traffic flows.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    os::fd::{AsRawFd as _, OwnedFd},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, config_toml_with, Agent, Tables, VipConf, WEB_LISTEN},
    api::{backend_path, POLL},
    bed::{sock, vip4, Family, TestBed, VIP4},
    http, require_root,
    traffic::{Opener, Streams},
    wait_until,
};
use lb_common::DropReason;
use serde_json::Value;

fn stats_json(agent: &Agent) -> Value {
    let out = agent.cli(&["stats", "--json"]).expect("alwayson stats --json");
    assert!(out.status.success(), "alwayson stats --json failed: {}", out.stderr);
    serde_json::from_str(&out.stdout).expect("stats JSON")
}

/// The value of one sample of `/metrics`, e.g. `alwayson_vip_packets_total{vip="x"}`.
fn metric(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
}

#[test]
#[ignore = "needs root"]
fn counters_show_exactly_the_packets_and_bytes_sent() {
    require_root("counters_show_exactly_the_packets_and_bytes_sent");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    // Every flow recorded, so that the table and the new-flow counts have
    // something to show (on a settled ring UDP flows are neither recorded nor counted new).
    let every_flow = Tables { global: "flow_recording = \"every-flow\"", ..Tables::default() };
    let config = config_toml_with(&bed, &[VipConf::new(VIP4, 53, "udp").backends(0..2)], every_flow);
    let agent = Agent::start(&bed, &config, &[]).expect("agent");
    let vip: SocketAddr = vip4(53);
    const FLOWS: usize = 10;
    const PER_FLOW: usize = 10;
    const PAYLOAD: usize = 100;
    // What the XDP program sees per datagram: Ethernet 14 + IPv4 20 + UDP 8 + payload.
    const FRAME: u64 = 14 + 20 + 8 + PAYLOAD as u64;

    let mut by_backend: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for _ in 0..FLOWS {
        let socket = bed.udp_socket(0, Family::V4).expect("udp socket");
        socket.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        for _ in 0..PER_FLOW {
            socket.send_to(&[b'x'; PAYLOAD], vip).expect("send");
            let mut reply = [0u8; 2048];
            let n = socket.recv(&mut reply).expect("reply");
            let name = String::from_utf8_lossy(&reply[..n]).lines().next().unwrap_or_default().to_string();
            let entry = by_backend.entry(name).or_default();
            entry.0 += 1;
        }
        // One flow = one socket = one backend.
    }
    for (_, e) in by_backend.iter_mut() {
        e.1 = e.0 * FRAME;
    }
    let sent = (FLOWS * PER_FLOW) as u64;
    // The sampler publishes every second. Past the wait, the last sample is
    // judged: the assertions below say what it lacks.
    let mut last = Value::Null;
    let stats = wait_until(
        "the sampler to count every packet",
        Duration::from_secs(5),
        Duration::from_millis(200),
        || {
            let stats = stats_json(&agent);
            if stats["vips"][0]["packets"] == sent {
                return Some(stats);
            }
            last = stats;
            None
        },
    )
    .unwrap_or(last);
    let vip_stats = &stats["vips"][0];
    assert_eq!(vip_stats["packets"], sent, "{vip_stats:#}");
    assert_eq!(vip_stats["bytes"], sent * FRAME);
    assert_eq!(vip_stats["new_flows"], FLOWS as u64);
    for b in vip_stats["backends"].as_array().unwrap() {
        let name = b["name"].as_str().unwrap();
        let (packets, bytes) = by_backend.get(name).copied().unwrap_or_default();
        assert_eq!(
            (b["packets"].as_u64().unwrap(), b["bytes"].as_u64().unwrap()),
            (packets, bytes),
            "{name}"
        );
    }
    assert_eq!(stats["drops"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 0);

    let web = http::Client::tcp_in(bed.lb_ns(), WEB_LISTEN.parse().unwrap());
    let metrics = web.get("/metrics").expect("GET /metrics");
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.content_type().as_deref(), Some("application/openmetrics-text"));
    let text = metrics.text();
    assert!(text.ends_with("\n# EOF\n"), "an OpenMetrics exposition ends with # EOF:\n{text}");
    let name = vip_stats["name"].as_str().unwrap();
    assert_eq!(
        metric(&text, &format!("alwayson_vip_packets_total{{vip=\"{name}\"}}")),
        Some(sent as f64),
        "{text}"
    );
    assert_eq!(
        metric(&text, &format!("alwayson_vip_bytes_total{{vip=\"{name}\"}}")),
        Some((sent * FRAME) as f64)
    );
    assert_eq!(metric(&text, &format!("alwayson_vip_new_flows_total{{vip=\"{name}\"}}")), Some(FLOWS as f64));
    for (backend, (packets, bytes)) in &by_backend {
        let labels = format!("{{vip=\"{name}\",backend=\"{backend}\"}}");
        assert_eq!(metric(&text, &format!("alwayson_backend_packets_total{labels}")), Some(*packets as f64));
        assert_eq!(metric(&text, &format!("alwayson_backend_bytes_total{labels}")), Some(*bytes as f64));
        assert_eq!(metric(&text, &format!("alwayson_backend_up{labels}")), Some(1.0));
    }
    assert_eq!(metric(&text, "alwayson_drops_total{reason=\"no_backend\"}"), Some(0.0));
    assert!(metric(&text, "alwayson_reconcile_duration_seconds_count").is_some_and(|n| n >= 1.0));
    assert!(metric(&text, "alwayson_conn_table_capacity").is_some_and(|n| n > 0.0));

    // The human table says the same.
    let out = agent.cli(&["stats"]).expect("alwayson stats");
    assert!(out.status.success(), "{}", out.stderr);
    let table = out.stdout;
    assert!(table.contains(&format!("packets {sent} bytes {}", sent * FRAME)), "{table}");

    // The connection table holds the ten flows; it is counted every 10 s (first when the agent started).
    let entries = wait_until(
        "the connection table to be counted",
        Duration::from_secs(15),
        Duration::from_millis(500),
        || {
            let entries = stats_json(&agent)["conn_table"]["entries"].as_u64();
            (entries == Some(FLOWS as u64)).then_some(())
        },
    );
    assert!(entries.is_ok(), "{entries:?}: {:#}", stats_json(&agent)["conn_table"]);
    let text = web.get("/metrics").expect("GET /metrics").text();
    assert_eq!(metric(&text, "alwayson_conn_table_entries"), Some(FLOWS as f64));
}

#[test]
#[ignore = "needs root"]
fn backends_registered_and_removed_through_the_api_under_traffic() {
    require_root("backends_registered_and_removed_through_the_api_under_traffic");
    let bed = TestBed::builder().backends(11).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..1)]);
    let agent = Agent::start(&bed, &config, &[]).expect("agent");
    let vip_name = "10.77.100.1:80/tcp";
    let vip: SocketAddr = vip4(80);
    let opener = Opener::start(&bed, 0, vip, Duration::from_millis(5));
    let mut streams = vec![Streams::open(&bed, 0, vip, 50, Duration::from_millis(10)).expect("streams")];

    // Scale out: ten backends, one by one, through the CLI (which uses the API).
    for i in 1..=10 {
        let address = bed.backend_v4(i).to_string();
        let name = bed.backend_name(i);
        let out = agent
            .cli(&["backend", "add", "--vip", vip_name, "--name", &name, "--address", &address])
            .expect("alwayson backend add");
        assert!(out.status.success(), "adding {name}: {}", out.stderr);
        std::thread::sleep(Duration::from_millis(300));
        // A few long-lived connections land on the grown set too.
        streams.push(Streams::open(&bed, 0, vip, 5, Duration::from_millis(10)).expect("streams"));
    }
    let all: BTreeSet<String> = (0..=10).map(|i| bed.backend_name(i)).collect();
    let seen = bed.tcp_names(0, vip, 300, Duration::from_secs(3)).expect("connect");
    assert_eq!(seen, all, "new connections should reach all eleven backends");

    // Scale in: remove nine of the ten added, through the HTTP API directly.
    let api = http::Client::unix(agent.api_socket());
    let removed: Vec<String> = (1..=9).map(|i| bed.backend_name(i)).collect();
    for name in &removed {
        let answer = api.delete(&backend_path(vip_name, name)).expect("DELETE");
        assert_eq!(answer.status, 204, "removing {name}: {}", answer.text());
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_millis(500));
    let surviving: BTreeSet<String> = [bed.backend_name(0), bed.backend_name(10)].into();
    let seen = bed.tcp_names(0, vip, 200, Duration::from_secs(3)).expect("connect");
    assert_eq!(seen, surviving, "new connections should spread over the current set");

    let opened = opener.stop();
    let reports: Vec<_> = streams.into_iter().map(Streams::stop).collect();
    let removed_refs: Vec<&str> = removed.iter().map(String::as_str).collect();
    for r in &reports {
        let broken = r.errors_except_on(&removed_refs);
        assert!(broken.is_empty(), "connections on surviving backends broke: {broken:#?}");
    }
    let on_survivors: usize =
        reports.iter().flat_map(|r| &r.streams).filter(|s| surviving.contains(&s.backend)).count();
    assert!(on_survivors >= 50, "only {on_survivors} streams on the surviving backends");
    // New connections made by the opener: the only ones allowed to fail are
    // those caught on a backend at the instant it was removed.
    assert!(
        opened.failed.len() <= removed.len(),
        "{} of {} new connections failed: {:#?}",
        opened.failed.len(),
        opened.ok,
        opened.failed
    );
    // The stats are sampled every second: they show the removals within one sample.
    let names = || -> Vec<String> {
        let stats = stats_json(&agent);
        let backends = stats["vips"][0]["backends"].as_array().cloned().unwrap_or_default();
        backends.iter().filter_map(|b| b["name"].as_str().map(String::from)).collect()
    };
    let shown =
        wait_until("the stats to show the two remaining backends", Duration::from_secs(5), POLL, || {
            (names() == ["backend0", "backend10"]).then_some(())
        });
    assert!(shown.is_ok(), "{shown:?}: {:?}", names());
}

#[test]
#[ignore = "needs root"]
fn kernel_notices_reach_the_agents_log_at_debug_level() {
    require_root("kernel_notices_reach_the_agents_log_at_debug_level");
    let bed = TestBed::builder().backends(1).build().expect("bed");
    // A VIP whose only backend never passes its check: its SYNs are dropped as no_backend.
    let vip_conf = VipConf::new(VIP4, 80, "tcp").backends(0..1);
    let config = config_toml(&bed, &[vip_conf.keys("check = \"exec\"\nexec_command = \"false\"")]);
    let agent = Agent::start(&bed, &config, &["--log-level", "debug"]).expect("agent");
    let vip = vip4(80);
    let before = agent.stats().unwrap().counters().unwrap();
    // A burst of SYNs, each from its own socket, all within a fraction of a second.
    bed.client_ns(0).run(|| {
        let sockets: Vec<OwnedFd> = (0..SYNS).map(|_| syn_without_waiting(vip)).collect();
        drop(sockets);
    });
    let dropped =
        wait_until("the burst to be dropped", Duration::from_secs(5), Duration::from_millis(50), || {
            let dropped =
                agent.stats().unwrap().counters().unwrap().since(&before).drop(DropReason::NoBackend);
            (dropped >= SYNS as u64).then_some(dropped)
        })
        .expect("every SYN of the burst dropped as no_backend");
    let notice =
        wait_until("a kernel notice in the log", Duration::from_secs(5), Duration::from_millis(100), || {
            agent.log().contains("has no usable backend").then_some(())
        });
    notice.unwrap_or_else(|e| panic!("{e:#}:\n{}", agent.log()));
    // The agent logs what the kernel sent as it reads it: give the rest of the burst's time to arrive.
    std::thread::sleep(Duration::from_secs(1));
    let log = agent.log();
    let notices = log.matches("has no usable backend").count();
    // Rate-limited: one a second per CPU at most, not one per dropped SYN. The
    // burst spans under a second, so at most two per CPU the program can run on
    // (the kernel's possible CPUs, which its per-CPU state is sized by).
    let cpus = aya::util::nr_cpus().expect("possible CPUs");
    assert!(2 * cpus < SYNS, "the burst must outnumber what the limit lets through");
    assert!(notices <= 2 * cpus, "{notices} notices for {dropped} drops in a burst on {cpus} CPUs:\n{log}");
}

/// SYNs in the rate-limit test's burst.
const SYNS: usize = 300;

/// A TCP socket that has sent its SYN to `to` and is not waiting for an answer.
fn syn_without_waiting(to: SocketAddr) -> OwnedFd {
    let fd = sock::socket(&to, libc::SOCK_STREAM | libc::SOCK_NONBLOCK).expect("socket");
    let (addr, len) = sock::sockaddr(&to);
    // SAFETY: a valid sockaddr of length len, on an fd we own.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&raw const addr).cast(), len) };
    let err = std::io::Error::last_os_error();
    assert!(rc < 0 && err.raw_os_error() == Some(libc::EINPROGRESS), "connect: {err}");
    fd
}
