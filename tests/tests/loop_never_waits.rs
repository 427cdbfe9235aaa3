//! The reconcile loop never waits on the network: a backend added through the
//! API whose first check hangs for seconds delays neither the API's answer nor
//! the failover of another backend.

use std::time::{Duration, Instant};

use alwayson_tests::{
    agent::find_backend,
    api::{backend_stats, backends_path, kernel_backend, start, stats, wait_all_up, POLL, VIP_NAME},
    bed::TestBed,
    http, require_root, wait_until,
};
use lb_common::BackendState;

/// On the bed's segment, held by nobody: ARP for it is never answered.
const SILENT: &str = "10.77.1.250";
/// The silent backend's check timeout: how long its first check hangs.
const SLOW_CHECK: &str = "8s";
/// From a kill to DOWN in the kernel is about fall × inter + timeout = 0.7 s
/// at the default settings; a loop that waited for the slow check would take
/// more than 7.5 s (8 s from the API call on). The bound between the two
/// leaves a loaded machine room either way.
const FAILOVER: Duration = Duration::from_secs(4);

#[test]
#[ignore = "needs root"]
fn a_hanging_first_check_delays_neither_the_api_nor_a_failover() {
    require_root("a_hanging_first_check_delays_neither_the_api_nor_a_failover");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    // The kernel gives up on an unanswered ARP after 3 s by default, failing
    // the connect; with more probes the connect hangs until the check's timeout.
    bed.lb_ns().sysctl("net.ipv4.neigh.eth0.mcast_solicit", "10").expect("sysctl");
    let (doc, agent, api) = start(&bed, false);
    wait_all_up(&doc, &api, 2);
    let maps = agent.stats().expect("pinned maps");
    let (slot, _) = find_backend(&maps, bed.backend_v4(1)).expect("BACKENDS").expect("backend1's slot");

    let socket = agent.api_socket();
    let body =
        format!(r#"{{"name": "silent", "address": "{SILENT}", "timeout": "{SLOW_CHECK}", "inter": "10s"}}"#);
    let adding = std::thread::spawn(move || {
        let asked = Instant::now();
        let response = http::Client::unix(socket).post(&backends_path(VIP_NAME), &body);
        (response, asked.elapsed())
    });
    // Long enough for the request to reach the loop, far shorter than the check.
    std::thread::sleep(Duration::from_millis(300));
    let killed = Instant::now();
    bed.stop_servers(1).expect("stop backend1");
    let down = wait_until("backend1 DOWN in the kernel", FAILOVER, Duration::from_millis(5), || {
        (maps.backend(slot).expect("BACKENDS").state == BackendState::Down as u8).then(|| killed.elapsed())
    });
    let (response, answered_in) = adding.join().expect("the API call's thread");

    let response = response.expect("POST the silent backend");
    assert_eq!(response.status, 201, "{}", response.text());
    let down =
        down.unwrap_or_else(|e| panic!("{e}; the API answered in {answered_in:?}; log:\n{}", agent.log()));
    eprintln!("backend1 DOWN in the kernel {down:?} after its kill; the API answered in {answered_in:?}");
    assert!(answered_in < FAILOVER, "the API answered only after {answered_in:?}");

    // The silent backend has a slot but takes no flows until a check answers.
    let held = kernel_backend(&agent, SILENT).expect("a slot for the silent backend");
    assert_eq!(held.state, BackendState::Down as u8);
    let shown = wait_until("the silent backend in /v1/stats", Duration::from_secs(5), POLL, || {
        backend_stats(&stats(&doc, &api), VIP_NAME, "silent")
    })
    .expect("/v1/stats");
    assert_eq!((&shown["state"], &shown["in_ring"]), (&"down".into(), &false.into()), "{shown:#}");
    let reason = shown["reason"].as_str().unwrap_or_default();
    assert!(reason == "waiting for its first check" || reason == "timeout after 8s", "{shown:#}");
    // Its first check decides when it ends, not after `rise` more.
    let log = "backend silent (10.77.1.250:80) starts DOWN: timeout after 8s";
    wait_until("the silent backend's first check to fail", Duration::from_secs(15), POLL, || {
        agent.log().contains(log).then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}; log:\n{}", agent.log()));
    assert!(!agent.log().contains("backend silent (10.77.1.250:80) UP -> DOWN"), "{}", agent.log());
}
