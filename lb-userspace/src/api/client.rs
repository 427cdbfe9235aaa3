//! The CLI's side of the control API: one HTTP/1.1 request over the unix socket.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use axum::{
    body::Bytes,
    http::{header, Method, Request, StatusCode},
};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value as Json;

pub struct Client {
    socket: PathBuf,
}

/// An answer: the status and the body (JSON where the agent sends JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Json,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self { socket: socket.to_owned() }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<&Json>) -> Result<Answer> {
        let stream = tokio::net::UnixStream::connect(&self.socket).await.with_context(|| {
            format!(
                "connecting to the agent at {} (is `alwayson run` running? are you root?)",
                self.socket.display()
            )
        })?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "alwayson")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))?;
        let response = sender.send_request(request).await.context("sending the request")?;
        let status = response.status();
        let body = response.into_body().collect().await.context("reading the answer")?.to_bytes();
        let body = serde_json::from_slice(&body)
            .unwrap_or_else(|_| Json::String(String::from_utf8_lossy(&body).into()));
        Ok(Answer { status, body })
    }
}

/// Percent-encodes a VIP or backend name for a path segment.
pub fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
