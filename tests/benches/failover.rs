//! Failover time at default health-check settings: a backend's server is
//! killed under a steady stream of new connections; the figure is the time from
//! its death to the last new flow the kernel sent it (its per-backend
//! `new_flows` counter, polled every millisecond). Ten kills, median and worst.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::{config_toml, find_backend, Agent, VipConf},
    bed::{vip4, TestBed, VIP4},
    bench::{spread, Table},
    traffic::Opener,
    wait_until,
};
use lb_common::BackendState;
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};
use serde_json::json;

const KILLS: usize = 10;
const BACKENDS: usize = 3;

fn main() {
    alwayson_tests::require_root("the failover benchmark");
    let bed = TestBed::builder().backends(BACKENDS).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..BACKENDS)]);
    let agent = Agent::start(&bed, &config, &[]).expect("agent");
    let vip: SocketAddr = vip4(80);
    let opener = Opener::start(&bed, 0, vip, Duration::from_millis(1));
    std::thread::sleep(Duration::from_millis(500));

    let mut rng = StdRng::seed_from_u64(0xfa11);
    let mut last_flow = Vec::new();
    let mut detected = Vec::new();
    for kill in 0..KILLS {
        let victim = kill % BACKENDS;
        let stats = agent.stats().expect("pinned maps");
        let (slot, _) = find_backend(&stats, bed.backend_v4(victim)).expect("BACKENDS").expect("slot");
        let flows = || stats.backend_stats(slot).expect("BACKEND_STATS").new_flows;
        let state = || stats.backend(slot).expect("BACKENDS").state;

        // Kill at a random phase of the check interval, or every kill lands at the same phase.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..250)));
        bed.stop_servers(victim).expect("kill");
        let died = Instant::now();
        let mut seen = flows();
        let mut last = Duration::ZERO;
        let mut down = None;
        // Watch for 2 s: far past any detection at default settings.
        while died.elapsed() < Duration::from_secs(2) {
            let now = flows();
            if now != seen {
                seen = now;
                last = died.elapsed();
            }
            if down.is_none() && state() == BackendState::Down as u8 {
                down = Some(died.elapsed());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        last_flow.push(last);
        detected.push(down.expect("never marked DOWN"));
        eprintln!(
            "kill {kill} (backend{victim}): last new flow after {last:?}, DOWN in the kernel after {:?}",
            down.unwrap()
        );

        bed.start_servers(victim).expect("restart");
        // The next kill must find it UP, or its figures are not a failover's.
        wait_until("the restarted backend UP", Duration::from_secs(5), Duration::from_millis(5), || {
            (state() == BackendState::Up as u8).then_some(())
        })
        .unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let report = opener.stop();
    let mut table = Table::new(
        "failover",
        &format!(
            "Failover at default settings (tcp check, inter 250ms, timeout 200ms, fall 2), {KILLS} kills"
        ),
        &["from the backend's death to", "median", "best", "worst"],
    );
    for (what, mut samples) in
        [("the last new flow it receives", last_flow), ("DOWN in the kernel map", detected)]
    {
        let mut ms: Vec<f64> = samples.iter_mut().map(|d| d.as_secs_f64() * 1000.0).collect();
        let (m, lo, hi) = spread(&mut ms);
        table.row(
            &[what.into(), format!("{m:.0} ms"), format!("{lo:.0} ms"), format!("{hi:.0} ms")],
            json!({"to": what, "median_ms": m, "samples_ms": ms}),
        );
    }
    table.finish(json!({"connections": report.ok, "refused_before_detection": report.failed.len()}));
}
