//! Several LB nodes behind a router that spreads a VIP over them by ECMP,
//! learned over BGP from BIRD: a node that goes silent loses its share within
//! BFD's detection time and no established stream breaks; a node stopped
//! cleanly moves its share away before it lets go of the data plane. With
//! `[cluster]`, the nodes share the flows recorded on ring slots in flux, so
//! no stream breaks when a node fails after a ring change either (without
//! sharing, the streams opened after the change on moved slots that change
//! node do break); and a rolling restart of every node fails nothing.

use std::time::{Duration, Instant};

use alwayson_tests::{
    cluster::{
        require_tools,
        ring_change::{cluster_toml, failover_after_ring_change, RingChangeOutcome, Tracked},
        vip, Announcer, ClusterBed,
    },
    require_root,
    traffic::{OpenReport, Opener, Streams, STREAM_PATIENCE},
    wait_until,
};
use lb_common::types::PROTO_TCP;

const STREAMS: usize = 60;
const STREAM_PERIOD: Duration = Duration::from_millis(10);
const OPEN_PERIOD: Duration = Duration::from_millis(5);
/// BGP sessions up and every path in the router's table.
const CONVERGE: Duration = Duration::from_secs(30);
/// New connections may fail (or stall on a lost SYN) this long after a node
/// goes silent: BFD takes about 300 ms, the rest is margin.
const SILENT_LIMIT: Duration = Duration::from_secs(1);
/// An attempt of the opener this slow lost a SYN (the first retransmission
/// comes after 1 s).
const STALL: Duration = Duration::from_millis(200);
const LOST_SYN: Duration = Duration::from_millis(900);

/// One attempt of the opener: when it started, how long until the next one
/// started (about how long it took, when longer than the period), whether it
/// failed.
#[derive(Debug)]
struct Attempt {
    at: Duration,
    took: Duration,
    failed: bool,
}

fn attempts(report: &OpenReport) -> Vec<Attempt> {
    let mut all: Vec<(Duration, bool)> = report.timeline.iter().map(|(at, _)| (*at, false)).collect();
    all.extend(report.failed_at.iter().map(|at| (*at, true)));
    all.sort();
    let next: Vec<Duration> = all.iter().skip(1).map(|(at, _)| *at).collect();
    all.iter().zip(next).map(|(&(at, failed), next)| Attempt { at, took: next - at, failed }).collect()
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "needs root"]
fn a_silenced_node_loses_its_traffic_and_no_stream_breaks() {
    require_root("a_silenced_node_loses_its_traffic_and_no_stream_breaks");
    require_tools("a_silenced_node_loses_its_traffic_and_no_stream_breaks", false);
    let bed =
        ClusterBed::builder().nodes(3).backends(3).announcer(Announcer::Agent).build().expect("cluster bed");
    let converged = bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], CONVERGE).expect("three paths");
    println!("the router had a path via every node {} after the bed was up", ms(converged));

    let streams =
        bed.spread_streams(80, STREAMS, STREAM_PERIOD, STREAM_PATIENCE).unwrap_or_else(|e| panic!("{e:#}"));
    let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
    std::thread::sleep(Duration::from_secs(1));

    let silenced_at = opener.started().elapsed();
    bed.silence(2).expect("silence lb2");
    let route_change = bed.wait_router_nodes(vip(80).ip(), &[1, 3], Duration::from_secs(10));
    // Retransmissions (streams) and retried SYNs settle; then a quiet second.
    std::thread::sleep(Duration::from_secs(3));
    let opened = opener.stop();
    let report = streams.stop();

    let all = attempts(&opened);
    let after: Vec<&Attempt> = all.iter().filter(|a| a.at >= silenced_at).collect();
    let failed_before = all.iter().filter(|a| a.failed && a.at < silenced_at).count();
    let bad: Vec<&&Attempt> = after.iter().filter(|a| a.failed || a.took >= STALL).collect();
    let last_bad = bad.iter().map(|a| a.at - silenced_at).max();
    let longest = after.iter().map(|a| a.took).max().unwrap_or_default();
    println!(
        "silenced lb2: the router dropped its path after {}; new connections: {} ok, {} failed \
         ({} before the silencing), {} stalled >= {}; last failed or stalled attempt started {} after \
         the silencing, the longest took {}",
        route_change.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})")),
        opened.ok,
        opened.failed.len(),
        failed_before,
        bad.iter().filter(|a| !a.failed).count(),
        ms(STALL),
        last_bad.map(ms).unwrap_or_else(|| "none".into()),
        ms(longest),
    );
    for a in &bad {
        println!(
            "  attempt at +{} took {}{}",
            ms(a.at - silenced_at),
            ms(a.took),
            if a.failed { ", failed" } else { "" }
        );
    }
    println!("streams: {} round trips, longest wait for an echo {}", report.round_trips, ms(report.max_gap));

    // Until the router drops the path, a third of the new connections go to
    // the silent node: the measured failures can only show the first of them
    // (the opener waits for each), the route change shows the whole window.
    let route_change = route_change.expect("the router drops lb2's path");
    assert!(
        route_change <= SILENT_LIMIT,
        "the router sent new connections to the silent lb2 for {}\n{}",
        ms(route_change),
        bed.logs()
    );
    assert!(report.errors.is_empty(), "broken streams: {:#?}\n{}", report.errors, bed.logs());
    assert_eq!(
        failed_before,
        0,
        "connections failed before the silencing: {:#?}\n{}",
        opened.failed,
        bed.logs()
    );
    if let Some(last) = last_bad {
        assert!(
            last <= SILENT_LIMIT,
            "new connections still failed or stalled {} after the silencing: {:#?}\n{}",
            ms(last),
            opened.failed,
            bed.logs()
        );
    }
    assert_eq!(bed.router_nodes(vip(80).ip()).expect("route"), [1, 3], "{}", bed.logs());
}

#[test]
#[ignore = "needs root"]
fn a_clean_stop_withdraws_before_detaching() {
    require_root("a_clean_stop_withdraws_before_detaching");
    require_tools("a_clean_stop_withdraws_before_detaching", false);
    let bed =
        ClusterBed::builder().nodes(3).backends(3).announcer(Announcer::Agent).build().expect("cluster bed");
    bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], CONVERGE).expect("three paths");
    let streams =
        bed.spread_streams(80, STREAMS, STREAM_PERIOD, STREAM_PATIENCE).unwrap_or_else(|e| panic!("{e:#}"));
    let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
    std::thread::sleep(Duration::from_secs(1));

    let stopped_at = opener.started().elapsed();
    let start = Instant::now();
    let (route_change, community, stop) = std::thread::scope(|s| {
        let stopping = s.spawn(|| bed.stop_agent(2).map(|status| (status, start.elapsed())));
        let change = bed.wait_router_nodes(vip(80).ip(), &[1, 3], Duration::from_secs(10));
        // While lb2 drains, the router still holds its route, tagged.
        let route = bed.router_birdc(&["show", "route", "for", &vip(80).ip().to_string(), "all"]);
        (change, route, stopping.join().expect("stopping thread"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let withdrawn = bed.router_birdc(&["show", "route", "for", &vip(80).ip().to_string(), "all"]);
    let opened = opener.stop();
    let report = streams.stop();

    let all = attempts(&opened);
    let stalls: Vec<&Attempt> = all.iter().filter(|a| a.at >= stopped_at && a.took >= STALL).collect();
    println!(
        "SIGTERM to lb2's agent: the router dropped its path after {}, the agent exited after {}; \
         new connections: {} ok, {} failed, {} stalled >= {}; streams: longest wait for an echo {}",
        route_change.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})")),
        stop.as_ref().map(|(_, d)| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})")),
        opened.ok,
        opened.failed.len(),
        stalls.len(),
        ms(STALL),
        ms(report.max_gap),
    );
    for a in &stalls {
        println!("  attempt at +{} took {}", ms(a.at - stopped_at), ms(a.took));
    }
    println!("the router's route for the VIP during the drain:\n{}", community.as_deref().unwrap_or("?"));
    println!("and after it:\n{}", withdrawn.as_deref().unwrap_or("?"));

    let (status, exited) = stop.expect("lb2's agent stops");
    let route_change = route_change.expect("the router drops lb2's path");
    assert!(status.success(), "lb2's agent exited with {status}\n{}", bed.logs());
    assert!(
        route_change < exited,
        "the router still used lb2 ({}) when its agent had exited ({})\n{}",
        ms(route_change),
        ms(exited),
        bed.logs()
    );
    assert!(opened.failed.is_empty(), "failed new connections: {:#?}\n{}", opened.failed, bed.logs());
    assert!(report.errors.is_empty(), "broken streams: {:#?}\n{}", report.errors, bed.logs());
    assert!(
        stalls.iter().all(|a| a.took < LOST_SYN),
        "a SYN was lost (an attempt waited for its retransmission): {stalls:?}\n{}",
        bed.logs()
    );
    assert_eq!(bed.router_nodes(vip(80).ip()).expect("route"), [1, 3], "{}", bed.logs());
}

/// The bed itself, without the agent's BGP: BIRD on every node announces the
/// VIP statically, the router spreads it over all of them, and a silenced
/// node leaves the route by BFD and comes back when it speaks again.
#[test]
#[ignore = "needs root"]
fn the_router_spreads_the_vip_over_every_announcing_node() {
    require_root("the_router_spreads_the_vip_over_every_announcing_node");
    require_tools("the_router_spreads_the_vip_over_every_announcing_node", false);
    let bed =
        ClusterBed::builder().nodes(3).backends(3).announcer(Announcer::Bed).build().expect("cluster bed");
    let up = bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], CONVERGE).expect("three paths");
    println!("three paths after {}", ms(up));
    let streams =
        bed.spread_streams(80, STREAMS, STREAM_PERIOD, STREAM_PATIENCE).unwrap_or_else(|e| panic!("{e:#}"));
    let names = bed.bed().tcp_names(0, vip(80), 60, Duration::from_secs(3)).expect("connections");
    assert_eq!(names.len(), 3, "every backend answers: {names:?}");

    bed.silence(1).expect("silence lb1");
    let gone = bed.wait_router_nodes(vip(80).ip(), &[2, 3], Duration::from_secs(10)).expect("lb1 leaves");
    bed.unsilence(1).expect("unsilence lb1");
    let back = bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], CONVERGE).expect("lb1 comes back");
    println!("silenced lb1 left the route after {}, came back {} after unsilencing", ms(gone), ms(back));
    let report = streams.stop();
    assert!(report.errors.is_empty(), "broken streams: {:#?}\n{}", report.errors, bed.logs());
}

/// The bed's etcd option: a member per node on the cluster segment, one
/// cluster; a node cut from that segment cannot reach it, the others can.
#[test]
#[ignore = "needs root"]
fn the_bed_runs_an_etcd_member_per_node() {
    require_root("the_bed_runs_an_etcd_member_per_node");
    require_tools("the_bed_runs_an_etcd_member_per_node", true);
    let bed = ClusterBed::builder().etcd(true).start_agents(false).build().expect("cluster bed");
    let members = bed.etcdctl(1, &["member", "list"]).unwrap_or_else(|e| panic!("{e:#}\n{}", bed.logs()));
    assert_eq!(members.lines().count(), 3, "{members}");
    bed.etcdctl(1, &["put", "bed", "one"]).expect("put on lb1");
    assert_eq!(bed.etcdctl(3, &["get", "--print-value-only", "bed"]).expect("get on lb3").trim(), "one");

    bed.partition_cluster(1).expect("cut lb1");
    let cut = bed.etcdctl(1, &["--command-timeout=1s", "put", "bed", "two"]);
    assert!(cut.is_err(), "lb1's member took a write while cut off: {cut:?}");
    // If lb1 led, lb2 and lb3 first elect a new leader (election timeout 1 s):
    // a write forwarded to the old one meanwhile times out.
    let mut last = None;
    let wrote = wait_until("lb2 and lb3 to take a write", Duration::from_secs(15), Duration::ZERO, || {
        let put = bed.etcdctl(2, &["--command-timeout=2s", "put", "bed", "three"]);
        last = put.as_ref().err().map(|e| format!("{e:#}"));
        put.ok()
    });
    wrote.unwrap_or_else(|e| panic!("{e:#}: {last:?}\n{}", bed.logs()));
    bed.heal_cluster(1).expect("heal lb1");
    // lb1 reads what the majority reads. That is "three", or "two": the
    // refused put may have been sent to the leader before the cut was
    // noticed, and TCP delivers it once the network heals.
    let what = "lb1 to read what the majority reads";
    let read = |n| bed.etcdctl(n, &["--command-timeout=2s", "get", "--print-value-only", "bed"]).ok();
    let healed = wait_until(what, Duration::from_secs(15), Duration::from_millis(200), || {
        let (one, two) = (read(1)?, read(2)?);
        (one.trim() == two.trim() && ["two", "three"].contains(&one.trim())).then_some(())
    });
    healed.unwrap_or_else(|e| panic!("{e:#}\n{}", bed.logs()));
}

// ------------------------------------------------------------------ shared flows

/// The scenario, run by `alwayson_tests::cluster::ring_change` (the bench
/// counts its broken streams too): 3 nodes with `[cluster]`, 60 streams
/// before a backend is added and 60 after, the node carrying most of the
/// post-change streams on moved slots silenced.
fn failover_after_a_ring_change(share_flows: bool) -> RingChangeOutcome {
    failover_after_ring_change(share_flows).unwrap_or_else(|e| panic!("share_flows = {share_flows}: {e:#}"))
}

#[test]
#[ignore = "needs root"]
fn flows_survive_a_node_failover_after_a_ring_change() {
    require_root("flows_survive_a_node_failover_after_a_ring_change");
    require_tools("flows_survive_a_node_failover_after_a_ring_change", true);
    let run = failover_after_a_ring_change(true);
    let report = run.describe();
    println!("{report}");
    let bad = |what: String| format!("{what}\n{report}\n{}", run.logs);
    let on_moved_changed = run.count(Tracked::needs_sharing);
    assert!(
        on_moved_changed >= 1,
        "{}",
        bad("no stream opened after the change on a moved slot changed node: the failover tested nothing"
            .into())
    );
    let broken: Vec<String> = run.streams.iter().filter(|t| t.broke()).map(Tracked::describe).collect();
    assert!(broken.is_empty(), "{}", bad(format!("streams broke: {broken:#?}")));
    let silent: Vec<String> =
        run.streams.iter().filter(|t| t.trips <= t.trips_at_silence).map(Tracked::describe).collect();
    assert!(
        silent.is_empty(),
        "{}",
        bad(format!("streams made no round trip after the silencing: {silent:#?}"))
    );
}

#[test]
#[ignore = "needs root"]
fn without_shared_flows_a_failover_after_a_ring_change_breaks_streams() {
    require_root("without_shared_flows_a_failover_after_a_ring_change_breaks_streams");
    require_tools("without_shared_flows_a_failover_after_a_ring_change_breaks_streams", true);
    let run = failover_after_a_ring_change(false);
    let report = run.describe();
    println!("{report}");
    let bad = |what: String| format!("{what}\n{report}\n{}", run.logs);
    // Only a stream opened after the change, on a moved slot, that changed
    // node needs a shared flow (why: `Tracked::needs_sharing`). Streams
    // opened before the change are kept by the prior-owner rule, on any node.
    let needs_sharing = Tracked::needs_sharing;
    let at_risk = run.count(needs_sharing);
    assert!(
        at_risk >= 1,
        "{}",
        bad("no stream opened after the change on a moved slot changed node: the scenario cannot tell shared \
             flows from their absence"
            .into())
    );
    let broke = run.count(|t| needs_sharing(t) && t.broke());
    assert!(
        broke >= 1,
        "{}",
        bad(format!(
            "none of the {at_risk} streams that needed a shared flow broke without share_flows: the test \
             cannot tell the mechanism from its absence"
        ))
    );
    let unexpected: Vec<String> =
        run.streams.iter().filter(|t| t.broke() && !needs_sharing(t)).map(Tracked::describe).collect();
    assert!(
        unexpected.is_empty(),
        "{}",
        bad(format!(
            "streams that needed no shared flow broke (the prior-owner rule failed?): {unexpected:#?}"
        ))
    );
}

// ------------------------------------------------------------------ rolling restart

const ROLLING_STREAMS: usize = 30;

#[test]
#[ignore = "needs root"]
fn a_rolling_restart_of_every_node_fails_no_request() {
    require_root("a_rolling_restart_of_every_node_fails_no_request");
    require_tools("a_rolling_restart_of_every_node_fails_no_request", true);
    let started = Instant::now();
    let bed = ClusterBed::builder()
        .nodes(3)
        .backends(3)
        .etcd(true)
        .node_toml(|n| cluster_toml(n, 3, true))
        .build()
        .expect("cluster bed");
    bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], CONVERGE).expect("three paths");
    let streams = Streams::open(bed.bed(), 0, vip(80), ROLLING_STREAMS, STREAM_PERIOD)
        .unwrap_or_else(|e| panic!("opening {ROLLING_STREAMS} streams: {e}\n{}", bed.logs()));
    let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
    std::thread::sleep(Duration::from_secs(1));

    let mut steps = Vec::new();
    for n in 1..=bed.nodes() {
        let others: Vec<usize> = (1..=bed.nodes()).filter(|&m| m != n).collect();
        let at = opener.started().elapsed();
        let t0 = Instant::now();
        let status = bed.stop_agent(n).unwrap_or_else(|e| panic!("stopping lb{n}: {e:#}"));
        let stopped = t0.elapsed();
        assert!(status.success(), "lb{n}'s agent exited with {status}\n{}", bed.logs());
        let paths_when_stopped = bed.router_nodes(vip(80).ip()).expect("route");
        assert_eq!(paths_when_stopped, others, "lb{n} exited before the router dropped it\n{}", bed.logs());
        let t1 = Instant::now();
        bed.start_agent(n).unwrap_or_else(|e| panic!("starting lb{n}: {e:#}\n{}", bed.logs()));
        let applied = t1.elapsed();
        let back = bed.wait_paths(vip(80).ip(), 3, CONVERGE).unwrap_or_else(|e| panic!("lb{n} back: {e:#}"));
        let back = t1.elapsed().max(back);
        let flows = bed.vip_stats(n, vip(80), PROTO_TCP).map(|s| s.new_flows).unwrap_or(0);
        std::thread::sleep(Duration::from_millis(500));
        let carried = bed.vip_stats(n, vip(80), PROTO_TCP).map(|s| s.new_flows).unwrap_or(0) - flows;
        steps.push((n, at, stopped, applied, back, carried));
    }
    std::thread::sleep(Duration::from_secs(1));
    let opened = opener.stop();
    let report = streams.stop();
    let all = attempts(&opened);
    let stalls: Vec<&Attempt> = all.iter().filter(|a| a.took >= STALL).collect();
    for (n, at, stopped, applied, back, carried) in &steps {
        println!(
            "lb{n}: SIGTERM at +{}, exited after {}; restarted, config applied after {}, three paths again \
             after {}; {carried} new flows on lb{n} in the next 500 ms",
            ms(*at),
            ms(*stopped),
            ms(*applied),
            ms(*back)
        );
    }
    println!(
        "rolling restart: new connections {} ok, {} failed, {} stalled >= {}; {ROLLING_STREAMS} streams: {} \
         broke, {} round trips, longest wait for an echo {}; the test took {}",
        opened.ok,
        opened.failed.len(),
        stalls.len(),
        ms(STALL),
        report.errors.len(),
        report.round_trips,
        ms(report.max_gap),
        ms(started.elapsed())
    );
    for a in &stalls {
        println!("  attempt at +{} took {}{}", ms(a.at), ms(a.took), if a.failed { ", failed" } else { "" });
    }
    assert!(opened.failed.is_empty(), "failed new connections: {:#?}\n{}", opened.failed, bed.logs());
    assert!(report.errors.is_empty(), "broken streams: {:#?}\n{}", report.errors, bed.logs());
    assert!(
        steps.iter().all(|s| s.5 > 0),
        "a restarted node took no new flows: {:?}\n{}",
        steps.iter().map(|s| (s.0, s.5)).collect::<Vec<_>>(),
        bed.logs()
    );
}
