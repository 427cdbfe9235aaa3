//! A small HTTP/1.1 client for tests of the agent's API and web listener, and
//! for WebDriver: one request per connection (`Connection: close`), the
//! response read to where its framing (`Content-Length`, chunked) ends, or to
//! EOF.
//! Nothing clever, so that what a test sees is what the server sent. The
//! response side, parsing and framing, is [`response`].
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

mod response;

use std::{
    io::{self, Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

pub use self::response::Response;
use crate::netns::{self, Netns};

/// Connect, write and read timeout of a request unless [`Client::timeout`] says otherwise.
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

    /// Opens a connection, sends `request` (with this client's headers added)
    /// and reads the response (see [`exchange`]).
    pub fn send(&self, request: &Request) -> io::Result<Response> {
        let mut request = request.clone();
        for (name, value) in &self.headers {
            if request.header_value(name).is_none() {
                request.headers.push((name.clone(), value.clone()));
            }
        }
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let mut stream = UnixStream::connect(path).map_err(|e| {
                    io::Error::new(e.kind(), format!("connecting to {}: {e}", path.display()))
                })?;
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                exchange(&mut stream, &request, "localhost")
            }
            Endpoint::Tcp { addr, netns } => {
                let mut stream = tcp_connect(*addr, netns.as_deref(), self.timeout)
                    .map_err(|e| io::Error::new(e.kind(), format!("connecting to {addr}: {e}")))?;
                stream.set_read_timeout(Some(self.timeout))?;
                stream.set_write_timeout(Some(self.timeout))?;
                exchange(&mut stream, &request, &addr.to_string())
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

    /// The bytes on the wire: request line, `Host`, the headers,
    /// `Content-Length` when there is a body, `Connection: close`.
    pub fn to_bytes(&self, host: &str) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.path);
        if self.header_value("Host").is_none() {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = &self.body {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(self.body.as_deref().unwrap_or_default());
        out
    }
}

/// Writes `request` to `stream` and reads the response: up to where its
/// framing (`Content-Length`, chunked) says it ends, or to EOF when it has
/// none. Not waiting for the close lets the same client talk to servers that
/// keep the connection open despite `Connection: close` (chromedriver does).
pub fn exchange<S: Read + Write>(stream: &mut S, request: &Request, host: &str) -> io::Result<Response> {
    stream.write_all(&request.to_bytes(host))?;
    stream.flush()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Response::parse(&raw);
        }
        raw.extend_from_slice(&buf[..n]);
        if let Some(response) = Response::parse_complete(&raw, false)? {
            return Ok(response);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A server's side of a connection: `data` in pieces of 3 bytes, then
    /// EOF if `closes`, else the read timeout of a connection left open.
    struct Peer {
        data: Vec<u8>,
        at: usize,
        closes: bool,
    }

    impl Read for Peer {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.at == self.data.len() {
                return if self.closes { Ok(0) } else { Err(io::ErrorKind::TimedOut.into()) };
            }
            let n = buf.len().min(3).min(self.data.len() - self.at);
            buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
            self.at += n;
            Ok(n)
        }
    }

    impl Write for Peer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn over(data: &[u8], closes: bool) -> io::Result<Response> {
        exchange(&mut Peer { data: data.to_vec(), at: 0, closes }, &Request::new("GET", "/"), "h")
    }

    #[test]
    fn a_framed_response_ends_without_the_close() {
        let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}xx";
        assert_eq!(over(plain, false).unwrap().body, b"{}xx");
        let chunked = b"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
        let r = over(chunked, false).unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"{\"a\":1}"[..]));
        // Without framing only the close ends the body.
        let open = b"HTTP/1.1 500 Internal\r\nConnection: close\r\n\r\n{}";
        assert_eq!(over(open, false).unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert_eq!(over(open, true).unwrap().body, b"{}");
        // Cut short by the close, or malformed before the end: errors.
        assert!(over(&plain[..plain.len() - 1], true).is_err());
        assert!(over(&chunked[..chunked.len() - 12], true).is_err());
        assert!(over(b"HTTP/1.1 200 OK\r\n", true).is_err());
        assert_eq!(over(b"HTTP/1.1 OK\r\n\r\n", false).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn request_bytes() {
        let r = Request::new("PATCH", "/v1/x").header("Authorization", "Bearer t").json("{}");
        let text = String::from_utf8(r.to_bytes("localhost")).unwrap();
        assert_eq!(
            text,
            "PATCH /v1/x HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer t\r\n\
             Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        );
        assert!(!String::from_utf8(Request::new("GET", "/").to_bytes("h")).unwrap().contains("Length"));
    }

    #[test]
    fn encodes_names() {
        assert_eq!(percent_encode("10.77.100.1:80/tcp"), "10.77.100.1%3A80%2Ftcp");
        assert_eq!(percent_encode("[fd77::1:10]:53"), "%5Bfd77%3A%3A1%3A10%5D%3A53");
        assert_eq!(percent_encode("web 1"), "web%201");
    }
}
