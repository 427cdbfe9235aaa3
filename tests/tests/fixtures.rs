//! The balancer on crafted frames through `BPF_PROG_TEST_RUN`: for each case
//! the frame in, the verdict and the exact frame out, and the counters that
//! must move.

use std::{collections::BTreeSet, net::SocketAddr};

use alwayson_tests::{
    fixture::{
        backend_mac, backend_of_mac, backend_v4, backend_v6, FixtureBed, Slot, CLIENT4, CLIENT6, LB_MAC,
        LB_V4, ROUTER4, ROUTER6, ROUTER_MAC, VIP4, VIP4_UDP, VIP6, VIP6_UDP, XDP_DROP, XDP_PASS, XDP_TX,
    },
    packet::{self, addr, Frame, L4},
    require_root,
};
use lb_common::{types::PROTO_TCP, DropReason, Event, Verdict};
use lb_userspace::dataplane::Counters;

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
#[ignore = "needs root"]
fn vip_packets_come_out_xdp_tx_with_exact_bytes() {
    require_root("vip_packets_come_out_xdp_tx_with_exact_bytes");
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
#[ignore = "needs root"]
fn flows_stay_on_their_backend_across_packets() {
    require_root("flows_stay_on_their_backend_across_packets");
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
#[ignore = "needs root"]
fn non_vip_traffic_passes_untouched() {
    require_root("non_vip_traffic_passes_untouched");
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
#[ignore = "needs root"]
fn empty_ring_drops_with_no_backend() {
    require_root("empty_ring_drops_with_no_backend");
    let mut bed = FixtureBed::standard();
    bed.write_ring(0, &[]).unwrap();
    let before = counters(&bed);
    let out = bed.run(&Frame::syn(CLIENT4, VIP4).bytes());
    assert_eq!(out.action, XDP_DROP);
    let d = counters(&bed).since(&before);
    assert_eq!((d.drop(DropReason::NoBackend), d.verdict(Verdict::Drop)), (1, 1));
}

#[test]
#[ignore = "needs root"]
fn backend_without_neighbour_entry_drops_with_reason() {
    require_root("backend_without_neighbour_entry_drops_with_reason");
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

#[test]
#[ignore = "needs root"]
fn icmp_too_big_goes_to_the_backend_of_the_flow_it_quotes() {
    require_root("icmp_too_big_goes_to_the_backend_of_the_flow_it_quotes");
    let mut bed = FixtureBed::standard();
    let cases = [
        (CLIENT4, VIP4, L4::Tcp { syn: true }, 0u8),
        (CLIENT4, VIP4_UDP, L4::Udp, 1),
        (CLIENT6, VIP6, L4::Tcp { syn: true }, 2),
    ];
    for (client, vip_addr, l4, vip) in cases {
        let (client, vip_addr) = (addr(client), addr(vip_addr));
        let router = if client.is_ipv4() { ROUTER4 } else { ROUTER6 }.parse().unwrap();
        let from_port = |port: u16| Frame::new(SocketAddr::new(client.ip(), port), vip_addr, l4);
        let flows: Vec<Frame> = (41_000..41_012).map(from_port).collect();
        let backends: Vec<u8> = flows.iter().map(|f| assert_dsr(&bed, &f.bytes(), vip)).collect();
        assert!(backends.iter().collect::<BTreeSet<_>>().len() > 1, "the flows spread: {backends:?}");
        // From now on the ring gives every new flow to one backend: the errors
        // about the flows on the others must follow the table, not the ring.
        let ring_pick = 3 * vip;
        let backend_addr = if client.is_ipv4() { backend_v4 } else { backend_v6 };
        bed.write_ring(
            u32::from(vip),
            &[Slot { slot: u32::from(ring_pick), addr: backend_addr(ring_pick), weight: 1 }],
        )
        .unwrap();
        let before = counters(&bed);
        let new_flows = bed.dp.vip_stats(u32::from(vip)).unwrap().new_flows;
        for (flow, &backend) in flows.iter().zip(&backends) {
            // The backend's reply was too big for a link on the way back.
            let reply = Frame::new(flow.dst, flow.src, flow.l4);
            let error = packet::too_big(router, &reply, 1280, 1000);
            assert_eq!(assert_dsr(&bed, &error, vip), backend, "to the flow's backend: {flow:?}");
            // The flows began on settled slots, so nothing recorded them; nor does their error.
            assert_eq!(bed.dp.connection(&flow.flow_key()).unwrap(), None, "an ICMP error records nothing");
        }
        let d = counters(&bed).since(&before);
        let errors = flows.len() as u64;
        assert_eq!((d.event(Event::IcmpTooBig), d.verdict(Verdict::Tx)), (errors, errors));
        assert_eq!(bed.dp.vip_stats(u32::from(vip)).unwrap().new_flows, new_flows, "an error is no new flow");

        // A flow never seen: the error goes where the flow's own next packet
        // (not a SYN) goes, and no entry is made for it.
        let established = match l4 {
            L4::Tcp { .. } => L4::Tcp { syn: false },
            other => other,
        };
        let unseen = Frame::new(SocketAddr::new(client.ip(), 42_000), vip_addr, established);
        let reply = Frame::new(unseen.dst, unseen.src, unseen.l4);
        let error_to = assert_dsr(&bed, &packet::too_big(router, &reply, 1280, 1000), vip);
        assert_eq!(bed.dp.connection(&unseen.flow_key()).unwrap(), None, "an ICMP error is no flow");
        assert_eq!(assert_dsr(&bed, &unseen.bytes(), vip), error_to, "where the flow itself goes");
    }
}

#[test]
#[ignore = "needs root"]
fn icmp_that_is_not_about_a_vip_flow_passes_untouched() {
    require_root("icmp_that_is_not_about_a_vip_flow_passes_untouched");
    let bed = FixtureBed::standard();
    let before = counters(&bed);
    let router = ROUTER4.parse().unwrap();
    let frames = [
        // About the balancer's own traffic.
        packet::too_big(router, &Frame::tcp(&format!("{LB_V4}:22"), CLIENT4), 1280, 1000),
        // To a VIP address, quoting a packet another VIP address (a wildcard VIP) sent.
        {
            let mut f = packet::too_big(router, &Frame::tcp(VIP4, CLIENT4), 1280, 1000);
            let quoted_src = packet::QUOTE_V4 + 12;
            f[quoted_src..quoted_src + 4].copy_from_slice(&[10, 77, 100, 2]);
            f
        },
        // From a VIP port that is no VIP, and of a protocol that is neither TCP nor UDP.
        packet::too_big(router, &Frame::tcp("10.77.100.1:81", CLIENT4), 1280, 1000),
        {
            let mut f = packet::too_big(router, &Frame::tcp(VIP4, CLIENT4), 1280, 1000);
            f[packet::QUOTE_V4 + 9] = 47;
            f
        },
        // Quoting a later fragment, which has no ports where they would be read.
        {
            let mut f = packet::too_big(router, &Frame::tcp(VIP4, CLIENT4), 1280, 1000);
            packet::set_ipv4_frag(&mut f, packet::QUOTE_V4, 185);
            f
        },
    ];
    for f in &frames {
        assert_pass_untouched(&bed, f);
    }
    let d = counters(&bed).since(&before);
    assert_eq!((d.verdict(Verdict::Pass), d.event(Event::IcmpTooBig)), (frames.len() as u64, 0));
}
