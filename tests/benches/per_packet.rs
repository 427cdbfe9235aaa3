//! Per-packet cost through `BPF_PROG_TEST_RUN`. With repeat 1,000,000 the
//! kernel reports the mean time per run of one frame (the program sees the
//! same frame every time, so each case stays on its path); an empty XDP_DROP
//! program measured in the same rounds is the floor. Genuinely new flows need
//! a new 5-tuple each, so they are measured one run per frame over many
//! frames, beside XDP_DROP measured the same way. Cases alternate over rounds
//! and medians are reported, because these machines are noisy.

use std::time::Duration;

use alwayson_tests::{
    bench::{spread, Table},
    fixture::{FixtureBed, CLIENT4, CLIENT6, VIP4, VIP4_UDP, VIP6},
    packet::Frame,
};
use lb_userspace::dataplane::{Baseline, Recording};
use serde_json::json;

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;
const NEW_FLOWS: usize = 20_000;

fn ns(d: Duration) -> f64 {
    d.as_nanos() as f64
}

fn main() {
    alwayson_tests::require_root("the per_packet benchmark");
    let bed = FixtureBed::standard();
    let baseline = Baseline::load().expect("baseline programs");
    // (name, the frame measured, a frame sent once before to open its flow)
    type Case = (&'static str, Vec<u8>, Option<Vec<u8>>);
    let cases: Vec<Case> = vec![
        ("non-VIP packet (XDP_PASS)", Frame::tcp(CLIENT4, "10.77.1.1:22").bytes(), None),
        (
            "established IPv4 TCP flow",
            Frame::tcp(CLIENT4, VIP4).bytes(),
            Some(Frame::syn(CLIENT4, VIP4).bytes()),
        ),
        ("TCP SYN on a settled slot", Frame::syn(CLIENT4, VIP4).bytes(), None),
        (
            "established IPv6 TCP flow",
            Frame::tcp(CLIENT6, VIP6).bytes(),
            Some(Frame::syn(CLIENT6, VIP6).bytes()),
        ),
        (
            "established IPv4 UDP flow",
            Frame::udp(CLIENT4, VIP4_UDP).bytes(),
            Some(Frame::udp(CLIENT4, VIP4_UDP).bytes()),
        ),
    ];
    for (_, _, warm) in &cases {
        if let Some(warm) = warm {
            bed.run(warm);
        }
    }
    // New flows: a different client port for every frame.
    let fresh: Vec<Vec<u8>> = (0..NEW_FLOWS)
        .map(|i| {
            Frame::syn(
                &format!("10.77.{}.{}:{}", 2 + i / 60_000, 7 + (i / 200) % 200, 1024 + i % 60_000),
                VIP4,
            )
            .bytes()
        })
        .collect();

    let drop_frame = Frame::tcp(CLIENT4, VIP4).bytes();
    let (dp, ifindex) = (&bed.dp, bed.ifindex);
    let mut floor = Vec::new();
    let mut floor_one = Vec::new();
    let mut new_flow = Vec::new();
    let mut samples = vec![Vec::new(); cases.len()];
    bed.ns.run(|| {
        for round in 0..ROUNDS {
            floor.push(ns(baseline.test_run_drop(&drop_frame, REPEAT).expect("xdp_drop").per_run));
            for (i, (_, frame, _)) in cases.iter().enumerate() {
                samples[i].push(ns(dp.test_run(frame, ifindex, REPEAT).expect("balancer").per_run));
            }
            // One run per frame: each its own new flow (only the first round's are new).
            if round == 0 {
                for f in &fresh {
                    new_flow.push(ns(dp.test_run(f, ifindex, 1).expect("balancer").per_run));
                    floor_one.push(ns(baseline.test_run_drop(f, 1).expect("xdp_drop").per_run));
                }
            }
        }
    });
    let (floor_ns, lo, hi) = spread(&mut floor);
    let (verified, translated, jitted) = bed.dp.program_size().expect("program info");
    let mut table = Table::new(
        "per_packet",
        &format!(
            "Per-packet cost, BPF_PROG_TEST_RUN repeat {REPEAT}, median of {ROUNDS} alternating rounds \
             (balancer: {} instructions verified, {jitted} bytes JIT-compiled)",
            verified.map_or("?".into(), |v| v.to_string())
        ),
        &["case", "ns/packet", "min..max", "× XDP_DROP"],
    );
    table.row(
        &[
            "empty XDP_DROP program".into(),
            format!("{floor_ns:.1}"),
            format!("{lo:.1}..{hi:.1}"),
            "1.00".into(),
        ],
        json!({"case": "xdp_drop", "median_ns": floor_ns, "samples": floor}),
    );
    for ((name, _, _), mut s) in cases.iter().zip(samples) {
        let (m, lo, hi) = spread(&mut s);
        table.row(
            &[
                name.to_string(),
                format!("{m:.1}"),
                format!("{lo:.1}..{hi:.1}"),
                format!("{:.2}", m / floor_ns),
            ],
            json!({"case": name, "median_ns": m, "ratio": m / floor_ns, "samples": s}),
        );
    }
    // Single runs carry the test-run timer's own cost; their floor is XDP_DROP run the same way.
    let (one, _, _) = spread(&mut floor_one);
    let (m, lo, hi) = spread(&mut new_flow);
    let name = format!("new IPv4 TCP flow ({NEW_FLOWS} distinct 5-tuples, one run each)");
    table.row(
        &[name.clone(), format!("{:.1}", m - one + floor_ns), format!("{lo:.0}..{hi:.0} raw"), format!("{:.2}", (m - one + floor_ns) / floor_ns)],
        json!({"case": name, "median_raw_ns": m, "xdp_drop_single_run_ns": one, "adjusted_ns": m - one + floor_ns}),
    );
    let flood_mpps = 1000.0 / (m - one + floor_ns);

    // The alternative measured against: record every flow on its first packet (Katran's rule).
    let mut bed = bed;
    bed.dp.set_recording(Recording { every_flow: true, limit: 0 }).expect("recording");
    let other: Vec<Vec<u8>> = (0..NEW_FLOWS)
        .map(|i| {
            Frame::syn(
                &format!("10.77.{}.{}:{}", 40 + i / 60_000, 7 + (i / 200) % 200, 1024 + i % 60_000),
                VIP4,
            )
            .bytes()
        })
        .collect();
    let established = Frame::tcp(CLIENT4, VIP4).bytes();
    let (dp, ifindex) = (&bed.dp, bed.ifindex);
    let (mut every_new, mut every_floor, mut every_est) = (Vec::new(), Vec::new(), Vec::new());
    bed.ns.run(|| {
        dp.test_run(&Frame::syn(CLIENT4, VIP4).bytes(), ifindex, 1).expect("balancer");
        for _ in 0..ROUNDS {
            every_est.push(ns(dp.test_run(&established, ifindex, REPEAT).expect("balancer").per_run));
        }
        for f in &other {
            every_new.push(ns(dp.test_run(f, ifindex, 1).expect("balancer").per_run));
            every_floor.push(ns(baseline.test_run_drop(f, 1).expect("xdp_drop").per_run));
        }
    });
    let (e, _, _) = spread(&mut every_est);
    table.row(
        &[
            "established IPv4 TCP flow, every-flow recording".into(),
            format!("{e:.1}"),
            String::new(),
            format!("{:.2}", e / floor_ns),
        ],
        json!({"case": "established, every-flow", "median_ns": e}),
    );
    let (one, _, _) = spread(&mut every_floor);
    let (n, _, _) = spread(&mut every_new);
    table.row(
        &[
            "new IPv4 TCP flow, every-flow recording (an LRU insert each)".into(),
            format!("{:.1}", n - one + floor_ns),
            String::new(),
            format!("{:.2}", (n - one + floor_ns) / floor_ns),
        ],
        json!({"case": "new flow, every-flow", "adjusted_ns": n - one + floor_ns}),
    );

    // A million random flows on settled rings: how many entries they leave.
    bed.dp.set_recording(Recording::default()).expect("recording");
    let before = bed.dp.connections();
    let (dp, ifindex) = (&bed.dp, bed.ifindex);
    bed.ns.run(|| {
        for i in 0..1_000_000u32 {
            let src = format!("10.77.{}.{}:{}", 100 + i / 16_000_000, (i / 60_000) % 250, 1024 + i % 60_000);
            dp.test_run(&Frame::tcp(&src, VIP4).bytes(), ifindex, 1).expect("balancer");
        }
    });
    let entries = bed.dp.connections() - before;
    let conns =
        bed.dp.map_memory().into_iter().find(|(n, _)| *n == lb_common::maps::CONNS).map_or(0, |(_, b)| b);
    let per_flow = conns as f64 / f64::from(bed.dp.settings().conn_table_size);
    println!(
        "spoofed flood of new 5-tuples on settled slots: {flood_mpps:.1} Mpps on one core; \
         entries left by 1,000,000 random flows: {entries}; connection table: {per_flow:.0} bytes per recorded flow"
    );
    table.finish(json!({
        "verified_instructions": verified, "translated_bytes": translated, "jitted_bytes": jitted,
        "flood_mpps_one_core": flood_mpps, "entries_after_1m_random_flows": entries, "bytes_per_recorded_flow": per_flow,
    }));
}
