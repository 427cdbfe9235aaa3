//! `cargo xtask run -- --cluster`: three LB nodes behind a router. Builds the
//! cluster bed (a client, a router running BIRD with ECMP and BFD, three
//! nodes each running `alwayson`, BIRD and an etcd member, three backends),
//! opens a TCP connection through the VIP every 5 ms and prints, each second,
//! which nodes the router sends traffic to and where connections land. After
//! a few seconds it silences one node (its traffic dropped, nothing said to
//! the router) and shows the others take over; then it tears everything down.

use std::time::{Duration, Instant};

use alwayson_tests::{
    cluster::{vip, ClusterBed},
    traffic::Opener,
};
use anyhow::Result;

const RUN_FOR: Duration = Duration::from_secs(14);
const SILENCE_AT: Duration = Duration::from_secs(5);
const SILENCED: usize = 2;

fn main() {
    if let Err(e) = demo() {
        eprintln!("cluster demo: {e:#}");
        std::process::exit(1);
    }
}

fn demo() -> Result<()> {
    alwayson_tests::demo::start()?;
    println!(
        "Building the cluster bed: a client, a router (BIRD, ECMP, BFD), 3 LB nodes (alwayson, BIRD, etcd), \
         3 backends…"
    );
    let bed = ClusterBed::builder().nodes(3).backends(3).clients(1).cluster(true).build()?;
    let target = vip(80);
    println!("\nlb1's config:\n{}", bed.node_config(1));
    let took = bed.wait_router_nodes(target.ip(), &[1, 2, 3], Duration::from_secs(60))?;
    println!(
        "The router has a path to {} through every node after {:.1} s. The client opens a TCP connection \
         every 5 ms.\n",
        target.ip(),
        took.as_secs_f64()
    );
    let opener = Opener::start(bed.bed(), 0, target, Duration::from_millis(5));
    let start = Instant::now();
    let mut before = bed.new_flows(80)?;
    let mut opened = 0;
    let mut silenced = false;
    while start.elapsed() < RUN_FOR && !alwayson_tests::demo::interrupted() {
        std::thread::sleep(Duration::from_secs(1));
        if !silenced && start.elapsed() >= SILENCE_AT {
            bed.silence(SILENCED)?;
            silenced = true;
            println!(
                "      >>> lb{SILENCED} silenced: its traffic is dropped both ways; no FIN, RST or BGP \
                 notification reaches the router, only BFD can tell"
            );
        }
        let now = bed.new_flows(80).unwrap_or_else(|_| before.clone());
        let per_node: Vec<String> = now
            .iter()
            .zip(&before)
            .enumerate()
            .map(|(i, (a, b))| format!("lb{} {:>4}", i + 1, a.saturating_sub(*b)))
            .collect();
        before = now;
        let ok = opener.ok_so_far();
        let paths = bed.router_nodes(target.ip()).unwrap_or_default();
        println!(
            "t={:>2}s  router → {:<12} new flows per node: {}   connections {ok:>6} (+{})",
            start.elapsed().as_secs(),
            format!("{paths:?}"),
            per_node.join("  "),
            ok - opened
        );
        opened = ok;
    }
    let report = opener.stop();
    println!(
        "\n{} connections, {} failed. Per backend (by their own answers): {:?}",
        report.ok,
        report.failed.len(),
        report.by_backend
    );
    for n in 1..=bed.nodes() {
        if n == SILENCED {
            continue;
        }
        if let Ok(status) = bed.cluster_status(n) {
            println!("lb{n}: rings from {}, live nodes {}", status["source"], status["live_nodes"]);
        }
    }
    println!("Tearing the bed down.");
    Ok(())
}
