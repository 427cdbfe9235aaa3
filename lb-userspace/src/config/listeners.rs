//! `[api]` and `[web]`: where the control API and the read-only web listener
//! (dashboard, metrics) listen.

use std::{net::SocketAddr, path::Path};

use super::{
    problems::Problems,
    raw::{RawApi, RawWeb},
    values::{absolute, in_range},
    Api, Token, Web,
};

/// Runtime files (API socket, runtime changes) live here, one set per interface.
pub const DEFAULT_RUN_DIR: &str = "/run/alwayson";
pub const DEFAULT_WEB_LISTEN: &str = "127.0.0.1:9180";
/// Short tokens are guessable; this many bytes at least.
const MIN_TOKEN_LEN: usize = 16;
/// Connections a listener serves at once unless the file says otherwise.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 128;
const MAX_CONNECTIONS: std::ops::RangeInclusive<i64> = 1..=65_536;

fn socket_addr(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| "not an address:port, e.g. 127.0.0.1:9181 or [::1]:9181".into())
}

/// The token travels in clear over plain HTTP: only over loopback.
fn api_tcp(s: &str) -> Result<SocketAddr, String> {
    let addr = socket_addr(s)?;
    if addr.ip().is_loopback() {
        Ok(addr)
    } else {
        Err("the bearer token would travel in clear: listen on a loopback address (127.0.0.1, ::1) \
             and reach it remotely through a TLS terminator or an SSH tunnel"
            .into())
    }
}

/// What a token must be, written in the file or read from `token_file`.
pub fn token(s: &str) -> Result<String, String> {
    if s.len() < MIN_TOKEN_LEN || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Err(format!("must be at least {MIN_TOKEN_LEN} characters, no whitespace"))
    } else {
        Ok(s.to_owned())
    }
}

pub(super) fn api(raw: Option<&RawApi>, interface: Option<&str>, p: &mut Problems) -> Option<Api> {
    let default = |suffix: &str| interface.map(|i| Path::new(DEFAULT_RUN_DIR).join(format!("{i}{suffix}")));
    let empty = RawApi::default();
    let raw = raw.unwrap_or(&empty);
    let socket = match &raw.socket {
        Some(s) => p.check("api.socket".into(), s, |s| absolute(s)),
        None => default(".sock"),
    };
    let runtime_file = match &raw.runtime_file {
        Some(s) => p.check("api.runtime_file".into(), s, |s| absolute(s)),
        None => default(".runtime.json"),
    };
    let tcp = raw.tcp.as_ref().map(|s| p.check("api.tcp".into(), s, |s| api_tcp(s)));
    let max_connections = max_connections(raw.max_connections.as_ref(), "api", p);
    let value = raw.token.as_ref().map(|s| p.check("api.token".into(), s, |s| token(s)));
    let file = raw.token_file.as_ref().map(|s| p.check("api.token_file".into(), s, |s| absolute(s)));
    let token = match (value, file) {
        (Some(v), None) => Some(v.map(Token::Value)),
        (None, Some(f)) => Some(f.map(Token::File)),
        (None, None) => None,
        (Some(_), Some(_)) => {
            let span = raw.token_file.as_ref().map(|s| s.span());
            p.add(
                "api.token_file".into(),
                "…".into(),
                "give either api.token or api.token_file".into(),
                span,
            );
            Some(None)
        }
    };
    if let (Some(Some(_)), None) = (&tcp, &token) {
        let span = raw.tcp.as_ref().map(|s| s.span());
        let reason = "the TCP listener needs api.token or api.token_file (bearer authentication)";
        p.add(
            "api.tcp".into(),
            raw.tcp.as_ref().map(|s| format!("{:?}", s.get_ref())).unwrap_or_default(),
            reason.into(),
            span,
        );
        return None;
    }
    Some(Api {
        socket: socket?,
        tcp: match tcp {
            Some(t) => Some(t?),
            None => None,
        },
        token: match token {
            Some(t) => Some(t?),
            None => None,
        },
        runtime_file: runtime_file?,
        allow_exec: raw.allow_exec.unwrap_or(false),
        max_connections: max_connections?,
    })
}

fn max_connections(raw: Option<&toml::Spanned<i64>>, section: &str, p: &mut Problems) -> Option<u32> {
    let field = format!("{section}.max_connections");
    p.check_or(field, raw, DEFAULT_MAX_CONNECTIONS, in_range(MAX_CONNECTIONS))
}

pub(super) fn web(raw: Option<&RawWeb>, p: &mut Problems) -> Option<Web> {
    let max_connections = max_connections(raw.and_then(|r| r.max_connections.as_ref()), "web", p);
    let listen = match raw.and_then(|r| r.listen.as_ref()) {
        Some(s) if s.get_ref() == "off" => None,
        Some(s) => Some(p.check("web.listen".into(), s, |s| socket_addr(s))?),
        None => Some(DEFAULT_WEB_LISTEN.parse().expect("a valid default")),
    };
    Some(Web { listen, max_connections: max_connections? })
}

impl Token {
    /// The secret: as written in the file, or read from `token_file` (without
    /// its trailing newline) and held to the same rules. The error names the key.
    pub fn secret(&self) -> Result<String, String> {
        match self {
            Token::Value(t) => Ok(t.clone()),
            Token::File(path) => {
                let shown = path.display();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("api.token_file = {shown:?}: cannot be read: {e}"))?;
                token(text.trim_end_matches(['\n', '\r']))
                    .map_err(|reason| format!("api.token_file = {shown:?}: its contents {reason}"))
            }
        }
    }
}
