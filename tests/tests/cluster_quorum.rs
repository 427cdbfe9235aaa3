//! Three nodes that share backend health through etcd (`[cluster]`): the
//! same rings everywhere, a node that cannot reach what the others reach
//! steps aside (never leaving fewer than half announcing), a node cut from
//! the cluster network withdraws after its grace, losing etcd everywhere
//! keeps the VIP up, and a runtime change made on one node holds on all.
//!
//! Timers are the bed's short ones (`ClusterTimes`): lease 2 s, quorum
//! grace 3 s, odd one out after 2 s; checks every 200 ms, 2 to rise or fall.

use std::{
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread::{Scope, ScopedJoinHandle},
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::VipConf,
    cluster::{backend_v4, require_tools, vip, ClusterBed, VIP},
    require_root,
    traffic::{OpenReport, Opener},
};
use serde_json::Value;

/// The VIP's name in the API: `<address>:<port>/<protocol>`.
const VIP_NAME: &str = "10.77.163.1:80/tcp";
const BACKENDS: usize = 3;
/// Fast checks: a cut backend is DOWN after about 2 × 200 ms.
const CHECKS: &str = "check = \"tcp\"\ninter = \"200ms\"\nrise = 2\nfall = 2";
const CHECK_INTER: Duration = Duration::from_millis(200);
const FALL: u32 = 2;
/// The bed up: BGP sessions, every node in etcd, every backend up.
const SETTLE: Duration = Duration::from_secs(30);
const STREAMS: usize = 30;
const STREAM_PERIOD: Duration = Duration::from_millis(10);
const OPEN_PERIOD: Duration = Duration::from_millis(10);
const POLL: Duration = Duration::from_millis(20);
/// How long `/v1/stats` may trail the agent's decisions: the agent refreshes
/// its cluster part once per etcd round (500 ms), and the document is sampled
/// once a second.
const STATUS_LAG: Duration = Duration::from_secs(2);

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn build(test: &str) -> ClusterBed {
    require_root(test);
    require_tools(test, true);
    ClusterBed::builder()
        .nodes(3)
        .backends(BACKENDS)
        .vip(VipConf::new(VIP, 80, "tcp").backends(0..BACKENDS).keys(CHECKS))
        .cluster(true)
        .build()
        .expect("cluster bed")
}

/// Every node's `/v1/stats`, or why one is missing.
fn all_stats(bed: &ClusterBed) -> Result<Vec<Value>, String> {
    (1..=bed.nodes()).map(|n| bed.api_stats(n).map_err(|e| format!("{e:#}"))).collect()
}

fn vip_backends(stats: &Value) -> Vec<Value> {
    stats["vips"]
        .as_array()
        .and_then(|vips| vips.iter().find(|v| v["name"] == VIP_NAME))
        .and_then(|v| v["backends"].as_array().cloned())
        .unwrap_or_default()
}

fn backend(stats: &Value, name: &str) -> Value {
    vip_backends(stats).into_iter().find(|b| b["name"] == name).unwrap_or(Value::Null)
}

fn backend_name(i: usize) -> String {
    format!("backend{i}")
}

/// What the assertions print about the nodes: per node the cluster part and
/// the VIP's backends, compactly.
fn summary(stats: &[Value]) -> String {
    let mut out = String::new();
    for (i, s) in stats.iter().enumerate() {
        let backends: Vec<String> = vip_backends(s)
            .iter()
            .map(|b| {
                format!(
                    "{} admin={} health={} state={} weight={} in_ring={}",
                    b["name"], b["admin"], b["health"], b["state"], b["weight"], b["in_ring"]
                )
            })
            .collect();
        let drops: Vec<String> = s["drops"]
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
            .map(|(reason, n)| format!("{reason}={n}"))
            .collect();
        out.push_str(&format!(
            "lb{}: cluster {}\n  drops: {}\n  {}\n",
            i + 1,
            s["cluster"],
            if drops.is_empty() { "none".into() } else { drops.join(" ") },
            backends.join("\n  ")
        ));
    }
    out
}

/// Nodes' digests, equal on all and not empty.
fn digests_equal(stats: &[Value]) -> bool {
    let first = &stats[0]["cluster"]["digests"];
    first.as_object().is_some_and(|d| !d.is_empty())
        && stats.iter().all(|s| &s["cluster"]["digests"] == first)
}

/// Every node in the quorum with every other: source `quorum`, all nodes
/// live and heard, digests equal, nobody withdrawn, every backend up and in
/// the ring on every node.
fn all_agree(stats: &[Value], nodes: usize) -> bool {
    let names: Vec<String> = (1..=nodes).map(|n| format!("lb{n}")).collect();
    let everyone = stats.iter().all(|s| {
        let c = &s["cluster"];
        let live: Vec<String> = c["live_nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect();
        let mut live_sorted = live.clone();
        live_sorted.sort();
        c["source"] == "quorum"
            && live_sorted == names
            && c["peers_heard"].as_array().is_some_and(|p| p.len() == nodes - 1)
            && c["withdrawn_because"].is_null()
            && c["digests_differ"].as_array().is_some_and(Vec::is_empty)
            && vip_backends(s).len() == BACKENDS
            && vip_backends(s).iter().all(|b| b["state"] == "up" && b["in_ring"] == true)
    });
    everyone && digests_equal(stats)
}

/// Waits until the router has a path via every node and the nodes agree
/// ([`all_agree`]); how long that took.
fn settle(bed: &ClusterBed) -> Duration {
    let start = Instant::now();
    bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], SETTLE).expect("a path via every node");
    wait_stats(bed, "the nodes to agree", SETTLE, |s| all_agree(s, bed.nodes()));
    start.elapsed()
}

/// Waits until `f` holds for every node's stats, for at most `limit`; how
/// long that took, or the last stats (summarised) and every log.
fn wait_stats(
    bed: &ClusterBed,
    what: &str,
    limit: Duration,
    mut f: impl FnMut(&[Value]) -> bool,
) -> Duration {
    let start = Instant::now();
    let last = loop {
        let last = all_stats(bed);
        if last.as_ref().is_ok_and(|s| f(s)) {
            return start.elapsed();
        }
        if start.elapsed() >= limit {
            break last;
        }
        std::thread::sleep(POLL);
    };
    let last = last.map(|s| summary(&s)).unwrap_or_else(|e| e);
    panic!("timed out after {limit:?} waiting for {what}; last:\n{last}\n{}", bed.logs());
}

/// When (since the watch started) the router's next hops became what they
/// were, as node numbers, or why `ip route` failed.
type PathChange = (Duration, Result<Vec<usize>, String>);

/// The router's next hops for the VIP, sampled every few milliseconds on a
/// thread of its own: every change, with when it happened.
/// Dropped without [`PathWatch::stop`] (a test that panicked), the thread
/// stops all the same, so that the scope it runs in can end.
struct PathWatch<'scope> {
    stop: Arc<AtomicBool>,
    /// `None` once [`PathWatch::stop`] has joined it.
    thread: Option<ScopedJoinHandle<'scope, Vec<PathChange>>>,
    started: Instant,
}

impl Drop for PathWatch<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl<'scope> PathWatch<'scope> {
    fn start<'env>(s: &'scope Scope<'scope, 'env>, bed: &'env ClusterBed) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let stop2 = stop.clone();
        let thread = s.spawn(move || {
            let mut changes: Vec<PathChange> = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                let now = bed.router_nodes(vip(80).ip()).map_err(|e| format!("{e:#}"));
                if changes.last().map(|(_, last)| last) != Some(&now) {
                    changes.push((started.elapsed(), now));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            changes
        });
        Self { stop, thread: Some(thread), started }
    }

    fn stop(mut self) -> PathHistory {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined only here");
        PathHistory { changes: thread.join().expect("path watch"), started: self.started }
    }
}

struct PathHistory {
    changes: Vec<PathChange>,
    started: Instant,
}

impl PathHistory {
    /// Since `from`, the fewest paths the router had (an error counts as none).
    fn fewest_since(&self, from: Instant) -> usize {
        let from = from.saturating_duration_since(self.started);
        let mut fewest = usize::MAX;
        for (i, (_, paths)) in self.changes.iter().enumerate() {
            let ends = self.changes.get(i + 1).map(|(at, _)| *at);
            if ends.is_some_and(|end| end <= from) {
                continue;
            }
            fewest = fewest.min(paths.as_ref().map_or(0, Vec::len));
        }
        fewest
    }

    /// Since `from`, whether `node` was in every route the router had.
    fn always_had(&self, node: usize, from: Instant) -> bool {
        let from = from.saturating_duration_since(self.started);
        self.changes.iter().enumerate().all(|(i, (_, paths))| {
            let ends = self.changes.get(i + 1).map(|(at, _)| *at);
            ends.is_some_and(|end| end <= from) || paths.as_ref().is_ok_and(|p| p.contains(&node))
        })
    }

    /// Every change, times relative to `zero`.
    fn describe(&self, zero: Instant) -> String {
        let offset = zero.saturating_duration_since(self.started).as_secs_f64();
        let mut out = String::new();
        for (at, paths) in &self.changes {
            let t = at.as_secs_f64() - offset;
            match paths {
                Ok(p) => out.push_str(&format!("  router at {t:+.3} s: via nodes {p:?}\n")),
                Err(e) => out.push_str(&format!("  router at {t:+.3} s: {e}\n")),
            }
        }
        out
    }

    fn print(&self, zero: Instant) {
        print!("{}", self.describe(zero));
    }
}

/// Prints what the opener saw, times relative to `zero` (since the opener
/// started): failures, and attempts that took 200 ms or more (a lost SYN
/// waits 1 s for its retransmission).
fn print_opener(report: &OpenReport, zero: Duration) {
    let rel = |at: Duration| at.as_secs_f64() - zero.as_secs_f64();
    let mut all: Vec<(Duration, bool)> = report.timeline.iter().map(|(at, _)| (*at, false)).collect();
    all.extend(report.failed_at.iter().map(|at| (*at, true)));
    all.sort();
    let slow: Vec<String> = all
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 >= Duration::from_millis(200))
        .map(|w| format!("{:+.3} s took {}", rel(w[0].0), ms(w[1].0 - w[0].0)))
        .collect();
    println!(
        "new connections: {} ok, {} failed, {} took 200 ms or more{}",
        report.ok,
        report.failed.len(),
        slow.len(),
        if slow.is_empty() { String::new() } else { format!(": {}", slow.join(", ")) }
    );
    for (failure, at) in report.failed.iter().zip(&report.failed_at) {
        println!("  failed at {:+.3} s: {failure}", rel(*at));
    }
}

fn withdrawn(stats: &Value) -> bool {
    !stats["cluster"]["withdrawn_because"].is_null()
}

#[test]
#[ignore = "needs root"]
fn rings_are_identical_on_every_node() {
    let bed = build("rings_are_identical_on_every_node");
    let took = settle(&bed);
    let stats = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
    println!("the nodes agreed {} after the bed was up:\n{}", ms(took), summary(&stats));
    for (i, s) in stats.iter().enumerate() {
        let c = &s["cluster"];
        assert_eq!(c["node"], format!("lb{}", i + 1), "{}\n{}", summary(&stats), bed.logs());
        assert_eq!(c["source"], "quorum", "lb{}: {}\n{}", i + 1, summary(&stats), bed.logs());
        assert_eq!(
            c["live_nodes"].as_array().map(Vec::len),
            Some(3),
            "lb{}: {}\n{}",
            i + 1,
            summary(&stats),
            bed.logs()
        );
        assert!(c["etcd_error"].is_null(), "lb{}: {}\n{}", i + 1, summary(&stats), bed.logs());
        assert!(
            c["digests"].get(VIP_NAME).and_then(Value::as_str).is_some_and(|d| !d.is_empty()),
            "lb{} has no digest for {VIP_NAME}: {}\n{}",
            i + 1,
            summary(&stats),
            bed.logs()
        );
    }
    assert!(digests_equal(&stats), "the digests differ:\n{}\n{}", summary(&stats), bed.logs());
    // And the same backend for the same flow through every node: the rings,
    // not just their digests, are the same.
    let names = bed.bed().tcp_names(0, vip(80), 60, Duration::from_secs(3)).expect("connections");
    assert_eq!(names.len(), BACKENDS, "every backend answers: {names:?}\n{}", bed.logs());
}

#[test]
#[ignore = "needs root"]
fn a_node_cut_off_from_one_backend_withdraws_and_nobody_else_moves() {
    let bed = build("a_node_cut_off_from_one_backend_withdraws_and_nobody_else_moves");
    settle(&bed);
    let t = bed.cluster_times().expect("the nodes have [cluster]");
    let cut = backend_name(0);
    let cut_addr = backend_v4(0).to_string();
    let digests_before = all_stats(&bed).expect("stats")[0]["cluster"]["digests"].clone();
    // lb1's streams to backend0 stall until the router drops lb1's path (the
    // odd one out's window, at most `limit`); they must not break.
    let limit = t.odd_one_out_after + CHECK_INTER * (FALL + 1) + Duration::from_secs(2);
    let patience = limit * 2 + Duration::from_secs(1);
    let streams =
        bed.spread_streams(80, STREAMS, STREAM_PERIOD, patience).unwrap_or_else(|e| panic!("{e:#}"));

    std::thread::scope(|s| {
        let watch = PathWatch::start(s, &bed);
        let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
        std::thread::sleep(Duration::from_millis(500));

        let t0 = Instant::now();
        let zero = t0.duration_since(opener.started());
        bed.cut_backend(1, 0).expect("blackhole route on lb1");
        // lb1's own check fails, the quorum keeps the backend: lb1 is the odd one out.
        let odd = wait_stats(&bed, "lb1 to see backend0 DOWN", Duration::from_secs(5), |s| {
            s[0]["cluster"]["odd_one_out"].as_array().is_some_and(|o| {
                o.iter().any(|b| b.as_str().is_some_and(|b| b.ends_with(&format!(" {cut_addr}:80"))))
            })
        });
        let left = bed.wait_router_nodes(vip(80).ip(), &[2, 3], limit);
        let left_at = t0.elapsed();
        println!(
            "blackholed backend0 on lb1: lb1 the odd one out after {}, the router dropped lb1's path after {}",
            ms(odd),
            left.as_ref().map(|_| ms(left_at)).unwrap_or_else(|e| format!("never ({e:#})")),
        );
        left.expect("the router drops lb1's path");
        let said = wait_stats(&bed, "lb1 to say why it withdrew", STATUS_LAG, |s| withdrawn(&s[0]));
        println!("lb1's stats said it was withdrawn {} after the router dropped its path", ms(said));
        let stats = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
        println!("{}", summary(&stats));
        assert!(
            left_at >= t.odd_one_out_after,
            "lb1 withdrew {} after the cut, before odd_one_out_after ({:?})\n{}",
            ms(left_at),
            t.odd_one_out_after,
            bed.logs()
        );
        assert!(withdrawn(&stats[0]), "lb1 should say why it withdrew:\n{}\n{}", summary(&stats), bed.logs());
        // The majority keeps the backend, and so do lb1's rings (the effective
        // state rules them); the rings are unchanged everywhere.
        for (i, s) in stats.iter().enumerate() {
            let b = backend(s, &cut);
            assert_eq!(
                b["in_ring"],
                true,
                "lb{}: {cut} left the ring:\n{}\n{}",
                i + 1,
                summary(&stats),
                bed.logs()
            );
            assert_eq!(s["cluster"]["source"], "quorum", "lb{}:\n{}\n{}", i + 1, summary(&stats), bed.logs());
        }
        for n in [2, 3] {
            assert!(!withdrawn(&stats[n - 1]), "lb{n} withdrew too:\n{}\n{}", summary(&stats), bed.logs());
        }
        assert!(digests_equal(&stats), "the digests differ:\n{}\n{}", summary(&stats), bed.logs());
        assert_eq!(
            stats[0]["cluster"]["digests"],
            digests_before,
            "the rings changed:\n{}\n{}",
            summary(&stats),
            bed.logs()
        );

        // Stays so: lb1 out, the others in, the same rings.
        std::thread::sleep(Duration::from_secs(1));
        let stats = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
        assert!(withdrawn(&stats[0]) && digests_equal(&stats), "{}\n{}", summary(&stats), bed.logs());
        assert_eq!(bed.router_nodes(vip(80).ip()).expect("route"), [2, 3], "{}", bed.logs());

        // Heal: lb1's check rises, it agrees again and re-announces.
        bed.uncut_backend(1, 0).expect("remove the blackhole route");
        let back = bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], Duration::from_secs(10));
        println!(
            "removed the blackhole route: the router had lb1's path again after {}",
            back.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})"))
        );
        back.expect("lb1 re-announces");
        wait_stats(&bed, "the nodes to agree again", Duration::from_secs(5), |s| all_agree(s, 3));
        std::thread::sleep(Duration::from_millis(500));

        let opened = opener.stop();
        print_opener(&opened, zero);
        let history = watch.stop();
        let report = streams.stop();
        history.print(t0);
        println!(
            "streams: {} round trips, longest wait for an echo {}",
            report.round_trips,
            ms(report.max_gap)
        );
        for stream in report.streams.iter().filter(|s| s.max_gap >= Duration::from_millis(200)) {
            println!("  a stream on {} waited {} for an echo", stream.backend, ms(stream.max_gap));
        }
        for n in [2, 3] {
            assert!(history.always_had(n, t0), "the router lost lb{n}'s path at some point\n{}", bed.logs());
        }
        assert!(report.errors.is_empty(), "broken streams: {:#?}\n{}", report.errors, bed.logs());
        // Until lb1 withdraws, its new flows to backend0 are lost (it cannot
        // reach it, and its rings keep it: that is the odd one out's window).
        // Once its path is gone, new connections go through lb2 and lb3 only.
        let gone = zero + left_at;
        let failed_after: Vec<&String> = opened
            .failed
            .iter()
            .zip(&opened.failed_at)
            .filter(|(_, at)| **at >= gone)
            .map(|(f, _)| f)
            .collect();
        assert!(
            failed_after.is_empty(),
            "new connections failed after lb1's path was gone: {failed_after:#?}\n{}",
            bed.logs()
        );
        assert_eq!(opened.by_backend.len(), BACKENDS, "{:?}\n{}", opened.by_backend, bed.logs());
    });
}

#[test]
#[ignore = "needs root"]
fn two_nodes_cut_off_from_different_backends_never_leave_fewer_than_half() {
    let bed = build("two_nodes_cut_off_from_different_backends_never_leave_fewer_than_half");
    settle(&bed);
    let t = bed.cluster_times().expect("the nodes have [cluster]");

    std::thread::scope(|s| {
        let watch = PathWatch::start(s, &bed);
        let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
        std::thread::sleep(Duration::from_millis(300));

        // Both at once: the two wants-out race each other.
        let t0 = Instant::now();
        let zero = t0.duration_since(opener.started());
        bed.cut_backend(1, 0).expect("blackhole backend0 on lb1");
        bed.cut_backend(2, 1).expect("blackhole backend1 on lb2");
        let limit = t.odd_one_out_after + CHECK_INTER * (FALL + 1) + Duration::from_secs(3);
        let one_out =
            wait_stats(&bed, "lb1 or lb2 to withdraw", limit, |s| withdrawn(&s[0]) || withdrawn(&s[1]));
        let two_paths = bed.wait_paths(vip(80).ip(), 2, Duration::from_secs(5)).map(|_| t0.elapsed());
        // Watch on for longer than it takes the other to want out too, and
        // then some: nothing may change any more.
        let watch_until = t0 + t.odd_one_out_after * 2 + Duration::from_secs(4);
        let mut last = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
        while Instant::now() < watch_until {
            last = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
            std::thread::sleep(POLL);
        }
        let opened = opener.stop();
        print_opener(&opened, zero);
        let history = watch.stop();
        history.print(t0);
        println!(
            "cut lb1 from backend0 and lb2 from backend1: one withdrew (by its stats) after {}, the router \
             had 2 paths after {}",
            ms(one_out),
            two_paths.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})")),
        );
        println!("{}", summary(&last));

        let fewest = history.fewest_since(t0);
        assert!(
            fewest >= 2,
            "the router had only {fewest} path(s) at some point (times from the cuts):\n{}\n{}",
            history.describe(t0),
            bed.logs()
        );
        assert!(history.always_had(3, t0), "lb3 left the route\n{}", bed.logs());
        let out: Vec<usize> = (1..=2).filter(|&n| withdrawn(&last[n - 1])).collect();
        assert_eq!(
            out.len(),
            1,
            "exactly one of lb1 and lb2 withdraws, got {out:?}:\n{}\n{}",
            summary(&last),
            bed.logs()
        );
        assert!(!withdrawn(&last[2]), "lb3 withdrew:\n{}\n{}", summary(&last), bed.logs());
        let mut want: Vec<usize> = vec![1, 2, 3];
        want.retain(|n| *n != out[0]);
        assert_eq!(bed.router_nodes(vip(80).ip()).expect("route"), want, "{}", bed.logs());
        // The quorum keeps both backends, in every node's ring.
        for (i, s) in last.iter().enumerate() {
            for b in [0, 1] {
                assert_eq!(
                    backend(s, &backend_name(b))["in_ring"],
                    true,
                    "lb{}: backend{b} left the ring:\n{}\n{}",
                    i + 1,
                    summary(&last),
                    bed.logs()
                );
            }
        }
        assert!(digests_equal(&last), "the digests differ:\n{}\n{}", summary(&last), bed.logs());
        // No assertion on new connections: the node refused leave keeps
        // announcing with a backend it cannot reach in its rings, so its new
        // flows to that backend are lost (the price of never leaving fewer
        // than half announcing); the opener's failures are printed above.
    });
}

#[test]
#[ignore = "needs root"]
fn a_node_cut_off_from_the_cluster_network_withdraws_after_its_grace() {
    let bed = build("a_node_cut_off_from_the_cluster_network_withdraws_after_its_grace");
    settle(&bed);
    let t = bed.cluster_times().expect("the nodes have [cluster]");
    // An etcd round every 500 ms: the last answer may come that long before the cut.
    let early = Duration::from_millis(600);

    std::thread::scope(|s| {
        let watch = PathWatch::start(s, &bed);
        let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
        std::thread::sleep(Duration::from_millis(500));

        let t0 = Instant::now();
        let zero = t0.duration_since(opener.started());
        let cut_at = opener.started().elapsed();
        bed.partition_cluster(1).expect("cut lb1 from the cluster segment");
        // lb1's own API is a unix socket: still there to ask.
        let said =
            wait_stats(&bed, "lb1 to say it is withdrawn", t.quorum_grace + Duration::from_secs(5), |s| {
                withdrawn(&s[0])
            });
        let left = bed.wait_router_nodes(vip(80).ip(), &[2, 3], Duration::from_secs(3));
        let left_at = t0.elapsed();
        let gone_at = opener.started().elapsed();
        let stats = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
        println!(
            "cut lb1 from the cluster network: it said it withdrew after {}, the router dropped its path \
             after {} (quorum_grace {:?})",
            ms(said),
            left.as_ref().map(|_| ms(left_at)).unwrap_or_else(|e| format!("never ({e:#})")),
            t.quorum_grace
        );
        println!("{}", summary(&stats));
        left.expect("the router drops lb1's path");
        assert!(
            left_at + early >= t.quorum_grace,
            "lb1 withdrew {} after the cut, well before quorum_grace ({:?})\n{}",
            ms(left_at),
            t.quorum_grace,
            bed.logs()
        );
        assert!(
            left_at <= t.quorum_grace + Duration::from_secs(3),
            "lb1 withdrew only {} after the cut (quorum_grace {:?})\n{}",
            ms(left_at),
            t.quorum_grace,
            bed.logs()
        );
        assert!(
            stats[0]["cluster"]["etcd_error"].is_string() || stats[0]["cluster"]["source"] != "quorum",
            "lb1 does not know it lost etcd:\n{}\n{}",
            summary(&stats),
            bed.logs()
        );
        // The others keep quorum (their member pair still is one), and lb1
        // leaves their live nodes once its lease expires.
        let majority = wait_stats(
            &bed,
            "lb2 and lb3 to hold quorum without lb1",
            t.lease_ttl + Duration::from_secs(3),
            |s| {
                s[1..].iter().all(|s| {
                    let c = &s["cluster"];
                    c["source"] == "quorum"
                        && c["withdrawn_because"].is_null()
                        && c["live_nodes"]
                            .as_array()
                            .is_some_and(|l| l.len() == 2 && !l.contains(&Value::from("lb1")))
                })
            },
        );
        println!("lb2 and lb3 had only each other as live nodes {} after lb1 withdrew", ms(majority));

        // Serving goes on through lb2 and lb3.
        std::thread::sleep(Duration::from_secs(2));
        let opened = opener.stop();
        print_opener(&opened, zero);
        let ok_after = opened.timeline.iter().filter(|(at, _)| *at >= gone_at).count();
        let failed_after: Vec<&String> = opened
            .failed
            .iter()
            .zip(&opened.failed_at)
            .filter(|(_, at)| **at >= gone_at)
            .map(|(f, _)| f)
            .collect();
        let failed_during = opened.failed_at.iter().filter(|at| **at >= cut_at && **at < gone_at).count();
        println!(
            "  of which {failed_during} failed between the cut and the withdrawal, {ok_after} succeeded after \
             lb1's path was gone"
        );
        assert!(
            failed_after.is_empty(),
            "failed new connections after lb1 left: {failed_after:#?}\n{}",
            bed.logs()
        );
        assert!(ok_after > 0, "no new connection succeeded after lb1 left\n{}", bed.logs());

        // Heal: lb1 reaches etcd again and re-announces.
        let healed = Instant::now();
        bed.heal_cluster(1).expect("heal lb1");
        let back = bed.wait_router_nodes(vip(80).ip(), &[1, 2, 3], Duration::from_secs(15));
        println!(
            "healed lb1: the router had its path again after {}",
            back.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})"))
        );
        back.expect("lb1 re-announces");
        wait_stats(&bed, "the nodes to agree again", Duration::from_secs(10), |s| all_agree(s, 3));
        println!("the nodes agreed again {} after healing", ms(healed.elapsed()));
        let history = watch.stop();
        history.print(t0);
        for n in [2, 3] {
            assert!(history.always_had(n, t0), "the router lost lb{n}'s path at some point\n{}", bed.logs());
        }
    });
}

#[test]
#[ignore = "needs root"]
fn losing_etcd_everywhere_keeps_the_vip_up() {
    let bed = build("losing_etcd_everywhere_keeps_the_vip_up");
    settle(&bed);
    let t = bed.cluster_times().expect("the nodes have [cluster]");

    std::thread::scope(|s| {
        let watch = PathWatch::start(s, &bed);
        let opener = Opener::start(bed.bed(), 0, vip(80), OPEN_PERIOD);
        std::thread::sleep(Duration::from_millis(500));

        let t0 = Instant::now();
        let zero = t0.duration_since(opener.started());
        for n in 1..=3 {
            bed.kill_etcd(n);
        }
        let local =
            wait_stats(&bed, "every node to fall back to its own checks", Duration::from_secs(6), |s| {
                s.iter().all(|s| s["cluster"]["source"] == "local_only")
            });
        println!("killed every etcd member: every node's source was local_only after {}", ms(local));
        // Past the quorum grace and then some: a node that took this for being
        // cut off would withdraw meanwhile.
        let until = t0 + t.quorum_grace * 2 + Duration::from_secs(2);
        let mut last = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
        let mut not_local: Option<String> = None;
        while Instant::now() < until {
            last = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
            for (i, s) in last.iter().enumerate() {
                if not_local.is_none() && (s["cluster"]["source"] != "local_only" || withdrawn(s)) {
                    not_local = Some(format!("lb{} at {}: {}", i + 1, ms(t0.elapsed()), s["cluster"]));
                }
            }
            std::thread::sleep(POLL);
        }
        let opened = opener.stop();
        print_opener(&opened, zero);
        let history = watch.stop();
        history.print(t0);
        for n in 1..=3 {
            for line in bed.agent_log(n).lines().filter(|l| l.contains("cluster::member")).skip(2) {
                println!("  lb{n}: {line}");
            }
        }
        println!(
            "new connections: {} ok, {} failed; every node's status at the end:\n{}",
            opened.ok,
            opened.failed.len(),
            summary(&last)
        );
        assert!(not_local.is_none(), "a node left local_only or withdrew: {not_local:?}\n{}", bed.logs());
        for (i, s) in last.iter().enumerate() {
            assert!(
                s["cluster"]["etcd_error"].is_string(),
                "lb{} reports no etcd error:\n{}\n{}",
                i + 1,
                summary(&last),
                bed.logs()
            );
        }
        assert_eq!(history.fewest_since(t0), 3, "the router lost a path\n{}", bed.logs());
        assert!(opened.failed.is_empty(), "failed new connections: {:#?}\n{}", opened.failed, bed.logs());
        assert_eq!(opened.by_backend.len(), BACKENDS, "{:?}\n{}", opened.by_backend, bed.logs());
    });
}

#[test]
#[ignore = "needs root"]
fn a_drain_through_one_nodes_api_drains_on_every_node() {
    let bed = build("a_drain_through_one_nodes_api_drains_on_every_node");
    settle(&bed);
    let t = bed.cluster_times().expect("the nodes have [cluster]");
    let before = all_stats(&bed).expect("stats")[0]["cluster"]["digests"].clone();
    let drained = backend_name(1);

    std::thread::scope(|s| {
        let watch = PathWatch::start(s, &bed);
        let t0 = Instant::now();
        let out = bed
            .cli(1, &["backend", "set", "--vip", VIP_NAME, &drained, "--state", "drain"])
            .unwrap_or_else(|e| panic!("alwayson backend set on lb1: {e:#}\n{}", bed.logs()));
        println!("alwayson backend set on lb1: {}", out.trim());
        let everywhere = wait_stats(&bed, "backend1 drained on every node", Duration::from_secs(5), |s| {
            s.iter().all(|s| {
                let b = backend(s, &drained);
                b["admin"] == "drain" && b["state"] == "drain" && b["in_ring"] == false
            }) && digests_equal(s)
                && s[0]["cluster"]["digests"] != before
        });
        let stats = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
        println!(
            "drained backend1 through lb1's API: drained on every node, new digests equal, after {} (stats \
             trail by up to {STATUS_LAG:?})\n{}",
            ms(everywhere),
            summary(&stats)
        );
        for (i, s) in stats.iter().enumerate() {
            for b in [0, 2] {
                let other = backend(s, &backend_name(b));
                assert!(
                    other["state"] == "up" && other["in_ring"] == true,
                    "lb{}: backend{b} should stay as it was:\n{}\n{}",
                    i + 1,
                    summary(&stats),
                    bed.logs()
                );
            }
        }
        // Once all have it, no node's rings differ from the majority's, and
        // none withdrew over the change (a digest alarm lasting
        // odd_one_out_after would have withdrawn the node that made it).
        let calm = wait_stats(&bed, "no digest alarm on any node", STATUS_LAG, |s| {
            s.iter().all(|s| s["cluster"]["digests_differ"].as_array().is_some_and(Vec::is_empty))
        });
        println!("no digest alarm on any node {} after every node had the drain", ms(calm));
        let hold = t0 + t.odd_one_out_after + STATUS_LAG;
        let mut withdrew = None;
        while Instant::now() < hold {
            let stats = all_stats(&bed).unwrap_or_else(|e| panic!("{e}\n{}", bed.logs()));
            if let Some(n) = stats.iter().position(withdrawn) {
                withdrew.get_or_insert(format!(
                    "lb{} at {}: {}",
                    n + 1,
                    ms(t0.elapsed()),
                    stats[n]["cluster"]
                ));
            }
            std::thread::sleep(POLL);
        }
        let history = watch.stop();
        history.print(t0);
        assert!(withdrew.is_none(), "a node withdrew over the drain: {withdrew:?}\n{}", bed.logs());
        assert_eq!(history.fewest_since(t0), 3, "the router lost a path over the drain\n{}", bed.logs());
        // New connections through any node avoid the drained backend.
        let names = bed.bed().tcp_names(0, vip(80), 60, Duration::from_secs(3)).expect("connections");
        assert!(
            !names.contains(&drained),
            "new connections still reach {drained}: {names:?}\n{}",
            bed.logs()
        );
    });
}
