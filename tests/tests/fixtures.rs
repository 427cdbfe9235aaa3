//! The balancer on crafted frames through `BPF_PROG_TEST_RUN`: for each case
//! the frame in, the verdict and the exact frame out, and the counters that
//! must move.

use alwayson_tests::{
    fixture::{
        backend_mac, backend_of_mac, FixtureBed, Slot, CLIENT4, CLIENT6, LB_MAC, LB_V4, ROUTER_MAC, VIP4,
        VIP4_UDP, VIP6, VIP6_UDP,
    },
    packet::{self, addr, Frame},
    root_or_skip,
};
use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    DropReason, Event, FlowKey, Verdict,
};
use lb_userspace::dataplane::Counters;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_TX: u32 = 3;

fn counters(bed: &FixtureBed) -> Counters {
    bed.dp.counters().expect("counters")
}

/// Forwarded by DSR: out on the same port, to a backend of VIP `vip`, bytes
/// otherwise untouched. Returns which backend.
fn assert_dsr(bed: &FixtureBed, input: &[u8], vip: u8) -> u8 {
    let before = counters(bed);
    let out = bed.run(input);
    assert_eq!(out.action, XDP_TX, "verdict; counters moved: {}", counters(bed).since(&before));
    let backend =
        backend_of_mac(&out.packet).unwrap_or_else(|| panic!("unknown dst MAC {:02x?}", &out.packet[..6]));
    assert!((3 * vip..3 * vip + 3).contains(&backend), "backend {backend} does not belong to VIP {vip}");
    assert_eq!(out.packet, packet::with_macs(input, backend_mac(backend), LB_MAC), "output frame");
    backend
}

fn assert_pass_untouched(bed: &FixtureBed, input: &[u8]) {
    let out = bed.run(input);
    assert_eq!(out.action, XDP_PASS, "verdict");
    assert_eq!(out.packet, input, "a passed frame must not change");
}

#[test]
fn vip_packets_come_out_xdp_tx_with_exact_bytes() {
    root_or_skip!("vip_packets_come_out_xdp_tx_with_exact_bytes");
    let bed = FixtureBed::standard();
    let before = counters(&bed);
    let cases = [
        (Frame::syn(CLIENT4, VIP4), 0),
        (Frame::tcp(CLIENT4, VIP4), 0),
        (Frame::udp(CLIENT4, VIP4_UDP), 1),
        (Frame::syn(CLIENT6, VIP6), 2),
        (Frame::tcp(CLIENT6, VIP6), 2),
        (Frame::udp(CLIENT6, VIP6_UDP), 3),
        (Frame::tcp(CLIENT4, "10.77.100.2:8443"), 4),
        (Frame::udp("10.77.2.8:5353", VIP4_UDP).vlan(100), 1),
        (Frame::tcp(CLIENT6, VIP6).vlan(100).vlan(200), 2),
    ];
    let mut bytes = 0;
    for (frame, vip) in &cases {
        let input = frame.bytes();
        bytes += input.len() as u64;
        assert_dsr(&bed, &input, *vip);
    }
    let d = counters(&bed).since(&before);
    assert_eq!(d.verdict(Verdict::Tx), cases.len() as u64);
    assert_eq!(d.drops.iter().sum::<u64>(), 0);
    let vip_packets: u64 = (0..5).map(|v| bed.dp.vip_stats(v).unwrap().packets).sum();
    let vip_bytes: u64 = (0..5).map(|v| bed.dp.vip_stats(v).unwrap().bytes).sum();
    assert_eq!((vip_packets, vip_bytes), (cases.len() as u64, bytes));
}

#[test]
fn flows_stay_on_their_backend_across_packets() {
    root_or_skip!("flows_stay_on_their_backend_across_packets");
    let bed = FixtureBed::standard();
    let syn = Frame::syn(CLIENT4, VIP4).bytes();
    let first = assert_dsr(&bed, &syn, 0);
    for _ in 0..5 {
        assert_eq!(assert_dsr(&bed, &Frame::tcp(CLIENT4, VIP4).bytes(), 0), first);
    }
    let stats = bed.dp.vip_stats(0).unwrap();
    assert_eq!((stats.packets, stats.new_flows), (6, 1), "one new flow, six packets");
    let b = bed.dp.backend_stats(u32::from(first)).unwrap();
    assert_eq!((b.packets, b.new_flows), (6, 1));
}

#[test]
fn non_vip_traffic_passes_untouched() {
    root_or_skip!("non_vip_traffic_passes_untouched");
    let bed = FixtureBed::standard();
    let before = counters(&bed);
    let mut frames = vec![
        // SSH to the balancer's own address.
        Frame::syn(CLIENT4, &format!("{LB_V4}:22")).bytes(),
        // A VIP address on a port that is not a VIP.
        Frame::tcp(CLIENT4, "10.77.100.1:81").bytes(),
        // A VIP's port with the other protocol.
        Frame::udp(CLIENT4, "10.77.100.1:80").bytes(),
        Frame::udp(CLIENT6, "[fd77::100]:81").bytes(),
        Frame::tcp(CLIENT4, "10.77.100.1:81").vlan(100).bytes(),
    ];
    // ARP who-has 10.77.100.1.
    let mut arp = [[0xff; 6], ROUTER_MAC].concat();
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[ROUTER_MAC.as_slice(), &[10, 77, 2, 7], &[0; 6], &[10, 77, 100, 1]].concat());
    frames.push(arp);
    // ICMP echo to a VIP address, and an ICMPv6 neighbour solicitation.
    let mut icmp = Frame::udp(CLIENT4, VIP4_UDP).bytes();
    icmp[packet::ETH_LEN + 9] = 1;
    frames.push(icmp);
    let mut ns = Frame::udp(CLIENT6, VIP6_UDP).bytes();
    ns[packet::ETH_LEN + 6] = 58;
    frames.push(ns);
    for f in &frames {
        assert_pass_untouched(&bed, f);
    }
    let d = counters(&bed).since(&before);
    assert_eq!(d.verdict(Verdict::Pass), frames.len() as u64);
    assert_eq!(d.verdicts.iter().sum::<u64>(), frames.len() as u64);
    assert_eq!((0..5).map(|v| bed.dp.vip_stats(v).unwrap().packets).sum::<u64>(), 0);
}

#[test]
fn empty_ring_drops_with_no_backend() {
    root_or_skip!("empty_ring_drops_with_no_backend");
    let mut bed = FixtureBed::standard();
    bed.write_ring(0, &[]).unwrap();
    let before = counters(&bed);
    let out = bed.run(&Frame::syn(CLIENT4, VIP4).bytes());
    assert_eq!(out.action, XDP_DROP);
    let d = counters(&bed).since(&before);
    assert_eq!((d.drop(DropReason::NoBackend), d.verdict(Verdict::Drop)), (1, 1));
}

#[test]
fn backend_without_neighbour_entry_drops_with_reason() {
    root_or_skip!("backend_without_neighbour_entry_drops_with_reason");
    let mut bed = FixtureBed::standard();
    // 10.77.1.200 is on lb0's subnet but has no neighbour entry.
    let stranger = "10.77.1.200".parse().unwrap();
    bed.set_vip(addr("10.77.100.9:80"), PROTO_TCP, 9, &[Slot { slot: 40, addr: stranger, weight: 1 }])
        .unwrap();
    // And one the FIB has no route for at all.
    let unroutable = "192.0.2.1".parse().unwrap();
    bed.set_vip(addr("10.77.100.10:80"), PROTO_TCP, 10, &[Slot { slot: 41, addr: unroutable, weight: 1 }])
        .unwrap();
    let before = counters(&bed);
    assert_eq!(bed.run(&Frame::syn(CLIENT4, "10.77.100.9:80").bytes()).action, XDP_DROP);
    assert_eq!(bed.run(&Frame::syn(CLIENT4, "10.77.100.10:80").bytes()).action, XDP_DROP);
    let d = counters(&bed).since(&before);
    assert_eq!((d.drop(DropReason::NoNeighbour), d.drop(DropReason::NoRoute)), (1, 1));
}

/// A router on the client's path, which sends the ICMP errors.
const ROUTER4: &str = "10.77.2.1";
const ROUTER6: &str = "fd77:2::1";

/// The flow key of `frame` as the kernel keys it.
fn flow_key(frame: &Frame) -> FlowKey {
    let proto = if matches!(frame.l4, packet::L4::Udp) { PROTO_UDP } else { PROTO_TCP };
    FlowKey::new(frame.src.ip(), frame.src.port(), frame.dst.ip(), frame.dst.port(), proto)
}

#[test]
fn icmp_too_big_goes_to_the_backend_of_the_flow_it_quotes() {
    root_or_skip!("icmp_too_big_goes_to_the_backend_of_the_flow_it_quotes");
    let bed = FixtureBed::standard();
    let cases = [
        (ROUTER4, Frame::syn(CLIENT4, VIP4), 0),
        (ROUTER6, Frame::syn(CLIENT6, VIP6), 2),
        (ROUTER4, Frame::udp(CLIENT4, VIP4_UDP), 1),
    ];
    for (router, first, vip) in cases {
        let router = router.parse().unwrap();
        let backend = assert_dsr(&bed, &first.bytes(), vip);
        // The backend's reply was too big for a link on the way back.
        let reply = Frame::new(first.dst, first.src, first.l4);
        let before = counters(&bed);
        let error = packet::too_big(router, &reply, 1280, 1000);
        assert_eq!(assert_dsr(&bed, &error, vip), backend, "to the flow's backend: {first:?}");
        let d = counters(&bed).since(&before);
        assert_eq!((d.event(Event::IcmpTooBig), d.verdict(Verdict::Tx)), (1, 1));
        let backend_stats = bed.dp.backend_stats(u32::from(backend)).unwrap();
        assert_eq!((backend_stats.packets, backend_stats.new_flows), (2, 1), "counted, no new flow");
    }

    // A flow the table has forgotten (or never saw): the backend its hash gives,
    // which its next packet would get too; and the error is not remembered as a flow.
    for (router, client, vip_addr, vip) in
        [(ROUTER4, "10.77.2.9:41000", VIP4, 0), (ROUTER6, "[fd77:2::9]:41000", VIP6, 2)]
    {
        let flow = Frame::syn(client, vip_addr);
        let reply = Frame::new(flow.dst, flow.src, flow.l4);
        let backend = assert_dsr(&bed, &packet::too_big(router.parse().unwrap(), &reply, 1280, 1000), vip);
        assert_eq!(bed.dp.connection(&flow_key(&flow)).unwrap(), None, "an ICMP error is no flow");
        assert_eq!(assert_dsr(&bed, &flow.bytes(), vip), backend, "where the flow itself goes");
    }
}

#[test]
fn icmp_that_is_not_about_a_vip_flow_passes_untouched() {
    root_or_skip!("icmp_that_is_not_about_a_vip_flow_passes_untouched");
    let bed = FixtureBed::standard();
    let before = counters(&bed);
    let router = ROUTER4.parse().unwrap();
    let frames = [
        // About the balancer's own traffic.
        packet::too_big(router, &Frame::tcp(&format!("{LB_V4}:22"), CLIENT4), 1280, 1000),
        // To a VIP address, quoting a packet another VIP address (a wildcard VIP) sent.
        {
            let mut f = packet::too_big(router, &Frame::tcp(VIP4, CLIENT4), 1280, 1000);
            let quoted_src = packet::ETH_LEN + 20 + 8 + 12;
            f[quoted_src..quoted_src + 4].copy_from_slice(&[10, 77, 100, 2]);
            f
        },
        // From a VIP port that is no VIP, and of a protocol that is neither TCP nor UDP.
        packet::too_big(router, &Frame::tcp("10.77.100.1:81", CLIENT4), 1280, 1000),
        {
            let mut f = packet::too_big(router, &Frame::tcp(VIP4, CLIENT4), 1280, 1000);
            f[packet::ETH_LEN + 20 + 8 + 9] = 47;
            f
        },
    ];
    for f in &frames {
        assert_pass_untouched(&bed, f);
    }
    let d = counters(&bed).since(&before);
    assert_eq!((d.verdict(Verdict::Pass), d.event(Event::IcmpTooBig)), (frames.len() as u64, 0));
}
