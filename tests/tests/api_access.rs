//! Who may use the real agent's listeners (root, on a test bed): the control
//! API's unix socket is root's alone, its TCP listener wants the bearer token,
//! and the web listener serves its read-only pages and nothing else. Refused
//! requests change nothing; answers are checked against docs/openapi.json.

use std::{
    ffi::CString,
    net::SocketAddr,
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _},
    },
    path::Path,
};

use alwayson_tests::{
    agent::WEB_LISTEN,
    api::{
        backend_path, backend_stats, snapshot, start, vip_path, wait_all_up, API_TCP, API_WAIT, NEW_VIP,
        POLL, TOKEN, VIP_NAME,
    },
    bed::TestBed,
    http::{Client, Request},
    require_root, wait_until,
};

#[test]
#[ignore = "needs root"]
fn api_socket_is_for_root_only() {
    require_root("api_socket_is_for_root_only");
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
#[ignore = "needs root"]
fn tcp_listener_needs_the_bearer_token() {
    require_root("tcp_listener_needs_the_bearer_token");
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
#[ignore = "needs root"]
fn web_listener_serves_dashboard_metrics_and_stats_and_nothing_else() {
    require_root("web_listener_serves_dashboard_metrics_and_stats_and_nothing_else");
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
