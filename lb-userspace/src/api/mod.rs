//! The agent's HTTP servers: the control API (unix socket, mode 0600; and an
//! optional TCP listener behind a bearer token) and the read-only web listener
//! (dashboard, `/metrics`, `/api/stats`). docs/api.md describes them;
//! docs/openapi.json is checked against [`ROUTES`] by a test.

pub mod client;
mod control;
mod error;
mod serve;
mod socket;
mod web;

use std::sync::Arc;

use anyhow::{Context as _, Result};
use axum::{
    extract::{Request as HttpRequest, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{self, MethodRouter},
    Router,
};
use tokio::sync::{mpsc, watch};
use tracing::info;

pub use self::{
    error::{ApiError, ErrorBody},
    serve::{Caller, HEADER_TIMEOUT, IDLE_TIMEOUT},
    socket::SocketFile,
};
use crate::{
    agent::inbox::{Applied, Request},
    config::Config,
    stats::{Snapshot, Timings},
};

/// Every (method, path) served, in OpenAPI template syntax (axum's too).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/v1/stats"),
    ("GET", "/v1/vips"),
    ("POST", "/v1/vips"),
    ("GET", "/v1/vips/{vip}"),
    ("DELETE", "/v1/vips/{vip}"),
    ("POST", "/v1/vips/{vip}/backends"),
    ("PATCH", "/v1/vips/{vip}/backends/{backend}"),
    ("DELETE", "/v1/vips/{vip}/backends/{backend}"),
    ("POST", "/v1/reload"),
    ("GET", "/"),
    ("GET", "/metrics"),
    ("GET", "/api/stats"),
];

/// What every handler can reach.
#[derive(Clone)]
pub struct Shared {
    pub requests: mpsc::Sender<Request>,
    pub stats: watch::Receiver<Arc<Snapshot>>,
    /// The effective config and admin states, as last applied.
    pub config: watch::Receiver<Arc<Applied>>,
    pub timings: Arc<Timings>,
}

fn handler(method: &str, path: &str) -> MethodRouter<Shared> {
    match (method, path) {
        ("GET", "/v1/stats") | ("GET", "/api/stats") => routing::get(control::stats),
        ("GET", "/v1/vips") => routing::get(control::list_vips),
        ("POST", "/v1/vips") => routing::post(control::add_vip),
        ("GET", "/v1/vips/{vip}") => routing::get(control::get_vip),
        ("DELETE", "/v1/vips/{vip}") => routing::delete(control::remove_vip),
        ("POST", "/v1/vips/{vip}/backends") => routing::post(control::add_backend),
        ("PATCH", "/v1/vips/{vip}/backends/{backend}") => routing::patch(control::patch_backend),
        ("DELETE", "/v1/vips/{vip}/backends/{backend}") => routing::delete(control::remove_backend),
        ("POST", "/v1/reload") => routing::post(control::reload),
        ("GET", "/") => routing::get(web::dashboard),
        ("GET", "/metrics") => routing::get(web::metrics),
        _ => unreachable!("ROUTES lists {method} {path} without a handler"),
    }
}

/// The routes of `ROUTES` whose path passes `keep`, merged per path.
fn router(shared: Shared, keep: impl Fn(&str) -> bool) -> Router {
    let mut by_path: Vec<(&str, MethodRouter<Shared>)> = Vec::new();
    for (method, path) in ROUTES.iter().filter(|(_, p)| keep(p)) {
        match by_path.iter_mut().find(|(p, _)| p == path) {
            Some((_, existing)) => *existing = std::mem::take(existing).merge(handler(method, path)),
            None => by_path.push((path, handler(method, path))),
        }
    }
    let mut router = Router::new();
    for (path, methods) in by_path {
        router = router.route(path, methods);
    }
    router
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this path does not take that method")
        })
        .with_state(shared)
}

fn is_control(path: &str) -> bool {
    path.starts_with("/v1/")
}

/// The control API's router (also for tests, without a socket).
pub fn control_router(shared: Shared) -> Router {
    router(shared, is_control)
}

pub fn web_router(shared: Shared) -> Router {
    router(shared, |p| !is_control(p))
}

async fn bearer(State(token): State<Arc<String>>, request: HttpRequest, next: Next) -> Response {
    let given = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let expected = format!("Bearer {token}");
    // Compare without an early exit, so timing does not reveal the token.
    let ok = given.is_some_and(|g| {
        g.len() == expected.len()
            && g.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    });
    if ok {
        next.run(request).await
    } else {
        let mut response =
            ApiError::new(StatusCode::UNAUTHORIZED, "missing or wrong bearer token").into_response();
        response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        response
    }
}

/// Every listener the config asks for, bound before the agent touches the
/// kernel: a port or socket that is taken fails the start before anything
/// changed, and nothing is announced before it can be served.
pub struct Listeners {
    socket: tokio::net::UnixListener,
    socket_file: SocketFile,
    /// The TCP listener and its bearer token.
    tcp: Option<(tokio::net::TcpListener, String)>,
    web: Option<tokio::net::TcpListener>,
    api_max: u32,
    web_max: u32,
}

impl Listeners {
    pub async fn bind(config: &Config) -> Result<Self> {
        let api = &config.api;
        let (socket, socket_file) = socket::bind(&api.socket)?;
        let tcp = match api.tcp {
            Some(addr) => {
                let token = api.token.as_ref().context("api.tcp needs a token")?;
                let token = token.secret().map_err(anyhow::Error::msg)?;
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("api.tcp: binding {addr}"))?;
                Some((listener, token))
            }
            None => None,
        };
        let web = match config.web.listen {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("web.listen: binding {addr}"))?,
            ),
            None => None,
        };
        Ok(Self {
            socket,
            socket_file,
            tcp,
            web,
            api_max: api.max_connections,
            web_max: config.web.max_connections,
        })
    }

    /// Serves every listener until the process exits. Returns the socket
    /// file, for the agent to remove when it stops.
    pub fn serve(self, shared: Shared) -> SocketFile {
        let timings = Arc::clone(&shared.timings);
        let control = control_router(shared.clone());
        info!("control API on {} (root only)", self.socket_file.path().display());
        let counts = timings.listener("control_socket");
        tokio::spawn(serve::serve("api.socket", self.socket, control.clone(), self.api_max, counts));
        if let Some((listener, token)) = self.tcp {
            if let Ok(addr) = listener.local_addr() {
                info!("control API on tcp {addr} (bearer token required)");
            }
            let guarded = control.layer(middleware::from_fn_with_state(Arc::new(token), bearer));
            let counts = timings.listener("control_tcp");
            tokio::spawn(serve::serve("api.tcp", listener, guarded, self.api_max, counts));
        }
        if let Some(listener) = self.web {
            if let Ok(addr) = listener.local_addr() {
                info!("dashboard, /metrics and /api/stats on http://{addr}");
            }
            let counts = timings.listener("web");
            tokio::spawn(serve::serve("web.listen", listener, web_router(shared), self.web_max, counts));
        }
        self.socket_file
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::AdminStates;

    #[test]
    fn every_route_has_a_handler_and_routers_build() {
        for (method, path) in ROUTES {
            let _ = handler(method, path);
        }
        let (requests, _) = mpsc::channel(1);
        let shared = Shared {
            requests,
            stats: watch::channel(Arc::new(Snapshot::default())).1,
            config: watch::channel(Arc::new(Applied {
                config: Arc::new(Config::from_toml("[global]\ninterface = \"lo\"\n").unwrap()),
                admin: AdminStates::new(),
            }))
            .1,
            timings: Arc::new(Timings::default()),
        };
        let _ = control_router(shared.clone());
        let _ = web_router(shared);
    }
}
