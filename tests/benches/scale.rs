//! Control-plane scale: a running agent is given 1,000 VIPs × 100 backends by
//! a reload; how long until they are in the kernel, and the agent's peak
//! resident memory. Then the agent is killed and restarted on the same config:
//! it adopts everything, writing nothing. Figures, not verdicts.

use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::{config_toml_with, Agent, Tables},
    bed::TestBed,
    bench::Table,
};
use serde_json::json;

/// The agent's log line once a change's new addresses are in the rings.
const NEIGHBOURS_RESOLVED: &str = "neighbours of new backends resolved, applied in";
const VIPS: usize = 1_000;
const BACKENDS: usize = 100;

/// Room in the maps for all of them (sizes cannot change under a running data plane).
const SIZES: Tables = Tables { global: "max_vips = 1024\nmax_backends = 131072", api: "" };

/// `base` and the VIPs.
fn vip_config(base: &str) -> String {
    let mut out = String::with_capacity(VIPS * BACKENDS * 40);
    out.push_str(base);
    for v in 0..VIPS {
        let _ = write!(
            out,
            "[[vip]]\naddress = \"10.77.{}.{}\"\nport = 80\ncheck = \"none\"\nbackend = [",
            100 + v / 250,
            1 + v % 250
        );
        for b in 0..BACKENDS {
            let _ = write!(
                out,
                "{}{{ address = \"10.77.{}.{}\" }}",
                if b == 0 { "" } else { ", " },
                1 + b / 200,
                10 + b % 200
            );
        }
        out.push_str("]\n\n");
    }
    out
}

/// `VmHWM` and `VmRSS` of a process, in MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
    };
    (kib("VmHWM:").unwrap_or(f64::NAN) / 1024.0, kib("VmRSS:").unwrap_or(f64::NAN) / 1024.0)
}

/// The number after `needle` on the last log line holding it (`… applied in 123.4 ms`).
fn logged_ms(log: &str, needle: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(needle))?;
    line.split(needle).nth(1)?.split_whitespace().next()?.parse().ok()
}

fn main() {
    alwayson_tests::require_root("the scale benchmark");
    let bed = TestBed::builder().backends(1).start_servers(false).build().expect("bed");
    let empty = config_toml_with(&bed, &[], SIZES);
    let big = vip_config(&empty);
    let mut agent = Agent::start(&bed, &empty, &[]).expect("agent");

    let sent = Instant::now();
    // New addresses join the rings once their neighbour entries had time to
    // resolve: a second apply, logged on its own.
    agent.reload_expecting(&big, NEIGHBOURS_RESOLVED).expect("reload with 1,000 VIPs");
    let wall = sent.elapsed();
    let log = agent.log();
    let apply_ms = logged_ms(&log, "reloaded config applied in ").unwrap_or(f64::NAN)
        + logged_ms(&log, &format!("{NEIGHBOURS_RESOLVED} ")).unwrap_or(f64::NAN);
    let (peak, rss) = memory(agent.pid());
    std::thread::sleep(Duration::from_secs(2));
    let (peak_later, rss_later) = memory(agent.pid());

    agent.kill().expect("SIGKILL");
    let started = Instant::now();
    agent.restart().expect("restart");
    let restart_wall = started.elapsed();
    let relog = agent.log();
    let adopt_ms = logged_ms(&relog, "config applied in ").unwrap_or(f64::NAN);
    let (restart_peak, _) = memory(agent.pid());
    let untouched = relog.contains("ring_slots_written: 0") && relog.contains("vips_added: 0");

    let mut table = Table::new(
        "scale",
        &format!(
            "Control plane: {VIPS} VIPs × {BACKENDS} backends (ring 65537, {} backend entries)",
            VIPS * BACKENDS
        ),
        &["step", "time", "agent peak RSS", "notes"],
    );
    table.row(
        &[
            "SIGHUP → all applied (parse, validate, rings, maps)".into(),
            format!("{:.0} ms", wall.as_secs_f64() * 1000.0),
            format!("{peak:.0} MiB"),
            format!("apply alone {apply_ms:.0} ms; RSS {rss:.0} MiB right after, {rss_later:.0} MiB 2 s later (peak {peak_later:.0})"),
        ],
        json!({"step": "reload", "wall_ms": wall.as_secs_f64() * 1000.0, "apply_ms": apply_ms, "peak_mib": peak_later, "rss_mib": rss_later}),
    );
    table.row(
        &[
            "restart after SIGKILL → adopted and checked".into(),
            format!("{:.0} ms", restart_wall.as_secs_f64() * 1000.0),
            format!("{restart_peak:.0} MiB"),
            format!("apply {adopt_ms:.0} ms; nothing rewritten: {untouched}"),
        ],
        json!({"step": "restart", "wall_ms": restart_wall.as_secs_f64() * 1000.0, "apply_ms": adopt_ms, "peak_mib": restart_peak, "nothing_rewritten": untouched}),
    );
    table.finish(json!({"config_bytes": big.len()}));
}
