//! Changes through the control API of the real agent on a test bed (root),
//! every response checked against the status codes and schemas
//! docs/openapi.json gives for its operation: refused requests that change
//! nothing (neither the effective config nor the kernel maps), valid changes
//! that go through. Who may connect is `api_access.rs`; `api_contract.rs` holds
//! the document to api.md and the code.

use std::{path::Path, time::Duration};

use alwayson_tests::{
    agent::{config_toml, VipConf},
    api::{
        backend_path, backend_stats, backends_path, kernel, kernel_backend, snapshot, start, stats, vip_path,
        wait_all_up, wait_state, NEW_VIP, POLL, VIP, VIP_NAME,
    },
    bed::TestBed,
    http::{Client, Request, Response},
    openapi::Doc,
    require_root, wait_until,
};
use lb_common::{types::PROTO_TCP, BackendState, VipKey};
use serde_json::{json, Value};

const NEW_VIP_NAME: &str = "10.77.100.2:80/tcp";
/// A name no VIP has.
const NO_VIP: &str = "10.77.100.9:80/tcp";

/// Whether an error body's `problems` name `field`, the key's whole path as
/// the request names it (`port`, `backend[0].weight`, an unknown key); in a
/// reloaded file, the path ends with it (`vip[0].backend[0] (b0).weight`).
fn names_field(body: &Value, field: &str) -> bool {
    body["problems"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["field"].as_str())
        .any(|f| f == field || f.ends_with(&format!(".{field}")))
}

/// A request the agent must refuse: what to send, the operation it is
/// (template path), the status, and the field `problems` must name.
struct Refused {
    method: &'static str,
    path: String,
    template: &'static str,
    body: Option<String>,
    status: u16,
    field: Option<&'static str>,
}

fn refused(
    method: &'static str,
    path: String,
    template: &'static str,
    body: Option<&str>,
    status: u16,
    field: Option<&'static str>,
) -> Refused {
    Refused { method, path, template, body: body.map(str::to_string), status, field }
}

fn send(api: &Client, method: &str, path: &str, body: Option<&str>) -> Response {
    let request = Request::new(method, path);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    api.send(&request).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The response refuses `case` as the contract says: the status, an Error
/// body the operation documents, a message, and `problems` naming the field.
fn check_refusal(doc: &Doc, case: &Refused, response: &Response) -> Result<(), String> {
    if response.status != case.status {
        return Err(format!("status {}, not {}: {}", response.status, case.status, response.text()));
    }
    let body = doc.conforms(case.method, case.template, response)?;
    if body["error"].as_str().is_none_or(str::is_empty) {
        return Err(format!("no error message: {body}"));
    }
    // A request body is no file: no line and column (docs/api.md).
    let problems = body["problems"].as_array().into_iter().flatten();
    if !case.template.ends_with("/reload") && problems.clone().any(|p| !p["location"].is_null()) {
        return Err(format!("a problem of a request body has a location: {body}"));
    }
    match case.field {
        Some(field) if !names_field(&body, field) => Err(format!("problems do not name {field:?}: {body}")),
        _ => Ok(()),
    }
}

#[test]
#[ignore = "needs root"]
fn refused_requests_change_nothing() {
    require_root("refused_requests_change_nothing");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let (doc, agent, api) = start(&bed, false);
    wait_all_up(&doc, &api, 2);

    const VIPS: &str = "/v1/vips";
    const VIP_T: &str = "/v1/vips/{vip}";
    const BACKENDS_T: &str = "/v1/vips/{vip}/backends";
    const BACKEND_T: &str = "/v1/vips/{vip}/backends/{backend}";
    let vips = || VIPS.to_string();
    let backends = || backends_path(VIP_NAME);
    let backend0 = || backend_path(VIP_NAME, "backend0");
    let new_vip = |extra: &str| format!(r#"{{"address": "{NEW_VIP}", "port": 80{extra}}}"#);
    let cases = [
        // 400: not JSON, or not an object.
        refused("POST", vips(), VIPS, Some(r#"{"address": "#), 400, None),
        refused("POST", vips(), VIPS, Some("[1, 2]"), 400, None),
        refused("POST", backends(), BACKENDS_T, Some(r#"{"address": "#), 400, None),
        refused("PATCH", backend0(), BACKEND_T, Some("not json"), 400, None),
        refused("PATCH", backend0(), BACKEND_T, Some("[0]"), 400, None),
        // 422: unknown keys and bad values, the field named.
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "bogus": 1"#)), 422, Some("bogus")),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&format!(r#"{{"address": "{NEW_VIP}", "port": 70000}}"#)),
            422,
            Some("port"),
        ),
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "protocol": "sctp""#)), 422, Some("protocol")),
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "inter": "5 parsecs""#)), 422, Some("inter")),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&new_vip(
                r#", "backend": [{"address": "10.77.1.12"}, {"address": "10.77.1.13", "wieght": 2}]"#,
            )),
            422,
            Some("backend[1].wieght"),
        ),
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "rise": "2""#)), 422, Some("rise")),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&new_vip(r#", "backend": [{"address": "10.77.1.12", "weight": 999}]"#)),
            422,
            Some("backend[0].weight"),
        ),
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"address": "10.77.1.12", "weight": 999}"#),
            422,
            Some("weight"),
        ),
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"address": "10.77.1.12", "bogus": 1}"#),
            422,
            Some("bogus"),
        ),
        // admin is set by PATCH, it is not a config key.
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"address": "10.77.1.12", "admin": "drain"}"#),
            422,
            Some("admin"),
        ),
        // DSR keeps the IP header: a backend of the other family cannot serve the VIP.
        refused("POST", backends(), BACKENDS_T, Some(r#"{"address": "fd77::1:12"}"#), 422, Some("address")),
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"weight": 999}"#), 422, Some("weight")),
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"weight": -1}"#), 422, Some("weight")),
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"admin": "sleep"}"#), 422, Some("admin")),
        // Nothing of a refused request is applied, not even its valid part.
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"weight": 0, "bogus": true}"#), 422, Some("bogus")),
        refused(
            "PATCH",
            backend0(),
            BACKEND_T,
            Some(r#"{"weight": 0, "admin": "sleep"}"#),
            422,
            Some("admin"),
        ),
        refused("POST", "/v1/reload".into(), "/v1/reload", Some(r#"{"bogus": true}"#), 422, Some("bogus")),
        refused(
            "POST",
            "/v1/reload".into(),
            "/v1/reload",
            Some(r#"{"discard_runtime": "yes"}"#),
            422,
            Some("discard_runtime"),
        ),
        // 404: no such VIP or backend.
        refused("POST", backends_path(NO_VIP), BACKENDS_T, Some(r#"{"address": "10.77.1.12"}"#), 404, None),
        refused("GET", vip_path(NO_VIP), VIP_T, None, 404, None),
        refused("DELETE", vip_path(NO_VIP), VIP_T, None, 404, None),
        refused("PATCH", backend_path(VIP_NAME, "nosuch"), BACKEND_T, Some(r#"{"weight": 1}"#), 404, None),
        refused("PATCH", backend_path(NO_VIP, "backend0"), BACKEND_T, Some(r#"{"weight": 1}"#), 404, None),
        refused("DELETE", backend_path(VIP_NAME, "nosuch"), BACKEND_T, None, 404, None),
        // 409: already there, by address or by name.
        refused("POST", vips(), VIPS, Some(&format!(r#"{{"address": "{VIP}", "port": 80}}"#)), 409, None),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&format!(r#"{{"address": "{VIP}", "port": 80, "protocol": "tcp", "name": "again"}}"#)),
            409,
            None,
        ),
        refused("POST", vips(), VIPS, Some(&new_vip(&format!(r#", "name": "{VIP_NAME}""#))), 409, None),
        refused("POST", backends(), BACKENDS_T, Some(r#"{"address": "10.77.1.10"}"#), 409, None),
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"name": "backend0", "address": "10.77.1.12"}"#),
            409,
            None,
        ),
    ];

    // Every case is tried; the failures are reported together.
    let before = snapshot(&api, &agent);
    let mut failures = Vec::new();
    for case in &cases {
        let what = format!("{} {} {}", case.method, case.path, case.body.as_deref().unwrap_or(""));
        let response = send(&api, case.method, &case.path, case.body.as_deref());
        if let Err(why) = check_refusal(&doc, case, &response) {
            failures.push(format!("{what}: {why}"));
        }
        let after = snapshot(&api, &agent);
        if after != before {
            failures
                .push(format!("{what}: refused ({}) but changed something:\n{after:#?}", response.status));
        }
    }
    // No such route: 404; a route without this method: 405; both with the error body.
    for (method, path, body, status) in [
        ("GET", "/v1/nope", None, 404),
        ("GET", "/v2/vips", None, 404),
        ("PUT", "/v1/vips", Some("{}"), 405),
        ("POST", "/v1/stats", Some("{}"), 405),
    ] {
        let response = send(&api, method, path, body);
        let body = response.json().unwrap_or(Value::Null);
        let errors = doc.errors(doc.schema("Error"), &body);
        if response.status != status || !errors.is_empty() {
            failures.push(format!(
                "{method} {path}: {status} and an Error body per api.md; got {} {:?} {errors:?}",
                response.status,
                response.text()
            ));
        }
        if snapshot(&api, &agent) != before {
            failures.push(format!("{method} {path}: changed something"));
        }
    }
    // A reload of a file that fails validation is refused the same way, and keeps what runs.
    let file = bed.temp_dir().join("alwayson.toml");
    let good = std::fs::read_to_string(&file).expect("the agent's config");
    let bad = config_toml(&bed, &[VipConf::new(VIP, 80, "tcp").backend(0, 999, false).backend(1, 1, false)]);
    std::fs::write(&file, &bad).expect("writing the bad config");
    let response = api.send(&Request::new("POST", "/v1/reload")).expect("POST /v1/reload");
    std::fs::write(&file, &good).expect("restoring the config");
    let reload = refused("POST", "/v1/reload".into(), "/v1/reload", None, 422, Some("weight"));
    if let Err(why) = check_refusal(&doc, &reload, &response) {
        failures.push(format!("POST /v1/reload of an invalid file: {why}"));
    }
    if snapshot(&api, &agent) != before {
        failures.push("POST /v1/reload of an invalid file: changed something".into());
    }
    // A key the schema does not know is named by its path, though the child process parsed it.
    assert!(good.contains("[[vip.backend]]\n"), "{good}");
    let unknown = good.replacen("[[vip.backend]]\n", "[[vip.backend]]\nwieght = 2\n", 1);
    std::fs::write(&file, &unknown).expect("writing the config with an unknown key");
    let response = api.send(&Request::new("POST", "/v1/reload")).expect("POST /v1/reload");
    std::fs::write(&file, &good).expect("restoring the config");
    let reload = refused("POST", "/v1/reload".into(), "/v1/reload", None, 422, Some("wieght"));
    if let Err(why) = check_refusal(&doc, &reload, &response) {
        failures.push(format!("POST /v1/reload of a file with an unknown key: {why}"));
    }
    if snapshot(&api, &agent) != before {
        failures.push("POST /v1/reload of a file with an unknown key: changed something".into());
    }

    // A VIP added once is there; the second time it is a conflict.
    let response = send(&api, "POST", VIPS, Some(&new_vip("")));
    assert_eq!(response.status, 201, "{}", response.text());
    doc.check("POST", VIPS, &response);
    let after_first = snapshot(&api, &agent);
    assert_ne!(after_first, before);
    let twice = refused("POST", vips(), VIPS, Some(&new_vip("")), 409, None);
    let response = send(&api, twice.method, &twice.path, twice.body.as_deref());
    if let Err(why) = check_refusal(&doc, &twice, &response) {
        failures.push(format!("the same VIP added twice: {why}"));
    }
    if snapshot(&api, &agent) != after_first {
        failures.push("the refused second add of a VIP changed something".into());
    }

    assert!(
        failures.is_empty(),
        "{} of {} refusals wrong:\n{}",
        failures.len(),
        cases.len() + 6,
        failures.join("\n")
    );
}

#[test]
#[ignore = "needs root"]
fn valid_changes_go_through() {
    require_root("valid_changes_go_through");
    // Backend 2 is a real server, not in the config: the API adds it.
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let (doc, agent, api) = start(&bed, false);
    wait_all_up(&doc, &api, 2);
    let added = bed.backend_v4(2).to_string();
    let slots = kernel(&agent).backends.len();

    // Add.
    let body = format!(r#"{{"name": "backend2", "address": "{added}"}}"#);
    let response = api.post(&backends_path(VIP_NAME), &body).expect("POST backend");
    assert_eq!(response.status, 201, "{}", response.text());
    let backend = doc.check("POST", "/v1/vips/{vip}/backends", &response);
    assert_eq!((&backend["name"], &backend["address"]), (&json!("backend2"), &json!(added)), "{backend:#}");
    assert_eq!(
        (&backend["port"], &backend["weight"]),
        (&json!(80), &json!(1)),
        "defaults filled in: {backend:#}"
    );
    assert!(kernel_backend(&agent, &added).is_some(), "201, but the kernel has no slot for {added}");
    assert_eq!(kernel(&agent).backends.len(), slots + 1);
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert!(vip_backend(&vip, "backend2").is_some(), "GET shows no backend2: {vip:#}");
    let all = api.get("/v1/vips").expect("GET /v1/vips");
    let all = doc.check("GET", "/v1/vips", &all);
    assert!(all.as_array().is_some_and(|v| v.contains(&vip)), "/v1/vips and /v1/vips/{{vip}} disagree");
    let up = wait_state(&doc, &api, "backend2", "up");
    assert_eq!(up["in_ring"], json!(true), "{up:#}");
    assert_eq!(kernel_backend(&agent, &added).map(|b| b.state), Some(BackendState::Up as u8));

    // Weight 0: drain (no new flows, established ones stay).
    let patched = patch(&doc, &api, "backend2", r#"{"weight": 0}"#);
    assert_eq!(patched["weight"], json!(0), "{patched:#}");
    let drain = wait_state(&doc, &api, "backend2", "drain");
    assert_eq!((&drain["weight"], &drain["in_ring"]), (&json!(0), &json!(false)), "{drain:#}");
    assert_eq!(kernel_backend(&agent, &added).map(|b| b.state), Some(BackendState::Draining as u8));
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert_eq!(
        vip_backend(&vip, "backend2").map(|b| b["weight"].clone()),
        Some(json!(0)),
        "runtime change in GET"
    );

    // Admin maint: out of service, like DOWN; ready and weight 1: back.
    let patched = patch(&doc, &api, "backend2", r#"{"weight": 1, "admin": "maint"}"#);
    assert_eq!(patched["weight"], json!(1), "{patched:#}");
    let maint = wait_state(&doc, &api, "backend2", "maint");
    assert_eq!((&maint["admin"], &maint["in_ring"]), (&json!("maint"), &json!(false)), "{maint:#}");
    assert_eq!(kernel_backend(&agent, &added).map(|b| b.state), Some(BackendState::Down as u8));
    patch(&doc, &api, "backend2", r#"{"admin": "drain"}"#);
    let drain = wait_state(&doc, &api, "backend2", "drain");
    assert_eq!((&drain["admin"], &drain["weight"]), (&json!("drain"), &json!(1)), "{drain:#}");
    patch(&doc, &api, "backend2", r#"{"admin": "ready"}"#);
    let up = wait_state(&doc, &api, "backend2", "up");
    assert_eq!((&up["admin"], &up["in_ring"]), (&json!("ready"), &json!(true)), "{up:#}");

    // A reload replays the runtime changes on the file: the same VIPs as before.
    let response = api.send(&Request::new("POST", "/v1/reload")).expect("POST /v1/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    let reloaded = doc.check("POST", "/v1/reload", &response);
    let report = &reloaded["report"];
    assert_eq!((&report["vips_added"], &report["vips_removed"]), (&json!(0), &json!(0)), "{reloaded:#}");
    assert_eq!(reloaded["dropped"], json!([]), "{reloaded:#}");
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert!(vip_backend(&vip, "backend2").is_some(), "the reload lost the runtime change: {vip:#}");

    // Delete.
    let response = api.delete(&backend_path(VIP_NAME, "backend2")).expect("DELETE backend");
    assert_eq!(response.status, 204, "{}", response.text());
    doc.check("DELETE", "/v1/vips/{vip}/backends/{backend}", &response);
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert!(vip_backend(&vip, "backend2").is_none(), "deleted, but GET shows it: {vip:#}");
    // /v1/stats is sampled (interval_seconds): it shows the change by the next sample.
    wait_until("backend2 gone from /v1/stats", Duration::from_secs(5), POLL, || {
        backend_stats(&stats(&doc, &api), VIP_NAME, "backend2").is_none().then_some(())
    })
    .unwrap();
    assert!(kernel_backend(&agent, &added).is_none(), "deleted, but the kernel still has {added}");
    let response = api.delete(&backend_path(VIP_NAME, "backend2")).expect("DELETE backend");
    assert_eq!(response.status, 404, "deleted twice: {}", response.text());

    // A VIP: added with a backend, in the kernel; discarded by a reload that drops runtime changes.
    let key = VipKey::new(NEW_VIP.parse().expect("VIP"), 80, PROTO_TCP);
    let body = format!(
        r#"{{"address": "{NEW_VIP}", "port": 80, "backend": [{{"address": "{}"}}]}}"#,
        bed.backend_v4(0)
    );
    let response = api.post("/v1/vips", &body).expect("POST VIP");
    assert_eq!(response.status, 201, "{}", response.text());
    let vip = doc.check("POST", "/v1/vips", &response);
    assert_eq!(vip["name"], json!(NEW_VIP_NAME), "the default name: {vip:#}");
    assert!(get_vip(&doc, &api, NEW_VIP_NAME).is_some());
    assert!(agent.stats().expect("maps").vip(&key).expect("VIPS").is_some(), "201, but not in the kernel");
    let runtime = bed.temp_dir().join("runtime.json");
    assert!(runtime_file_mentions(&runtime, NEW_VIP), "{} does not hold the change", runtime.display());
    let response = api.post("/v1/reload", r#"{"discard_runtime": true}"#).expect("POST /v1/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    let reloaded = doc.check("POST", "/v1/reload", &response);
    let report = &reloaded["report"];
    let removed = (&report["vips_removed"], &report["backends_removed"], &report["vips_added"]);
    assert_eq!(removed, (&json!(1), &json!(1), &json!(0)), "the added VIP and its backend go: {reloaded:#}");
    assert!(get_vip(&doc, &api, NEW_VIP_NAME).is_none(), "discard_runtime kept the added VIP");
    assert!(agent.stats().expect("maps").vip(&key).expect("VIPS").is_none(), "discarded, but in the kernel");
    assert!(!runtime_file_mentions(&runtime, NEW_VIP), "discarded, but {} still holds it", runtime.display());

    // Add again and delete the VIP itself.
    let response = api.post("/v1/vips", &body).expect("POST VIP");
    assert_eq!(response.status, 201, "{}", response.text());
    let response = api.delete(&vip_path(NEW_VIP_NAME)).expect("DELETE VIP");
    assert_eq!(response.status, 204, "{}", response.text());
    doc.check("DELETE", "/v1/vips/{vip}", &response);
    assert!(get_vip(&doc, &api, NEW_VIP_NAME).is_none(), "deleted, but GET shows it");
    assert!(agent.stats().expect("maps").vip(&key).expect("VIPS").is_none(), "deleted, but in the kernel");
}

fn patch(doc: &Doc, api: &Client, backend: &str, body: &str) -> Value {
    let response = api.patch(&backend_path(VIP_NAME, backend), body).expect("PATCH");
    assert_eq!(response.status, 200, "PATCH {body}: {}", response.text());
    doc.check("PATCH", "/v1/vips/{vip}/backends/{backend}", &response)
}

/// GET /v1/vips/{vip}: `None` on 404.
fn get_vip(doc: &Doc, api: &Client, name: &str) -> Option<Value> {
    let response = api.get(&vip_path(name)).expect("GET VIP");
    let body = doc.check("GET", "/v1/vips/{vip}", &response);
    match response.status {
        200 => Some(body),
        404 => None,
        status => panic!("GET {name}: {status}"),
    }
}

fn vip_backend(vip: &Value, name: &str) -> Option<Value> {
    vip["backend"].as_array()?.iter().find(|b| b["name"] == name).cloned()
}

/// Whether the runtime-changes file exists and mentions `needle` (a missing file mentions nothing).
fn runtime_file_mentions(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
}
