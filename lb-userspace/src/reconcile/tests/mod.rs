//! The reconciler against a fake data plane ([`fake`]) that checks the
//! kernel's invariants after every write. Failures are injected at every write
//! of an apply, to check that the next apply (or a restarted agent's) still
//! gets the kernel right.

mod fake;

use std::net::SocketAddr;

use lb_common::{Backend, BackendState, Mode, NatSource, VipKey};

use self::fake::{Fake, Served, UNUSED};
use super::{Maps, ReconcileError, Reconciler};
use crate::desired::{DesiredBackend, DesiredVip};

fn key(vip: &str) -> VipKey {
    let addr: SocketAddr = vip.parse().unwrap();
    VipKey::new(addr.ip(), addr.port(), 6)
}

fn addr(backend: &str) -> SocketAddr {
    backend.parse().unwrap()
}

/// A VIP with backends `(address, weight, up)`.
fn vip(at: &str, backends: &[(&str, u32, bool)]) -> DesiredVip {
    DesiredVip {
        key: key(at),
        mode: Mode::Dsr,
        nat: None,
        allbackups: false,
        backends: backends
            .iter()
            .map(|&(a, weight, up)| DesiredBackend { addr: addr(a), weight, backup: false, up })
            .collect(),
    }
}

fn applied(max_vips: u32, max_backends: u32, desired: &[DesiredVip]) -> Reconciler<Fake> {
    let mut r = Reconciler::adopt(Fake::new(max_vips, max_backends)).unwrap();
    r.apply(desired).unwrap();
    r
}

/// No id is held by anything but what `desired` names.
fn assert_no_leaks(r: &Reconciler<Fake>, desired: &[DesiredVip]) {
    let backends: usize = desired.iter().map(|v| v.backends.len()).sum();
    let s = &r.dp.settings;
    assert_eq!(r.vip_ids.available(), s.max_vips as usize - desired.len(), "VIP indexes leaked");
    assert_eq!(r.slots.available(), s.max_backends as usize - backends, "backend slots leaked");
    assert_eq!(r.dp.backend_entries().unwrap().len(), backends, "used slots in the kernel");
}

#[test]
fn replacing_a_backend_at_max_backends_reuses_its_slot_once_unused() {
    let before = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, true)])];
    let after = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true), ("10.0.0.3:80", 1, true)])];
    let mut r = applied(1, 2, &before);
    let old_slot = r.backend_slot(&before[0].key, addr("10.0.0.2:80")).unwrap();
    r.dp.backend_stats[old_slot as usize] = 7;
    r.dp.backend_writes.clear();

    let report = r.apply(&after).unwrap();
    assert_eq!((report.backends_added, report.backends_removed), (1, 1));
    let new_slot = r.backend_slot(&after[0].key, addr("10.0.0.3:80")).unwrap();
    assert_eq!(new_slot, old_slot, "the only free slot");
    let writes: Vec<u8> =
        r.dp.backend_writes.iter().filter(|(s, _)| *s == old_slot).map(|(_, b)| b.state).collect();
    assert_eq!(writes, [BackendState::Unused as u8, BackendState::Up as u8], "unused before reused");
    assert_eq!(r.dp.backend_stats[old_slot as usize], 0, "the new backend's counters start at zero");
    assert!(r.in_ring(&after[0].key, addr("10.0.0.3:80")));
    assert_eq!(r.dp.served(), applied(1, 2, &after).dp.served());
    assert_no_leaks(&r, &after);
}

#[test]
fn a_vip_that_changes_mode_forgets_its_backends_next_hops() {
    let dsr = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, true)])];
    let tunnel = [DesiredVip { mode: Mode::Tunnel, ..dsr[0].clone() }];
    let mut r = applied(1, 2, &dsr);
    assert!(r.dp.forgotten_hops.is_empty(), "a new VIP has nothing cached");
    let report = r.apply(&tunnel).unwrap();
    assert_eq!((report.vips_changed, report.vips_added, report.ring_slots_written), (1, 0, 0), "{report:?}");
    let mut forgotten = r.dp.forgotten_hops.clone();
    forgotten.sort();
    let slots = |a: &str| r.backend_slot(&dsr[0].key, addr(a)).unwrap();
    assert_eq!(forgotten, vec![slots("10.0.0.1:80"), slots("10.0.0.2:80")]);
    r.dp.forgotten_hops.clear();
    assert_eq!(r.apply(&tunnel).unwrap().vips_changed, 0);
    assert!(r.dp.forgotten_hops.is_empty(), "an unchanged mode forgets nothing");
}

#[test]
fn replacing_a_vip_at_max_vips_reuses_its_index() {
    let before = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true)])];
    let after = [vip("10.77.100.1:443", &[("10.0.0.1:443", 1, true)])];
    let mut r = applied(1, 2, &before);
    r.dp.vip_stats[0] = 7;
    let report = r.apply(&after).unwrap();
    assert_eq!((report.vips_added, report.vips_removed), (1, 1));
    assert_eq!(r.vip_index(&after[0].key), Some(0));
    assert_eq!(r.vip_index(&before[0].key), None);
    assert_eq!(r.dp.vip_stats[0], 0);
    assert_eq!(r.dp.served(), applied(1, 2, &after).dp.served());
    assert_no_leaks(&r, &after);
}

#[test]
fn more_than_fits_is_full_and_writes_nothing() {
    let before = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, true)])];
    let mut r = applied(2, 2, &before);
    let writes = r.dp.writes;
    let mut bigger = before.to_vec();
    bigger[0].backends.push(DesiredBackend { addr: addr("10.0.0.3:80"), weight: 1, backup: false, up: true });
    let err = r.apply(&bigger).unwrap_err();
    assert!(matches!(err, ReconcileError::Full { setting: "global.max_backends", .. }), "{err}");
    let more_vips = [before[0].clone(), vip("10.77.100.2:80", &[]), vip("10.77.100.3:80", &[])];
    let err = r.apply(&more_vips).unwrap_err();
    assert!(matches!(err, ReconcileError::Full { setting: "global.max_vips", .. }), "{err}");
    assert_eq!(r.dp.writes, writes);
}

#[test]
fn slots_of_vips_that_no_longer_exist_are_cleared_then_reused() {
    let mut fake = Fake::new(2, 2);
    fake.backends[0] = Backend { state: BackendState::Up as u8, vip: 1, ..UNUSED };
    let mut r = Reconciler::adopt(fake).unwrap();
    assert_eq!(r.slots.available(), 1);
    let desired = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, true)])];
    r.apply(&desired).unwrap();
    assert_eq!(r.dp.served(), applied(2, 2, &desired).dp.served());
    assert_no_leaks(&r, &desired);
}

#[test]
fn a_restarted_agent_adopts_every_index_and_slot() {
    let desired = [
        vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 0, true)]),
        vip("10.77.100.2:80", &[("10.0.0.3:80", 1, false)]),
    ];
    let first = applied(4, 8, &desired);
    let ids = |r: &Reconciler<Fake>| {
        let slot = |v: &DesiredVip, b: &DesiredBackend| r.backend_slot(&v.key, b.addr);
        let all = desired.iter().flat_map(|v| v.backends.iter().map(move |b| (v, b)));
        (
            desired.iter().map(|v| r.vip_index(&v.key)).collect::<Vec<_>>(),
            all.map(|(v, b)| slot(v, b)).collect::<Vec<_>>(),
        )
    };
    let before = ids(&first);
    let mut second = Reconciler::adopt(first.into_dataplane()).unwrap();
    assert_eq!(ids(&second), before);
    assert_eq!(second.backend_state(&desired[1].key, addr("10.0.0.3:80")), Some(BackendState::Down as u8));
    let report = second.apply(&desired).unwrap();
    assert_eq!(report.ring_slots_written, 0, "rings are rebuilt, and found as they were");
    assert_eq!(report.backends_changed, 0);
}

#[test]
fn an_adopted_kernel_gets_its_vip_addresses_right() {
    let desired = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true)])];
    let mut fake = applied(2, 2, &desired).into_dataplane();
    // What an older agent could leave: a visible VIP without its address, and
    // an address without a VIP.
    fake.addresses.clear();
    fake.addresses.insert(key("10.77.100.9:80").address_only());
    fake.check_addresses = false;
    let mut r = Reconciler::adopt(fake).unwrap();
    r.apply(&desired).unwrap();
    assert_eq!(r.dp.served(), applied(2, 2, &desired).dp.served());
}

/// Desired states: the first applied cleanly, the second with a write
/// failing, then the second or the first again, or any of the others.
type History = (u32, u32, Vec<DesiredVip>, Vec<DesiredVip>, Vec<Vec<DesiredVip>>);

fn histories() -> Vec<History> {
    let x = "10.77.100.1:80";
    let y = "10.77.100.1:443";
    vec![
        (2, 4, vec![], vec![vip(x, &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, false)])], vec![]),
        (
            4,
            8,
            vec![vip(x, &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 2, true), ("10.0.0.3:80", 1, true)])],
            vec![
                vip(x, &[("10.0.0.1:80", 1, false), ("10.0.0.3:80", 0, true), ("10.0.0.4:80", 1, true)]),
                vip("10.77.100.1:443", &[("10.0.0.5:80", 1, true)]),
            ],
            vec![],
        ),
        // At capacity: a VIP and a backend replaced.
        (
            2,
            3,
            vec![
                vip(x, &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, true)]),
                vip("10.77.100.2:80", &[("10.0.0.3:80", 1, true)]),
            ],
            vec![
                vip(x, &[("10.0.0.1:80", 1, true), ("10.0.0.4:80", 1, true)]),
                vip("10.77.100.3:80", &[("10.0.0.5:80", 1, true)]),
            ],
            vec![],
        ),
        // Two VIPs on one address, both leaving; then one of them stays after all,
        // or another address takes over.
        (
            2,
            2,
            vec![vip(x, &[("10.0.0.1:80", 1, true)]), vip(y, &[("10.0.0.2:443", 1, true)])],
            vec![],
            vec![
                vec![vip(y, &[("10.0.0.2:443", 1, true)])],
                vec![vip("10.77.100.2:80", &[("10.0.0.3:80", 1, true)])],
            ],
        ),
        // At capacity, a VIP replaced by another on the same address (two
        // passes, the address kept between them); then that address goes.
        (
            1,
            1,
            vec![vip(x, &[("10.0.0.1:80", 1, true)])],
            vec![vip(y, &[("10.0.0.2:443", 1, true)])],
            vec![vec![vip("10.77.100.2:80", &[("10.0.0.3:80", 1, true)])], vec![]],
        ),
    ]
}

#[test]
fn after_a_failed_write_the_next_apply_gets_the_kernel_right() {
    for (max_vips, max_backends, a, b, others) in histories() {
        let retries: Vec<(&Vec<DesiredVip>, Served)> = [&b, &a]
            .into_iter()
            .chain(&others)
            .map(|retry| (retry, applied(max_vips, max_backends, retry).dp.served()))
            .collect();
        let clean = {
            let mut r = applied(max_vips, max_backends, &a);
            let before = r.dp.writes;
            r.apply(&b).unwrap();
            r.dp.writes - before
        };
        for n in 1..=clean {
            for half in [false, true] {
                for (retry, want) in &retries {
                    for restart in [false, true] {
                        let what = format!("{a:?} -> {b:?}: write {n} fails (half {half}), then {retry:?} (restart {restart})");
                        let mut r = applied(max_vips, max_backends, &a);
                        r.dp.fail = Some((r.dp.writes + n, half));
                        assert!(r.apply(&b).is_err(), "{what}");
                        r.dp.fail = None;
                        if restart {
                            r = Reconciler::adopt(r.into_dataplane()).unwrap();
                        }
                        r.apply(retry).unwrap_or_else(|e| panic!("{what}: {e}"));
                        assert_eq!(&r.dp.served(), want, "{what}");
                        assert_no_leaks(&r, retry);
                    }
                }
            }
        }
    }
}

mod flux {
    use std::{
        collections::HashMap,
        time::{Duration, Instant},
    };

    use super::*;
    use crate::reconcile::LiveFlows;

    const HOUR: Duration = Duration::from_secs(3600);

    fn live(taken: Instant, by_slot: &[((u32, u32), u32)]) -> LiveFlows {
        let mut map: HashMap<(u32, u32), Vec<u32>> = HashMap::new();
        for &(at, backend) in by_slot {
            map.entry(at).or_default().push(backend);
        }
        LiveFlows { taken, by_slot: map }
    }

    fn three() -> [DesiredVip; 1] {
        [vip(
            "10.77.100.1:80",
            &[("10.0.0.1:80", 1, true), ("10.0.0.2:80", 1, true), ("10.0.0.3:80", 1, true)],
        )]
    }

    fn four() -> [DesiredVip; 1] {
        let mut v = three();
        v[0].backends.push(DesiredBackend { addr: addr("10.0.0.4:80"), weight: 1, backup: false, up: true });
        v
    }

    #[test]
    fn a_first_ring_is_settled_and_a_changed_slot_keeps_its_first_prior() {
        let mut r = applied(1, 8, &three());
        assert_eq!(r.in_flux(), 0, "a ring written over an empty one has no flows to keep");
        let before = r.dp.rings[0].clone();
        r.apply(&four()).unwrap();
        let changed: Vec<usize> =
            (0..before.len()).filter(|&i| r.dp.rings[0][i].owner() != before[i].owner()).collect();
        assert!(!changed.is_empty());
        assert_eq!(r.in_flux(), changed.len());
        for &i in &changed {
            assert_eq!(r.dp.rings[0][i].prior(), before[i].owner(), "slot {i}");
        }
        // Back to three: the prior is the first owner still, which is the owner again.
        r.apply(&three()).unwrap();
        for &i in &changed {
            let slot = r.dp.rings[0][i];
            assert_eq!((slot.owner(), slot.prior()), (before[i].owner(), before[i].owner()), "slot {i}");
        }
    }

    #[test]
    fn a_slot_settles_only_once_no_flow_can_need_its_prior_or_a_recorded_backend() {
        let mut r = applied(1, 8, &three());
        r.apply(&four()).unwrap();
        let in_flux = r.in_flux();
        let offsets: Vec<u32> = r.vips.values().next().unwrap().flux.keys().copied().collect();
        let (a, b) = (offsets[0], offsets[1]);
        let owner_b = r.dp.rings[0][b as usize].owner();

        // Within the idle timeout the prior owner may still have silent flows.
        assert_eq!(r.settle(&live(Instant::now(), &[]), HOUR, Instant::now()).unwrap(), 0);
        // A scan older than the change judges nothing.
        let later = Instant::now() + 2 * HOUR;
        let stale = live(Instant::now() - HOUR, &[]);
        assert_eq!(r.settle(&stale, HOUR, later).unwrap(), 0);
        // Past it, a slot with a live flow recorded elsewhere than the owner stays in flux;
        // one recorded on the owner does not hold its slot.
        let scan = live(Instant::now(), &[((0, a), 1234), ((0, b), owner_b)]);
        assert_eq!(r.settle(&scan, HOUR, later).unwrap(), in_flux - 1);
        assert_eq!(r.in_flux(), 1);
        assert!(!r.dp.rings[0][a as usize].is_settled());
        assert!(r.dp.rings[0][b as usize].is_settled());
        assert_eq!(r.settle(&live(Instant::now(), &[]), HOUR, later).unwrap(), 1);
        assert!(r.dp.rings[0].iter().all(|s| s.is_settled()));
    }

    #[test]
    fn a_removed_backend_is_nobodys_prior_owner() {
        let mut r = applied(1, 8, &four());
        let gone = r.backend_slot(&four()[0].key, addr("10.0.0.4:80")).unwrap();
        let its = r.dp.rings[0].iter().filter(|s| s.owner() == gone).count();
        r.apply(&three()).unwrap();
        assert!(r.in_flux() >= its);
        assert!(r.dp.rings[0].iter().all(|s| s.prior() != gone), "a removed slot stays a prior owner");
        // Its slots settle at once (prior = owner), no timeout to wait; the
        // few others Maglev moved between live backends wait.
        let others = r.in_flux() - its;
        assert_eq!(r.settle(&live(Instant::now(), &[]), HOUR, Instant::now()).unwrap(), its);
        assert_eq!(r.in_flux(), others);
    }
}

#[test]
fn a_nat_vip_has_its_source_and_reply_lookups_before_it_is_visible() {
    let source =
        NatSource { addr: [u32::from_ne_bytes([10, 77, 0, 2]), 0, 0, 0], port_min: 20_000, port_count: 100 };
    let dsr = [vip("10.77.100.1:80", &[("10.0.0.1:80", 1, true)])];
    let nat = [DesiredVip { mode: Mode::Nat, nat: Some(source), ..dsr[0].clone() }];
    // Fake::check fails any write that shows a NAT VIP without both.
    let mut r = applied(1, 2, &dsr);
    assert!(!r.dp.settings.nat, "no NAT VIP, no reply lookups");
    r.apply(&nat).unwrap();
    assert!(r.dp.settings.nat);
    assert_eq!(r.dp.nat_sources[0], source);
    let wider = NatSource { port_count: 200, ..source };
    r.apply(&[DesiredVip { nat: Some(wider), ..nat[0].clone() }]).unwrap();
    assert_eq!(r.dp.nat_sources[0], wider, "a changed range is written");
    let writes = r.dp.writes;
    r.apply(&[DesiredVip { nat: Some(wider), ..nat[0].clone() }]).unwrap();
    assert_eq!(r.dp.writes, writes, "nothing changed, nothing written");
    r.apply(&dsr).unwrap();
    assert!(!r.dp.settings.nat, "the last NAT VIP gone, replies are no longer looked for");
}
