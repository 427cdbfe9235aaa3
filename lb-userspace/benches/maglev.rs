//! Maglev ring construction: build time and disruption. Figures, not verdicts.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    time::Instant,
};

use lb_userspace::maglev::{build, changed_slots, Member};

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

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (v[v.len() / 2], v[0], v[v.len() - 1])
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
    println!("\nMaglev ring build (one thread), median of alternating rounds\n");
    println!("| ring size M | backends N | median | min..max | paper |");
    println!("|---:|---:|---:|---:|---:|");
    let mut samples = vec![Vec::new(); cases.len()];
    for _ in 0..cases.iter().map(|c| c.2).max().unwrap() {
        for (i, (m, n, rounds)) in cases.iter().enumerate() {
            if samples[i].len() < *rounds {
                samples[i].extend(time_build(*m, *n, 1));
            }
        }
    }
    let paper = ["1.8 ms", "22.9 ms"];
    for (((m, n, _), s), p) in cases.iter().zip(samples).zip(paper) {
        let (med, lo, hi) = median(s);
        println!("| {m} | {n} | {med:.2} ms | {lo:.2}..{hi:.2} ms | {p} |");
    }
    println!("\nDisruption: share of the *other* backends' slots that move\n");
    println!("| ring size M | backends N | removed | their slots | others moved | share |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (m, n, gone) in [(65_537u32, 100u32, 1u32), (655_373, 1_000, 10)] {
        let (share, own, moved) = disruption(m, n, gone);
        println!("| {m} | {n} | {gone} | {own} | {moved} | {share:.3}% |");
    }
}
