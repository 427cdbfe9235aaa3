//! Per-packet cost of each forwarding mode on an established flow, beside
//! an empty XDP_DROP program in the same run.
//!
//! Tunnel and NAT rewrite the frame, and `BPF_PROG_TEST_RUN` with repeat > 1
//! runs the program again on the frame it already rewrote (a tunnel packet
//! would grow by another outer header each time; a NATed one would be
//! addressed to the backend and passed). So every case here is measured as
//! the median of single runs (repeat = 1) on the original frame, and so is
//! XDP_DROP: a single run carries the test-run timer's own cost, which the
//! adjusted figure replaces with XDP_DROP's repeated cost (adjusted = case −
//! XDP_DROP single + XDP_DROP repeated). Cases alternate in rounds.

use alwayson_tests::{
    bench::{spread, Table},
    fixture::{backend_v4, FixtureBed, Slot, CLIENT4},
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

fn main() {
    alwayson_tests::require_root("the per_packet_modes benchmark");
    let mut bed =
        FixtureBed::new(LoadSettings { ring_size: 251, ..Default::default() }).expect("fixture bed");
    let slots = |first: u8| -> Vec<Slot> {
        (first..first + 3).map(|i| Slot { slot: u32::from(i), addr: backend_v4(i), weight: 1 }).collect()
    };
    bed.set_vip_in(Mode::Dsr, addr(DSR_VIP), PROTO_TCP, 0, &slots(0)).expect("DSR VIP");
    bed.set_vip_in(Mode::Tunnel, addr(TUNNEL_VIP), PROTO_TCP, 1, &slots(3)).expect("tunnel VIP");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("DSR, established IPv4 TCP", Frame::tcp(CLIENT4, DSR_VIP).bytes()),
        ("tunnel (IPIP), established IPv4 TCP", Frame::tcp(CLIENT4, TUNNEL_VIP).bytes()),
    ];
    let baseline = Baseline::load().expect("baseline programs");
    let (dp, ifindex) = (&bed.dp, bed.ifindex);
    let drop_frame = &cases[0].1;
    let (mut floor, mut floor_one) = (Vec::new(), Vec::new());
    let mut samples = vec![Vec::new(); cases.len()];
    bed.ns.run(|| {
        for _ in 0..ROUNDS {
            floor.push(baseline.test_run_drop(drop_frame, REPEAT).expect("xdp_drop").per_run.as_nanos() as f64);
            for _ in 0..RUNS / ROUNDS {
                floor_one.push(baseline.test_run_drop(drop_frame, 1).expect("xdp_drop").per_run.as_nanos() as f64);
                for (i, (_, frame)) in cases.iter().enumerate() {
                    samples[i].push(dp.test_run(frame, ifindex, 1).expect("balancer").per_run.as_nanos() as f64);
                }
            }
        }
    });
    let (floor_ns, _, _) = spread(&mut floor);
    let (one, _, _) = spread(&mut floor_one);
    let mut table = Table::new(
        "per_packet_modes",
        &format!(
            "Per-packet cost by forwarding mode: median of {RUNS} single runs (repeat 1) on the original frame, \
             adjusted to XDP_DROP's repeated cost ({floor_ns:.1} ns; its single run: {one:.1} ns)"
        ),
        &["case", "ns/packet (adjusted)", "single run, raw", "× XDP_DROP", "× DSR"],
    );
    let adjusted: Vec<(f64, f64)> = samples
        .iter_mut()
        .map(|s| {
            let (m, _, _) = spread(s);
            (m - one + floor_ns, m)
        })
        .collect();
    let dsr = adjusted[0].0;
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
    for ((name, _), (adj, raw)) in cases.iter().zip(&adjusted) {
        table.row(
            &[
                name.to_string(),
                format!("{adj:.1}"),
                format!("{raw:.1}"),
                format!("{:.2}", adj / floor_ns),
                format!("{:.2}", adj / dsr),
            ],
            json!({"case": name, "adjusted_ns": adj, "single_run_ns": raw, "ratio_xdp_drop": adj / floor_ns, "ratio_dsr": adj / dsr}),
        );
    }
    table.finish(json!({"runs": RUNS, "rounds": ROUNDS}));
}
