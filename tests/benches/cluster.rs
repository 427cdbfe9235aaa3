//! Three LB nodes behind a router (the cluster bed): how fast a silenced node
//! loses its paths (BFD), and how fast the nodes agree on the rings after a
//! backend dies (quorum convergence). Ten of each; median and worst. Then
//! the failover after a ring change (`cluster::ring_change`, a bed of its own
//! each run, about 12 s): how many streams break with flows shared and
//! without, three runs of each.

use std::time::{Duration, Instant};

use alwayson_tests::{
    agent::find_backend,
    bench::{spread, Table},
    cluster::{
        ring_change::{failover_after_ring_change, RingChangeOutcome},
        vip, ClusterBed,
    },
};
use lb_common::BackendState;
use serde_json::json;

const SILENCES: usize = 10;
const DEATHS: usize = 10;
const CONVERGE: Duration = Duration::from_secs(60);
/// Runs of the failover after a ring change, with flows shared and without.
const RING_CHANGE_RUNS: usize = 3;

fn main() {
    alwayson_tests::require_root("the cluster benchmark");
    let bed =
        ClusterBed::builder().nodes(3).backends(3).clients(1).cluster(true).build().expect("cluster bed");
    let ip = vip(80).ip();
    bed.wait_router_nodes(ip, &[1, 2, 3], CONVERGE).unwrap_or_else(|e| panic!("{e:#}\n{}", bed.logs()));

    // A silenced node: its traffic dropped both ways, so only BFD can tell.
    let mut failover = Vec::new();
    for i in 0..SILENCES {
        let node = 1 + i % 3;
        let rest: Vec<usize> = (1..=3).filter(|&n| n != node).collect();
        bed.silence(node).expect("silence");
        let took =
            bed.wait_router_nodes(ip, &rest, CONVERGE).unwrap_or_else(|e| panic!("{e:#}\n{}", bed.logs()));
        failover.push(took.as_secs_f64() * 1000.0);
        bed.unsilence(node).expect("unsilence");
        bed.wait_router_nodes(ip, &[1, 2, 3], CONVERGE).unwrap_or_else(|e| panic!("{e:#}\n{}", bed.logs()));
    }

    // A backend dies: from its death until every node's rings leave it out and
    // every node's digests are equal again.
    let mut convergence = Vec::new();
    for i in 0..DEATHS {
        let victim = i % 3;
        bed.bed().stop_servers(victim).expect("stop");
        let died = Instant::now();
        wait_agreed(&bed, Some(victim), died);
        convergence.push(died.elapsed().as_secs_f64() * 1000.0);
        bed.bed().start_servers(victim).expect("start");
        wait_agreed(&bed, None, Instant::now());
    }
    // One bed at a time: the ring-change scenario builds its own.
    drop(bed);

    // Alternated, so that both settings see the same conditions.
    let mut ring_change: [Vec<RingChangeOutcome>; 2] = Default::default();
    let mut ring_change_failed: [Vec<String>; 2] = Default::default();
    for run in 1..=RING_CHANGE_RUNS {
        for (i, share_flows) in [true, false].into_iter().enumerate() {
            match failover_after_ring_change(share_flows) {
                Ok(outcome) => {
                    let [before, after] = &outcome.groups;
                    println!(
                        "failover after a ring change, run {run}, share_flows = {share_flows}: lb{} \
                         silenced (carried {} + {} streams, {} + {} on moved slots); {} needed sharing, {} of \
                         them broke; {} broke in all ({} opened before the change, {} after); {:.1} s",
                        outcome.silenced,
                        before.carried,
                        after.carried,
                        before.carried_moved,
                        after.carried_moved,
                        outcome.needed_sharing,
                        outcome.broken_needing_sharing,
                        outcome.broken,
                        before.broken,
                        after.broken,
                        outcome.timings.total.as_secs_f64(),
                    );
                    ring_change[i].push(outcome);
                }
                Err(e) => {
                    let first = format!("{e:#}").lines().next().unwrap_or_default().to_string();
                    eprintln!("failover after a ring change, run {run}, share_flows = {share_flows}: {e:#}");
                    println!(
                        "failover after a ring change, run {run}, share_flows = {share_flows}: failed: {first}"
                    );
                    ring_change_failed[i].push(first);
                }
            }
        }
    }

    let mut table = Table::new(
        "cluster",
        "Three nodes behind a router (BIRD, ECMP, BFD 100 ms × 3); health shared through etcd",
        &["what", "median", "min..max", "runs"],
    );
    for (name, samples) in [
        ("silenced node: its paths gone from the router (BFD)", &mut failover),
        ("backend death: out of every node's rings (kernel maps)", &mut convergence),
    ] {
        let (m, lo, hi) = spread(samples);
        table.row(
            &[name.into(), format!("{m:.0} ms"), format!("{lo:.0}..{hi:.0} ms"), samples.len().to_string()],
            json!({"case": name, "median_ms": m, "min_ms": lo, "max_ms": hi, "samples": samples}),
        );
    }
    for (i, name) in [
        "failover after a ring change, flows shared: streams broken",
        "failover after a ring change, not shared: streams broken",
    ]
    .into_iter()
    .enumerate()
    {
        let outcomes = &ring_change[i];
        let failed = &ring_change_failed[i];
        let mut broken: Vec<f64> = outcomes.iter().map(|o| o.broken as f64).collect();
        let needed: Vec<usize> = outcomes.iter().map(|o| o.needed_sharing).collect();
        let list = |v: &[usize]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>().join(", ");
        let runs = if failed.is_empty() {
            outcomes.len().to_string()
        } else {
            format!("{} of {}", outcomes.len(), outcomes.len() + failed.len())
        };
        let runs = format!("{runs} ({} needed sharing)", list(&needed));
        let raw = json!({
            "case": name,
            "share_flows": i == 0,
            "broken": outcomes.iter().map(|o| o.broken).collect::<Vec<_>>(),
            "needed_sharing": needed,
            "broken_needing_sharing": outcomes.iter().map(|o| o.broken_needing_sharing).collect::<Vec<_>>(),
            "silenced": outcomes.iter().map(|o| o.silenced).collect::<Vec<_>>(),
            "run_s": outcomes.iter().map(|o| o.timings.total.as_secs_f64()).collect::<Vec<_>>(),
            "failed": failed,
        });
        if broken.is_empty() {
            table.row(&[name.into(), "–".into(), "–".into(), runs], raw);
            continue;
        }
        let (m, lo, hi) = spread(&mut broken);
        table.row(&[name.into(), count(m), format!("{lo:.0}..{hi:.0}"), runs], raw);
    }
    table.finish(json!({}));
    let failed: usize = ring_change_failed.iter().map(Vec::len).sum();
    assert!(failed == 0, "{failed} runs of the failover after a ring change failed (their errors above)");
}

/// A median of counts: whole, or halfway between two.
fn count(m: f64) -> String {
    if m.fract() == 0.0 {
        format!("{m:.0}")
    } else {
        format!("{m:.1}")
    }
}

/// Waits until every node's kernel holds backend `victim` DOWN (`Some`) or
/// every backend UP (`None`): the rings are built in the same apply, from
/// the same effective state, so this is when they agree. Read from the
/// pinned maps, not `/v1/stats`, which is sampled once a second.
fn wait_agreed(bed: &ClusterBed, victim: Option<usize>, since: Instant) {
    let stats: Vec<_> = (1..=3).map(|n| bed.stats(n).expect("pinned maps")).collect();
    loop {
        let agreed = stats.iter().all(|s| {
            (0..3).all(|i| {
                let addr = alwayson_tests::cluster::backend_v4(i);
                let want = if victim == Some(i) { BackendState::Down } else { BackendState::Up };
                find_backend(s, addr).ok().flatten().is_some_and(|(_, b)| b.state == want as u8)
            })
        });
        if agreed {
            return;
        }
        assert!(since.elapsed() < CONVERGE, "the nodes did not agree within {CONVERGE:?}\n{}", bed.logs());
        std::thread::sleep(Duration::from_millis(2));
    }
}
