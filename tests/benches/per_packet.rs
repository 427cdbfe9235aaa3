//! Per-packet cost through `BPF_PROG_TEST_RUN` (repeat 1,000,000): the kernel
//! reports the mean time per run. An empty XDP_DROP program is measured in the
//! same rounds as the floor; the cases alternate over several rounds and the
//! median is printed, because these machines are noisy. Figures, not verdicts.

use alwayson_tests::{
    fixture::{FixtureBed, CLIENT4, CLIENT6, VIP4, VIP4_UDP, VIP6},
    packet::Frame,
};
use lb_userspace::dataplane::Baseline;

const REPEAT: u32 = 1_000_000;
const ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("per_packet: needs root (BPF_PROG_TEST_RUN, namespaces); skipped");
        return;
    }
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
        ("new IPv4 TCP flow (SYN)", Frame::syn(CLIENT4, VIP4).bytes(), None),
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
    // Open the flows that are measured as established.
    for (_, _, warm) in &cases {
        if let Some(warm) = warm {
            bed.run(warm);
        }
    }
    let drop_frame = Frame::tcp(CLIENT4, VIP4).bytes();
    let (dp, ifindex) = (&bed.dp, bed.ifindex);
    let mut floor = Vec::new();
    let mut samples = vec![Vec::new(); cases.len()];
    bed.ns.run(|| {
        for _ in 0..ROUNDS {
            let ns = |d: std::time::Duration| d.as_nanos() as f64;
            floor.push(ns(baseline.test_run_drop(&drop_frame, REPEAT).expect("xdp_drop").per_run));
            for (i, (_, frame, _)) in cases.iter().enumerate() {
                samples[i].push(ns(dp.test_run(frame, ifindex, REPEAT).expect("balancer").per_run));
            }
        }
    });
    let (floor_ns, lo, hi) = median(floor);
    let (verified, translated, jitted) = bed.dp.program_size().expect("program info");
    println!(
        "\nbalancer: {} instructions verified, {} bytes translated, {jitted} bytes JIT-compiled",
        verified.map_or("?".into(), |v| v.to_string()),
        translated.map_or("?".into(), |v| v.to_string())
    );
    println!("\nPer-packet cost, BPF_PROG_TEST_RUN repeat {REPEAT}, median of {ROUNDS} alternating rounds\n");
    println!("| case | ns/packet | min..max | × XDP_DROP |");
    println!("|---|---:|---:|---:|");
    println!("| empty XDP_DROP program | {floor_ns:.1} | {lo:.1}..{hi:.1} | 1.00 |");
    for ((name, _, _), s) in cases.iter().zip(samples) {
        let (m, lo, hi) = median(s);
        println!("| {name} | {m:.1} | {lo:.1}..{hi:.1} | {:.2} |", m / floor_ns);
    }
}
