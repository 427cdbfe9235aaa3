//! What the FIB's answer means for DSR: a backend is reached by its own MAC or
//! not at all. One behind a gateway would get the client's packet sent to the
//! router, still addressed to the VIP, and the router would send it back.

use std::net::IpAddr;

use alwayson_tests::{
    fixture::{
        backend_mac, backend_of_mac, mac_str, FixtureBed, Slot, CLIENT4, CLIENT6, LB_MAC, ROUTER_MAC, VIP4,
        VIP6, XDP_DROP, XDP_TX,
    },
    packet::{self, addr, Frame},
    require_root,
};
use lb_common::{types::PROTO_TCP, DropReason, Verdict};

/// A router on lb0's subnets, with a neighbour entry: the one the client frames come from.
const GATEWAY4: &str = "10.77.1.254";
const GATEWAY6: &str = "fd77:1::fe";
/// A router on lb0's subnets nobody has resolved.
const SILENT_GATEWAY4: &str = "10.77.1.253";
const SILENT_GATEWAY6: &str = "fd77:1::fd";

/// VIP index, its address, its one backend's slot and address (routed through a gateway).
const BEHIND_GATEWAYS: [(u32, &str, u32, &str); 4] = [
    (5, "10.77.100.9:80", 40, "10.77.50.5"),
    (6, "10.77.100.10:80", 41, "10.77.51.5"),
    (7, "[fd77::109]:80", 42, "fd77:50::5"),
    (8, "[fd77::110]:80", 43, "fd77:51::5"),
];

/// The standard bed plus routes to 10.77.50.0/24 and fd77:50::/64 through a
/// resolved gateway, to 10.77.51.0/24 and fd77:51::/64 through an unresolved
/// one, and a VIP for a backend in each.
fn bed_with_gateways() -> FixtureBed {
    let mut bed = FixtureBed::standard();
    let ip = |args: &[&str]| bed.ns.ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e:#}"));
    let router = mac_str(ROUTER_MAC);
    for gateway in [GATEWAY4, GATEWAY6] {
        ip(&["neigh", "add", gateway, "lladdr", &router, "dev", "lb0", "nud", "permanent"]);
    }
    ip(&["route", "add", "10.77.50.0/24", "via", GATEWAY4, "dev", "lb0"]);
    ip(&["route", "add", "10.77.51.0/24", "via", SILENT_GATEWAY4, "dev", "lb0"]);
    ip(&["-6", "route", "add", "fd77:50::/64", "via", GATEWAY6, "dev", "lb0"]);
    ip(&["-6", "route", "add", "fd77:51::/64", "via", SILENT_GATEWAY6, "dev", "lb0"]);
    for (index, vip, slot, backend) in BEHIND_GATEWAYS {
        let backend: IpAddr = backend.parse().expect("backend address");
        bed.set_vip(addr(vip), PROTO_TCP, index, &[Slot { slot, addr: backend, weight: 1 }])
            .expect("set vip");
    }
    bed
}

#[test]
#[ignore = "needs root"]
fn backends_behind_a_gateway_drop_as_not_on_link_and_on_link_ones_forward() {
    require_root("backends_behind_a_gateway_drop_as_not_on_link_and_on_link_ones_forward");
    let bed = bed_with_gateways();
    let before = bed.dp.counters().expect("counters");

    // A SYN balances and records the flow; the next packet takes the
    // connection table and, within the second, the cached next hop.
    let mut frames = Vec::new();
    for (_, vip, _, _) in BEHIND_GATEWAYS {
        let client = if vip.starts_with('[') { CLIENT6 } else { CLIENT4 };
        frames.push(Frame::syn(client, vip).bytes());
        frames.push(Frame::tcp(client, vip).bytes());
    }
    let outs = bed.run_many(&frames);
    let d = bed.dp.counters().expect("counters").since(&before);
    for (i, (frame, out)) in frames.iter().zip(outs).enumerate() {
        assert_eq!(out.action, XDP_DROP, "verdict of frame {i}; counters moved: {d}");
        assert_eq!(out.packet, *frame, "frame {i} is not re-addressed (to the router or anyone)");
    }
    let dropped = frames.len() as u64;
    assert_eq!(d.drop(DropReason::NotOnLink), dropped, "counters moved: {d}");
    assert_eq!(d.drops.iter().sum::<u64>(), dropped, "no other drop reason: {d}");
    assert_eq!(d.verdict(Verdict::Drop), dropped, "{d}");
    assert_eq!(d.verdict(Verdict::Tx) + d.verdict(Verdict::Redirect), 0, "nothing forwarded: {d}");
    for (index, _, slot, _) in BEHIND_GATEWAYS {
        assert_eq!(bed.dp.vip_stats(index).unwrap().packets, 0, "VIP {index} forwarded nothing");
        assert_eq!(bed.dp.backend_stats(slot).unwrap().packets, 0, "backend slot {slot} got nothing");
    }

    // The on-link backends of the same bed still get their flows.
    let before = bed.dp.counters().expect("counters");
    for (client, vip, backends) in [(CLIENT4, VIP4, 0..3), (CLIENT6, VIP6, 6..9)] {
        for input in [Frame::syn(client, vip).bytes(), Frame::tcp(client, vip).bytes()] {
            let out = bed.run(&input);
            assert_eq!(out.action, XDP_TX, "on-link backend of {vip}");
            let backend = backend_of_mac(&out.packet).expect("a known backend's MAC");
            assert!(backends.contains(&backend), "backend {backend} does not serve {vip}");
            assert_eq!(out.packet, packet::with_macs(&input, backend_mac(backend), LB_MAC));
        }
    }
    let d = bed.dp.counters().expect("counters").since(&before);
    assert_eq!((d.verdict(Verdict::Tx), d.drops.iter().sum::<u64>()), (4, 0), "{d}");
}
