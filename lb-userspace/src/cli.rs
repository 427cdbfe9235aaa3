//! The operator's commands that talk to a running agent over its control API:
//! `stats`, `vip …`, `backend …`, `reload`.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};
use axum::http::{Method, StatusCode};
use serde_json::{json, Value as Json};

use crate::{
    api::client::{segment, Answer, Client},
    cluster::member::Source,
    config::{Config, ConfigError},
    reconcile::ApplyReport,
    stats::Stats,
};

/// The agent's socket: given, or the one its config names.
pub fn socket(socket: Option<PathBuf>, config: &Path) -> Result<PathBuf> {
    match socket {
        Some(s) => Ok(s),
        None => match Config::load(config) {
            Ok(config) => Ok(config.api.socket),
            Err(ConfigError::Read { path, error }) => Err(anyhow!(
                "no agent config to find the API socket in ({}: {error}): give the running agent's \
                 config with --config FILE, or its socket with --socket PATH",
                path.display()
            )),
            Err(e) => Err(anyhow!(e).context(format!("finding the API socket in {}", config.display()))),
        },
    }
}

fn expect(answer: Answer, ok: &[StatusCode]) -> Result<Json> {
    if ok.contains(&answer.status) {
        return Ok(answer.body);
    }
    let mut message = answer.body.get("error").and_then(|e| e.as_str()).unwrap_or("").to_string();
    if let Some(problems) = answer.body.get("problems").and_then(|p| p.as_array()) {
        for p in problems {
            let _ = write!(
                message,
                "\n  {} = {}: {}",
                p["field"].as_str().unwrap_or(""),
                p["value"].as_str().unwrap_or(""),
                p["reason"].as_str().unwrap_or("")
            );
        }
    }
    bail!("the agent answered {}: {message}", answer.status)
}

pub async fn stats(client: &Client, json: bool, watch: Option<u64>) -> Result<()> {
    loop {
        let body = expect(client.send(Method::GET, "/v1/stats", None).await?, &[StatusCode::OK])?;
        if json {
            println!("{}", serde_json::to_string_pretty(&body)?);
        } else {
            let stats: Stats = serde_json::from_value(body).context("reading the stats")?;
            if watch.is_some() {
                // Clear the screen between refreshes.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", table(&stats));
        }
        match watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
            None => return Ok(()),
        }
    }
}

fn human(value: f64, unit: &str) -> String {
    let (v, prefix) = match value {
        v if v >= 1e9 => (v / 1e9, "G"),
        v if v >= 1e6 => (v / 1e6, "M"),
        v if v >= 1e3 => (v / 1e3, "k"),
        v => (v, ""),
    };
    format!("{v:.1}{prefix}{unit}")
}

/// The stats as a table per VIP and backend, then the drop reasons.
pub fn table(stats: &Stats) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "uptime {:.0}s   conn table {}/{}   verdicts: {}",
        stats.uptime_seconds,
        stats.conn_table.entries,
        stats.conn_table.capacity,
        stats.verdicts.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    if let Some(c) = &stats.cluster {
        let source = c.source.map_or("starting", Source::name);
        let _ = writeln!(
            out,
            "cluster: node {}, rings from {source}; live {}; peers heard {}",
            c.node,
            c.live_nodes.join(","),
            if c.peers_heard.is_empty() { "none".into() } else { c.peers_heard.join(",") }
        );
        if let Some(why) = &c.withdrawn_because {
            let _ = writeln!(out, "  withdrawn: {why}");
        }
        if !c.digests_differ.is_empty() {
            let _ = writeln!(out, "  rings differ from the majority's: {}", c.digests_differ.join(", "));
        }
        if let Some(e) = &c.etcd_error {
            let _ = writeln!(out, "  etcd: {e}");
        }
    }
    if let Some(bgp) = &stats.bgp {
        let routes: Vec<String> = bgp.routes.iter().map(|r| format!("{} {}", r.address, r.state)).collect();
        let _ = writeln!(
            out,
            "announced (BGP): {}",
            if routes.is_empty() { "nothing".into() } else { routes.join(", ") }
        );
        for s in &bgp.sessions {
            let state = if s.established { "established" } else { &s.state };
            let _ = writeln!(out, "  neighbour {} AS{}: {state} {}", s.neighbor, s.asn, s.info);
        }
        if let Some(e) = &bgp.bird_error {
            let _ = writeln!(out, "  BIRD: {e}");
        }
        if !bgp.keeper_alive {
            let _ = writeln!(out, "  the device the routes hang on is gone: nothing is announced");
        }
    }
    for vip in &stats.vips {
        let t = &vip.traffic;
        let _ = writeln!(
            out,
            "\nVIP {} {}:{}/{} {}   {} {}   packets {} bytes {} new flows {}",
            vip.name,
            vip.address,
            vip.port,
            vip.protocol,
            vip.mode,
            human(t.pps, "pps"),
            human(t.bps, "bps"),
            t.packets,
            t.bytes,
            t.new_flows
        );
        let _ = writeln!(
            out,
            "  {:<20} {:<24} {:<6} {:>6} {:>4} {:>10} {:>10} {:>12} {:>14} {:>10}",
            "backend", "address", "state", "weight", "ring", "pps", "bps", "packets", "bytes", "new flows"
        );
        for b in &vip.backends {
            let t = &b.traffic;
            let addr = std::net::SocketAddr::new(b.address, b.port).to_string();
            let weight = if b.backup { format!("{}b", b.weight) } else { b.weight.to_string() };
            let _ = writeln!(
                out,
                "  {:<20} {:<24} {:<6} {:>6} {:>4} {:>10} {:>10} {:>12} {:>14} {:>10}",
                b.name,
                addr,
                b.state,
                weight,
                if b.in_ring { "yes" } else { "no" },
                human(t.pps, ""),
                human(t.bps, ""),
                t.packets,
                t.bytes,
                t.new_flows
            );
        }
    }
    let drops: Vec<String> =
        stats.drops.iter().filter(|(_, v)| **v > 0).map(|(k, v)| format!("{k}={v}")).collect();
    let _ = writeln!(out, "\ndrops: {}", if drops.is_empty() { "none".into() } else { drops.join(" ") });
    out
}

pub async fn vip_list(client: &Client) -> Result<()> {
    let body = expect(client.send(Method::GET, "/v1/vips", None).await?, &[StatusCode::OK])?;
    for vip in body.as_array().into_iter().flatten() {
        let backends: Vec<&str> =
            vip["backend"].as_array().into_iter().flatten().filter_map(|b| b["name"].as_str()).collect();
        println!(
            "{}  {}:{}/{}  backends: {}",
            vip["name"].as_str().unwrap_or("?"),
            vip["address"].as_str().unwrap_or("?"),
            vip["port"],
            vip["protocol"].as_str().unwrap_or("?"),
            backends.join(", ")
        );
    }
    Ok(())
}

pub async fn vip_add(client: &Client, vip: Json) -> Result<()> {
    let body = expect(client.send(Method::POST, "/v1/vips", Some(&vip)).await?, &[StatusCode::CREATED])?;
    println!("added VIP {}", body["name"].as_str().unwrap_or("?"));
    Ok(())
}

pub async fn vip_remove(client: &Client, name: &str) -> Result<()> {
    let path = format!("/v1/vips/{}", segment(name));
    expect(client.send(Method::DELETE, &path, None).await?, &[StatusCode::NO_CONTENT])?;
    println!("removed VIP {name}");
    Ok(())
}

pub async fn backend_add(client: &Client, vip: &str, backend: Json) -> Result<()> {
    let path = format!("/v1/vips/{}/backends", segment(vip));
    let body = expect(client.send(Method::POST, &path, Some(&backend)).await?, &[StatusCode::CREATED])?;
    println!("added backend {} to {vip}", body["name"].as_str().unwrap_or("?"));
    Ok(())
}

pub async fn backend_remove(client: &Client, vip: &str, name: &str) -> Result<()> {
    let path = format!("/v1/vips/{}/backends/{}", segment(vip), segment(name));
    expect(client.send(Method::DELETE, &path, None).await?, &[StatusCode::NO_CONTENT])?;
    println!("removed backend {name} from {vip}");
    Ok(())
}

pub async fn backend_set(
    client: &Client,
    vip: &str,
    name: &str,
    weight: Option<u32>,
    state: Option<String>,
) -> Result<()> {
    let mut patch = json!({});
    if let Some(w) = weight {
        patch["weight"] = json!(w);
    }
    if let Some(s) = state {
        patch["admin"] = json!(s);
    }
    let path = format!("/v1/vips/{}/backends/{}", segment(vip), segment(name));
    let body = expect(client.send(Method::PATCH, &path, Some(&patch)).await?, &[StatusCode::OK])?;
    println!(
        "backend {name} of {vip}: weight {} admin {}",
        body["weight"],
        body["admin"].as_str().unwrap_or("?")
    );
    Ok(())
}

pub async fn reload(client: &Client, discard_runtime: bool) -> Result<()> {
    let body = json!({ "discard_runtime": discard_runtime });
    let answer = expect(client.send(Method::POST, "/v1/reload", Some(&body)).await?, &[StatusCode::OK])?;
    // An answer this build cannot read is still shown, as the agent gave it.
    match serde_json::from_value::<ApplyReport>(answer["report"].clone()) {
        Ok(report) => println!("reloaded: {report}"),
        Err(_) => println!("reloaded: {}", answer["report"]),
    }
    for d in answer["dropped"].as_array().into_iter().flatten() {
        println!("dropped runtime change: {}", d.as_str().unwrap_or(""));
    }
    Ok(())
}
