//! Maglev ring construction: build time and disruption. Figures, not verdicts.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Instant,
};

use alwayson_tests::bench::{spread, Table};
use lb_userspace::maglev::{build, changed_slots, Member};
use serde_json::json;

fn members(n: u32) -> Vec<Member> {
    (0..n)
        .map(|i| Member { id: SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x0a4d_0000 + i)), 80), weight: 1 })
        .collect()
}

fn time_build(m: u32, n: u32, rounds: usize) -> Vec<f64> {
    let ms = members(n);
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(build(&ms, m));
            start.elapsed().as_secs_f64() * 1000.0
        })
        .collect()
}

/// Share of the other backends' slots that move when `gone` backends leave.
fn disruption(m: u32, n: u32, gone: u32) -> (f64, usize, usize) {
    let all = members(n);
    let before = build(&all, m);
    // Remove every (n/gone)-th backend.
    let step = (n / gone).max(1);
    let rest: Vec<Member> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| !(*i as u32).is_multiple_of(step) || *i as u32 / step >= gone)
        .map(|(_, m)| *m)
        .collect();
    let after = build(&rest, m);
    let removed: std::collections::HashSet<SocketAddr> =
        all.iter().map(|m| m.id).filter(|id| !rest.iter().any(|r| r.id == *id)).collect();
    let own = before.iter().filter(|&&s| removed.contains(&all[s as usize].id)).count();
    let moved = changed_slots(&before, &all, &after, &rest).count();
    let others = m as usize - own;
    ((moved - own) as f64 / others as f64 * 100.0, own, moved - own)
}

fn main() {
    let cases = [(65_537u32, 100u32, 21usize), (655_373, 1_000, 7)];
    let mut samples = vec![Vec::new(); cases.len()];
    // Alternate the sizes round by round, so both see the same machine.
    for _ in 0..cases.iter().map(|c| c.2).max().unwrap() {
        for (i, (m, n, rounds)) in cases.iter().enumerate() {
            if samples[i].len() < *rounds {
                samples[i].extend(time_build(*m, *n, 1));
            }
        }
    }
    let mut table = Table::new(
        "maglev",
        "Maglev ring build (one thread), median of alternating rounds; disruption when backends leave",
        &["ring size M", "backends N", "build median", "min..max", "paper", "removed", "others' slots moved"],
    );
    let paper = ["1.8 ms", "22.9 ms"];
    let removals = [1u32, 10];
    for ((((m, n, _), mut s), p), gone) in cases.iter().zip(samples).zip(paper).zip(removals) {
        let (med, lo, hi) = spread(&mut s);
        let (share, own, moved) = disruption(*m, *n, gone);
        table.row(
            &[
                m.to_string(),
                n.to_string(),
                format!("{med:.2} ms"),
                format!("{lo:.2}..{hi:.2} ms"),
                p.into(),
                format!("{gone} ({own} slots)"),
                format!("{moved} ({share:.3}%)"),
            ],
            json!({"m": m, "n": n, "build_ms_median": med, "build_ms": s, "removed": gone, "removed_slots": own, "others_moved": moved, "others_moved_pct": share}),
        );
    }
    table.finish(json!({}));
}
