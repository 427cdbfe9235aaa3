//! The read-only listener: the dashboard, `/metrics`, `/api/stats`.

use std::sync::Arc;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
};

use super::Shared;
use crate::stats::metrics;

const DASHBOARD: &str = include_str!("../web/dashboard.html");
/// The page is self-contained: nothing may load from elsewhere.
const CSP: &str = "default-src 'self'; style-src 'self' 'unsafe-inline'; script-src 'self' 'unsafe-inline'";

pub async fn dashboard() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-store"),
        ],
        DASHBOARD,
    )
        .into_response()
}

pub async fn metrics(State(shared): State<Shared>) -> Response {
    let snapshot = shared.stats.borrow().clone();
    match metrics::render(snapshot, Arc::clone(&shared.timings)) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
