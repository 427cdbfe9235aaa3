//! Three LB nodes behind a router (the cluster bed): how fast a silenced node
//! loses its paths (BFD), and how fast the nodes agree on the rings after a
//! backend dies (quorum convergence). Ten of each; median and worst.

use std::time::{Duration, Instant};

use alwayson_tests::{
    agent::find_backend,
    bench::{spread, Table},
    cluster::{vip, ClusterBed},
};
use lb_common::BackendState;
use serde_json::json;

const SILENCES: usize = 10;
const DEATHS: usize = 10;
const CONVERGE: Duration = Duration::from_secs(60);

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
    table.finish(json!({}));
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
