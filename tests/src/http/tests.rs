//! The client against a peer on the other end of a socket pair that says
//! exactly what each test wants, framing mistakes included.

use std::{
    io::{self, Read, Write},
    os::unix::net::UnixStream,
    thread::{self, JoinHandle},
    time::Duration,
};

use super::{
    exchange::{exchange, Socket},
    percent_encode, Request, Response,
};

/// What the peer does after its answer.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Close,
    /// Keeps the connection open until the client gives up.
    Hold,
}

/// Serves one exchange: reads the request head (and a body of
/// `Content-Length`), writes `answer` in small pieces, then closes or holds.
/// The join gives the request as it arrived.
fn peer(answer: &'static [u8], after: After) -> (UnixStream, JoinHandle<String>) {
    let (client, mut server) = UnixStream::pair().unwrap();
    let handle = thread::spawn(move || {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !request_complete(&got) {
            match server.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        // Pieces, so that the client must put the response together.
        for piece in answer.chunks(3) {
            if server.write_all(piece).is_err() {
                break;
            }
        }
        if after == After::Hold {
            // Until the client closes its end.
            let _ = server.read(&mut buf);
        }
        String::from_utf8_lossy(&got).into_owned()
    });
    (client, handle)
}

fn request_complete(got: &[u8]) -> bool {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else { return false };
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    body.len() >= length
}

fn over(answer: &'static [u8], after: After) -> io::Result<Response> {
    let (client, handle) = peer(answer, after);
    let response = exchange(Socket::Unix(client), &Request::new("GET", "/"), "h", Duration::from_secs(1));
    handle.join().unwrap();
    response
}

#[test]
fn a_framed_response_ends_without_the_close() {
    let plain = b"HTTP/1.1 201 Created\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: 7\r\n\r\n{\"a\":1}";
    let r = over(plain, After::Hold).unwrap();
    assert_eq!((r.status, r.reason.as_str(), r.text().as_str()), (201, "Created", "{\"a\":1}"));
    assert_eq!(r.content_type().as_deref(), Some("application/json"));
    assert_eq!(r.json().unwrap()["a"], 1);
    let chunked = b"HTTP/1.1 404 Gone Fishing\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n4\r\n\":1}\r\n0\r\n\r\n";
    let r = over(chunked, After::Hold).unwrap();
    assert_eq!((r.status, r.reason.as_str(), r.body.as_slice()), (404, "Gone Fishing", &b"{\"a\":1}"[..]));
    assert_eq!(r.header("TRANSFER-ENCODING"), Some("chunked"));
}

#[test]
fn an_unframed_response_ends_at_the_close_or_times_out() {
    let open = b"HTTP/1.1 500 Internal\r\nConnection: close\r\n\r\n{}";
    assert_eq!(over(open, After::Close).unwrap().body, b"{}");
    assert_eq!(over(open, After::Hold).unwrap_err().kind(), io::ErrorKind::TimedOut);
}

#[test]
fn a_response_cut_short_or_malformed_is_an_error() {
    let plain = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n{}xx";
    assert!(over(&plain[..plain.len() - 1], After::Close).is_err());
    let chunked =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n6\r\npedia \r\n0\r\n\r\n";
    assert!(over(&chunked[..chunked.len() - 12], After::Close).is_err());
    assert!(over(b"HTTP/1.1 200 OK\r\n", After::Close).is_err());
    assert_eq!(over(b"HTTP/1.1 OK\r\n\r\n", After::Hold).unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[test]
fn the_request_on_the_wire() {
    let (client, handle) = peer(b"HTTP/1.1 204 No Content\r\n\r\n", After::Hold);
    let request = Request::new("PATCH", "/v1/x%2Fy").header("Authorization", "Bearer t").json("{}");
    let r = exchange(Socket::Unix(client), &request, "localhost", Duration::from_secs(1)).unwrap();
    assert_eq!(r.status, 204);
    let sent = handle.join().unwrap().to_ascii_lowercase();
    let (head, body) = sent.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("patch /v1/x%2fy http/1.1"));
    let mut headers: Vec<&str> = lines.collect();
    headers.sort_unstable();
    assert_eq!(
        headers,
        [
            "authorization: bearer t",
            "connection: close",
            "content-length: 2",
            "content-type: application/json",
            "host: localhost",
        ]
    );
    assert_eq!(body, "{}");
}

#[test]
fn encodes_names() {
    assert_eq!(percent_encode("10.77.100.1:80/tcp"), "10.77.100.1%3A80%2Ftcp");
    assert_eq!(percent_encode("[fd77::1:10]:53"), "%5Bfd77%3A%3A1%3A10%5D%3A53");
    assert_eq!(percent_encode("web 1"), "web%201");
}
