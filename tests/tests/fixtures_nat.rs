//! `mode = "nat"` on crafted frames through `BPF_PROG_TEST_RUN`: the exact
//! frame out in both directions (checked against frames built afresh and
//! checksums summed from scratch, never against the program's own
//! arithmetic), the mapping pair a first packet makes and later packets
//! reuse, the marks replies and FIN / RST leave, and the ways a new flow
//! can fail: no mapping for a mid-stream TCP packet, no free port, a
//! backend gone DOWN.

use std::net::{IpAddr, SocketAddr};

use alwayson_tests::{
    fixture::{
        backend_mac, backend_v4, backend_v6, nat_source, FixtureBed, Slot, CLIENT4, CLIENT6, LB_MAC, LB_V4,
        LB_V6, ROUTER4, ROUTER_MAC, XDP_DROP, XDP_PASS, XDP_TX,
    },
    packet::{self, addr, internet_checksum, transport_checksum, Frame, L4},
    require_root,
};
use lb_common::{
    nat::{NAT_SEEN_CLOSE, NAT_SEEN_REPLY},
    types::{words_addr, PROTO_TCP, PROTO_UDP},
    BackendState, DropReason, Event, FlowKey, NatForward, NatReverse, Verdict,
};
use lb_userspace::dataplane::LoadSettings;

const VIP4: &str = "10.77.100.1:80";
const VIP4_UDP: &str = "10.77.100.1:53";
const VIP6: &str = "[fd77::100]:80";
const VIP6_UDP: &str = "[fd77::100]:53";
/// One backend (slot 15), four source ports: see [`small_range`].
const SMALL_VIP: &str = "10.77.100.5:80";
const PORT_MIN: u16 = 16_384;
const PORTS: u16 = 16_384;
/// Where the backends listen: not the VIP's port, so the rewrite shows.
const TCP_BACKEND_PORT: u16 = 8080;
const UDP_BACKEND_PORT: u16 = 5353;
const TCP_FIN_ACK: u8 = 0x11;
const TCP_RST_ACK: u8 = 0x14;

/// VIPs 0..4 (VIP4, VIP4_UDP, VIP6, VIP6_UDP) in NAT mode with known
/// backends 3i..3i+3, leaving from the bed's own addresses.
fn nat_bed() -> FixtureBed {
    let mut bed =
        FixtureBed::new(LoadSettings { ring_size: 251, ..Default::default() }).expect("fixture bed");
    let vips = [(VIP4, PROTO_TCP), (VIP4_UDP, PROTO_UDP), (VIP6, PROTO_TCP), (VIP6_UDP, PROTO_UDP)];
    for (index, (vip, proto)) in (0u8..).zip(vips) {
        let vip = addr(vip);
        let (backend, own): (fn(u8) -> IpAddr, &str) =
            if vip.is_ipv6() { (backend_v6, LB_V6) } else { (backend_v4, LB_V4) };
        let slots: Vec<Slot> = (3 * index..3 * index + 3)
            .map(|i| Slot { slot: u32::from(i), addr: backend(i), weight: 1 })
            .collect();
        let port = if proto == PROTO_TCP { TCP_BACKEND_PORT } else { UDP_BACKEND_PORT };
        let source = nat_source(own.parse().unwrap(), PORT_MIN, PORTS);
        bed.set_nat_vip(vip, proto, u32::from(index), &slots, source, port).expect("set vip");
    }
    bed
}

fn sock(words: [u32; 4], family: u8, port_be: u16) -> SocketAddr {
    SocketAddr::new(words_addr(words, family), u16::from_be(port_be))
}

/// The frame `input` must become toward the backend of mapping `fwd`:
/// built afresh (etherparse computes every checksum).
fn toward_backend(input: &Frame, fwd: &NatForward) -> Frame {
    let family = if input.src.is_ipv4() { 4 } else { 6 };
    let mut out = input.clone().macs(LB_MAC, backend_mac(fwd.backend as u8));
    out.src = sock(fwd.nat_addr, family, fwd.nat_port_be);
    out.dst = sock(fwd.backend_addr, family, fwd.backend_port_be);
    out
}

/// The backend's reply of mapping `fwd`, as it arrives.
fn reply_of(client: &Frame, fwd: &NatForward, l4: L4) -> Frame {
    let toward = toward_backend(client, fwd);
    Frame::new(toward.dst, toward.src, l4).macs(backend_mac(fwd.backend as u8), LB_MAC)
}

/// The frame a reply must become toward the client: from the VIP, to the
/// next hop the client's packets came from.
fn toward_client(client: &Frame, l4: L4) -> Frame {
    Frame::new(client.dst, client.src, l4).macs(LB_MAC, ROUTER_MAC)
}

/// The IPv4 header checksum (if IPv4) and the TCP / UDP checksum verify,
/// summed from scratch. `udp_zero`: the UDP checksum must be 0 (none).
fn assert_checksums(frame: &[u8], udp_zero: bool) {
    let l3 = packet::ETH_LEN;
    if frame[l3] >> 4 == 4 {
        assert_eq!(internet_checksum(&frame[l3..l3 + 20]), 0, "IPv4 header checksum");
    }
    if udp_zero {
        assert_eq!(frame[l3 + 26..l3 + 28], [0, 0], "a zero UDP checksum stays zero");
    } else {
        assert_eq!(transport_checksum(frame, l3), 0, "TCP / UDP checksum over the pseudo-header");
    }
}

fn mapping(bed: &FixtureBed, key: &FlowKey) -> (NatForward, NatReverse) {
    let fwd = bed.dp.nat_forward(key).unwrap().unwrap_or_else(|| panic!("no forward entry for {key:?}"));
    let rev = bed.dp.nat_reverse(&fwd.reverse_key(key.proto, key.family)).unwrap().expect("reverse entry");
    (fwd, rev)
}

fn assert_out(got: &[u8], want: &[u8], what: &str) {
    assert!(got == want, "{what}:\n got {got:02x?}\nwant {want:02x?}");
}

/// A client flow's first packet `first` (a SYN or UDP), a second packet, and
/// a reply, on NAT VIP `vip` (backends 3vip..3vip+3): exact bytes, the pair,
/// the counters. `udp_zero`: the client's UDP packets carry no checksum.
fn round_trip(bed: &FixtureBed, first: Frame, then: Frame, reply_l4: L4, vip: u32, udp_zero: bool) {
    let key = first.flow_key();
    let zero = |frame: &mut Vec<u8>| {
        if udp_zero {
            frame[packet::ETH_LEN + 26..packet::ETH_LEN + 28].fill(0);
        }
    };
    let before = bed.dp.counters().unwrap();
    let vip_before = bed.dp.vip_stats(vip).unwrap();
    let mut input = first.bytes();
    zero(&mut input);
    let out = bed.run(&input);
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!(out.action, XDP_TX, "first packet; counters moved: {moved}");
    assert_eq!((moved.event(Event::NatMapped), moved.drops.iter().sum::<u64>()), (1, 0), "{moved}");
    assert_eq!(bed.dp.vip_stats(vip).unwrap().new_flows - vip_before.new_flows, 1, "a new flow");

    // The pair, field by field.
    let (fwd, rev) = mapping(bed, &key);
    let (own, family) = if first.src.is_ipv4() { (LB_V4, 4) } else { (LB_V6, 6) };
    let backend_port = if key.proto == PROTO_TCP { TCP_BACKEND_PORT } else { UDP_BACKEND_PORT };
    assert_eq!(words_addr(fwd.nat_addr, family), own.parse::<IpAddr>().unwrap());
    assert!((3 * vip..3 * vip + 3).contains(&fwd.backend), "backend {} of VIP {vip}", fwd.backend);
    let backend_addr = if family == 4 { backend_v4 } else { backend_v6 }(fwd.backend as u8);
    assert_eq!(words_addr(fwd.backend_addr, family), backend_addr);
    assert_eq!(u16::from_be(fwd.backend_port_be), backend_port);
    let nat_port = u16::from_be(fwd.nat_port_be);
    assert!((PORT_MIN..PORT_MIN + PORTS).contains(&nat_port), "NAT port {nat_port}");
    assert_eq!((fwd.vip, fwd.flags), (vip, 0));
    assert_eq!((rev.client, rev.vip_addr), (key.src, key.dst));
    assert_eq!((rev.client_port_be, rev.vip_port_be), (key.sport_be, key.dport_be));
    assert_eq!((rev.ifindex, rev.peer_mac, rev.own_mac), (bed.ifindex, ROUTER_MAC, LB_MAC));
    assert_eq!((rev.vip, rev.backend, rev.flags), (vip, fwd.backend, 0));

    let mut want = toward_backend(&first, &fwd).bytes();
    zero(&mut want);
    assert_out(&out.packet, &want, "toward the backend");
    assert_checksums(&out.packet, udp_zero);

    // A later packet reuses the pair.
    let mut input = then.bytes();
    zero(&mut input);
    let out = bed.run(&input);
    assert_eq!(out.action, XDP_TX);
    let mut want = toward_backend(&then, &fwd).bytes();
    zero(&mut want);
    assert_out(&out.packet, &want, "second packet toward the backend");
    assert_eq!(bed.dp.counters().unwrap().since(&before).event(Event::NatMapped), 1, "no second mapping");
    assert_eq!(mapping(bed, &key).0.nat_port_be, fwd.nat_port_be);

    // The reply goes back to the client, from the VIP.
    let reply = reply_of(&first, &fwd, reply_l4);
    let mut input = reply.bytes();
    zero(&mut input);
    let out = bed.run(&input);
    assert_eq!(out.action, XDP_TX, "reply");
    let mut want = toward_client(&first, reply_l4).bytes();
    zero(&mut want);
    assert_out(&out.packet, &want, "toward the client");
    assert_checksums(&out.packet, udp_zero);
    let (fwd, rev) = mapping(bed, &key);
    assert_eq!((fwd.flags, rev.flags), (0, NAT_SEEN_REPLY), "the reply marks the reverse entry");
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!((moved.verdict(Verdict::Tx), moved.drops.iter().sum::<u64>()), (3, 0), "{moved}");
}

const ACK: L4 = L4::Tcp { syn: false };

#[test]
#[ignore = "needs root"]
fn tcp_over_ipv4_is_translated_both_ways_byte_for_byte() {
    require_root("tcp_over_ipv4_is_translated_both_ways_byte_for_byte");
    let bed = nat_bed();
    round_trip(&bed, Frame::syn(CLIENT4, VIP4), Frame::tcp(CLIENT4, VIP4), ACK, 0, false);
    assert_eq!(bed.dp.nat_entries().unwrap().len(), 1);
    assert_eq!(bed.dp.nat_reverse_entries().unwrap().len(), 1);
}

#[test]
#[ignore = "needs root"]
fn udp_over_ipv4_is_translated_both_ways_with_and_without_a_checksum() {
    require_root("udp_over_ipv4_is_translated_both_ways_with_and_without_a_checksum");
    let bed = nat_bed();
    let udp = Frame::udp(CLIENT4, VIP4_UDP);
    round_trip(&bed, udp.clone(), udp.clone().payload_len(100), L4::Udp, 1, false);
    let other = Frame::udp("10.77.2.8:40001", VIP4_UDP);
    round_trip(&bed, other.clone(), other.payload_len(3), L4::Udp, 1, true);
}

#[test]
#[ignore = "needs root"]
fn tcp_over_ipv6_is_translated_both_ways_byte_for_byte() {
    require_root("tcp_over_ipv6_is_translated_both_ways_byte_for_byte");
    let bed = nat_bed();
    round_trip(&bed, Frame::syn(CLIENT6, VIP6), Frame::tcp(CLIENT6, VIP6), ACK, 2, false);
}

#[test]
#[ignore = "needs root"]
fn udp_over_ipv6_is_translated_both_ways_byte_for_byte() {
    require_root("udp_over_ipv6_is_translated_both_ways_byte_for_byte");
    let bed = nat_bed();
    let udp = Frame::udp(CLIENT6, VIP6_UDP);
    round_trip(&bed, udp.clone(), udp.payload_len(77), L4::Udp, 3, false);
    // Many flows: whatever sums the ports and addresses give, UDP over IPv6 never carries 0.
    for port in 1000u16..1200 {
        let frame = Frame::udp(&format!("[fd77:2::9]:{port}"), VIP6_UDP).payload_len(usize::from(port % 7));
        let out = bed.run(&frame.bytes());
        assert_eq!(out.action, XDP_TX);
        assert_checksums(&out.packet, false);
        assert_ne!(out.packet[packet::ETH_LEN + 46..packet::ETH_LEN + 48], [0, 0]);
    }
}

#[test]
#[ignore = "needs root"]
fn a_tcp_packet_other_than_a_syn_without_a_mapping_drops() {
    require_root("a_tcp_packet_other_than_a_syn_without_a_mapping_drops");
    let bed = nat_bed();
    let before = bed.dp.counters().unwrap();
    for frame in [Frame::tcp(CLIENT4, VIP4), Frame::tcp(CLIENT6, VIP6)] {
        assert_eq!(bed.run(&frame.bytes()).action, XDP_DROP);
    }
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!((moved.drop(DropReason::NatNoEntry), moved.event(Event::NatMapped)), (2, 0), "{moved}");
    assert!(bed.dp.nat_entries().unwrap().is_empty() && bed.dp.nat_reverse_entries().unwrap().is_empty());
}

#[test]
#[ignore = "needs root"]
fn traffic_to_the_host_passes_untouched() {
    require_root("traffic_to_the_host_passes_untouched");
    let mut bed = nat_bed();
    let syn = Frame::syn(CLIENT4, VIP4);
    assert_eq!(bed.run(&syn.bytes()).action, XDP_TX);
    let (fwd, _) = mapping(&bed, &syn.flow_key());
    // A backend's packet to a port with no mapping (a health check's answer),
    // and the host's own traffic.
    let mut unmapped = reply_of(&syn, &fwd, ACK);
    unmapped.dst.set_port(unmapped.dst.port() ^ 1);
    let ssh = Frame::tcp(CLIENT4, &format!("{LB_V4}:22"));
    for frame in
        [unmapped.bytes(), ssh.bytes(), Frame::udp("10.77.1.10:123", &format!("{LB_V4}:123")).bytes()]
    {
        let out = bed.run(&frame);
        assert_eq!((out.action, &out.packet), (XDP_PASS, &frame), "passed untouched");
    }
    // With the search for replies off, even a mapped reply passes untouched.
    bed.dp.set_nat(false).unwrap();
    let reply = reply_of(&syn, &fwd, ACK).bytes();
    let out = bed.run(&reply);
    assert_eq!((out.action, &out.packet), (XDP_PASS, &reply));
    bed.dp.set_nat(true).unwrap();
    assert_eq!(bed.run(&reply).action, XDP_TX);
}

#[test]
#[ignore = "needs root"]
fn fin_and_rst_mark_their_direction_closing() {
    require_root("fin_and_rst_mark_their_direction_closing");
    let bed = nat_bed();
    let l3 = packet::ETH_LEN;
    for (client, vip) in [(CLIENT4, VIP4), (CLIENT6, VIP6)] {
        let syn = Frame::syn(client, vip);
        assert_eq!(bed.run(&syn.bytes()).action, XDP_TX);
        let key = syn.flow_key();
        let (fwd, _) = mapping(&bed, &key);
        // The client's FIN: the forward entry.
        let mut fin = Frame::tcp(client, vip).bytes();
        packet::set_tcp_flags(&mut fin, l3, TCP_FIN_ACK);
        let out = bed.run(&fin);
        assert_eq!(out.action, XDP_TX);
        let mut want_ack = toward_backend(&Frame::tcp(client, vip), &fwd).bytes();
        packet::set_tcp_flags(&mut want_ack, l3, TCP_FIN_ACK);
        assert_out(&out.packet, &want_ack, "FIN toward the backend");
        assert_checksums(&out.packet, false);
        let (f, r) = mapping(&bed, &key);
        assert_eq!((f.flags, r.flags), (NAT_SEEN_CLOSE, 0));
        // The backend's RST: the reverse entry, which it also marks as answered.
        let mut rst = reply_of(&syn, &fwd, ACK).bytes();
        packet::set_tcp_flags(&mut rst, l3, TCP_RST_ACK);
        let out = bed.run(&rst);
        assert_eq!(out.action, XDP_TX);
        let mut want = toward_client(&syn, ACK).bytes();
        packet::set_tcp_flags(&mut want, l3, TCP_RST_ACK);
        assert_out(&out.packet, &want, "RST toward the client");
        assert_checksums(&out.packet, false);
        let (f, r) = mapping(&bed, &key);
        assert_eq!((f.flags, r.flags), (NAT_SEEN_CLOSE, NAT_SEEN_CLOSE | NAT_SEEN_REPLY));
    }
}

/// VIP 5 ([`SMALL_VIP`]): one backend (slot 15), ports 20000..20004.
fn small_range(bed: &mut FixtureBed) {
    let slot = Slot { slot: 15, addr: backend_v4(15), weight: 1 };
    let source = nat_source(LB_V4.parse().unwrap(), 20_000, 4);
    bed.set_nat_vip(addr(SMALL_VIP), PROTO_TCP, 5, &[slot], source, TCP_BACKEND_PORT).unwrap();
}

#[test]
#[ignore = "needs root"]
fn more_flows_than_ports_drop_nat_no_port_and_spare_the_mapped_ones() {
    require_root("more_flows_than_ports_drop_nat_no_port_and_spare_the_mapped_ones");
    let mut bed = nat_bed();
    small_range(&mut bed);
    let client = |i: u16| format!("10.77.2.{}:{}", 7 + i, 41_000 + i);
    let before = bed.dp.counters().unwrap();
    let mut ports = Vec::new();
    for i in 0..4 {
        let syn = Frame::syn(&client(i), SMALL_VIP);
        assert_eq!(bed.run(&syn.bytes()).action, XDP_TX, "flow {i}: 4 ports, 8 tries: all found");
        ports.push(u16::from_be(mapping(&bed, &syn.flow_key()).0.nat_port_be));
    }
    ports.sort();
    assert_eq!(ports, [20_000, 20_001, 20_002, 20_003], "every port of the range, once");
    for i in 4..7 {
        assert_eq!(bed.run(&Frame::syn(&client(i), SMALL_VIP).bytes()).action, XDP_DROP);
        assert!(bed.dp.nat_forward(&Frame::syn(&client(i), SMALL_VIP).flow_key()).unwrap().is_none());
    }
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!((moved.drop(DropReason::NatNoPort), moved.event(Event::NatMapped)), (3, 4), "{moved}");
    assert_eq!(bed.dp.nat_reverse_entries().unwrap().len(), 4, "no reverse entry left behind");
    // The mapped flows go on, both ways, on their ports.
    for i in 0..4 {
        let ack = Frame::tcp(&client(i), SMALL_VIP);
        let (fwd, _) = mapping(&bed, &ack.flow_key());
        let out = bed.run(&ack.bytes());
        assert_eq!(out.action, XDP_TX);
        assert_out(&out.packet, &toward_backend(&ack, &fwd).bytes(), "a mapped flow");
        let out = bed.run(&reply_of(&ack, &fwd, ACK).bytes());
        assert_out(&out.packet, &toward_client(&ack, ACK).bytes(), "its reply");
    }
    // A freed port is taken again.
    let first = Frame::syn(&client(0), SMALL_VIP).flow_key();
    assert!(bed.dp.remove_nat_pair(&first).unwrap());
    assert!(!bed.dp.remove_nat_pair(&first).unwrap(), "already gone");
    assert_eq!(bed.dp.nat_reverse_entries().unwrap().len(), 3);
    assert_eq!(bed.run(&Frame::syn(&client(5), SMALL_VIP).bytes()).action, XDP_TX);
}

#[test]
#[ignore = "needs root"]
fn a_down_backends_mapping_is_dropped_and_made_again_by_a_syn() {
    require_root("a_down_backends_mapping_is_dropped_and_made_again_by_a_syn");
    let mut bed = nat_bed();
    for (proto, index, first, then) in [
        (PROTO_TCP, 0u8, Frame::syn(CLIENT4, VIP4), Frame::tcp(CLIENT4, VIP4)),
        (PROTO_UDP, 1, Frame::udp(CLIENT4, VIP4_UDP), Frame::udp(CLIENT4, VIP4_UDP)),
    ] {
        assert_eq!(bed.run(&first.bytes()).action, XDP_TX);
        let key = first.flow_key();
        let (fwd, _) = mapping(&bed, &key);
        let old_reverse = fwd.reverse_key(key.proto, key.family);
        let down = fwd.backend;
        let mut backend = bed.dp.backend(down).unwrap();
        backend.state = BackendState::Down as u8;
        bed.dp.set_backend(down, backend).unwrap();
        let slots: Vec<Slot> = (3 * index..3 * index + 3)
            .map(|i| Slot {
                slot: u32::from(i),
                addr: backend_v4(i),
                weight: u32::from(u32::from(i) != down),
            })
            .collect();
        bed.write_ring(u32::from(index), &slots).unwrap();

        let before = bed.dp.counters().unwrap();
        let out = bed.run(&then.bytes());
        let moved = bed.dp.counters().unwrap().since(&before);
        if proto == PROTO_TCP {
            // Mid-stream: the backend that knew the connection is gone.
            assert_eq!(out.action, XDP_DROP);
            assert_eq!(moved.drop(DropReason::NatNoEntry), 1, "{moved}");
            assert!(bed.dp.nat_forward(&key).unwrap().is_none(), "the forward entry went");
            assert!(bed.dp.nat_reverse(&old_reverse).unwrap().is_none(), "the reverse entry went");
            assert_eq!(bed.run(&first.bytes()).action, XDP_TX, "a SYN maps again");
        } else {
            assert_eq!(out.action, XDP_TX, "UDP maps again at once");
            assert!(bed.dp.nat_reverse(&old_reverse).unwrap().is_none(), "the old reverse entry went");
        }
        let (fwd, _) = mapping(&bed, &key);
        assert_ne!(fwd.backend, down, "mapped to a backend that is up");
        assert_eq!(bed.dp.counters().unwrap().since(&before).event(Event::NatMapped), 1);
        assert_eq!(bed.dp.nat_entries().unwrap().len(), bed.dp.nat_reverse_entries().unwrap().len());
        let out = bed.run(&then.bytes());
        assert_out(&out.packet, &toward_backend(&then, &fwd).bytes(), "on the new backend");
    }
}

#[test]
#[ignore = "needs root"]
fn icmp_too_big_about_a_nat_flow_passes() {
    require_root("icmp_too_big_about_a_nat_flow_passes");
    let bed = nat_bed();
    assert_eq!(bed.run(&Frame::syn(CLIENT4, VIP4).bytes()).action, XDP_TX);
    // Our reply to the client was too big for a router on its path.
    let quoted = Frame::tcp(VIP4, CLIENT4).payload_len(1400);
    let error = packet::too_big(ROUTER4.parse().unwrap(), &quoted, 1280, 48);
    let out = bed.run(&error);
    assert_eq!((out.action, &out.packet), (XDP_PASS, &error), "not translated: passed untouched");
}

#[test]
#[ignore = "needs root"]
fn a_udp_checksum_that_comes_out_zero_is_sent_as_all_ones() {
    require_root("a_udp_checksum_that_comes_out_zero_is_sent_as_all_ones");
    let bed = nat_bed();
    for (client, vip) in [(CLIENT4, VIP4_UDP), (CLIENT6, VIP6_UDP)] {
        let first = Frame::udp(client, vip);
        assert_eq!(bed.run(&first.bytes()).action, XDP_TX);
        let (fwd, _) = mapping(&bed, &first.flow_key());
        // The first payload word is what the rest sums to, complemented:
        // the translated packet's checksum then comes out 0.
        let mut probe = first.clone();
        probe.payload = vec![0, 0, 1, 2, 3];
        let l4 = packet::ETH_LEN + if first.src.is_ipv4() { 20 } else { 40 };
        let mut out = toward_backend(&probe, &fwd).bytes();
        out[l4 + 6..l4 + 8].fill(0);
        let word = transport_checksum(&out, packet::ETH_LEN);
        probe.payload[..2].copy_from_slice(&word.to_be_bytes());
        let mut want = toward_backend(&probe, &fwd).bytes();
        want[l4 + 6..l4 + 8].fill(0);
        assert_eq!(transport_checksum(&want, packet::ETH_LEN), 0, "the checksum computed is 0");
        want[l4 + 6..l4 + 8].copy_from_slice(&[0xff, 0xff]);
        let out = bed.run(&probe.bytes());
        assert_eq!(out.action, XDP_TX);
        assert_out(&out.packet, &want, "checksum 0 sent as 0xffff");
        assert_checksums(&out.packet, false);
    }
}

#[test]
#[ignore = "needs root"]
fn ipv6_packets_with_extension_headers_are_not_translated() {
    require_root("ipv6_packets_with_extension_headers_are_not_translated");
    let bed = nat_bed();
    let before = bed.dp.counters().unwrap();
    let mut syn = Frame::syn(CLIENT6, VIP6).bytes();
    packet::add_ipv6_ext(&mut syn, packet::ETH_LEN, &[0]);
    assert_eq!(bed.run(&syn).action, XDP_DROP);
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!((moved.drop(DropReason::Ipv6ExtChain), moved.event(Event::NatMapped)), (1, 0), "{moved}");
    // A reply of a mapped flow that carries one passes untouched.
    let first = Frame::syn(CLIENT6, VIP6);
    assert_eq!(bed.run(&first.bytes()).action, XDP_TX);
    let (fwd, _) = mapping(&bed, &first.flow_key());
    let mut reply = reply_of(&first, &fwd, ACK).bytes();
    packet::add_ipv6_ext(&mut reply, packet::ETH_LEN, &[60]);
    let out = bed.run(&reply);
    assert_eq!((out.action, &out.packet), (XDP_PASS, &reply));
}
