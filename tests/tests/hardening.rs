//! The agent cannot be starved, hijacked or confused (root, on a test bed):
//! idle connections do not starve health checks, a second agent on the same
//! interface changes nothing, API callers cannot run commands or capture the
//! host's own traffic, forwarding is set only where it is needed and put back,
//! and a stop right after a start is a clean stop.

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt as _,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::{config_toml_with, spawn_agent, Agent, Tables, VipConf, WEB_LISTEN},
    api::{
        backend_stats, backends_path, snapshot, start, wait_all_up, API_TCP, API_WAIT, POLL, TOKEN, VIP_NAME,
    },
    bed::{vip4, TestBed, VIP4, VIP6},
    http::Client,
    require_root,
    traffic::{Opener, Streams},
    wait_until,
};
use lb_userspace::dataplane::attached_ifindex;
use serde_json::Value;

/// Idle connections held open to each listener.
const IDLE: usize = 2_000;
const HOLD: Duration = Duration::from_secs(10);

/// Lets this test process hold thousands of sockets.
fn raise_own_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur as usize > 3 * IDLE,
        "this test needs {} open files, the hard limit is {}",
        3 * IDLE,
        limit.rlim_max
    );
}

fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// The transitions `/v1/stats` counts for each backend of the config's VIP.
fn transitions(api: &Client) -> Vec<(String, u64)> {
    let stats: Value = api.get("/v1/stats").expect("GET /v1/stats").json().expect("JSON");
    let vip = stats["vips"].as_array().unwrap().iter().find(|v| v["name"] == VIP_NAME).unwrap().clone();
    vip["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["name"].as_str().unwrap().to_string(), b["transitions"].as_u64().unwrap()))
        .collect()
}

#[test]
#[ignore = "needs root"]
fn idle_connections_to_the_listeners_cannot_starve_health_checks() {
    require_root("idle_connections_to_the_listeners_cannot_starve_health_checks");
    raise_own_open_files_limit();
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let api_keys = format!("tcp = \"{API_TCP}\"\ntoken = \"{TOKEN}\"");
    let config = config_toml_with(
        &bed,
        &[VipConf::new(VIP4, 80, "tcp").backends(0..2)],
        Tables { api: &api_keys, ..Tables::default() },
    );
    // systemd's default: a soft and hard limit of 1,024 descriptors.
    let agent =
        Agent::start_under(&bed, &["prlimit", "--nofile=1024:1024", "--"], &config, &[]).expect("agent");
    let api = Client::unix(agent.api_socket());
    wait_until("the control API", API_WAIT, POLL, || {
        api.get("/v1/stats").ok().filter(|r| r.status == 200).map(drop)
    })
    .unwrap();
    let doc = alwayson_tests::openapi::Doc::load();
    wait_all_up(&doc, &api, 2);
    let before = transitions(&api);

    let opener = Opener::start(&bed, 0, vip4(80), Duration::from_millis(20));
    let streams = Streams::open(&bed, 0, vip4(80), 4, Duration::from_millis(50)).expect("streams");
    let targets: Vec<SocketAddr> = [WEB_LISTEN, API_TCP].iter().map(|a| a.parse().unwrap()).collect();
    let held: Vec<TcpStream> = bed.lb_ns().run(|| {
        let mut held = Vec::new();
        for target in &targets {
            for _ in 0..IDLE {
                // A refused connection is closed by the agent; its socket here stays held anyway.
                if let Ok(s) = TcpStream::connect_timeout(target, Duration::from_secs(2)) {
                    held.push(s);
                }
            }
        }
        held
    });
    let connected = held.len();
    let held_since = Instant::now();
    let mut most_open = 0;
    while held_since.elapsed() < HOLD {
        most_open = most_open.max(open_files(agent.pid()));
        // The unix socket has its own connection cap: the control API still answers.
        let answer = api.get("/v1/stats").expect("the control API while the TCP listeners are flooded");
        assert_eq!(answer.status, 200);
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(held);
    let opened = opener.stop();
    let streamed = streams.stop();

    let log = agent.log();
    assert!(connected >= IDLE, "only {connected} connections were made; log:\n{log}");
    assert_eq!(transitions(&api), before, "a backend changed state under the flood; log:\n{log}");
    assert!(!log.contains("UP -> DOWN"), "a backend went DOWN under the flood; log:\n{log}");
    assert!(opened.failed.is_empty(), "new connections through the VIP failed: {:?}", opened.failed);
    assert!(opened.ok > 100, "too few connections through the VIP: {}", opened.ok);
    assert!(streamed.errors.is_empty(), "streams through the VIP broke: {:?}", streamed.errors);
    assert!(most_open < 1_000, "the agent held {most_open} descriptors (limit 1,024); log:\n{log}");
    let metrics =
        Client::tcp_in(bed.lb_ns(), WEB_LISTEN.parse().unwrap()).get("/metrics").expect("/metrics").text();
    for listener in ["web", "control_tcp"] {
        let refused = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("alwayson_listener_refused_total{{listener=\"{listener}\"}} "))
            })
            .and_then(|v| v.parse::<u64>().ok());
        assert!(refused.is_some_and(|n| n > 0), "{listener}: refusals not counted: {refused:?}");
    }
}

#[test]
#[ignore = "needs root"]
fn a_second_agent_on_the_same_interface_is_refused_and_changes_nothing() {
    require_root("a_second_agent_on_the_same_interface_is_refused_and_changes_nothing");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let (doc, mut first, api) = start(&bed, false);
    wait_all_up(&doc, &api, 2);
    let before = snapshot(&api, &first);
    let attached = attached_ifindex(bed.pin_dir()).expect("the pinned link");

    let config = std::fs::read_to_string(bed.temp_dir().join("alwayson.toml")).unwrap();
    let mut second = spawn_agent(&bed, &config, "second").expect("second agent");
    let status = second.wait(Duration::from_secs(10)).expect("the second agent exits");
    let log = second.log();
    assert!(!status.success(), "the second agent ran; log:\n{log}");
    let pid = first.pid();
    assert!(
        log.contains(&format!("(pid {pid}) is running on interface eth0")),
        "the refusal does not name the running agent (pid {pid}); log:\n{log}"
    );
    assert!(!log.contains("control API on"), "the second agent served its socket; log:\n{log}");

    // The first agent's socket, pins, maps and program are as they were.
    assert_eq!(snapshot(&api, &first), before, "the second agent changed the first one's state");
    assert_eq!(attached_ifindex(bed.pin_dir()).expect("the pinned link"), attached);
    let opener = Opener::start(&bed, 0, vip4(80), Duration::from_millis(20));
    std::thread::sleep(Duration::from_secs(1));
    let opened = opener.stop();
    assert!(opened.failed.is_empty() && opened.ok > 10, "traffic after the refusal: {opened:?}");
    first.stop().expect("the first agent stops cleanly");
}

#[test]
#[ignore = "needs root"]
fn api_callers_cannot_run_commands_or_capture_the_host() {
    require_root("api_callers_cannot_run_commands_or_capture_the_host");
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let (doc, mut agent, api) = start(&bed, true);
    wait_all_up(&doc, &api, 2);
    let tcp = Client::tcp_in(bed.lb_ns(), API_TCP.parse().unwrap()).bearer(TOKEN);
    let before = snapshot(&api, &agent);
    let backend = bed.backend_v4(2);

    let refused = |client: &Client, path: &str, body: String, status: u16, field: &str| {
        let answer = client.post(path, &body).expect("POST");
        assert_eq!(answer.status, status, "{path} {body}: {}", answer.text());
        let json = answer.json().expect("JSON");
        assert_eq!(json["problems"][0]["field"], field, "{path} {body}: {json}");
        assert_eq!(snapshot(&api, &agent), before, "a refused {path} {body} changed something");
    };
    let exec = format!(r#"{{"address": "{backend}", "check": "exec", "exec_command": "touch /tmp/pwned"}}"#);
    refused(&tcp, &backends_path(VIP_NAME), exec.clone(), 403, "exec_command");
    refused(&api, &backends_path(VIP_NAME), exec, 403, "exec_command");
    let aimed = format!(r#"{{"address": "{backend}", "check_address": "10.77.0.2"}}"#);
    refused(&tcp, &backends_path(VIP_NAME), aimed, 403, "check_address");
    let nested = format!(
        r#"{{"address": "10.77.100.9", "port": 80, "backend": [{{"address": "{backend}", "exec_command": "id"}}]}}"#
    );
    refused(&tcp, "/v1/vips", nested, 403, "backend[0].exec_command");
    // The LB's own address with port 0 would take SSH and the API; the web listener's address and port too.
    refused(&tcp, "/v1/vips", format!(r#"{{"address": "{}", "port": 0}}"#, bed.lb_v4()), 422, "port");
    let (web_ip, web_port) = WEB_LISTEN.split_once(':').unwrap();
    refused(&tcp, "/v1/vips", format!(r#"{{"address": "{web_ip}", "port": {web_port}}}"#), 422, "address");

    // Allowed changes are logged once with their caller.
    let added =
        tcp.post(&backends_path(VIP_NAME), &format!(r#"{{"name": "b2", "address": "{backend}"}}"#)).unwrap();
    assert_eq!(added.status, 201, "{}", added.text());
    let drained = api.patch(&format!("{}/b2", backends_path(VIP_NAME)), r#"{"weight": 0}"#).unwrap();
    assert_eq!(drained.status, 200, "{}", drained.text());
    let log = agent.log();
    let applied: Vec<&str> = log.lines().filter(|l| l.contains("API change applied")).collect();
    assert_eq!(applied.len(), 2, "{log}");
    assert!(applied[0].contains("127.0.0.1:") && applied[0].contains("over tcp"), "{}", applied[0]);
    assert!(applied[1].contains("uid 0"), "{}", applied[1]);
    let runtime = bed.temp_dir().join("runtime.json");
    let mode = std::fs::metadata(&runtime).expect("runtime.json").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "runtime.json is readable by others");
    agent.stop().expect("stop");

    // The file may let the API set commands (on a fresh start, without the changes above).
    std::fs::remove_file(&runtime).unwrap();
    let api_keys = format!("tcp = \"{API_TCP}\"\ntoken = \"{TOKEN}\"\nallow_exec = true");
    let config = config_toml_with(
        &bed,
        &[VipConf::new(VIP4, 80, "tcp").backends(0..2)],
        Tables { api: &api_keys, ..Tables::default() },
    );
    let mut agent = Agent::start(&bed, &config, &["--fresh"]).expect("agent with allow_exec");
    let api = Client::unix(agent.api_socket());
    wait_until("the control API", API_WAIT, POLL, || {
        api.get("/v1/stats").ok().filter(|r| r.status == 200).map(drop)
    })
    .unwrap();
    let exec = format!(
        r#"{{"name": "e", "address": "{}", "check": "exec", "exec_command": "true"}}"#,
        bed.backend_v4(2)
    );
    let vip_with_exec = api.post(&backends_path(VIP_NAME), &exec).unwrap();
    assert_eq!(vip_with_exec.status, 201, "{}", vip_with_exec.text());
    wait_until("the API-added exec check passing", Duration::from_secs(10), POLL, || {
        let stats = api.get("/v1/stats").ok()?.json().ok()?;
        backend_stats(&stats, VIP_NAME, "e").filter(|b| b["state"] == "up").map(drop)
    })
    .unwrap();
    agent.stop().expect("stop");

    // A config file that captures the host's traffic is refused at start, naming the field.
    let capture = format!(
        "{config}[[vip]]\nname = \"everything\"\naddress = \"{}\"\nport = 0\nprotocol = \"tcp\"\n",
        bed.lb_v4()
    );
    let mut refused = spawn_agent(&bed, &capture, "capture").expect("spawn");
    let status = refused.wait(Duration::from_secs(10)).expect("exits");
    let log = refused.log();
    assert!(!status.success() && log.contains("vip[1] (everything).port = 0"), "{status}; log:\n{log}");
    assert!(!bed.temp_dir().join("api.sock").exists(), "the refused start left its socket behind");
}

fn sysctl(bed: &TestBed, key: &str) -> String {
    bed.lb_ns().exec("sysctl", &["-n", key]).expect("sysctl").trim().to_string()
}

#[test]
#[ignore = "needs root"]
fn forwarding_is_set_on_the_interface_for_the_vips_families_and_put_back() {
    require_root("forwarding_is_set_on_the_interface_for_the_vips_families_and_put_back");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let keys = [
        "net.ipv4.conf.eth0.forwarding",
        "net.ipv6.conf.eth0.forwarding",
        "net.ipv4.conf.all.forwarding",
        "net.ipv6.conf.all.forwarding",
    ];
    let read = || keys.map(|k| sysctl(&bed, k));
    assert_eq!(read(), ["0", "0", "0", "0"], "the bed's LB starts without forwarding");

    let v4_only = alwayson_tests::agent::config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..2)]);
    let mut agent = Agent::start(&bed, &v4_only, &["--keep-running-on-exit"]).expect("agent");
    assert_eq!(read(), ["1", "0", "0", "0"], "IPv4 VIPs only: IPv4 on eth0, nothing else");

    // An IPv6 VIP added through the API turns IPv6 forwarding on, on eth0 only, and is served.
    let api = Client::unix(agent.api_socket());
    let v6 = format!(
        r#"{{"name": "v6", "address": "{VIP6}", "port": 80, "backend": [{{"address": "{}"}}]}}"#,
        bed.backend_v6(0)
    );
    let added = api.post("/v1/vips", &v6).unwrap();
    assert_eq!(added.status, 201, "{}", added.text());
    assert_eq!(read(), ["1", "1", "0", "0"]);
    let vip6: SocketAddr = format!("[{VIP6}]:80").parse().unwrap();
    wait_until("TCP through the IPv6 VIP", Duration::from_secs(10), POLL, || {
        Streams::open(&bed, 0, vip6, 1, Duration::from_millis(50)).ok().map(|s| drop(s.stop()))
    })
    .unwrap();

    // A stop that keeps the data plane keeps forwarding; the agent that detaches
    // later puts back what the first one changed.
    agent.stop().expect("stop, keeping the data plane");
    assert_eq!(read(), ["1", "1", "0", "0"]);
    agent.restart_with(&[]).expect("restart");
    agent.stop().expect("stop");
    assert_eq!(
        read(),
        ["0", "0", "0", "0"],
        "a detaching stop restores what agents changed; log:\n{}",
        agent.log()
    );
}

#[test]
#[ignore = "needs root"]
fn a_stop_right_after_the_socket_appears_is_a_clean_stop() {
    require_root("a_stop_right_after_the_socket_appears_is_a_clean_stop");
    let bed = TestBed::builder().backends(1).build().expect("bed");
    let config = alwayson_tests::agent::config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..1)]);
    let socket = bed.temp_dir().join("api.sock");
    for round in 0..5 {
        let mut agent = spawn_agent(&bed, &config, &format!("quick{round}")).expect("spawn");
        wait_until("the control socket", Duration::from_secs(15), Duration::from_millis(1), || {
            socket.exists().then_some(())
        })
        .unwrap();
        agent.signal(libc::SIGTERM).expect("SIGTERM");
        let status = agent.wait(Duration::from_secs(15));
        let log = agent.log();
        assert!(status.is_some_and(|s| s.success()), "round {round}: {status:?}; log:\n{log}");
        assert!(log.contains("stopped;"), "round {round}: no clean stop; log:\n{log}");
        assert!(!socket.exists(), "round {round}: the socket was left behind");
    }
}
