//! Jumbo frames. A frame longer than a page reaches XDP in several buffers:
//! the headers in the linear part, the rest in fragments. The balancer reads
//! headers from the linear part, judges lengths by the whole frame, forwards
//! it whole and counts all of its bytes.
//!
//! `BPF_PROG_TEST_RUN` puts what does not fit in the first page into
//! fragments, as a driver would. The namespace bed at MTU 9000 does it for
//! real: veth hands XDP a frame longer than a page in page-sized buffers, and
//! refuses to attach a program that cannot take them.

use std::{
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{Family, TestBed, UDP_PORT, VIP4, VIP6},
    fixture::{
        backend_mac, backend_of_mac, FixtureBed, CLIENT4, CLIENT6, LB_MAC, VIP4 as FIXTURE_VIP4, VIP4_UDP,
        VIP6 as FIXTURE_VIP6, VIP6_UDP, XDP_DROP, XDP_PASS, XDP_TX,
    },
    packet::{self, Frame, L4},
    require_root,
};
use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    DropReason, TrafficStats, VipKey,
};
use lb_userspace::dataplane::{Counters, TestRunOutcome};

const JUMBO: usize = 9000;
/// Frame sizes that fit the first page, just do not, and need several more.
const SIZES: [usize; 4] = [1514, 4096, JUMBO, 16_000];

/// Runs one frame; returns the outcome and what the counters did.
fn run(bed: &FixtureBed, frame: &[u8]) -> (TestRunOutcome, Counters) {
    let before = bed.dp.counters().unwrap();
    let out = bed.run(frame);
    let moved = bed.dp.counters().unwrap().since(&before);
    assert_eq!(moved.verdicts.iter().sum::<u64>(), 1, "one verdict per frame: {moved}");
    (out, moved)
}

/// Opens the flow of `small` (to VIP `vip`), then sends frames of each of
/// [`SIZES`] on it: each must go whole to the flow's backend and be counted
/// whole, for the VIP and for the backend.
fn assert_jumbo_frames_follow_their_flow(bed: &FixtureBed, small: &Frame, vip: u8) {
    let (out, _) = run(bed, &small.bytes());
    assert_eq!(out.action, XDP_TX, "{:?} to {}: opening frame", small.l4, small.dst);
    let backend = backend_of_mac(&out.packet).expect("a known backend");
    assert!((3 * vip..3 * vip + 3).contains(&backend), "backend {backend} is not VIP {vip}'s");
    let l4 = if small.l4 == L4::Udp { L4::Udp } else { L4::Tcp { syn: false } };
    let counted = |stats: TrafficStats| (stats.packets, stats.bytes);
    for len in SIZES {
        let frame = Frame::new(small.src, small.dst, l4).frame_len(len).bytes();
        assert_eq!(frame.len(), len);
        let what = format!("{l4:?} to {}, {len} bytes", small.dst);
        let (vip_before, backend_before) = (
            counted(bed.dp.vip_stats(u32::from(vip)).unwrap()),
            counted(bed.dp.backend_stats(u32::from(backend)).unwrap()),
        );
        let (out, moved) = run(bed, &frame);
        assert_eq!(out.action, XDP_TX, "{what}: verdict (counters: {moved})");
        assert_eq!(moved.drops.iter().sum::<u64>(), 0, "{what}: drops ({moved})");
        assert_eq!(backend_of_mac(&out.packet), Some(backend), "{what}: the flow's backend");
        assert!(
            out.packet == packet::with_macs(&frame, backend_mac(backend), LB_MAC),
            "{what}: output bytes"
        );
        let one = |(packets, bytes): (u64, u64)| (packets + 1, bytes + len as u64);
        assert_eq!(counted(bed.dp.vip_stats(u32::from(vip)).unwrap()), one(vip_before), "{what}: VIP stats");
        assert_eq!(
            counted(bed.dp.backend_stats(u32::from(backend)).unwrap()),
            one(backend_before),
            "{what}: backend stats"
        );
    }
}

#[test]
#[ignore = "needs root"]
fn jumbo_frames_to_other_addresses_are_passed_whole() {
    require_root("jumbo_frames_to_other_addresses_are_passed_whole");
    let bed = FixtureBed::standard();
    let frames = [
        Frame::tcp(CLIENT4, "10.77.1.1:22"),
        Frame::udp(CLIENT4, "10.77.1.1:4789"),
        Frame::tcp(CLIENT6, "[fd77:1::1]:22"),
        Frame::udp(CLIENT6, "[fd77:1::1]:4789"),
    ];
    for frame in frames {
        for len in SIZES {
            let bytes = frame.clone().frame_len(len).bytes();
            let what = format!("{:?} to {}, {len} bytes", frame.l4, frame.dst);
            let (out, moved) = run(&bed, &bytes);
            assert_eq!(out.action, XDP_PASS, "{what}: verdict (counters: {moved})");
            assert!(out.packet == bytes, "{what}: a passed frame must not change");
            assert_eq!(moved.drops.iter().sum::<u64>(), 0, "{what}: drops ({moved})");
            assert_eq!(moved.events.iter().sum::<u64>(), 0, "{what}: events ({moved})");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn jumbo_frames_to_a_vip_follow_their_flow_whole_and_are_counted_whole() {
    require_root("jumbo_frames_to_a_vip_follow_their_flow_whole_and_are_counted_whole");
    let bed = FixtureBed::standard();
    let flows = [
        (Frame::syn(CLIENT4, FIXTURE_VIP4), 0u8),
        (Frame::udp(CLIENT4, VIP4_UDP), 1),
        (Frame::syn(CLIENT6, FIXTURE_VIP6), 2),
        (Frame::udp(CLIENT6, VIP6_UDP), 3),
    ];
    for (small, vip) in &flows {
        assert_jumbo_frames_follow_their_flow(&bed, small, *vip);
    }
    // A new flow whose first frame is a jumbo one is balanced like any other.
    let syn = Frame::syn("10.77.2.9:41000", FIXTURE_VIP4).frame_len(JUMBO).bytes();
    let (out, moved) = run(&bed, &syn);
    assert_eq!(out.action, XDP_TX, "a jumbo SYN (counters: {moved})");
    let backend = backend_of_mac(&out.packet).expect("a known backend");
    let small = Frame::tcp("10.77.2.9:41000", FIXTURE_VIP4).bytes();
    assert_eq!(
        backend_of_mac(&run(&bed, &small).0.packet),
        Some(backend),
        "the jumbo SYN's flow was recorded"
    );
}

#[test]
#[ignore = "needs root"]
fn an_ip_length_beyond_the_whole_multi_buffer_frame_is_dropped() {
    require_root("an_ip_length_beyond_the_whole_multi_buffer_frame_is_dropped");
    let bed = FixtureBed::standard();
    let frames = [
        Frame::tcp(CLIENT4, FIXTURE_VIP4),
        Frame::tcp(CLIENT4, "10.77.1.1:22"),
        Frame::udp(CLIENT6, VIP6_UDP),
        Frame::udp(CLIENT6, "[fd77:1::1]:4789"),
    ];
    for frame in frames {
        let l3 = frame.l3();
        let good = frame.clone().frame_len(JUMBO).bytes();
        let what = format!("{:?} to {}", frame.l4, frame.dst);
        let ip_len = |f: &mut [u8], ip_packet: usize| {
            if frame.dst.is_ipv4() {
                packet::set_ipv4_total_len(f, l3, ip_packet as u16);
            } else {
                f[l3 + 4..l3 + 6].copy_from_slice(&((ip_packet - 40) as u16).to_be_bytes());
            }
        };
        // One byte more than the frame holds, and the most the field can claim.
        for claim in [JUMBO - l3 + 1, usize::from(u16::MAX)] {
            let mut f = good.clone();
            ip_len(&mut f, claim);
            let (out, moved) = run(&bed, &f);
            assert_eq!(out.action, XDP_DROP, "{what}, IP length {claim}: verdict ({moved})");
            assert_eq!(moved.drop(DropReason::BadIpLength), 1, "{what}, IP length {claim}: {moved}");
        }
        // The frame cut by one byte, its IP length as it was.
        let (out, moved) = run(&bed, &good[..JUMBO - 1]);
        assert_eq!(out.action, XDP_DROP, "{what}, cut by a byte: verdict ({moved})");
        assert_eq!(moved.drop(DropReason::BadIpLength), 1, "{what}, cut by a byte: {moved}");
    }
}

// --- A real transfer on a segment of MTU 9000 ---

const MTU: u32 = 9000;
const TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes the client sends through a TCP VIP; the backend echoes them.
const TCP_BYTES: usize = 5 << 20;
/// A UDP datagram's payload: one jumbo frame, far more than a 1500-byte MTU carries unfragmented.
const UDP_PAYLOAD: usize = 8000;
const DATAGRAMS: usize = 20;
/// The largest frame a 1500-byte MTU allows (Ethernet header included).
const STANDARD_FRAME: u64 = 1514;

/// What the balancer counted for the VIP `addr:port/proto`.
fn vip_traffic(agent: &Agent, addr: &str, port: u16, proto: u8) -> TrafficStats {
    let stats = agent.stats().expect("pinned maps");
    let key = VipKey::new(addr.parse().unwrap(), port, proto);
    let index = stats.vip(&key).expect("VIPS").expect("the VIP").index;
    stats.vip_stats(index).expect("VIP_STATS")
}

/// Sends [`TCP_BYTES`] through `vip` from client 0 and reads the echo back
/// (concurrently: the echo fills the socket buffers long before the end).
fn tcp_echo(bed: &TestBed, vip: SocketAddr) {
    let stream = bed.tcp_connect(0, vip, TIMEOUT).unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    let mut name = String::new();
    reader.read_line(&mut name).unwrap_or_else(|e| panic!("{vip}: name line: {e}"));
    assert!(name.starts_with("backend"), "{vip}: name line {name:?}");
    let data: Vec<u8> = (0..TCP_BYTES).map(|i| (i % 251) as u8).collect();
    std::thread::scope(|scope| {
        let sent = &data;
        let send = scope.spawn(move || writer.write_all(sent));
        let mut echo = vec![0u8; TCP_BYTES];
        reader.read_exact(&mut echo).unwrap_or_else(|e| panic!("{vip}: reading the echo: {e}"));
        send.join().unwrap().unwrap_or_else(|e| panic!("{vip}: sending: {e}"));
        assert!(echo == data, "{vip}: the echo differs from what was sent");
    });
}

/// Sends [`DATAGRAMS`] datagrams of [`UDP_PAYLOAD`] bytes to `vip` from one
/// socket of client 0; each answer must carry the whole datagram back.
fn udp_exchange(bed: &TestBed, vip: SocketAddr) {
    let socket = bed.udp_socket(0, Family::of(&vip.ip())).expect("udp socket");
    socket.connect(vip).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut buf = vec![0u8; 65536];
    for i in 0..DATAGRAMS {
        let datagram: Vec<u8> = (0..UDP_PAYLOAD).map(|j| ((i + j) % 253) as u8).collect();
        socket.send(&datagram).unwrap_or_else(|e| panic!("{vip}: send: {e}"));
        let n = socket.recv(&mut buf).unwrap_or_else(|e| panic!("{vip}: datagram {i}: no answer: {e}"));
        let answer = &buf[..n];
        let split = answer.iter().position(|&b| b == b'\n').expect("a name line");
        assert!(answer[split + 1..] == datagram[..], "{vip}: datagram {i} came back changed ({n} bytes)");
    }
}

#[test]
#[ignore = "needs root"]
fn a_jumbo_segment_carries_tcp_and_udp_through_the_vip_in_whole_frames() {
    require_root("a_jumbo_segment_carries_tcp_and_udp_through_the_vip_in_whole_frames");
    let bed = TestBed::builder().clients(1).backends(2).mtu(MTU).build().expect("bed");
    let vips = [
        VipConf::new(VIP4, 80, "tcp").backends(0..2),
        VipConf::new(VIP6, 80, "tcp").backends(0..2),
        VipConf::new(VIP4, UDP_PORT, "udp").backends(0..2),
        VipConf::new(VIP6, UDP_PORT, "udp").backends(0..2),
    ];
    // Native mode (the config's): veth refuses it at this MTU unless the program takes multi-buffer frames.
    let agent = Agent::start(&bed, &config_toml(&bed, &vips), &[]).expect("agent");
    let link = bed.lb_ns().ip(&["link", "show", "eth0"]).unwrap();
    assert!(
        link.contains(&format!("mtu {MTU}")) && link.contains("prog/xdp id"),
        "native XDP at MTU {MTU}: {link}"
    );

    for vip in [VIP4, VIP6] {
        let before = vip_traffic(&agent, vip, 80, PROTO_TCP);
        tcp_echo(&bed, SocketAddr::new(vip.parse::<IpAddr>().unwrap(), 80));
        let after = vip_traffic(&agent, vip, 80, PROTO_TCP);
        let (packets, bytes) = (after.packets - before.packets, after.bytes - before.bytes);
        // Client to VIP: the data and the acknowledgements of its echo.
        // Counted whole, the frames hold all of the data; sent in frames a
        // 1500-byte MTU allows, they could not average above its largest.
        assert!(bytes >= TCP_BYTES as u64, "{vip}: {bytes} bytes counted for {TCP_BYTES} sent");
        assert!(bytes / packets > STANDARD_FRAME, "{vip}: {packets} packets of {bytes} bytes");
    }

    for (vip, ip_header) in [(VIP4, 20), (VIP6, 40)] {
        let before = vip_traffic(&agent, vip, UDP_PORT, PROTO_UDP);
        udp_exchange(&bed, SocketAddr::new(vip.parse::<IpAddr>().unwrap(), UDP_PORT));
        let after = vip_traffic(&agent, vip, UDP_PORT, PROTO_UDP);
        let frame = (14 + ip_header + 8 + UDP_PAYLOAD) as u64;
        assert_eq!(
            (after.packets - before.packets, after.bytes - before.bytes),
            (DATAGRAMS as u64, DATAGRAMS as u64 * frame),
            "{vip}: one whole frame of {frame} bytes per datagram"
        );
    }
    let drops = agent.stats().unwrap().counters().unwrap();
    assert_eq!(drops.drops.iter().sum::<u64>(), 0, "nothing dropped: {drops}");
}
