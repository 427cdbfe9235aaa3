//! The HTTP/1.1 client of tests of the agent's API and web listener:
//! hyper's, one request per connection (`Connection: close`), the response
//! read to where its framing ends. The tests open the socket themselves
//! (src/http/exchange.rs takes it from there) so that a TCP connection can be made
//! from inside a network namespace; what a test sends deliberately malformed
//! or partial is no request and goes over a raw socket instead.
//!
//! The agent runs in the bed's LB namespace: its TCP listeners on 127.0.0.1
//! are only reachable from inside it, so [`Client::tcp_in`] opens each
//! connection on a thread that has entered that namespace (a socket stays in
//! the namespace it was created in). Unix sockets are just paths.
//!
//! ```text
//! let api = Client::unix(agent.api_socket());
//! let stats = api.get("/v1/stats")?.json()?;
//! let tcp = Client::tcp_in(bed.lb_ns(), "127.0.0.1:9181".parse()?).bearer(TOKEN);
//! let response = tcp.patch("/v1/vips/web/backends/web1", r#"{"weight": 0}"#)?;
//! ```

mod exchange;
mod response;
#[cfg(test)]
mod tests;

use std::{
    io,
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use self::exchange::{exchange, Socket};
pub use self::response::Response;
use crate::netns::{self, Netns};

/// A request's bound unless [`Client::timeout`] says otherwise: once for a
/// TCP connect, once for the exchange (the request out, the whole response in).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a [`Client`] connects.
#[derive(Clone, Debug)]
pub enum Endpoint {
    /// A unix stream socket (the control API).
    Unix(PathBuf),
    /// A TCP listener; `netns`: the namespace to connect from (`None`: the caller's).
    Tcp { addr: SocketAddr, netns: Option<String> },
}

/// Sends [`Request`]s to one endpoint, a new connection each.
#[derive(Clone, Debug)]
pub struct Client {
    endpoint: Endpoint,
    /// Sent with every request (e.g. `Authorization`).
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint, headers: Vec::new(), timeout: DEFAULT_TIMEOUT }
    }

    /// The control API's unix socket at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Self::new(Endpoint::Unix(path.into()))
    }

    /// A TCP listener inside `ns` (e.g. the agent's, in `bed.lb_ns()`).
    pub fn tcp_in(ns: &Netns, addr: SocketAddr) -> Self {
        Self::new(Endpoint::Tcp { addr, netns: Some(ns.name().to_string()) })
    }

    /// Adds a header to every request of this client.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// `Authorization: Bearer <token>` on every request.
    pub fn bearer(self, token: &str) -> Self {
        self.header("Authorization", &format!("Bearer {token}"))
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn get(&self, path: &str) -> io::Result<Response> {
        self.send(&Request::new("GET", path))
    }

    pub fn delete(&self, path: &str) -> io::Result<Response> {
        self.send(&Request::new("DELETE", path))
    }

    /// POST with a JSON body.
    pub fn post(&self, path: &str, json: &str) -> io::Result<Response> {
        self.send(&Request::new("POST", path).json(json))
    }

    /// PATCH with a JSON body.
    pub fn patch(&self, path: &str, json: &str) -> io::Result<Response> {
        self.send(&Request::new("PATCH", path).json(json))
    }

    /// Opens a connection, sends `request` (with this client's headers
    /// added) and reads the whole response, each within the client's timeout.
    pub fn send(&self, request: &Request) -> io::Result<Response> {
        let mut request = request.clone();
        for (name, value) in &self.headers {
            if request.header_value(name).is_none() {
                request.headers.push((name.clone(), value.clone()));
            }
        }
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let stream = UnixStream::connect(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("connecting to {}: {e}", path.display()))
                })?;
                exchange(Socket::Unix(stream), &request, "localhost", self.timeout)
            }
            Endpoint::Tcp { addr, netns } => {
                let stream = tcp_connect(*addr, netns.as_deref(), self.timeout)
                    .map_err(|e| io::Error::new(e.kind(), format!("connecting to {addr}: {e}")))?;
                exchange(Socket::Tcp(stream), &request, &addr.to_string(), self.timeout)
            }
        }
    }
}

fn tcp_connect(addr: SocketAddr, ns: Option<&str>, timeout: Duration) -> io::Result<TcpStream> {
    match ns {
        None => TcpStream::connect_timeout(&addr, timeout),
        Some(name) => netns::run_in(name, || TcpStream::connect_timeout(&addr, timeout)),
    }
}

/// One request: method, target, headers and an optional body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    /// The request target as sent: path and query, already percent-encoded.
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Option<Vec<u8>>,
}

impl Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self { method: method.to_string(), path: path.to_string(), headers: Vec::new(), body: None }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A JSON body (sent as given, valid or not) with `Content-Type: application/json`.
    pub fn json(self, body: &str) -> Self {
        self.header("Content-Type", "application/json").body(body.as_bytes())
    }

    /// A body as is, no `Content-Type` added.
    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = Some(body.to_vec());
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header_value(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// An `InvalidData` error saying `what` (also for the bed's own protocol checks).
pub(crate) fn invalid(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// Percent-encodes one path segment: everything but RFC 3986's unreserved
/// characters. `percent_encode("10.77.100.1:80/tcp")` is `10.77.100.1%3A80%2Ftcp`.
pub fn percent_encode(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for byte in segment.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
