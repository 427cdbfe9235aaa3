//! A live agent's control API, set up the way the API tests (`tests/api*.rs`)
//! meet it: the agent on a known config, its unix-socket client and
//! docs/openapi.json to check answers against, stats lookups, waits for
//! backend states, and snapshots of what the agent and the kernel hold.
//! These are test steps: they panic, with a message, when something is off.

use std::{net::IpAddr, time::Duration};

use lb_common::{types::PROTO_TCP, Backend, VipKey, VipValue};
use serde_json::{json, Value};

use crate::{
    agent::{config_toml_with, find_backend, Agent, Tables, VipConf},
    bed::{TestBed, VIP4},
    http::{percent_encode, Client},
    openapi::Doc,
    wait::wait_until,
};

/// The config's VIP ([`config`]) on port 80/tcp.
pub const VIP: &str = VIP4;
/// The config VIP's default name, `<address>:<port>/<protocol>`.
pub const VIP_NAME: &str = "10.77.100.1:80/tcp";
/// A VIP that is not in the config (added through the API in some tests).
pub const NEW_VIP: &str = "10.77.100.2";
/// The control API's TCP listener, when [`config`] asks for it.
pub const API_TCP: &str = "127.0.0.1:9181";
pub const TOKEN: &str = "api-test-token-0123456789abcdef";
/// How long a listener may take to answer after the agent applied its config.
pub const API_WAIT: Duration = Duration::from_secs(10);
/// How often the API tests look again while they wait.
pub const POLL: Duration = Duration::from_millis(50);

/// `/v1/vips/{vip}`, the name percent-encoded.
pub fn vip_path(vip: &str) -> String {
    format!("/v1/vips/{}", percent_encode(vip))
}

pub fn backends_path(vip: &str) -> String {
    format!("{}/backends", vip_path(vip))
}

pub fn backend_path(vip: &str, backend: &str) -> String {
    format!("{}/backends/{}", vip_path(vip), percent_encode(backend))
}

/// The initial config: [`VIP`]:80/tcp on backends 0 and 1; with `tcp`, the
/// control API also on [`API_TCP`] with the bearer [`TOKEN`].
pub fn config(bed: &TestBed, tcp: bool) -> String {
    let api = if tcp { format!("tcp = \"{API_TCP}\"\ntoken = \"{TOKEN}\"") } else { String::new() };
    config_toml_with(
        bed,
        &[VipConf::new(VIP, 80, "tcp").backends(0..2)],
        Tables { api: &api, ..Tables::default() },
    )
}

/// The agent on [`config`] with the document to check it against, and its
/// unix-socket client once the API answers.
pub fn start(bed: &TestBed, tcp: bool) -> (Doc, Agent<'_>, Client) {
    let agent = Agent::start(bed, &config(bed, tcp), &[]).expect("agent");
    let api = Client::unix(agent.api_socket());
    wait_until("the control API on its unix socket", API_WAIT, POLL, || {
        api.get("/v1/stats").ok().filter(|r| r.status == 200).map(drop)
    })
    .unwrap();
    (Doc::load(), agent, api)
}

/// `GET /v1/stats`: 200, checked against the document.
pub fn stats(doc: &Doc, api: &Client) -> Value {
    let response = api.get("/v1/stats").expect("GET /v1/stats");
    assert_eq!(response.status, 200, "GET /v1/stats: {}", response.text());
    doc.check("GET", "/v1/stats", &response)
}

/// `/v1/stats`' entry for a backend of a VIP.
pub fn backend_stats(stats: &Value, vip: &str, backend: &str) -> Option<Value> {
    let vip = stats["vips"].as_array()?.iter().find(|v| v["name"] == vip)?;
    vip["backends"].as_array()?.iter().find(|b| b["name"] == backend).cloned()
}

/// Waits until `/v1/stats` shows `backend` of [`VIP_NAME`] in `state`; its entry.
pub fn wait_state(doc: &Doc, api: &Client, backend: &str, state: &str) -> Value {
    wait_until(&format!("{backend} in state {state}"), Duration::from_secs(10), POLL, || {
        backend_stats(&stats(doc, api), VIP_NAME, backend).filter(|b| b["state"] == state)
    })
    .unwrap()
}

/// Waits until every backend of the config VIP is up: health settled, so the
/// maps only change when a request changes them.
pub fn wait_all_up(doc: &Doc, api: &Client, n: usize) {
    wait_until(&format!("{n} backends up"), Duration::from_secs(15), POLL, || {
        let stats = stats(doc, api);
        let vip = stats["vips"].as_array()?.iter().find(|v| v["name"] == VIP_NAME)?.clone();
        let backends = vip["backends"].as_array()?;
        let up = backends.iter().filter(|b| b["state"] == "up" && b["in_ring"] == json!(true)).count();
        (backends.len() == n && up == n).then_some(())
    })
    .unwrap()
}

/// What the kernel holds: the entries of [`VIP`] and [`NEW_VIP`] (port 80/tcp)
/// and every backend slot in use.
#[derive(Debug, PartialEq)]
pub struct Kernel {
    pub vips: Vec<(&'static str, Option<VipValue>)>,
    pub backends: Vec<(u32, Backend)>,
}

pub fn kernel(agent: &Agent) -> Kernel {
    let stats = agent.stats().expect("pinned maps");
    let key = |addr: &str| VipKey::new(addr.parse().expect("VIP"), 80, PROTO_TCP);
    Kernel {
        vips: [VIP, NEW_VIP].into_iter().map(|a| (a, stats.vip(&key(a)).expect("VIPS"))).collect(),
        backends: stats.backends().expect("BACKENDS"),
    }
}

/// The kernel's slot for backend `addr`, if any.
pub fn kernel_backend(agent: &Agent, addr: &str) -> Option<Backend> {
    let addr: IpAddr = addr.parse().expect("address");
    let stats = agent.stats().expect("pinned maps");
    find_backend(&stats, addr).expect("BACKENDS").map(|(_, b)| b)
}

/// The effective config and the kernel maps, to compare before and after a request.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub vips: String,
    pub kernel: Kernel,
}

pub fn snapshot(api: &Client, agent: &Agent) -> Snapshot {
    let response = api.get("/v1/vips").expect("GET /v1/vips");
    assert_eq!(response.status, 200, "GET /v1/vips: {}", response.text());
    Snapshot { vips: response.text(), kernel: kernel(agent) }
}
