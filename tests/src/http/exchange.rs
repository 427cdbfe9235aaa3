//! One request over a socket the caller opened, spoken by hyper's HTTP/1
//! client on a current-thread runtime of its own: the tests stay synchronous,
//! and a socket opened in another network namespace keeps working (it stays
//! in the namespace it was created in, whichever thread drives it).

use std::{io, net::TcpStream, os::unix::net::UnixStream, time::Duration};

use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    client::conn::http1,
    header::{HeaderName, HeaderValue, CONNECTION, HOST},
    Method,
};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{invalid, Request, Response};

/// A connected socket, still blocking; made non-blocking for tokio here.
pub(super) enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Sends `request` on `socket` and reads the response to where its framing
/// (`Content-Length`, chunked) says it ends, or to EOF when it has none; all
/// within `timeout`. Not waiting for the close lets the same client talk to
/// servers that keep the connection open despite `Connection: close`.
pub(super) fn exchange(
    socket: Socket,
    request: &Request,
    host: &str,
    timeout: Duration,
) -> io::Result<Response> {
    let request = to_hyper(request, host)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
    runtime.block_on(async {
        // Registering with the reactor needs the runtime, hence in here.
        let work = async {
            match socket {
                Socket::Tcp(s) => {
                    s.set_nonblocking(true)?;
                    send(tokio::net::TcpStream::from_std(s)?, request).await
                }
                Socket::Unix(s) => {
                    s.set_nonblocking(true)?;
                    send(tokio::net::UnixStream::from_std(s)?, request).await
                }
            }
        };
        tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
            Err(io::Error::new(io::ErrorKind::TimedOut, format!("no whole response within {timeout:?}")))
        })
    })
}

async fn send<S>(stream: S, request: hyper::Request<Full<Bytes>>) -> io::Result<Response>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(from_hyper)?;
    // The connection does the reading and writing; the sender only hands it
    // the request. Its own error, if any, also fails the request or the body.
    let driver = tokio::spawn(connection);
    let response = sender.send_request(request).await.map_err(from_hyper)?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(from_hyper)?.to_bytes();
    driver.abort();
    Ok(Response::from_parts(&parts, body))
}

/// `request` for hyper: the client's headers, `Host` unless given, and
/// `Connection: close` (one request per connection).
fn to_hyper(request: &Request, host: &str) -> io::Result<hyper::Request<Full<Bytes>>> {
    let method = Method::from_bytes(request.method.as_bytes())
        .map_err(|e| invalid(format!("method {:?}: {e}", request.method)))?;
    let mut out = hyper::Request::builder().method(method).uri(&request.path);
    if request.header_value("Host").is_none() {
        out = out.header(HOST, host);
    }
    for (name, value) in &request.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| invalid(format!("header name {name:?}: {e}")))?;
        let value =
            HeaderValue::from_str(value).map_err(|e| invalid(format!("header {name}: {value:?}: {e}")))?;
        out = out.header(name, value);
    }
    if request.header_value("Connection").is_none() {
        out = out.header(CONNECTION, "close");
    }
    let body = Full::new(Bytes::from(request.body.clone().unwrap_or_default()));
    out.body(body).map_err(|e| invalid(format!("{} {}: {e}", request.method, request.path)))
}

/// hyper's error as an `io::Error`: a malformed response is `InvalidData`;
/// an I/O failure underneath keeps its kind.
fn from_hyper(e: hyper::Error) -> io::Error {
    let kind = if e.is_parse() {
        io::ErrorKind::InvalidData
    } else if e.is_incomplete_message() {
        io::ErrorKind::UnexpectedEof
    } else {
        std::error::Error::source(&e)
            .and_then(|s| s.downcast_ref::<io::Error>())
            .map_or(io::ErrorKind::Other, io::Error::kind)
    };
    // hyper's Display says only the category; the source says what happened.
    let detail = std::error::Error::source(&e).map(|s| format!(": {s}")).unwrap_or_default();
    io::Error::new(kind, format!("{e}{detail}"))
}
