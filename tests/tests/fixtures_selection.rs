//! Backend selection seen from outside: the kernel picks what userspace
//! predicts from the ring and the shared hash; flows stick; pinned flows leave
//! backends that go DOWN and stay on backends that drain.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use alwayson_tests::{
    fixture::{backend_of_mac, backend_v4, backend_v6, FixtureBed, Slot, XDP_DROP, XDP_TX},
    packet::{addr, Frame, L4},
    require_root,
};
use lb_common::{
    types::{PROTO_TCP, PROTO_UDP},
    BackendState, DropReason, Event, FlowKey, Mode, RingSlot, VipKey, VipValue,
};
use lb_userspace::dataplane::LoadSettings;
use rand::{rngs::StdRng, Rng as _, SeedableRng as _};

const SEED: u32 = 0x5eed_0077;

fn settings() -> LoadSettings {
    LoadSettings { ring_size: 65_537, hash_seed: SEED, max_vips: 8, ..Default::default() }
}

/// Seven backends with uneven weights, in slots `first..first + 7`, listed out of address order.
fn weighted_backends(first: u32, addr: fn(u8) -> IpAddr) -> Vec<Slot> {
    [(3u32, 1u32), (0, 2), (6, 1), (1, 3), (5, 1), (2, 1), (4, 2)]
        .into_iter()
        .map(|(i, weight)| Slot { slot: first + i, addr: addr(i as u8), weight })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn kernel_picks_the_backend_userspace_predicts_for_10000_flows() {
    require_root("kernel_picks_the_backend_userspace_predicts_for_10000_flows");
    let mut bed = FixtureBed::new(settings()).expect("bed");
    let v4 = bed.set_vip(addr("10.77.100.1:80"), PROTO_TCP, 0, &weighted_backends(10, backend_v4)).unwrap();
    let v6 = bed.set_vip(addr("[fd77::100]:53"), PROTO_UDP, 1, &weighted_backends(20, backend_v6)).unwrap();
    let ring_size = bed.dp.settings().ring_size;

    let mut rng = StdRng::seed_from_u64(77);
    let mut frames = Vec::new();
    let mut expected = Vec::new();
    for n in 0..10_000 {
        let sport: u16 = rng.gen_range(1024..=65535);
        let (src, dst, l4, ring) = if n % 4 == 3 {
            let src = IpAddr::V6(Ipv6Addr::new(0xfd77, 2, 0, 0, 0, 0, rng.gen(), rng.gen()));
            (SocketAddr::new(src, sport), addr("[fd77::100]:53"), L4::Udp, &v6)
        } else {
            let src = IpAddr::V4(Ipv4Addr::new(10, 77, rng.gen_range(2..=99), rng.gen()));
            (SocketAddr::new(src, sport), addr("10.77.100.1:80"), L4::Tcp { syn: rng.gen() }, &v4)
        };
        let frame = Frame::new(src, dst, l4);
        let slot = ring[(frame.flow_key().hash(SEED) % ring_size) as usize];
        expected.push((slot % 10) as u8);
        frames.push(frame.bytes());
    }
    let outcomes = bed.run_many(&frames);
    let mut per_backend = [0u32; 7];
    for (i, (out, want)) in outcomes.iter().zip(&expected).enumerate() {
        assert_eq!(out.action, XDP_TX, "flow {i}; counters: {}", bed.dp.counters().unwrap());
        let got = backend_of_mac(&out.packet).expect("known backend MAC");
        assert_eq!(got, *want, "flow {i}: kernel chose backend {got}, userspace predicted {want}");
        per_backend[got as usize] += 1;
    }
    // Every backend got flows: the check above covered all of them.
    assert!(per_backend.iter().all(|&n| n > 200), "{per_backend:?}");
}

#[test]
#[ignore = "needs root"]
fn a_flow_keeps_its_backend_when_the_ring_changes_and_new_flows_follow_the_new_ring() {
    require_root("a_flow_keeps_its_backend_when_the_ring_changes_and_new_flows_follow_the_new_ring");
    let mut bed = FixtureBed::new(settings()).expect("bed");
    let backends: Vec<Slot> =
        (0..3).map(|i| Slot { slot: i, addr: backend_v4(i as u8), weight: 1 }).collect();
    bed.set_vip(addr("10.77.100.1:80"), PROTO_TCP, 0, &backends).unwrap();

    let flows: Vec<Frame> =
        (0..30).map(|i| Frame::syn(&format!("10.77.2.{}:{}", 10 + i, 40000 + i), "10.77.100.1:80")).collect();
    let first: Vec<u8> = flows.iter().map(|f| backend_of_mac(&bed.run(&f.bytes()).packet).unwrap()).collect();

    // New ring: only backend 3 (a different one).
    let only = Slot { slot: 3, addr: backend_v4(3), weight: 1 };
    bed.set_vip(addr("10.77.100.1:80"), PROTO_TCP, 0, &[only]).unwrap();
    for (flow, &was) in flows.iter().zip(&first) {
        let established = Frame { l4: L4::Tcp { syn: false }, ..flow.clone() };
        for _ in 0..3 {
            let out = bed.run(&established.bytes());
            assert_eq!(out.action, XDP_TX);
            assert_eq!(backend_of_mac(&out.packet), Some(was), "an established flow moved");
        }
    }
    // New connections (a SYN) follow the new ring, and stay there.
    for i in 0..10 {
        let syn = Frame::syn(&format!("10.77.3.{i}:5000"), "10.77.100.1:80");
        assert_eq!(backend_of_mac(&bed.run(&syn.bytes()).packet), Some(3));
        let established = Frame { l4: L4::Tcp { syn: false }, ..syn };
        assert_eq!(backend_of_mac(&bed.run(&established.bytes()).packet), Some(3));
    }
    // A SYN on a live 5-tuple whose backend still takes flows leaves it there
    // (now recorded): a spoofed SYN cannot hijack a flow.
    let was = first[0];
    assert_eq!(backend_of_mac(&bed.run(&flows[0].bytes()).packet), Some(was));
}

/// A ring's members (backend slot, weight), and the backends draining beside it.
type Step = (&'static [(u32, u32)], &'static [u32]);

/// What the recording rule says a packet's backend is, given the ring slot
/// its flow hashes to, what is recorded, and which backends take flows.
fn rule(slot: RingSlot, recorded: Option<u32>, syn: bool, usable: impl Fn(u32) -> bool) -> u32 {
    match recorded {
        Some(b) if usable(b) => b,
        Some(_) => slot.owner(),
        None if slot.is_settled() => slot.owner(),
        None if !syn && usable(slot.prior()) => slot.prior(),
        None => slot.owner(),
    }
}

#[test]
#[ignore = "needs root"]
fn over_five_ring_changes_every_packet_goes_where_the_recording_rule_says() {
    require_root("over_five_ring_changes_every_packet_goes_where_the_recording_rule_says");
    let mut bed = FixtureBed::new(settings()).expect("bed");
    let vip = addr("10.77.100.1:80");
    let slot = |i: u32, weight: u32| Slot { slot: i, addr: backend_v4(i as u8), weight };
    // Each step: the ring's members, and which backends are draining (out of the ring, keep flows).
    let steps: [Step; 6] = [
        (&[(0, 1), (1, 1), (2, 1)], &[]),
        (&[(0, 1), (1, 1), (2, 1), (3, 1)], &[]),
        (&[(1, 1), (2, 1), (3, 1)], &[0]),
        (&[(1, 1), (2, 2), (3, 1), (4, 1)], &[0]),
        (&[(1, 1), (3, 1), (4, 1)], &[0, 2]),
        (&[(0, 1), (1, 1), (3, 1), (4, 1), (5, 1)], &[2]),
    ];
    let mut rng = StdRng::seed_from_u64(5);
    let mut flows: Vec<(Frame, bool)> = Vec::new();
    let ring_size = bed.dp.settings().ring_size;
    for (step, (members, draining)) in steps.iter().enumerate() {
        let ring: Vec<Slot> = members.iter().map(|&(i, w)| slot(i, w)).collect();
        for &i in draining.iter() {
            let (a, family) = lb_common::types::addr_words(backend_v4(i as u8));
            let b = lb_common::Backend {
                addr: a,
                port_be: 0,
                family,
                state: BackendState::Draining as u8,
                vip: 0,
            };
            bed.dp.set_backend(i, b).unwrap();
        }
        if step == 0 {
            bed.set_vip(vip, PROTO_TCP, 0, &ring).unwrap();
        } else {
            bed.set_backend_slots(0, &ring).unwrap();
            bed.write_ring(0, &ring).unwrap();
        }
        // 200 new flows each step; half start with a SYN, half are mid-stream
        // (flows the balancer never saw start, as after a failover).
        for _ in 0..200 {
            let src = SocketAddr::new(
                IpAddr::V4(Ipv4Addr::new(10, 77, rng.gen_range(2..=99), rng.gen())),
                rng.gen_range(1024..=65535),
            );
            flows.push((Frame::new(src, vip, L4::Tcp { syn: false }), rng.gen()));
        }
        let slots = bed.ring(0).unwrap();
        let usable =
            |b: u32| bed.dp.backend(b).is_ok_and(|x| x.vip == 0 && BackendState::keeps_flows(x.state));
        for (flow, syn_first) in flows.iter_mut() {
            let key = flow.flow_key();
            let on = slots[(key.hash(SEED) % ring_size) as usize];
            let syn = std::mem::take(syn_first);
            let recorded = bed.dp.connection(&key).unwrap().map(|c| c.backend);
            let want = rule(on, recorded, syn, usable);
            let frame = Frame { l4: L4::Tcp { syn }, ..flow.clone() };
            let out = bed.run(&frame.bytes());
            assert_eq!(out.action, XDP_TX, "step {step}");
            let got = u32::from(backend_of_mac(&out.packet).expect("a backend MAC"));
            assert_eq!(got, want, "step {step}, {key:?}: slot {on:?}, recorded {recorded:?}, syn {syn}");
            // Recorded exactly when its slot is in flux.
            let now = bed.dp.connection(&key).unwrap().map(|c| c.backend);
            assert_eq!(now.is_some(), recorded.is_some() || !on.is_settled(), "step {step}, {key:?}");
        }
    }
}

#[test]
#[ignore = "needs root"]
fn pinned_flows_leave_down_backends_and_stay_on_draining_ones() {
    require_root("pinned_flows_leave_down_backends_and_stay_on_draining_ones");
    let mut bed = FixtureBed::new(settings()).expect("bed");
    let a = Slot { slot: 0, addr: backend_v4(0), weight: 1 };
    let b = Slot { slot: 1, addr: backend_v4(1), weight: 1 };
    bed.set_vip(addr("10.77.100.1:80"), PROTO_TCP, 0, &[a]).unwrap();
    let flow = Frame::tcp("10.77.2.1:1111", "10.77.100.1:80").bytes();
    assert_eq!(backend_of_mac(&bed.run(&flow).packet), Some(0));

    // Drain backend 0 (out of the ring, state Draining): the flow stays.
    let mut drained = bed.dp.backend(0).unwrap();
    drained.state = BackendState::Draining as u8;
    bed.dp.set_backend(0, drained).unwrap();
    bed.set_vip(addr("10.77.100.1:80"), PROTO_TCP, 0, &[b]).unwrap();
    assert_eq!(backend_of_mac(&bed.run(&flow).packet), Some(0));
    // A spoofed SYN with the flow's 5-tuple does not take it off its draining backend.
    let spoofed = Frame::syn("10.77.2.1:1111", "10.77.100.1:80").bytes();
    assert_eq!(backend_of_mac(&bed.run(&spoofed).packet), Some(0), "a SYN hijacked a draining flow");
    assert_eq!(backend_of_mac(&bed.run(&flow).packet), Some(0));

    // Backend 0 goes DOWN: the flow is re-selected onto the ring (backend 1), and stays there.
    let before = bed.dp.counters().unwrap();
    bed.dp.set_backend(0, lb_common::Backend { state: BackendState::Down as u8, ..drained }).unwrap();
    assert_eq!(backend_of_mac(&bed.run(&flow).packet), Some(1));
    assert_eq!(backend_of_mac(&bed.run(&flow).packet), Some(1));
    let d = bed.dp.counters().unwrap().since(&before);
    assert_eq!(d.event(Event::ConnReselected), 1);

    // A slot re-used by another VIP does not capture the old VIP's flows.
    let key = FlowKey::new("10.77.2.1".parse().unwrap(), 1111, "10.77.100.1".parse().unwrap(), 80, PROTO_TCP);
    assert_eq!(bed.dp.connection(&key).unwrap().map(|c| c.backend), Some(1));
    let foreign = lb_common::Backend { vip: 5, ..bed.dp.backend(1).unwrap() };
    bed.dp.set_backend(1, foreign).unwrap();
    let out = bed.run(&flow);
    assert_eq!(out.action, XDP_DROP, "ring points at a slot of another VIP: refuse, do not misforward");
    assert_eq!(bed.dp.counters().unwrap().since(&before).drop(DropReason::BadBackend), 1);
}

#[test]
#[ignore = "needs root"]
fn a_vip_in_a_mode_this_program_does_not_know_drops_with_its_reason() {
    require_root("a_vip_in_a_mode_this_program_does_not_know_drops_with_its_reason");
    let mut bed = FixtureBed::new(settings()).expect("bed");
    bed.set_vip(addr("10.77.100.1:80"), PROTO_TCP, 0, &[Slot { slot: 0, addr: backend_v4(0), weight: 1 }])
        .unwrap();
    let key = VipKey::new("10.77.100.1".parse().unwrap(), 80, PROTO_TCP);
    // A newer agent's mode, one past the last this program builds.
    let unknown = Mode::Nat as u8 + 1;
    bed.dp.set_vip(key, VipValue { index: 0, mode: unknown, _pad: [0; 3] }).unwrap();
    let before = bed.dp.counters().unwrap();
    assert_eq!(bed.run(&Frame::syn("10.77.2.1:1", "10.77.100.1:80").bytes()).action, XDP_DROP);
    assert_eq!(bed.dp.counters().unwrap().since(&before).drop(DropReason::UnsupportedMode), 1);
}
