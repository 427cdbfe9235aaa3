//! Malformed and awkward frames: each gets its deliberate verdict and exactly
//! one counter, never XDP_ABORTED, never a forward to a wrong backend.

use alwayson_tests::{
    fixture::{
        backend_mac, backend_of_mac, FixtureBed, CLIENT4, CLIENT6, LB_MAC, ROUTER4, ROUTER6, VIP4, VIP4_UDP,
        VIP6, VIP6_UDP, XDP_DROP, XDP_PASS, XDP_TX,
    },
    packet::{self, Frame},
    require_root,
};
use lb_common::{DropReason, Event, Verdict};
use lb_userspace::dataplane::{Counters, TestRunOutcome};

/// Runs one frame; returns the outcome and what the counters did.
fn run(bed: &FixtureBed, frame: &[u8]) -> (TestRunOutcome, Counters) {
    let before = bed.dp.counters().unwrap();
    let out = bed.run(frame);
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_ne!(out.action, 0, "XDP_ABORTED");
    assert_eq!(moved.verdicts.iter().sum::<u64>(), 1, "one verdict per frame: {moved}");
    (out, moved)
}

fn assert_dropped(bed: &FixtureBed, frame: &[u8], reason: DropReason, what: &str) {
    let (out, moved) = run(bed, frame);
    assert_eq!(out.action, XDP_DROP, "{what}: verdict (counters: {moved})");
    assert_eq!(moved.drop(reason), 1, "{what}: want {} (counters: {moved})", reason.name());
    assert_eq!(moved.drops.iter().sum::<u64>(), 1, "{what}: one reason (counters: {moved})");
}

fn assert_passed(bed: &FixtureBed, frame: &[u8], event: Option<Event>, what: &str) {
    let (out, moved) = run(bed, frame);
    assert_eq!(out.action, XDP_PASS, "{what}: verdict (counters: {moved})");
    assert_eq!(out.packet, frame, "{what}: a passed frame must not change");
    assert_eq!(moved.events.iter().sum::<u64>(), u64::from(event.is_some()), "{what}: events ({moved})");
    if let Some(event) = event {
        assert_eq!(moved.event(event), 1, "{what}: want {} ({moved})", event.name());
    }
}

/// Forwarded to one of VIP `vip`'s backends with only the MACs changed.
fn assert_forwarded(bed: &FixtureBed, frame: &[u8], vip: u8, event: Option<Event>, what: &str) {
    let (out, moved) = run(bed, frame);
    assert_eq!(out.action, XDP_TX, "{what}: verdict (counters: {moved})");
    let backend = backend_of_mac(&out.packet).expect("a known backend");
    assert!((3 * vip..3 * vip + 3).contains(&backend), "{what}: backend {backend} is not VIP {vip}'s");
    assert_eq!(out.packet, packet::with_macs(frame, backend_mac(backend), LB_MAC), "{what}: output bytes");
    if let Some(event) = event {
        assert_eq!(moved.event(event), 1, "{what}: want {} ({moved})", event.name());
    }
}

#[test]
#[ignore = "needs root"]
fn a_vip_packet_truncated_at_every_byte_is_dropped_with_its_reason() {
    require_root("a_vip_packet_truncated_at_every_byte_is_dropped_with_its_reason");
    let bed = FixtureBed::standard();
    let frames = [
        (Frame::syn(CLIENT4, VIP4), 20),
        (Frame::udp(CLIENT4, VIP4_UDP), 20),
        (Frame::tcp(CLIENT6, VIP6), 40),
        (Frame::udp(CLIENT6, VIP6_UDP), 40),
        (Frame::tcp(CLIENT4, VIP4).vlan(7), 20),
        (Frame::udp(CLIENT6, VIP6_UDP).vlan(7).vlan(8), 40),
    ];
    for (frame, ip_header) in frames {
        let full = frame.bytes();
        assert_forwarded(
            &bed,
            &full,
            u8::from(frame.dst.is_ipv6()) * 2 + u8::from(frame.dst.port() == 53),
            None,
            "whole",
        );
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header (EINVAL), as no NIC delivers them.
        for len in packet::ETH_LEN..full.len() {
            let reason = if len < frame.l3() + ip_header {
                DropReason::Truncated
            } else {
                // The IP header is whole and claims more bytes than the frame has.
                DropReason::BadIpLength
            };
            assert_dropped(
                &bed,
                &full[..len],
                reason,
                &format!("{:?} cut to {len} of {}", frame.l4, full.len()),
            );
        }
    }
}

#[test]
#[ignore = "needs root"]
fn a_transport_header_cut_short_inside_a_consistent_ip_packet() {
    require_root("a_transport_header_cut_short_inside_a_consistent_ip_packet");
    let bed = FixtureBed::standard();
    for (frame, l4_len) in [(Frame::syn(CLIENT4, VIP4), 20usize), (Frame::udp(CLIENT6, VIP6_UDP), 8)] {
        for keep in 0..l4_len {
            let mut cut = frame.clone();
            cut.payload.clear();
            let mut bytes = cut.bytes();
            let l4 = bytes.len() - l4_len;
            bytes.truncate(l4 + keep);
            let l3 = frame.l3();
            if frame.dst.is_ipv4() {
                packet::set_ipv4_total_len(&mut bytes, l3, (20 + keep) as u16);
            } else {
                bytes[l3 + 4..l3 + 6].copy_from_slice(&(keep as u16).to_be_bytes());
            }
            let what = format!("{:?} header cut to {keep} bytes", frame.l4);
            assert_dropped(&bed, &bytes, DropReason::Truncated, &what);
            // The same to an address that is no VIP's: not ours to judge.
            let other: [u8; 4] = [10, 77, 1, 1];
            if frame.dst.is_ipv4() {
                bytes[l3 + 16..l3 + 20].copy_from_slice(&other);
            } else {
                bytes[l3 + 39] ^= 0x55;
            }
            assert_passed(&bed, &bytes, Some(Event::UnclassifiedPassed), &format!("{what}, not a VIP"));
        }
    }
}

#[test]
#[ignore = "needs root"]
fn ipv4_with_bad_header_length_version_or_total_length() {
    require_root("ipv4_with_bad_header_length_version_or_total_length");
    let bed = FixtureBed::standard();
    let good = Frame::syn(CLIENT4, VIP4);
    let l3 = good.l3();
    for ihl in 0..5 {
        let mut f = good.bytes();
        packet::set_ipv4_ihl(&mut f, l3, ihl);
        assert_dropped(&bed, &f, DropReason::BadIpHeader, &format!("IHL {ihl}"));
    }
    // IHL 15 = 60 bytes of header, more than the 49-byte total length.
    let mut f = good.bytes();
    packet::set_ipv4_ihl(&mut f, l3, 15);
    assert_dropped(&bed, &f, DropReason::BadIpLength, "IHL 15");
    let mut f = good.bytes();
    f[l3] = 0x65;
    assert_dropped(&bed, &f, DropReason::BadIpHeader, "version 6 under EtherType IPv4");
    for total in [0u16, 19, 50, 1500, u16::MAX] {
        let mut f = good.bytes();
        packet::set_ipv4_total_len(&mut f, l3, total);
        assert_dropped(&bed, &f, DropReason::BadIpLength, &format!("total length {total}"));
    }
    // Ethernet padding after a shorter IP packet is normal: still forwarded, padding kept.
    let mut padded = good.bytes();
    padded.extend_from_slice(&[0; 11]);
    assert_forwarded(&bed, &padded, 0, None, "padded frame");
}

#[test]
#[ignore = "needs root"]
fn ipv6_with_bad_payload_length_or_version() {
    require_root("ipv6_with_bad_payload_length_or_version");
    let bed = FixtureBed::standard();
    let good = Frame::tcp(CLIENT6, VIP6);
    let l3 = good.l3();
    let mut f = good.bytes();
    f[l3 + 4..l3 + 6].copy_from_slice(&1000u16.to_be_bytes());
    assert_dropped(&bed, &f, DropReason::BadIpLength, "payload length beyond the frame");
    let mut f = good.bytes();
    f[l3] = 0x45;
    assert_dropped(&bed, &f, DropReason::BadIpHeader, "version 4 under EtherType IPv6");
}

#[test]
#[ignore = "needs root"]
fn ipv6_extension_headers_are_walked_up_to_the_bound() {
    require_root("ipv6_extension_headers_are_walked_up_to_the_bound");
    let bed = FixtureBed::standard();
    let base = Frame::tcp(CLIENT6, VIP6);
    let l3 = base.l3();
    for kinds in [&[0u8][..], &[0, 60], &[0, 43, 60], &[0, 60, 43, 60]] {
        let mut f = base.bytes();
        packet::add_ipv6_ext(&mut f, l3, kinds);
        assert_forwarded(&bed, &f, 2, Some(Event::Ipv6ExtHeaders), &format!("extension headers {kinds:?}"));
    }
    for kinds in [&[0u8, 60, 43, 60, 60][..], &[60; 8]] {
        let mut f = base.bytes();
        packet::add_ipv6_ext(&mut f, l3, kinds);
        assert_dropped(&bed, &f, DropReason::Ipv6ExtChain, &format!("extension headers {kinds:?}"));
        let mut elsewhere = Frame::tcp(CLIENT6, "[fd77::200]:80").bytes();
        packet::add_ipv6_ext(&mut elsewhere, l3, kinds);
        assert_passed(&bed, &elsewhere, Some(Event::UnclassifiedPassed), "long chain, not a VIP");
    }
}

#[test]
#[ignore = "needs root"]
fn fragments_to_a_vip_are_dropped_and_others_passed() {
    require_root("fragments_to_a_vip_are_dropped_and_others_passed");
    let bed = FixtureBed::standard();
    let v4 = Frame::syn(CLIENT4, VIP4);
    let l3 = v4.l3();
    // More fragments (first fragment), a middle fragment, the last fragment.
    for frags in [0x2000u16, 0x2000 | 185, 185] {
        let mut f = v4.bytes();
        packet::set_ipv4_frag(&mut f, l3, frags);
        assert_dropped(&bed, &f, DropReason::Fragment, &format!("IPv4 frags {frags:#06x} to a VIP"));
        let mut other = Frame::syn(CLIENT4, "10.77.1.1:80").bytes();
        packet::set_ipv4_frag(&mut other, l3, frags);
        assert_passed(&bed, &other, Some(Event::FragmentPassed), "IPv4 fragment to the LB itself");
    }
    // Don't-fragment is not a fragment.
    let mut df = v4.bytes();
    packet::set_ipv4_frag(&mut df, l3, 0x4000);
    assert_forwarded(&bed, &df, 0, None, "DF set");

    let v6 = Frame::tcp(CLIENT6, VIP6);
    let l3 = v6.l3();
    for kinds in [&[44u8][..], &[0, 44]] {
        let mut f = v6.bytes();
        packet::add_ipv6_ext(&mut f, l3, kinds);
        assert_dropped(&bed, &f, DropReason::Fragment, &format!("IPv6 {kinds:?} to a VIP"));
        let mut other = Frame::tcp(CLIENT6, "[fd77:1::1]:80").bytes();
        packet::add_ipv6_ext(&mut other, l3, kinds);
        assert_passed(&bed, &other, Some(Event::FragmentPassed), "IPv6 fragment to the LB itself");
    }
}

#[test]
#[ignore = "needs root"]
fn ipv4_options_are_forwarded_unchanged_and_counted() {
    require_root("ipv4_options_are_forwarded_unchanged_and_counted");
    let bed = FixtureBed::standard();
    for words in [1u8, 4, 10] {
        let frame = Frame::tcp(CLIENT4, VIP4);
        let mut f = frame.bytes();
        packet::add_ipv4_options(&mut f, frame.l3(), words);
        assert_forwarded(&bed, &f, 0, Some(Event::Ipv4Options), &format!("{words} words of options"));
    }
    let verdicts = bed.dp.counters().unwrap();
    assert_eq!(verdicts.verdict(Verdict::Aborted), 0);
}

#[test]
#[ignore = "needs root"]
fn an_icmp_too_big_with_a_quote_cut_short_is_dropped_for_a_vip_and_passed_otherwise() {
    require_root("an_icmp_too_big_with_a_quote_cut_short_is_dropped_for_a_vip_and_passed_otherwise");
    let bed = FixtureBed::standard();
    let v4 = ROUTER4.parse().unwrap();
    let v6 = ROUTER6.parse().unwrap();
    let (reply4, reply6) = (Frame::tcp(VIP4, CLIENT4), Frame::tcp(VIP6, CLIENT6));
    // The quote must reach the first four bytes after the quoted IP header: the ports.
    for len in 0..24 {
        let what = format!("IPv4 quote of {len} bytes");
        assert_dropped(&bed, &packet::too_big(v4, &reply4, 1280, len), DropReason::Truncated, &what);
    }
    for len in 0..44 {
        let what = format!("IPv6 quote of {len} bytes");
        assert_dropped(&bed, &packet::too_big(v6, &reply6, 1280, len), DropReason::Truncated, &what);
    }
    assert_forwarded(
        &bed,
        &packet::too_big(v4, &reply4, 1280, 24),
        0,
        Some(Event::IcmpTooBig),
        "IPv4, ports",
    );
    assert_forwarded(
        &bed,
        &packet::too_big(v6, &reply6, 1280, 44),
        2,
        Some(Event::IcmpTooBig),
        "IPv6, ports",
    );
    // A quoted IPv4 header that is not one.
    let mut bad_ihl = packet::too_big(v4, &reply4, 1280, 28);
    bad_ihl[packet::QUOTE_V4] = 0x43;
    assert_dropped(&bed, &bad_ihl, DropReason::Truncated, "quoted IHL 3");
    // The same errors to an address that is no VIP's: the host's business.
    let own = Frame::tcp("10.77.1.1:22", CLIENT4);
    assert_passed(&bed, &packet::too_big(v4, &own, 1280, 10), Some(Event::UnclassifiedPassed), "to the host");
}

#[test]
#[ignore = "needs root"]
fn a_tcp_data_offset_below_5_or_past_the_ip_packet_is_dropped_for_a_vip_and_passed_otherwise() {
    require_root("a_tcp_data_offset_below_5_or_past_the_ip_packet_is_dropped_for_a_vip_and_passed_otherwise");
    let bed = FixtureBed::standard();
    let cases = [
        (Frame::syn(CLIENT4, VIP4), 0u8, Frame::syn(CLIENT4, "10.77.1.1:80")),
        (Frame::tcp(CLIENT6, VIP6), 2, Frame::tcp(CLIENT6, "[fd77:1::1]:80")),
    ];
    for (frame, vip, elsewhere) in cases {
        let (l3, l4) = (frame.l3(), frame.l4());
        let family = if frame.dst.is_ipv4() { "IPv4" } else { "IPv6" };
        for words in [3u8, 10] {
            let mut f = frame.bytes();
            packet::add_tcp_options(&mut f, l3, l4, words);
            assert_forwarded(&bed, &f, vip, None, &format!("{family}, {words} words of TCP options"));
        }
        // No payload: the 20-byte header is all the IP packet holds after its own.
        let bare = frame.clone().payload_len(0);
        let mut bad = Vec::new();
        for doff in 0..5 {
            let mut f = frame.bytes();
            packet::set_tcp_doff(&mut f, l4, doff);
            bad.push((f, format!("{family}, data offset {doff}")));
        }
        for doff in [6, 15] {
            let mut f = bare.bytes();
            packet::set_tcp_doff(&mut f, l4, doff);
            bad.push((f, format!("{family}, data offset {doff}, no payload")));
        }
        // The header's end is the IP packet's, not the frame's: padding is no option.
        let mut padded = bare.bytes();
        packet::set_tcp_doff(&mut padded, l4, 15);
        padded.extend_from_slice(&[0; 40]);
        bad.push((padded, format!("{family}, data offset 15, 40 bytes of Ethernet padding")));
        for (f, what) in &bad {
            assert_dropped(&bed, f, DropReason::BadL4Header, what);
        }
        // A header that exactly fills the IP packet is whole.
        let mut full = frame.clone().payload_len(40).bytes();
        packet::set_tcp_doff(&mut full, l4, 15);
        assert_forwarded(
            &bed,
            &full,
            vip,
            None,
            &format!("{family}, data offset 15, 40 bytes after the header"),
        );

        // The same to an address that is no VIP's: the host's business.
        let elsewhere = elsewhere.bytes();
        for (f, what) in bad {
            let mut f = f;
            let dst = if frame.dst.is_ipv4() { l3 + 16..l3 + 20 } else { l3 + 24..l3 + 40 };
            f[dst.clone()].copy_from_slice(&elsewhere[dst]);
            assert_passed(&bed, &f, Some(Event::UnclassifiedPassed), &format!("{what}, not a VIP"));
        }
    }
}
