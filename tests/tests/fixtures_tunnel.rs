//! `mode = "tunnel"` on crafted frames through `BPF_PROG_TEST_RUN`: the exact
//! frame out (outer header field by field, the inner packet unchanged), the
//! outer source derived from the client, the next hop a gateway may be, and
//! what cannot be encapsulated. Then the `decap` program: what the balancer
//! encapsulated comes back out as the client sent it, everything else passes
//! untouched, broken tunnel packets drop; each counted.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use alwayson_tests::{
    fixture::{
        backend_mac, backend_of_mac, backend_v4, backend_v6, mac_str, FixtureBed, Slot, CLIENT4, CLIENT6,
        LB_MAC, ROUTER_MAC, XDP_DROP, XDP_PASS, XDP_TX,
    },
    packet::{self, addr, internet_checksum, Frame},
    require_root,
};
use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    DropReason, Mode, TunnelSource, Verdict,
};
use lb_userspace::dataplane::{DecapTestRun, LoadSettings, TestRunOutcome};

const VIP4: &str = "10.77.100.1:80";
const VIP4_UDP: &str = "10.77.100.1:53";
const VIP6: &str = "[fd77::100]:80";
const VIP6_UDP: &str = "[fd77::100]:53";
/// Backends behind a gateway (see [`with_gateways`]).
const ROUTED_VIP4: &str = "10.77.100.9:80";
const ROUTED_VIP6: &str = "[fd77::109]:80";
const ROUTED4: &str = "10.77.50.5";
const ROUTED6: &str = "fd77:50::5";
const GATEWAY4: &str = "10.77.1.254";
const GATEWAY6: &str = "fd77:1::fe";

/// A bed whose VIPs 0..4 (VIP4, VIP4_UDP, VIP6, VIP6_UDP) are tunnel VIPs
/// with known backends 3i..3i+3, as on the standard bed.
fn tunnel_bed() -> FixtureBed {
    let mut bed =
        FixtureBed::new(LoadSettings { ring_size: 251, ..Default::default() }).expect("fixture bed");
    for (index, (vip, proto)) in
        (0u8..).zip([(VIP4, PROTO_TCP), (VIP4_UDP, PROTO_UDP), (VIP6, PROTO_TCP), (VIP6_UDP, PROTO_UDP)])
    {
        let vip = addr(vip);
        let backend = if vip.is_ipv6() { backend_v6 } else { backend_v4 };
        let slots: Vec<Slot> = (3 * index..3 * index + 3)
            .map(|i| Slot { slot: u32::from(i), addr: backend(i), weight: 1 })
            .collect();
        bed.set_vip_in(Mode::Tunnel, vip, proto, u32::from(index), &slots).expect("set vip");
    }
    bed
}

/// Adds routes to 10.77.50.0/24 and fd77:50::/64 through a resolved gateway
/// (MAC [`ROUTER_MAC`]).
fn add_gateways(bed: &FixtureBed) {
    let ip = |args: &[&str]| bed.ns.ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e:#}"));
    let router = mac_str(ROUTER_MAC);
    for gateway in [GATEWAY4, GATEWAY6] {
        ip(&["neigh", "add", gateway, "lladdr", &router, "dev", "lb0", "nud", "permanent"]);
    }
    ip(&["route", "add", "10.77.50.0/24", "via", GATEWAY4, "dev", "lb0"]);
    ip(&["-6", "route", "add", "fd77:50::/64", "via", GATEWAY6, "dev", "lb0"]);
}

/// VIPs 5 and 6 ([`ROUTED_VIP4`], [`ROUTED_VIP6`]) in `mode`, each with its
/// one backend behind the gateway (slots 40 and 41).
fn routed_vips(bed: &mut FixtureBed, mode: Mode) {
    for (index, vip, slot, backend) in [(5, ROUTED_VIP4, 40, ROUTED4), (6, ROUTED_VIP6, 41, ROUTED6)] {
        let backend: IpAddr = backend.parse().unwrap();
        bed.set_vip_in(mode, addr(vip), PROTO_TCP, index, &[Slot { slot, addr: backend, weight: 1 }])
            .unwrap();
    }
}

/// Katran's IPv4 source: 172.16.0.0/16, the low 16 bits the client's port
/// XOR the client address's low 16 bits.
fn katran_v4(client: SocketAddr) -> IpAddr {
    let IpAddr::V4(c) = client.ip() else { panic!("{client}") };
    let low = u16::from_be_bytes([c.octets()[2], c.octets()[3]]) ^ client.port();
    IpAddr::V4(Ipv4Addr::new(172, 16, (low >> 8) as u8, low as u8))
}

/// Katran's IPv6 source: 100::/64, bits 64–95 zero, the last 32 bits the
/// client's last 32 bits XOR its port.
fn katran_v6(client: SocketAddr) -> IpAddr {
    let IpAddr::V6(c) = client.ip() else { panic!("{client}") };
    let last = (u128::from(c) as u32) ^ u32::from(client.port());
    IpAddr::V6(Ipv6Addr::from((0x0100u128 << 112) | u128::from(last)))
}

/// The known backend `out` went to, and its address in the family of `client`.
fn backend_ip(out: &TestRunOutcome, client: SocketAddr) -> (u8, IpAddr) {
    let b =
        backend_of_mac(&out.packet).unwrap_or_else(|| panic!("unknown dst MAC {:02x?}", &out.packet[..6]));
    (b, if client.is_ipv4() { backend_v4(b) } else { backend_v6(b) })
}

/// Runs `input` (IP packet at `l3`, from `client`) and checks it comes out
/// XDP_TX to a backend of VIP `vip`, encapsulated exactly. Returns the output.
fn assert_tunnelled(bed: &FixtureBed, input: &[u8], l3: usize, client: SocketAddr, vip: u8) -> Vec<u8> {
    let before = bed.dp.counters().unwrap();
    let out = bed.run(input);
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!(out.action, XDP_TX, "verdict; counters moved: {moved}");
    assert_eq!((moved.verdict(Verdict::Tx), moved.drops.iter().sum::<u64>()), (1, 0), "{moved}");
    let (backend, backend_addr) = backend_ip(&out, client);
    assert!((3 * vip..3 * vip + 3).contains(&backend), "backend {backend} does not belong to VIP {vip}");
    let src = if client.is_ipv4() { katran_v4(client) } else { katran_v6(client) };
    let want = packet::encapsulated(input, l3, backend_mac(backend), LB_MAC, src, backend_addr);
    assert!(
        out.packet == want,
        "output frame:\n got {:02x?}\nwant {:02x?}",
        &out.packet[..l3 + 80.min(out.packet.len() - l3)],
        &want[..l3 + 80.min(want.len() - l3)]
    );
    out.packet
}

#[test]
#[ignore = "needs root"]
fn ipv4_vip_packets_leave_in_ipip_with_every_outer_field_exact() {
    require_root("ipv4_vip_packets_leave_in_ipip_with_every_outer_field_exact");
    let bed = tunnel_bed();
    let client = addr(CLIENT4);
    // EF with ECN(1), DF set; AF11 with CE, DF clear; both zero.
    for (tos, df) in [(0xb9, true), (0x2b, false), (0, false)] {
        for (frame, vip) in [
            (Frame::syn(CLIENT4, VIP4), 0),
            (Frame::tcp(CLIENT4, VIP4), 0),
            (Frame::udp(CLIENT4, VIP4_UDP), 1),
        ] {
            let mut input = frame.bytes();
            packet::set_ipv4_tos_df(&mut input, 14, tos, df);
            let out = assert_tunnelled(&bed, &input, 14, client, vip);
            // Field by field, what `encapsulated` built: the outer header at 14..34.
            let outer = &out[14..34];
            assert_eq!(out[12..14], [0x08, 0x00], "EtherType IPv4");
            assert_eq!(outer[0], 0x45, "version 4, no options");
            assert_eq!(outer[1], tos, "the whole TOS byte, DSCP and ECN, copied");
            assert_eq!(
                usize::from(u16::from_be_bytes([outer[2], outer[3]])),
                input.len() - 14 + 20,
                "total length"
            );
            assert_eq!(outer[4..6], input[18..20], "identification copied");
            assert_eq!(outer[6] & 0x40 != 0, df, "DF copied");
            assert_eq!((outer[6] & 0xbf, outer[7]), (0, 0), "no MF, offset 0");
            assert_eq!((outer[8], outer[9]), (64, 4), "TTL 64, protocol IPIP");
            assert_eq!(internet_checksum(outer), 0, "the header checksum verifies");
            let parsed = etherparse::Ipv4HeaderSlice::from_slice(outer).expect("an IPv4 header");
            assert_eq!(parsed.header_checksum(), parsed.to_header().calc_header_checksum());
            assert_eq!(
                IpAddr::V4(parsed.source_addr()),
                katran_v4(client),
                "the source derived from the client"
            );
            assert_eq!(out[34..], input[14..], "the inner packet unchanged");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn ipv6_vip_packets_leave_in_ip6ip6_with_every_outer_field_exact() {
    require_root("ipv6_vip_packets_leave_in_ip6ip6_with_every_outer_field_exact");
    let bed = tunnel_bed();
    let client = addr(CLIENT6);
    for class in [0xb9, 0x2b, 0] {
        for (frame, vip) in [(Frame::syn(CLIENT6, VIP6), 2), (Frame::udp(CLIENT6, VIP6_UDP), 3)] {
            let mut input = frame.bytes();
            packet::set_ipv6_traffic_class(&mut input, 14, class);
            let out = assert_tunnelled(&bed, &input, 14, client, vip);
            let outer = &out[14..54];
            assert_eq!(out[12..14], [0x86, 0xdd], "EtherType IPv6");
            assert_eq!(outer[0] >> 4, 6);
            assert_eq!((outer[0] << 4) | (outer[1] >> 4), class, "the traffic class copied");
            assert_eq!((outer[1] & 0x0f, outer[2], outer[3]), (0, 0, 0), "flow label 0");
            assert_eq!(
                usize::from(u16::from_be_bytes([outer[4], outer[5]])),
                input.len() - 14,
                "payload length"
            );
            assert_eq!((outer[6], outer[7]), (41, 64), "next header IPv6, hop limit 64");
            let src: [u8; 16] = outer[8..24].try_into().unwrap();
            assert_eq!(
                IpAddr::from(src),
                katran_v6(client),
                "100::/64, the client's last 32 bits XOR its port"
            );
            assert_eq!(src[8..12], [0; 4], "bits 64-95 zero");
            assert_eq!(out[54..], input[14..], "the inner packet unchanged");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn the_source_follows_the_client_and_the_configured_prefix() {
    require_root("the_source_follows_the_client_and_the_configured_prefix");
    let mut bed = tunnel_bed();
    // Katran's prefixes by default, for a few clients: the host bits differ per client and port.
    let mut sources = std::collections::BTreeSet::new();
    for port in [1, 0x00ff, 0xff00, 40000, 65535] {
        for client in ["10.77.2.7", "10.77.255.0", "192.0.2.200"] {
            let client = SocketAddr::new(client.parse().unwrap(), port);
            let input = Frame::new(client, addr(VIP4_UDP), packet::L4::Udp).bytes();
            let out = bed.run(&input);
            assert_eq!(out.action, XDP_TX);
            let src = IpAddr::from(<[u8; 4]>::try_from(&out.packet[26..30]).unwrap());
            assert_eq!(src, katran_v4(client), "{client}");
            sources.insert(src);
        }
        let client = SocketAddr::new("fd77:2::abcd:1234".parse().unwrap(), port);
        let out = bed.run(&Frame::new(client, addr(VIP6_UDP), packet::L4::Udp).bytes());
        let src = IpAddr::from(<[u8; 16]>::try_from(&out.packet[22..38]).unwrap());
        assert_eq!(src, katran_v6(client), "{client}");
    }
    assert_eq!(sources.len(), 15, "every client and port its own source");

    // A configured prefix, as the bed tests use them: only its host bits vary.
    let source = TunnelSource::new(Ipv4Addr::new(10, 77, 174, 0), 24, "fd77::174:0".parse().unwrap(), 112);
    bed.dp.set_tunnel_source(source).unwrap();
    let client = addr(CLIENT4);
    let out = bed.run(&Frame::syn(CLIENT4, VIP4).bytes());
    let low = 0x07 ^ (client.port() as u8);
    assert_eq!(out.packet[26..30], [10, 77, 174, low], "10.77.174.0/24");
    let out = bed.run(&Frame::syn(CLIENT6, VIP6).bytes());
    assert_eq!(
        IpAddr::from(<[u8; 16]>::try_from(&out.packet[22..38]).unwrap()),
        "fd77::174:9c47".parse::<IpAddr>().unwrap(),
        "fd77::174:0/112: 0x0007 ^ 40000"
    );
}

#[test]
#[ignore = "needs root"]
fn vlan_tags_stay_in_front_of_the_outer_header() {
    require_root("vlan_tags_stay_in_front_of_the_outer_header");
    let bed = tunnel_bed();
    let one = Frame::udp(CLIENT4, VIP4_UDP).vlan(100);
    assert_tunnelled(&bed, &one.bytes(), one.l3(), addr(CLIENT4), 1);
    let two = Frame::tcp(CLIENT6, VIP6).vlan(100).vlan(200);
    let out = assert_tunnelled(&bed, &two.bytes(), two.l3(), addr(CLIENT6), 2);
    assert_eq!(out[12..22], two.bytes()[12..22], "both tags and the EtherType");
}

#[test]
#[ignore = "needs root"]
fn jumbo_and_multi_buffer_frames_get_the_whole_length_in_the_outer_header() {
    require_root("jumbo_and_multi_buffer_frames_get_the_whole_length_in_the_outer_header");
    let bed = tunnel_bed();
    for len in [1514, 4096, 9000, 16_000] {
        for (frame, client, vip) in
            [(Frame::tcp(CLIENT4, VIP4), CLIENT4, 0), (Frame::udp(CLIENT6, VIP6_UDP), CLIENT6, 3)]
        {
            let input = frame.frame_len(len).bytes();
            let before = bed.dp.vip_stats(vip).unwrap();
            assert_tunnelled(&bed, &input, 14, addr(client), vip as u8);
            let after = bed.dp.vip_stats(vip).unwrap();
            assert_eq!(after.bytes - before.bytes, len as u64, "the client's frame counted whole");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn a_packet_too_long_for_an_outer_header_drops_as_encap_no_room() {
    require_root("a_packet_too_long_for_an_outer_header_drops_as_encap_no_room");
    let bed = tunnel_bed();
    // The longest IP packets there are: 65,535 bytes, 20 or 40 more will not fit the length fields.
    let v4 = Frame::udp(CLIENT4, VIP4_UDP).frame_len(14 + 65_535).bytes();
    let v6 = Frame::udp(CLIENT6, VIP6_UDP).frame_len(14 + 40 + 65_535).bytes();
    for input in [v4, v6] {
        let before = bed.dp.counters().unwrap();
        let out = bed.run(&input);
        let moved = bed.dp.counters().unwrap().since(&before);
        assert_eq!(out.action, XDP_DROP, "{moved}");
        assert_eq!(moved.drop(DropReason::EncapNoRoom), 1, "{moved}");
        assert!(out.packet == input, "a dropped frame is not changed");
    }
}

#[test]
#[ignore = "needs root"]
fn tunnel_backends_behind_a_gateway_go_to_the_gateway() {
    require_root("tunnel_backends_behind_a_gateway_go_to_the_gateway");
    let mut bed = tunnel_bed();
    // First as DSR: the answer "not on link" is cached...
    add_gateways(&bed);
    routed_vips(&mut bed, Mode::Dsr);
    assert_eq!(bed.run(&Frame::syn(CLIENT4, ROUTED_VIP4).bytes()).action, XDP_DROP);
    assert_eq!(bed.run(&Frame::syn(CLIENT6, ROUTED_VIP6).bytes()).action, XDP_DROP);
    // ...and a tunnel VIP on the same slots asks the FIB again: the gateway is its next hop.
    routed_vips(&mut bed, Mode::Tunnel);
    let before = bed.dp.counters().unwrap();
    for (client, vip, backend) in [(CLIENT4, ROUTED_VIP4, ROUTED4), (CLIENT6, ROUTED_VIP6, ROUTED6)] {
        for input in [Frame::syn(client, vip).bytes(), Frame::tcp(client, vip).bytes()] {
            let out = bed.run(&input);
            assert_eq!(out.action, XDP_TX);
            let client = addr(client);
            let src = if client.is_ipv4() { katran_v4(client) } else { katran_v6(client) };
            let want = packet::encapsulated(&input, 14, ROUTER_MAC, LB_MAC, src, backend.parse().unwrap());
            assert!(out.packet == want, "to the gateway's MAC, the backend in the outer header");
        }
    }
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!((moved.verdict(Verdict::Tx), moved.drop(DropReason::NotOnLink)), (4, 0), "{moved}");
}

// --- decap ---

/// What the decap program counted, by [`lb_common::DecapCounter`] slot.
fn decap_counts(decap: &DecapTestRun) -> [u64; 3] {
    let mut counts = [0; 3];
    for (counter, n) in decap.counters().expect("decap counters") {
        counts[counter as usize] = n;
    }
    counts
}

#[test]
#[ignore = "needs root"]
fn decap_gives_back_the_frame_the_client_sent() {
    require_root("decap_gives_back_the_frame_the_client_sent");
    let bed = tunnel_bed();
    let decap = DecapTestRun::load().expect("decap program");
    let frames = [
        Frame::syn(CLIENT4, VIP4),
        Frame::tcp(CLIENT4, VIP4).frame_len(1514),
        Frame::udp(CLIENT4, VIP4_UDP).vlan(100),
        Frame::syn(CLIENT6, VIP6),
        Frame::udp(CLIENT6, VIP6_UDP).vlan(100).vlan(200),
        Frame::tcp(CLIENT4, VIP4).frame_len(9000),
        Frame::udp(CLIENT6, VIP6_UDP).frame_len(16_000),
    ];
    for frame in &frames {
        let mut input = frame.bytes();
        if frame.dst.is_ipv4() {
            packet::set_ipv4_tos_df(&mut input, frame.l3(), 0xb9, true);
        }
        let encapsulated = bed.run(&input);
        assert_eq!(encapsulated.action, XDP_TX);
        let out = decap.run(&encapsulated.packet).expect("BPF_PROG_TEST_RUN");
        assert_eq!(out.action, XDP_PASS, "{frame:?}");
        let (dst, src) =
            (encapsulated.packet[..6].try_into().unwrap(), encapsulated.packet[6..12].try_into().unwrap());
        assert!(
            out.packet == packet::with_macs(&input, dst, src),
            "{frame:?}: the client's frame, as the balancer addressed it"
        );
    }
    assert_eq!(decap_counts(&decap), [frames.len() as u64, 0, 0], "all decapsulated");
}

#[test]
#[ignore = "needs root"]
fn decap_passes_what_is_no_tunnel_and_drops_broken_tunnels() {
    require_root("decap_passes_what_is_no_tunnel_and_drops_broken_tunnels");
    let bed = tunnel_bed();
    let decap = DecapTestRun::load().expect("decap program");
    let tunnelled4 = bed.run(&Frame::udp(CLIENT4, VIP4_UDP).bytes()).packet;
    let tunnelled6 = bed.run(&Frame::udp(CLIENT6, VIP6_UDP).bytes()).packet;

    // Not tunnels: plain TCP/UDP, ARP, 6-in-4 (protocol 41 in IPv4), an outer fragment, an outer
    // IPv6 header with an extension header before the inner one.
    let mut passed = vec![Frame::syn(CLIENT4, VIP4).bytes(), Frame::udp(CLIENT6, VIP6_UDP).bytes()];
    let mut arp = [[0xff; 6], ROUTER_MAC].concat();
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&[ROUTER_MAC.as_slice(), &[10, 77, 2, 7], &[0; 6], &[10, 77, 100, 1]].concat());
    passed.push(arp);
    let mut six_in_four = tunnelled4.clone();
    six_in_four[14 + 9] = 41;
    passed.push(six_in_four);
    let mut fragment = tunnelled4.clone();
    packet::set_ipv4_frag(&mut fragment, 14, 0x2000);
    passed.push(fragment);
    let mut extension = tunnelled6.clone();
    packet::add_ipv6_ext(&mut extension, 14, &[60]);
    passed.push(extension);
    for frame in &passed {
        let out = decap.run(frame).unwrap();
        assert_eq!(out.action, XDP_PASS);
        assert!(out.packet == *frame, "passed untouched");
    }
    assert_eq!(decap_counts(&decap), [0, passed.len() as u64, 0]);

    // Broken tunnels: an inner packet of the other version, cut short, an
    // outer length beyond the frame or too short for an inner header, an IHL below 5.
    let mut broken = Vec::new();
    let mut version = tunnelled4.clone();
    version[34] = 0x65;
    broken.push(version);
    broken.push(tunnelled4[..14 + 20 + 10].to_vec());
    broken.push(tunnelled6[..14 + 40 + 20].to_vec());
    let mut long = tunnelled4.clone();
    packet::set_ipv4_total_len(&mut long, 14, (tunnelled4.len() - 14 + 1) as u16);
    broken.push(long);
    let mut short = tunnelled6.clone();
    short[14 + 4..14 + 6].copy_from_slice(&20u16.to_be_bytes());
    broken.push(short);
    let mut ihl = tunnelled4.clone();
    packet::set_ipv4_ihl(&mut ihl, 14, 4);
    broken.push(ihl);
    for frame in &broken {
        assert_eq!(decap.run(frame).unwrap().action, XDP_DROP, "{:02x?}", &frame[..40]);
    }
    assert_eq!(decap_counts(&decap), [0, passed.len() as u64, broken.len() as u64]);
}
