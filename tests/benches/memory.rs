//! Kernel memory of the data plane, as the kernel accounts it for each map:
//! the connection table per million flows (its entries are preallocated, so
//! the figure holds full or empty), and every map at the default sizes.

use std::time::Instant;

use alwayson_tests::{
    bench::Table,
    fixture::{FixtureBed, VIP4},
    packet::Frame,
};
use lb_common::{maps, ConnValue, FlowKey};
use lb_userspace::dataplane::{Dataplane, LoadSettings, Recording};
use serde_json::json;

fn main() {
    alwayson_tests::require_root("the memory benchmark");
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let title = format!(
        "Connection table memory (LRU hash, {}-byte key, {}-byte value, preallocated)",
        size_of::<FlowKey>(),
        size_of::<ConnValue>()
    );
    let mut table =
        Table::new("memory", &title, &["entries", "kernel memory", "per flow", "per million flows"]);
    for entries in [262_144u32, 1_000_000, 4_000_000] {
        let dp =
            Dataplane::load(LoadSettings { conn_table_size: entries, ..Default::default() }).expect("load");
        let bytes = dp.map_memory().into_iter().find(|(n, _)| *n == maps::CONNS).map_or(0, |(_, b)| b);
        let per_flow = bytes as f64 / f64::from(entries);
        table.row(
            &[
                entries.to_string(),
                format!("{:.1} MiB", mib(bytes)),
                format!("{per_flow:.0} B"),
                format!("{:.1} MiB", per_flow * 1e6 / (1024.0 * 1024.0)),
            ],
            json!({"entries": entries, "bytes": bytes, "bytes_per_flow": per_flow}),
        );
    }
    let dp = Dataplane::load(LoadSettings::default()).expect("load");
    let maps = dp.map_memory();
    let total: u64 = maps.iter().map(|(_, b)| b).sum();
    table.finish(json!({"default_sizes": maps.iter().map(|(n, b)| json!({"map": n, "bytes": b})).collect::<Vec<_>>(), "default_total_bytes": total}));
    println!(
        "\nEvery map at the default sizes (64 VIPs, 4,096 backend slots, ring 65,537, 262,144 flows):\n"
    );
    println!("| map | kernel memory |\n|---|---:|");
    for (name, bytes) in &maps {
        println!("| {name} | {:.2} MiB |", mib(*bytes));
    }
    println!("| total | {:.1} MiB |", mib(total));
    count_cost();
}

/// What counting the connection table costs (the kernel keeps no count of an
/// LRU table, so the agent walks its keys): a default-sized table filled by
/// the balancer itself, one SYN per flow, then walked. Settled slots record
/// nothing, so the table is filled under every-flow recording.
fn count_cost() {
    let mut bed = FixtureBed::standard();
    bed.dp.set_recording(Recording { every_flow: true, limit: 0 }).expect("recording");
    let capacity = bed.dp.settings().conn_table_size;
    let frames: Vec<Vec<u8>> = (0..capacity)
        .map(|i| {
            let client =
                format!("10.77.{}.{}:{}", 2 + i / (250 * 60_000), 10 + i / 60_000 % 250, 1024 + i % 60_000);
            Frame::syn(&client, VIP4).bytes()
        })
        .collect();
    bed.run_many(&frames);
    let started = Instant::now();
    let entries = bed.dp.connections();
    let took = started.elapsed();
    let per_entry = took.as_secs_f64() / entries as f64;
    let mut table = Table::new(
        "conn_count",
        "Counting the connection table by walking its keys, as the stats sampler does (every 10 s, \
         or every 100 × the last walk when that is longer: at most 1% of a core)",
        &["entries", "walk", "per entry", "1M entries would take", "4M entries would take"],
    );
    table.row(
        &[
            entries.to_string(),
            format!("{:.0} ms", took.as_secs_f64() * 1e3),
            format!("{:.0} ns", per_entry * 1e9),
            format!("{:.2} s", per_entry * 1e6),
            format!("{:.2} s", per_entry * 4e6),
        ],
        json!({"entries": entries, "walk_seconds": took.as_secs_f64(), "ns_per_entry": per_entry * 1e9}),
    );
    table.finish(json!({}));
}
