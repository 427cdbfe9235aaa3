//! `cargo xtask run` with no arguments: a self-contained demo. Builds a small
//! network-namespace test bed (a client, the balancer, three backends), runs the
//! real `alwayson` on it, drives TCP connections through the VIP for about ten
//! seconds while printing where they land, then tears everything down.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::TestBed,
    traffic::Opener,
};
use anyhow::Result;

const VIP: &str = "10.77.100.1";
const WEIGHTS: [u32; 3] = [1, 2, 1];
const RUN_FOR: Duration = Duration::from_secs(10);

fn main() {
    if let Err(e) = demo() {
        eprintln!("demo: {e:#}");
        std::process::exit(1);
    }
}

fn demo() -> Result<()> {
    alwayson_tests::demo::start()?;

    println!("Building the test bed: 1 client, the balancer, 3 backends on one bridge (network namespaces)…");
    let bed = TestBed::builder().clients(1).backends(3).build()?;
    let mut vip = VipConf::new(VIP, 80, "tcp");
    for (i, w) in WEIGHTS.iter().enumerate() {
        vip = vip.backend(i, *w, false);
    }
    let config = config_toml(&bed, &[vip]);
    println!("\nalwayson config (in the balancer's namespace):\n{config}");
    let mut agent = Agent::start(&bed, &config, &[])?;
    println!(
        "alwayson is running: XDP on the balancer's eth0, VIP {VIP}:80 (DSR) → backends {}",
        (0..3).map(|i| format!("{} weight {}", bed.backend_v4(i), WEIGHTS[i])).collect::<Vec<_>>().join(", ")
    );
    println!(
        "The client opens a new TCP connection to the VIP every 2 ms; each backend answers with its name.\n"
    );

    let vip_addr = format!("{VIP}:80").parse()?;
    let opener = Opener::start(&bed, 0, vip_addr, Duration::from_millis(2));
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < RUN_FOR && !alwayson_tests::demo::interrupted() {
        std::thread::sleep(Duration::from_secs(1));
        let stats = agent.stats()?;
        let mut by_backend = BTreeMap::new();
        for (slot, backend) in stats.backends()? {
            let addr = lb_common::types::words_addr(backend.addr, backend.family);
            by_backend.insert(addr, stats.backend_stats(slot)?);
        }
        let total_flows: u64 = by_backend.values().map(|s| s.new_flows).sum();
        let opened = opener.ok_so_far();
        println!(
            "t={:>2}s  connections {opened:>6} (+{:>4}/s)   kernel: {} forwarded, {} dropped",
            start.elapsed().as_secs(),
            opened - last,
            stats.counters()?.verdict(lb_common::Verdict::Tx),
            stats.counters()?.verdict(lb_common::Verdict::Drop),
        );
        last = opened;
        for (i, weight) in WEIGHTS.iter().enumerate() {
            let s = by_backend.get(&bed.backend_v4(i)).copied().unwrap_or_default();
            let share = if total_flows == 0 { 0.0 } else { 100.0 * s.new_flows as f64 / total_flows as f64 };
            let want = 100.0 * f64::from(*weight) / f64::from(WEIGHTS.iter().sum::<u32>());
            let bar = "#".repeat((share / 2.0).round() as usize);
            println!(
                "    {} {:<12} new flows {:>6} {share:>5.1}% (weight share {want:>4.1}%) {bar}",
                bed.backend_name(i),
                bed.backend_v4(i).to_string(),
                s.new_flows
            );
        }
    }
    let report = opener.stop();
    println!(
        "\n{} connections, {} failed. Per backend (by their own answers): {:?}",
        report.ok,
        report.failed.len(),
        report.by_backend
    );
    agent.stop()?;
    println!("alwayson stopped (XDP detached); tearing the test bed down.");
    Ok(())
}
