//! The control API of the real agent on a test bed (root), every response
//! checked against the status codes and schemas docs/openapi.json gives for its
//! operation: who may connect, the bearer token, refused requests that change
//! nothing (neither the effective config nor the kernel maps), valid changes
//! that go through. `api_contract.rs` holds the document to api.md and the code.

use std::{
    ffi::CString,
    net::SocketAddr,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _},
    },
    path::Path,
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, VipConf, WEB_LISTEN},
    api::{
        backend_path, backend_stats, backends_path, kernel, kernel_backend, snapshot, start, stats, vip_path,
        wait_all_up, wait_state, API_TCP, API_WAIT, NEW_VIP, TOKEN, VIP, VIP_NAME,
    },
    bed::TestBed,
    http::{Client, Request, Response},
    openapi::Doc,
    root_or_skip, wait_until,
};
use lb_common::{types::PROTO_TCP, BackendState, VipKey};
use serde_json::{json, Value};

const NEW_VIP_NAME: &str = "10.77.100.2:80/tcp";
/// A name no VIP has.
const NO_VIP: &str = "10.77.100.9:80/tcp";
const POLL: Duration = Duration::from_millis(50);

/// Whether an error body's `problems` name `field`: the field's path ends in
/// it (`port`, `backend[0].weight`), or, for an unknown key, its value is it.
fn names_field(body: &Value, field: &str) -> bool {
    let segments = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(str::to_string).collect()
    };
    body["problems"].as_array().into_iter().flatten().any(|p| {
        let named = p["field"].as_str().is_some_and(|f| segments(f).iter().any(|s| s == field));
        let value = p["value"].as_str().is_some_and(|v| v.trim_matches('"') == field);
        named || value
    })
}

#[test]
fn api_socket_is_for_root_only() {
    root_or_skip!("api_socket_is_for_root_only");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let (doc, agent, api) = start(&bed, false);

    let socket = agent.api_socket();
    let meta = std::fs::metadata(&socket).expect("the socket");
    assert!(meta.file_type().is_socket(), "{} is not a socket", socket.display());
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode of {}", socket.display());
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owner of {}", socket.display());

    match connect_as_nobody(&socket) {
        Err(errno) => assert_eq!(
            errno,
            libc::EACCES,
            "nobody's connect failed, but not with permission denied: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
        Ok(()) => panic!("user nobody connected to the control API socket"),
    }
    // Root (this process) gets the stats.
    let response = api.get("/v1/stats").expect("GET /v1/stats");
    assert_eq!(response.status, 200);
    doc.check("GET", "/v1/stats", &response);
}

/// In a forked child that becomes user nobody: can it connect to the unix
/// socket at `path`? `Err(errno)` of the failed connect. The child first
/// checks that it can see the path at all, so a refusal is the socket's own
/// permissions, not an unsearchable directory on the way.
fn connect_as_nobody(path: &Path) -> Result<(), i32> {
    let (uid, gid) = nobody();
    let bytes = path.as_os_str().as_bytes();
    let c_path = CString::new(bytes).expect("no NUL in the path");
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long for sockaddr_un");
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    const NOT_VISIBLE: i32 = 201;
    // SAFETY: the child only makes system calls (no allocation, no locks) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = unsafe {
            let errno = || *libc::__errno_location();
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                200
            } else {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(c_path.as_ptr(), &mut st) != 0 {
                    NOT_VISIBLE
                } else {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    if fd < 0 {
                        202
                    } else if libc::connect(
                        fd,
                        (&addr as *const libc::sockaddr_un).cast(),
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    ) == 0
                    {
                        0
                    } else {
                        errno()
                    }
                }
            }
        };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "the nobody child did not exit normally: {status}");
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        200 => panic!("could not become nobody ({uid}:{gid})"),
        NOT_VISIBLE => panic!(
            "nobody cannot even see {} (a directory on the way is not searchable): the test proves nothing",
            path.display()
        ),
        202 => panic!("nobody could not create a unix socket"),
        errno => Err(errno),
    }
}

/// Uid and gid of user nobody (65534 if the passwd database has none).
fn nobody() -> (libc::uid_t, libc::gid_t) {
    let name = CString::new("nobody").expect("a C string");
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        (65534, 65534)
    } else {
        unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
    }
}

#[test]
fn tcp_listener_needs_the_bearer_token() {
    root_or_skip!("tcp_listener_needs_the_bearer_token");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let (doc, agent, api) = start(&bed, true);
    let addr: SocketAddr = API_TCP.parse().expect("address");
    let tcp = Client::tcp_in(bed.lb_ns(), addr);
    wait_until("the TCP listener", API_WAIT, POLL, || tcp.get("/v1/stats").ok().map(drop)).unwrap();
    let before = snapshot(&api, &agent);

    let refused: [(&str, Client); 6] = [
        ("no token", tcp.clone()),
        ("a wrong token", tcp.clone().bearer("wrong-token-0123456789abcdef")),
        ("the token cut short", tcp.clone().bearer(&TOKEN[..TOKEN.len() - 1])),
        ("the token and more", tcp.clone().bearer(&format!("{TOKEN}x"))),
        ("the token as Basic credentials", tcp.clone().header("Authorization", &format!("Basic {TOKEN}"))),
        ("the token without a scheme", tcp.clone().header("Authorization", TOKEN)),
    ];
    for (what, client) in &refused {
        let response = client.get("/v1/stats").expect("GET /v1/stats over TCP");
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        doc.check("GET", "/v1/stats", &response);
        // A write is refused before its body is even looked at, and changes nothing.
        let body = format!(r#"{{"address": "{NEW_VIP}", "port": 80}}"#);
        let response = client.post("/v1/vips", &body).expect("POST /v1/vips over TCP");
        assert_eq!(response.status, 401, "{what}, POST /v1/vips: {}", response.text());
        doc.check("POST", "/v1/vips", &response);
        let response = client.post("/v1/vips", r#"{"address": "#).expect("POST /v1/vips over TCP");
        assert_eq!(response.status, 401, "{what}, malformed POST /v1/vips: {}", response.text());
        let response = client.patch(&backend_path(VIP_NAME, "backend0"), r#"{"weight": 0}"#).expect("PATCH");
        assert_eq!(response.status, 401, "{what}, PATCH: {}", response.text());
        let response = client.delete(&vip_path(VIP_NAME)).expect("DELETE");
        assert_eq!(response.status, 401, "{what}, DELETE: {}", response.text());
        assert_eq!(snapshot(&api, &agent), before, "{what}: a refused request changed something");
    }

    let authorized = tcp.clone().bearer(TOKEN);
    let response = authorized.get("/v1/stats").expect("GET /v1/stats over TCP");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("GET", "/v1/stats", &response);
    let response = authorized.get("/v1/vips").expect("GET /v1/vips over TCP");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("GET", "/v1/vips", &response);
    assert_eq!(response.text(), before.vips, "the same effective config on both listeners");
    // The unix socket takes no token.
    let response = api.get("/v1/stats").expect("GET /v1/stats");
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn web_listener_serves_dashboard_metrics_and_stats_and_nothing_else() {
    root_or_skip!("web_listener_serves_dashboard_metrics_and_stats_and_nothing_else");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let (doc, agent, api) = start(&bed, false);
    let web = Client::tcp_in(bed.lb_ns(), WEB_LISTEN.parse().expect("address"));
    wait_until("the web listener", API_WAIT, POLL, || web.get("/api/stats").ok().map(drop)).unwrap();
    wait_all_up(&doc, &api, 2);

    let response = web.get("/api/stats").expect("GET /api/stats");
    assert_eq!(response.status, 200, "{}", response.text());
    let stats = doc.check("GET", "/api/stats", &response);
    assert!(backend_stats(&stats, VIP_NAME, "backend0").is_some(), "{stats:#}");
    let response = web.get("/metrics").expect("GET /metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    let metrics = doc.check("GET", "/metrics", &response);
    for name in ["alwayson_verdicts_total", "alwayson_backend_up", "alwayson_conn_table_capacity"] {
        assert!(metrics.as_str().is_some_and(|m| m.contains(name)), "/metrics has no {name}:\n{metrics}");
    }
    let response = web.get("/").expect("GET /");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("GET", "/", &response);

    // Read-only: the control API is not there, and trying changes nothing.
    let before = snapshot(&api, &agent);
    let body = format!(r#"{{"address": "{NEW_VIP}", "port": 80}}"#);
    for request in [
        Request::new("GET", "/v1/vips"),
        Request::new("GET", "/v1/stats"),
        Request::new("POST", "/v1/vips").json(&body),
        Request::new("PATCH", &backend_path(VIP_NAME, "backend0")).json(r#"{"weight": 0}"#),
        Request::new("DELETE", &vip_path(VIP_NAME)),
        Request::new("POST", "/v1/reload"),
    ] {
        let response = web.send(&request).expect("a request to the web listener");
        assert_eq!(
            response.status,
            404,
            "web listener, {} {}: {}",
            request.method,
            request.path,
            response.text()
        );
    }
    assert_eq!(snapshot(&api, &agent), before);
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
    match case.field {
        Some(field) if !names_field(&body, field) => Err(format!("problems do not name {field:?}: {body}")),
        _ => Ok(()),
    }
}

#[test]
fn refused_requests_change_nothing() {
    root_or_skip!("refused_requests_change_nothing");
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
            Some(&new_vip(r#", "backend": [{"address": "10.77.1.12", "weight": 999}]"#)),
            422,
            Some("weight"),
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
fn valid_changes_go_through() {
    root_or_skip!("valid_changes_go_through");
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

    // A reload replays the runtime changes on the file.
    let response = api.send(&Request::new("POST", "/v1/reload")).expect("POST /v1/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("POST", "/v1/reload", &response);
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
    doc.check("POST", "/v1/reload", &response);
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
