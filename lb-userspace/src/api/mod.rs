//! The agent's HTTP servers: the control API (unix socket, mode 0600; and an
//! optional TCP listener behind a bearer token) and the read-only web listener
//! (dashboard, `/metrics`, `/api/stats`). docs/api.md describes them;
//! docs/openapi.json is checked against [`ROUTES`] by a test.

pub mod client;
mod control;
mod error;
mod web;

use std::{os::unix::fs::PermissionsExt as _, path::Path, sync::Arc};

use anyhow::{Context as _, Result};
use axum::{
    extract::{Request as HttpRequest, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{self, MethodRouter},
    Router,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{error, info};

pub use self::{
    control::Reloaded,
    error::{ApiError, ErrorBody},
};
use crate::{
    config::Config,
    runtime::{AdminStates, Op},
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

/// What an accepted change left behind.
#[derive(Debug, Clone)]
pub struct Applied {
    pub config: Arc<Config>,
    pub admin: AdminStates,
}

/// A change for the reconcile loop, with where to send its answer.
#[derive(Debug)]
pub enum Request {
    /// Runtime operations, applied together or not at all.
    Apply {
        ops: Vec<Op>,
        reply: oneshot::Sender<Result<Applied, ApiError>>,
    },
    Reload {
        discard_runtime: bool,
        reply: oneshot::Sender<Result<Reloaded, ApiError>>,
    },
}

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

/// Binds the unix socket (replacing a stale one), root-only.
fn bind_socket(path: &Path) -> Result<tokio::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("removing the old socket {}", path.display()))
        }
        _ => {}
    }
    let listener =
        tokio::net::UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {} to root", path.display()))?;
    Ok(listener)
}

/// Starts every listener `config` asks for. Servers run until the process exits.
pub async fn serve(config: &Config, shared: Shared) -> Result<()> {
    let api = &config.api;
    let socket = bind_socket(&api.socket)?;
    info!("control API on {} (root only)", api.socket.display());
    let control = control_router(shared.clone());
    tokio::spawn(run("control API socket", axum::serve(socket, control.clone().into_make_service())));

    if let Some(addr) = api.tcp {
        let token = match &api.token {
            Some(crate::config::Token::Value(t)) => t.clone(),
            Some(crate::config::Token::File(path)) => std::fs::read_to_string(path)
                .with_context(|| format!("api.token_file: reading {}", path.display()))?
                .trim()
                .to_string(),
            None => anyhow::bail!("api.tcp needs a token"),
        };
        let listener =
            tokio::net::TcpListener::bind(addr).await.with_context(|| format!("api.tcp: binding {addr}"))?;
        let guarded = control.layer(middleware::from_fn_with_state(Arc::new(token), bearer));
        info!("control API on tcp {addr} (bearer token required)");
        tokio::spawn(run("control API tcp", axum::serve(listener, guarded.into_make_service())));
    }
    if let Some(addr) = config.web.listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("web.listen: binding {addr}"))?;
        info!("dashboard, /metrics and /api/stats on http://{addr}");
        tokio::spawn(run("web listener", axum::serve(listener, web_router(shared).into_make_service())));
    }
    Ok(())
}

async fn run(what: &'static str, server: impl std::future::IntoFuture<Output = std::io::Result<()>>) {
    if let Err(e) = server.await {
        error!("{what} stopped: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
