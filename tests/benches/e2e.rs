//! End to end on the namespace test bed: `wrk` in the client namespace against
//! three nginx backends, through one agent's VIPs in each forwarding mode
//! ((1) DSR, (2) tunnel, the backends stripping IPIP with `alwayson decap`,
//! (3) NAT, to the backends' own addresses), (4) through HAProxy 2.6 in TCP
//! mode with roundrobin on the same LB namespace, (5) directly to one backend.
//! Workloads: keep-alive connections, and a new connection per request.
//! Paths alternate over rounds in the same run; medians are reported, and
//! ratios to HAProxy. Figures, not verdicts.

use std::{fmt::Write as _, path::Path, time::Duration};

use alwayson_tests::{
    agent::{config_toml_with, Agent, Tables, VipConf},
    bed::TestBed,
    bench::{dir, spread, Table},
    decap::DecapAll,
    process::Process,
    wait_until,
};
use serde_json::json;

const PORT: u16 = 8088;
const VIP: &str = "10.77.100.1";
const TUNNEL_VIP: &str = "10.77.100.2";
/// Held by no backend: NAT sends to their own addresses.
const NAT_VIP: &str = "10.77.100.3";
/// Outer sources of the tunnel: inside the test ranges, no address of the bed.
const TUNNEL_SOURCE: &str = "10.77.108.0/24";
const ROUNDS: usize = 3;
const SECONDS: u32 = 5;
/// Connections of the saturating workloads; the light one uses 4.
const CONNECTIONS: u32 = 64;
const LIGHT: u32 = 4;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    AlwaysOn,
    Tunnel,
    Nat,
    Haproxy,
    Direct,
}

impl Mode {
    const ALL: [Mode; 5] = [Mode::AlwaysOn, Mode::Tunnel, Mode::Nat, Mode::Haproxy, Mode::Direct];
    const HAPROXY: usize = 3;

    fn name(self) -> &'static str {
        match self {
            Mode::AlwaysOn => "Always On (XDP, DSR)",
            Mode::Tunnel => "Always On (XDP, tunnel)",
            Mode::Nat => "Always On (XDP, NAT)",
            Mode::Haproxy => "HAProxy 2.6 (TCP mode)",
            Mode::Direct => "direct to one backend",
        }
    }
}

/// One wrk run: requests per second and latency percentiles in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Run {
    rps: f64,
    p50: f64,
    p99: f64,
    errors: u64,
}

fn millis(value: &str) -> Option<f64> {
    let (number, factor) = if let Some(v) = value.strip_suffix("us") {
        (v, 0.001)
    } else if let Some(v) = value.strip_suffix("ms") {
        (v, 1.0)
    } else if let Some(v) = value.strip_suffix('s') {
        (v, 1000.0)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * factor)
}

fn parse_wrk(out: &str) -> Run {
    let mut run = Run::default();
    for line in out.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["50%", v] => run.p50 = millis(v).unwrap_or(f64::NAN),
            ["99%", v] => run.p99 = millis(v).unwrap_or(f64::NAN),
            ["Requests/sec:", v] => run.rps = v.parse().unwrap_or(0.0),
            ["Socket", "errors:", rest @ ..] => {
                run.errors +=
                    rest.iter().filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok()).sum::<u64>()
            }
            ["Non-2xx", "or", "3xx", "responses:", n] => run.errors += n.parse::<u64>().unwrap_or(0),
            _ => {}
        }
    }
    run
}

fn wrk(bed: &TestBed, target: &str, close: bool, connections: u32) -> Run {
    let threads = connections.min(2);
    let mut args = vec![format!("-t{threads}"), format!("-c{connections}")];
    args.extend([format!("-d{SECONDS}s"), "--latency".into(), "--timeout".into(), "5s".into()]);
    if close {
        args.extend(["-H".into(), "Connection: close".into()]);
    }
    args.push(format!("http://{target}/"));
    let out = bed.client_ns(0).command("wrk").args(&args).output().expect("run wrk");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "wrk failed: {}{}", text, String::from_utf8_lossy(&out.stderr));
    parse_wrk(&text)
}

/// An nginx on backend `i`, single process, answering every request with its name.
fn nginx(bed: &TestBed, i: usize) -> Process {
    let dir = bed.temp_dir().join(format!("nginx{i}"));
    std::fs::create_dir_all(dir.join("tmp")).expect("nginx dir");
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
         events {{ worker_connections 8192; }}\n\
         http {{ access_log off; keepalive_requests 1000000; client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
           fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
           server {{ listen {PORT} backlog=8192 reuseport; listen [::]:{PORT} backlog=8192 reuseport;\n\
             location / {{ return 200 \"{}\\n\"; }} }} }}\n",
        bed.backend_name(i)
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).expect("nginx.conf");
    let args = ["-p".to_string(), d.to_string(), "-c".to_string(), path.display().to_string()];
    bed.spawn(bed.backend_ns(i), "nginx", &args, &format!("nginx{i}")).expect("nginx")
}

fn haproxy(bed: &TestBed) -> Process {
    let mut conf = String::from(
        "global\n  maxconn 8000\n  nbthread 2\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  \
         timeout server 30s\nfrontend fe\n",
    );
    let _ = writeln!(
        conf,
        "  bind {}:{PORT}\n  default_backend be\nbackend be\n  balance roundrobin",
        bed.lb_v4()
    );
    for i in 0..3 {
        let _ = writeln!(conf, "  server b{i} {}:{PORT}", bed.backend_v4(i));
    }
    let path = bed.temp_dir().join("haproxy.cfg");
    std::fs::write(&path, conf).expect("haproxy.cfg");
    bed.spawn(bed.lb_ns(), "haproxy", &["-db", "-f", &path.display().to_string()], "haproxy")
        .expect("haproxy")
}

fn wait_listening(bed: &TestBed, target: &str) {
    let addr = target.parse().unwrap();
    wait_until(
        &format!("{target} to accept a connection"),
        Duration::from_secs(10),
        Duration::from_millis(50),
        || bed.tcp_connect(0, addr, Duration::from_millis(200)).ok().map(drop),
    )
    .unwrap();
}

/// A grouped bar chart of requests per second, as SVG.
fn chart(results: &[(&str, Vec<f64>)], path: &Path) {
    let (w, h, left, top, bottom) = (720.0, 300.0, 60.0, 30.0, 60.0);
    let max = results.iter().flat_map(|(_, v)| v.iter().copied()).fold(0.0, f64::max) * 1.1;
    let colors = ["#2563eb", "#0891b2", "#7c3aed", "#dc2626", "#6b7280"];
    let bars = Mode::ALL.len() as f64;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <text x=\"{left}\" y=\"18\" font-size=\"14\">Requests per second (higher is better), same bed, same run</text>\n"
    );
    let group = (w - left - 20.0) / results.len() as f64;
    for (g, (label, values)) in results.iter().enumerate() {
        let x0 = left + g as f64 * group + 20.0;
        for (k, v) in values.iter().enumerate() {
            let bh = (h - top - bottom) * v / max;
            let x = x0 + k as f64 * (group - 40.0) / bars;
            let y = h - bottom - bh;
            let bw = (group - 40.0) / bars - 6.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bw:.1}\" height=\"{bh:.1}\" fill=\"{}\"/>",
                colors[k]
            );
            let _ = writeln!(
                svg,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>",
                x + bw / 2.0,
                y - 4.0,
                v
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
            x0 + (group - 40.0) / 2.0,
            h - bottom + 18.0
        );
    }
    for (k, mode) in Mode::ALL.iter().enumerate() {
        let x = left + (k % 3) as f64 * 220.0;
        let h = h + 16.0 * (k / 3) as f64;
        let _ = writeln!(
            svg,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{}\"/>",
            h - 22.0,
            colors[k]
        );
        let _ = writeln!(svg, "<text x=\"{}\" y=\"{}\">{}</text>", x + 16.0, h - 12.0, mode.name());
    }
    svg.push_str("</svg>\n");
    std::fs::write(path, svg).expect("write chart");
}

fn main() {
    alwayson_tests::require_root("the e2e benchmark");
    let bed = TestBed::builder()
        .clients(1)
        .backends(3)
        .vip(VIP)
        .vip(TUNNEL_VIP)
        .start_servers(false)
        .build()
        .expect("bed");
    let lb = bed.lb_v4().to_string();
    bed.client_ns(0)
        .ip(&["route", "add", &format!("{NAT_VIP}/32"), "via", &lb, "dev", "eth0"])
        .expect("route");
    let _decap = DecapAll::attach(&bed).expect("decap on the backends");
    let _backends: Vec<Process> = (0..3).map(|i| nginx(&bed, i)).collect();
    let vips = [(VIP, "dsr"), (TUNNEL_VIP, "tunnel"), (NAT_VIP, "nat")].map(|(address, mode)| {
        VipConf::new(address, PORT, "tcp").backends(0..3).keys(&format!("mode = \"{mode}\""))
    });
    let global = format!("tunnel_source_v4 = \"{TUNNEL_SOURCE}\"\nnat_address = [\"{lb}\"]");
    let config = config_toml_with(&bed, &vips, Tables { global: &global, ..Default::default() });
    let agent = Agent::start(&bed, &config, &[]).expect("agent");
    let _haproxy = haproxy(&bed);
    let targets = [
        (Mode::AlwaysOn, format!("{VIP}:{PORT}")),
        (Mode::Tunnel, format!("{TUNNEL_VIP}:{PORT}")),
        (Mode::Nat, format!("{NAT_VIP}:{PORT}")),
        (Mode::Haproxy, format!("{}:{PORT}", bed.lb_v4())),
        (Mode::Direct, format!("{}:{PORT}", bed.backend_v4(0))),
    ];
    for (_, t) in &targets {
        wait_listening(&bed, t);
    }

    // Saturating workloads measure throughput; the light one, the path's own latency.
    let workloads = [
        (format!("keep-alive, {CONNECTIONS} connections"), false, CONNECTIONS),
        (format!("new connection per request, {CONNECTIONS} at a time"), true, CONNECTIONS),
        (format!("light load: keep-alive, {LIGHT} connections"), false, LIGHT),
    ];
    let paths = targets.len();
    let mut runs: Vec<Vec<Vec<Run>>> = vec![vec![Vec::new(); paths]; workloads.len()];
    for round in 0..ROUNDS {
        for (w, (name, close, connections)) in workloads.iter().enumerate() {
            // Rotate the order every round, so no mode always runs first or last.
            for k in 0..paths {
                let m = (k + round) % paths;
                let run = wrk(&bed, &targets[m].1, *close, *connections);
                eprintln!(
                    "round {round} {name}: {} {:.0} req/s p50 {:.3} ms p99 {:.3} ms",
                    targets[m].0.name(),
                    run.rps,
                    run.p50,
                    run.p99
                );
                runs[w][m].push(run);
            }
        }
    }

    let mut table = Table::new(
        "e2e",
        &format!(
            "End to end: wrk -d{SECONDS}s, 3 nginx backends, 2 vCPUs shared by everything; \
             median of {ROUNDS} alternating rounds; one agent serves a VIP of each mode"
        ),
        &["workload", "path", "requests/s", "p50 ms", "p99 ms", "errors", "× HAProxy req/s"],
    );
    let mut chart_rows = Vec::new();
    for (w, (name, _, _)) in workloads.iter().enumerate() {
        let medians: Vec<(f64, f64, f64, u64)> = runs[w]
            .iter()
            .map(|rs| {
                let mut rps: Vec<f64> = rs.iter().map(|r| r.rps).collect();
                let mut p50: Vec<f64> = rs.iter().map(|r| r.p50).collect();
                let mut p99: Vec<f64> = rs.iter().map(|r| r.p99).collect();
                (
                    spread(&mut rps).0,
                    spread(&mut p50).0,
                    spread(&mut p99).0,
                    rs.iter().map(|r| r.errors).sum(),
                )
            })
            .collect();
        let haproxy_rps = medians[Mode::HAPROXY].0;
        for (m, (rps, p50, p99, errors)) in medians.iter().enumerate() {
            table.row(
                &[
                    name.to_string(),
                    Mode::ALL[m].name().into(),
                    format!("{rps:.0}"),
                    format!("{p50:.3}"),
                    format!("{p99:.3}"),
                    errors.to_string(),
                    format!("{:.2}", rps / haproxy_rps),
                ],
                json!({
                    "workload": name, "mode": Mode::ALL[m].name(), "rps_median": rps, "p50_ms": p50, "p99_ms": p99,
                    "runs": runs[w][m].iter().map(|r| json!({"rps": r.rps, "p50_ms": r.p50, "p99_ms": r.p99, "errors": r.errors})).collect::<Vec<_>>(),
                }),
            );
        }
        if w < 2 {
            chart_rows.push((
                if w == 0 { "keep-alive" } else { "new connection per request" },
                medians.iter().map(|m| m.0).collect(),
            ));
        }
    }
    let stats = agent.stats().ok().and_then(|s| s.counters().ok());
    table.finish(json!({"agent_counters": stats.map(|c| c.to_string())}));
    let svg = dir().join("e2e.svg");
    chart(&chart_rows, &svg);
    println!("(chart: {})", svg.display());
}
