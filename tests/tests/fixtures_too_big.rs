//! Tunnel VIPs' too-big answers on crafted frames through
//! `BPF_PROG_TEST_RUN`: with `lb0`'s MTU lowered, a client's packet that
//! would not fit once encapsulated comes back as the exact ICMP
//! fragmentation-needed (IPv4 with DF) or ICMPv6 packet-too-big error, both
//! checksums verified; IPv4 without DF drops; the per-CPU budget answers
//! `too_big_limit` a second and drops the rest; a packet that fits is
//! encapsulated as before.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use alwayson_tests::{
    fixture::{
        backend_mac, backend_v4, backend_v6, FixtureBed, Slot, CLIENT4, CLIENT6, LB_MAC, ROUTER_MAC,
        XDP_DROP, XDP_TX,
    },
    packet::{self, addr, internet_checksum, Frame},
    require_root,
};
use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    DropReason, Event, Mode, Verdict,
};
use lb_userspace::dataplane::{coarse_now, Counters, LoadSettings, TestRunOutcome};

const VIP4: &str = "10.77.100.1:80";
const VIP4_UDP: &str = "10.77.100.1:53";
const VIP6: &str = "[fd77::100]:80";
/// The egress MTU of the bed: IPv4 packets up to 1,380 bytes fit in IPIP,
/// IPv6 packets up to 1,360 in IP6IP6.
const MTU: u16 = 1400;

/// VIPs VIP4 (index 0), VIP4_UDP (1), VIP6 (2) in tunnel mode, each with one
/// known backend (slot = index), `lb0` of MTU [`MTU`].
fn bed(too_big_limit: u32) -> FixtureBed {
    let settings = LoadSettings { ring_size: 251, too_big_limit, ..Default::default() };
    let mut bed = FixtureBed::new(settings).expect("fixture bed");
    bed.ns.ip(&["link", "set", "lb0", "mtu", &MTU.to_string()]).expect("lowering lb0's MTU");
    for (index, vip, proto) in [(0u8, VIP4, PROTO_TCP), (1, VIP4_UDP, PROTO_UDP), (2, VIP6, PROTO_TCP)] {
        let vip = addr(vip);
        let backend = if vip.is_ipv6() { backend_v6(index) } else { backend_v4(index) };
        let slot = Slot { slot: u32::from(index), addr: backend, weight: 1 };
        bed.set_vip_in(Mode::Tunnel, vip, proto, u32::from(index), &[slot]).expect("set vip");
    }
    bed
}

/// A client frame with an IP packet of `ip_len` bytes; IPv4 with DF as `df` says.
fn input(frame: Frame, ip_len: usize, df: bool) -> Vec<u8> {
    let l3 = frame.l3();
    let mut bytes = frame.frame_len(l3 + ip_len).bytes();
    if bytes[l3] >> 4 == 4 {
        packet::set_ipv4_tos_df(&mut bytes, l3, 0x2b, df);
    }
    bytes
}

/// The error the balancer must send for the client frame `frame` (IP packet
/// at `l3`), built here from the RFCs: MACs swapped, tags kept, from the VIP
/// to the client, TTL 64, the MTU less the outer header, the quote as long as
/// 576 (IPv4) or 1,280 (IPv6) bytes allow in whole 8-byte words, both checksums.
fn expected_error(frame: &[u8], l3: usize) -> Vec<u8> {
    let ip = &frame[l3..];
    let mut out =
        packet::with_macs(&frame[..l3], frame[6..12].try_into().unwrap(), frame[..6].try_into().unwrap());
    if ip[0] >> 4 == 4 {
        let quote = &ip[..ip.len().min(544)];
        let mut header = vec![0x45, 0];
        header.extend_from_slice(&((28 + quote.len()) as u16).to_be_bytes());
        header.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
        header.extend_from_slice(&ip[16..20]);
        header.extend_from_slice(&ip[12..16]);
        let sum = internet_checksum(&header);
        header[10..12].copy_from_slice(&sum.to_be_bytes());
        let mut icmp = vec![3, 4, 0, 0, 0, 0];
        icmp.extend_from_slice(&(MTU - 20).to_be_bytes());
        icmp.extend_from_slice(quote);
        let sum = internet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&icmp);
    } else {
        let quote = &ip[..ip.len().min(1232)];
        let length = (8 + quote.len()) as u16;
        let mut icmp = vec![2, 0, 0, 0];
        icmp.extend_from_slice(&u32::from(MTU - 40).to_be_bytes());
        icmp.extend_from_slice(quote);
        let mut pseudo = [&ip[24..40], &ip[8..24]].concat();
        pseudo.extend_from_slice(&u32::from(length).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 58]);
        let sum = internet_checksum(&[pseudo, icmp.clone()].concat());
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        out.extend_from_slice(&[0x60, 0, 0, 0]);
        out.extend_from_slice(&length.to_be_bytes());
        out.extend_from_slice(&[58, 64]);
        out.extend_from_slice(&ip[24..40]);
        out.extend_from_slice(&ip[8..24]);
        out.extend_from_slice(&icmp);
    }
    out
}

/// Runs `frames` on one CPU (the budget is per CPU) within one budget second,
/// and returns the outcomes and what the counters moved.
fn run(bed: &FixtureBed, frames: &[Vec<u8>]) -> (Vec<TestRunOutcome>, Counters) {
    pin_to_one_cpu();
    for _ in 0..5 {
        let before = bed.dp.counters().unwrap();
        let second = coarse_now() >> 30;
        let outs = bed.run_many(frames);
        if coarse_now() >> 30 == second {
            return (outs, bed.dp.counters().unwrap().since(&before));
        }
        // A new budget second began within the batch: its counts mean nothing. Again.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no batch ran within one second of the budget");
}

/// Katran's outer source for `client` (the default prefixes), as `fixtures_tunnel` derives it.
fn katran(client: SocketAddr) -> IpAddr {
    match client.ip() {
        IpAddr::V4(c) => {
            let low = u16::from_be_bytes([c.octets()[2], c.octets()[3]]) ^ client.port();
            IpAddr::V4(Ipv4Addr::new(172, 16, (low >> 8) as u8, low as u8))
        }
        IpAddr::V6(c) => {
            let last = (u128::from(c) as u32) ^ u32::from(client.port());
            IpAddr::V6(Ipv6Addr::from((0x0100u128 << 112) | u128::from(last)))
        }
    }
}

fn pin_to_one_cpu() {
    // SAFETY: a zeroed cpu_set_t with one CPU set, for this thread (and the threads it starts).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        assert_eq!(libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set), 0, "pinning to CPU 0");
    }
}

fn assert_error(out: &TestRunOutcome, input: &[u8], l3: usize, what: &str) {
    assert_eq!(out.action, XDP_TX, "{what}: verdict");
    let want = expected_error(input, l3);
    assert!(
        out.packet == want,
        "{what}: the error frame\n got ({} bytes) {:02x?}\nwant ({} bytes) {:02x?}",
        out.packet.len(),
        &out.packet[..out.packet.len().min(l3 + 64)],
        want.len(),
        &want[..want.len().min(l3 + 64)]
    );
}

#[test]
#[ignore = "needs root"]
fn ipv4_with_df_too_big_once_encapsulated_gets_fragmentation_needed_exactly() {
    require_root("ipv4_with_df_too_big_once_encapsulated_gets_fragmentation_needed_exactly");
    let bed = bed(1000);
    let (verified, _, jitted) = bed.dp.program_size().expect("program info");
    eprintln!("balancer: {verified:?} instructions verified, {jitted} bytes JIT-compiled");
    let plain = input(Frame::tcp(CLIENT4, VIP4), 1381, true);
    let tagged = Frame::udp(CLIENT4, VIP4_UDP).vlan(100).vlan(200);
    let tagged_l3 = tagged.l3();
    let tagged = input(tagged, 1500, true);
    // A jumbo frame in several buffers: the quote comes from the first.
    let jumbo = input(Frame::tcp(CLIENT4, VIP4), 9000, true);
    let frames = vec![plain.clone(), tagged.clone(), jumbo.clone()];
    let (outs, moved) = run(&bed, &frames);
    assert_error(&outs[0], &plain, 14, "1,381 bytes");
    assert_error(&outs[1], &tagged, tagged_l3, "two VLAN tags");
    assert_error(&outs[2], &jumbo, 14, "9,000 bytes");
    assert_eq!(outs[2].packet.len(), 14 + 576 - 4, "a 572-byte error: 544 bytes quoted");
    assert_eq!(
        (moved.verdict(Verdict::Tx), moved.event(Event::TooBigSent), moved.drops.iter().sum::<u64>()),
        (3, 3, 0),
        "{moved}"
    );
    assert_eq!(bed.dp.vip_stats(0).unwrap().packets, 0, "answered, not forwarded: no VIP traffic");

    // Field by field, independently of `expected_error`.
    let out = &outs[0].packet;
    let (ip, icmp) = (&out[14..34], &out[34..]);
    assert_eq!(out[..12], [ROUTER_MAC, LB_MAC].concat(), "back to the MAC it came from");
    assert_eq!((ip[0], ip[1], ip[6] & 0x40, ip[8], ip[9]), (0x45, 0, 0x40, 64, 1), "DF, TTL 64, ICMP");
    assert_eq!(usize::from(u16::from_be_bytes([ip[2], ip[3]])), out.len() - 14, "total length");
    assert_eq!(IpAddr::from(<[u8; 4]>::try_from(&ip[12..16]).unwrap()), addr(VIP4).ip(), "from the VIP");
    assert_eq!(IpAddr::from(<[u8; 4]>::try_from(&ip[16..20]).unwrap()), addr(CLIENT4).ip(), "to the client");
    assert_eq!(internet_checksum(ip), 0, "the IP header checksum verifies");
    assert_eq!((icmp[0], icmp[1]), (3, 4), "fragmentation needed and DF set");
    assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), MTU - 20, "the MTU inside the tunnel");
    assert_eq!(internet_checksum(icmp), 0, "the ICMP checksum verifies");
    assert_eq!(icmp[8..], plain[14..14 + 544], "the client's packet, its first 544 bytes");
}

#[test]
#[ignore = "needs root"]
fn ipv6_too_big_once_encapsulated_gets_packet_too_big_exactly() {
    require_root("ipv6_too_big_once_encapsulated_gets_packet_too_big_exactly");
    let bed = bed(1000);
    let plain = input(Frame::tcp(CLIENT6, VIP6), 1361, false);
    let full = input(Frame::tcp(CLIENT6, VIP6).vlan(7), 1500, false);
    let jumbo = input(Frame::tcp(CLIENT6, VIP6), 9000, false);
    let (outs, moved) = run(&bed, &[plain.clone(), full.clone(), jumbo.clone()]);
    assert_error(&outs[0], &plain, 14, "1,361 bytes");
    assert_error(&outs[1], &full, 18, "a VLAN tag");
    assert_error(&outs[2], &jumbo, 14, "9,000 bytes");
    assert_eq!(moved.event(Event::TooBigSent), 3, "{moved}");

    let out = &outs[2].packet;
    assert_eq!(out.len(), 14 + 1280, "the error is IPv6's minimum MTU exactly");
    let (ip, icmp) = (&out[14..54], &out[54..]);
    assert_eq!(out[..12], [ROUTER_MAC, LB_MAC].concat());
    assert_eq!((ip[0], ip[1], ip[2], ip[3], ip[6], ip[7]), (0x60, 0, 0, 0, 58, 64), "ICMPv6, hop limit 64");
    assert_eq!(usize::from(u16::from_be_bytes([ip[4], ip[5]])), 1240, "payload length");
    assert_eq!(IpAddr::from(<[u8; 16]>::try_from(&ip[8..24]).unwrap()), addr(VIP6).ip());
    assert_eq!(IpAddr::from(<[u8; 16]>::try_from(&ip[24..40]).unwrap()), addr(CLIENT6).ip());
    assert_eq!((icmp[0], icmp[1]), (2, 0), "packet too big");
    assert_eq!(u32::from_be_bytes(icmp[4..8].try_into().unwrap()), u32::from(MTU - 40));
    let pseudo = [&ip[8..40], &1240u32.to_be_bytes(), &[0, 0, 0, 58]].concat();
    assert_eq!(internet_checksum(&[pseudo, icmp.to_vec()].concat()), 0, "the ICMPv6 checksum verifies");
    assert_eq!(icmp[8..], jumbo[14..14 + 1232], "the first 1,232 bytes of the client's packet");
}

#[test]
#[ignore = "needs root"]
fn ipv4_without_df_too_big_drops_as_encap_too_big() {
    require_root("ipv4_without_df_too_big_drops_as_encap_too_big");
    let bed = bed(1000);
    let frame = input(Frame::tcp(CLIENT4, VIP4), 1381, false);
    let (outs, moved) = run(&bed, std::slice::from_ref(&frame));
    assert_eq!(outs[0].action, XDP_DROP, "{moved}");
    assert!(outs[0].packet == frame, "a dropped frame is not changed");
    assert_eq!(moved.drop(DropReason::EncapTooBig), 1, "{moved}");
    assert_eq!((moved.event(Event::TooBigSent), moved.event(Event::TooBigLimited)), (0, 0), "{moved}");
}

#[test]
#[ignore = "needs root"]
fn the_budget_answers_too_big_limit_a_second_and_drops_the_rest() {
    require_root("the_budget_answers_too_big_limit_a_second_and_drops_the_rest");
    let mut bed = bed(4);
    let v4 = input(Frame::tcp(CLIENT4, VIP4), 1500, true);
    let v6 = input(Frame::tcp(CLIENT6, VIP6), 1500, false);
    let frames: Vec<Vec<u8>> = (0..7).map(|i| if i % 2 == 0 { v4.clone() } else { v6.clone() }).collect();
    let (outs, moved) = run(&bed, &frames);
    let actions: Vec<u32> = outs.iter().map(|o| o.action).collect();
    assert_eq!(actions, [XDP_TX, XDP_TX, XDP_TX, XDP_TX, XDP_DROP, XDP_DROP, XDP_DROP], "{moved}");
    assert_eq!(
        (
            moved.event(Event::TooBigSent),
            moved.event(Event::TooBigLimited),
            moved.drop(DropReason::EncapTooBig)
        ),
        (4, 3, 3),
        "{moved}"
    );
    // Changed while running; 0 answers nothing.
    bed.dp.set_too_big_limit(0).unwrap();
    let (outs, moved) = run(&bed, &frames[..2]);
    assert!(outs.iter().all(|o| o.action == XDP_DROP), "{moved}");
    assert_eq!((moved.event(Event::TooBigSent), moved.event(Event::TooBigLimited)), (0, 2), "{moved}");
    bed.dp.set_too_big_limit(100).unwrap();
    let (outs, moved) = run(&bed, &frames);
    assert!(outs.iter().all(|o| o.action == XDP_TX), "{moved}");
    assert_eq!(moved.event(Event::TooBigSent), 7, "{moved}");
}

#[test]
#[ignore = "needs root"]
fn a_packet_that_fits_once_encapsulated_is_encapsulated_as_before() {
    require_root("a_packet_that_fits_once_encapsulated_is_encapsulated_as_before");
    let bed = bed(1000);
    // The longest that fit: 1,380 + 20 and 1,360 + 40 bytes are the MTU exactly.
    let cases = [
        (input(Frame::tcp(CLIENT4, VIP4), 1380, true), CLIENT4),
        (input(Frame::tcp(CLIENT6, VIP6), 1360, false), CLIENT6),
    ];
    for (frame, client) in &cases {
        let (outs, moved) = run(&bed, std::slice::from_ref(frame));
        assert_eq!(outs[0].action, XDP_TX, "{moved}");
        assert_eq!((moved.event(Event::TooBigSent), moved.drops.iter().sum::<u64>()), (0, 0), "{moved}");
        let client = addr(client);
        let (b, backend) = if client.is_ipv4() { (0, backend_v4(0)) } else { (2, backend_v6(2)) };
        let want = packet::encapsulated(frame, 14, backend_mac(b), LB_MAC, katran(client), backend);
        assert!(outs[0].packet == want, "encapsulated exactly, {} bytes", want.len() - 14);
        assert_eq!(want.len() - 14, usize::from(MTU));
    }
}
