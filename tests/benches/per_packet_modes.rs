//! Per-packet cost of each forwarding mode, beside an empty XDP_DROP program
//! in the same run.
//!
//! Tunnel and NAT rewrite the frame, and `BPF_PROG_TEST_RUN` with repeat > 1
//! runs the program again on the frame it already rewrote (a tunnel packet
//! would grow by another outer header each time; a NATed one would be
//! addressed to the backend and passed). So every case here is measured as
//! the median of single runs (repeat = 1) on the original frame, and so is
//! XDP_DROP: a single run carries the test-run timer's own cost, which the
//! adjusted figure replaces with XDP_DROP's repeated cost (adjusted = case −
//! XDP_DROP single + XDP_DROP repeated). Cases alternate within each round.
//! The non-VIP case, which leaves the frame as it is, is run repeated.

use alwayson_tests::{
    bench::{spread, Table},
    fixture::{backend_v4, nat_source, FixtureBed, Slot, CLIENT4, LB_V4},
    packet::{addr, Frame},
};
use lb_common::{types::PROTO_TCP, Mode};
use lb_userspace::dataplane::{Baseline, LoadSettings};
use serde_json::json;

const RUNS: usize = 20_000;
const ROUNDS: usize = 5;
const REPEAT: u32 = 1_000_000;
const DSR_VIP: &str = "10.77.100.1:80";
const TUNNEL_VIP: &str = "10.77.100.2:80";
const NAT_VIP: &str = "10.77.100.3:80";

fn ns(d: std::time::Duration) -> f64 {
    d.as_nanos() as f64
}

/// The three VIPs, three backends each; the NAT VIP's on port 8080.
fn bed() -> FixtureBed {
    let mut bed =
        FixtureBed::new(LoadSettings { ring_size: 251, ..Default::default() }).expect("fixture bed");
    let slots = |first: u8| -> Vec<Slot> {
        (first..first + 3).map(|i| Slot { slot: u32::from(i), addr: backend_v4(i), weight: 1 }).collect()
    };
    bed.set_vip_in(Mode::Dsr, addr(DSR_VIP), PROTO_TCP, 0, &slots(0)).expect("DSR VIP");
    bed.set_vip_in(Mode::Tunnel, addr(TUNNEL_VIP), PROTO_TCP, 1, &slots(3)).expect("tunnel VIP");
    let source = nat_source(LB_V4.parse().unwrap(), 16_384, 16_384);
    bed.set_nat_vip(addr(NAT_VIP), PROTO_TCP, 2, &slots(6), source, 8080).expect("NAT VIP");
    bed
}

/// The backend's reply to `toward` (a frame the NAT VIP sent it): its
/// addresses and ports swapped.
fn reply_to(toward: &[u8]) -> Vec<u8> {
    let (ip, l4) = (&toward[26..34], &toward[34..38]);
    let at = |a: &[u8], p: &[u8]| {
        format!("{}.{}.{}.{}:{}", a[0], a[1], a[2], a[3], u16::from_be_bytes([p[0], p[1]]))
    };
    Frame::tcp(&at(&ip[4..8], &l4[2..4]), &at(&ip[0..4], &l4[0..2])).bytes()
}

fn main() {
    alwayson_tests::require_root("the per_packet_modes benchmark");
    let bed = bed();
    let (dp, ifindex) = (&bed.dp, bed.ifindex);
    let toward =
        bed.ns.run(|| dp.test_run(&Frame::syn(CLIENT4, NAT_VIP).bytes(), ifindex, 1)).expect("SYN").packet;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("DSR: established IPv4 TCP", Frame::tcp(CLIENT4, DSR_VIP).bytes()),
        ("tunnel (IPIP): established IPv4 TCP", Frame::tcp(CLIENT4, TUNNEL_VIP).bytes()),
        ("NAT: established IPv4 TCP, toward the backend", Frame::tcp(CLIENT4, NAT_VIP).bytes()),
        ("NAT: its reply, toward the client", reply_to(&toward)),
    ];
    // New NAT flows: a new 5-tuple each, so a mapping made each.
    let fresh: Vec<Vec<u8>> = (0..RUNS)
        .map(|i| {
            Frame::syn(
                &format!("10.77.{}.{}:{}", 60 + i / 50_000, 7 + (i / 200) % 200, 1024 + i % 50_000),
                NAT_VIP,
            )
            .bytes()
        })
        .collect();
    let host = Frame::tcp(CLIENT4, "10.77.1.1:22").bytes();
    let baseline = Baseline::load().expect("baseline programs");
    let drop_frame = &cases[0].1;
    let (mut floor, mut floor_one, mut new, mut pass) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut samples = vec![Vec::new(); cases.len()];
    bed.ns.run(|| {
        for round in 0..ROUNDS {
            floor.push(ns(baseline.test_run_drop(drop_frame, REPEAT).expect("xdp_drop").per_run));
            pass.push(ns(dp.test_run(&host, ifindex, REPEAT).expect("balancer").per_run));
            for k in 0..RUNS / ROUNDS {
                floor_one.push(ns(baseline.test_run_drop(drop_frame, 1).expect("xdp_drop").per_run));
                for (i, (_, frame)) in cases.iter().enumerate() {
                    samples[i].push(ns(dp.test_run(frame, ifindex, 1).expect("balancer").per_run));
                }
                new.push(ns(dp
                    .test_run(&fresh[round * RUNS / ROUNDS + k], ifindex, 1)
                    .expect("balancer")
                    .per_run));
            }
        }
    });
    let (floor_ns, _, _) = spread(&mut floor);
    let (one, _, _) = spread(&mut floor_one);
    let (verified, _, jitted) = bed.dp.program_size().expect("program info");
    let mut table = Table::new(
        "per_packet_modes",
        &format!(
            "Per-packet cost by forwarding mode: median of {RUNS} single runs (repeat 1) on the original frame, \
             adjusted to XDP_DROP's repeated cost ({floor_ns:.1} ns; its single run {one:.1} ns); balancer: {} \
             instructions verified, {jitted} bytes JIT-compiled",
            verified.map_or("?".into(), |v| v.to_string())
        ),
        &["case", "ns/packet (adjusted)", "single run, raw", "× XDP_DROP", "× DSR"],
    );
    table.row(
        &[
            "empty XDP_DROP program".into(),
            format!("{floor_ns:.1}"),
            format!("{one:.1}"),
            "1.00".into(),
            String::new(),
        ],
        json!({"case": "xdp_drop", "repeated_ns": floor_ns, "single_run_ns": one}),
    );
    let (p, _, _) = spread(&mut pass);
    table.row(
        &[
            "non-VIP packet, a NAT VIP configured (repeated)".into(),
            format!("{p:.1}"),
            String::new(),
            format!("{:.2}", p / floor_ns),
            String::new(),
        ],
        json!({"case": "non-VIP, NAT on", "repeated_ns": p}),
    );
    let mut medians: Vec<(String, f64)> =
        samples.iter_mut().zip(&cases).map(|(s, (name, _))| (name.to_string(), spread(s).0)).collect();
    medians.push(("NAT: new IPv4 TCP flow, a mapping made".into(), spread(&mut new).0));
    let dsr = medians[0].1 - one + floor_ns;
    for (name, raw) in &medians {
        let adjusted = raw - one + floor_ns;
        table.row(
            &[
                name.clone(),
                format!("{adjusted:.1}"),
                format!("{raw:.1}"),
                format!("{:.2}", adjusted / floor_ns),
                format!("{:.2}", adjusted / dsr),
            ],
            json!({"case": name, "adjusted_ns": adjusted, "single_run_ns": raw,
                   "ratio_xdp_drop": adjusted / floor_ns, "ratio_dsr": adjusted / dsr}),
        );
    }
    table.finish(
        json!({"runs": RUNS, "rounds": ROUNDS, "verified_instructions": verified, "jitted_bytes": jitted}),
    );
}
