//! A response as read off the wire: status line, headers, and the body
//! where its framing (`Content-Length`, chunked) says it ends.

use std::io;

use super::invalid;

/// A response: status, headers in order, and the body with any chunked
/// transfer coding removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

impl Response {
    /// Parses a whole response as read up to EOF. Interim `1xx` responses
    /// (other than 101) are skipped.
    pub fn parse(raw: &[u8]) -> io::Result<Self> {
        Ok(Self::parse_complete(raw, true)?.expect("at EOF a response is complete or an error"))
    }

    /// The response in `raw` once it is complete; `None` while more is
    /// needed. `at_eof`: nothing more will come, so a body without framing
    /// ends here and anything cut short is an error.
    pub(super) fn parse_complete(raw: &[u8], at_eof: bool) -> io::Result<Option<Self>> {
        let cut_short = |what: String| if at_eof { Err(invalid(what)) } else { Ok(None) };
        let mut rest = raw;
        loop {
            let Some(end) = find(rest, b"\r\n\r\n") else {
                return cut_short(format!("no end of headers in {:?}", String::from_utf8_lossy(raw)));
            };
            let head = std::str::from_utf8(&rest[..end])
                .map_err(|_| invalid(format!("headers are not UTF-8: {:?}", String::from_utf8_lossy(raw))))?;
            let after = &rest[end + 4..];
            let mut lines = head.split("\r\n");
            let status_line = lines.next().unwrap_or_default();
            let mut parts = status_line.splitn(3, ' ');
            let (version, status) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
            let status: u16 = match status.parse() {
                Ok(status) if version.starts_with("HTTP/1.") => status,
                _ => return Err(invalid(format!("status line {status_line:?}"))),
            };
            let reason = parts.next().unwrap_or_default().to_string();
            let mut headers = Vec::new();
            for line in lines {
                let (name, value) =
                    line.split_once(':').ok_or_else(|| invalid(format!("header line {line:?}")))?;
                headers.push((name.trim().to_string(), value.trim().to_string()));
            }
            if (100..200).contains(&status) && status != 101 {
                rest = after;
                continue;
            }
            let mut response = Self { status, reason, headers, body: Vec::new() };
            let chunked = response
                .header("Transfer-Encoding")
                .is_some_and(|te| te.split(',').any(|c| c.trim().eq_ignore_ascii_case("chunked")));
            response.body = if chunked {
                match dechunk_partial(after)? {
                    Some(body) => body,
                    None => return cut_short("chunked body cut short".into()),
                }
            } else if let Some(length) = response.header("Content-Length") {
                let length: usize =
                    length.parse().map_err(|_| invalid(format!("Content-Length {length:?}")))?;
                if after.len() < length {
                    return cut_short(format!(
                        "body cut short: Content-Length {length}, got {} bytes",
                        after.len()
                    ));
                }
                after[..length].to_vec()
            } else if at_eof {
                after.to_vec()
            } else {
                return Ok(None);
            };
            return Ok(Some(response));
        }
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The media type of the body: `Content-Type` without parameters, lower case.
    pub fn content_type(&self) -> Option<String> {
        self.header("Content-Type")
            .map(|ct| ct.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Result<serde_json::Value> {
        serde_json::from_slice(&self.body)
    }
}

/// The body without its chunked transfer coding (`SIZE[;ext]\r\n DATA\r\n …
/// 0\r\n [trailers] \r\n`); `None` while chunks are missing.
fn dechunk_partial(mut raw: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    loop {
        let Some(line_end) = find(raw, b"\r\n") else { return Ok(None) };
        let line = String::from_utf8_lossy(&raw[..line_end]);
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size, 16).map_err(|_| invalid(format!("chunk size {size:?}")))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            // Trailers, if any, are ignored.
            return Ok(Some(body));
        }
        if raw.len() < size + 2 {
            return Ok(None);
        }
        if &raw[size..size + 2] != b"\r\n" {
            return Err(invalid(format!("chunk of {size} bytes not followed by CRLF")));
        }
        body.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_body() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        let r = Response::parse(raw).unwrap();
        assert_eq!((r.status, r.reason.as_str(), r.body.as_slice()), (201, "Created", &b"{}"[..]));
        assert_eq!(r.content_type().as_deref(), Some("application/json"));
        assert!(Response::parse(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab").is_err());
    }

    #[test]
    fn chunked_body_and_interim_responses() {
        let raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4;x=y\r\nWiki\r\n6\r\npedia \r\nE\r\nin \r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        let r = Response::parse(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.text(), "Wikipedia in \r\n\r\nchunks.");
        assert_eq!(dechunk_partial(b"5\r\nabc").unwrap(), None, "cut short");
        let in_a_chunk = raw.windows(7).position(|w| w == b"chunks.").unwrap() + 3;
        assert!(Response::parse(&raw[..in_a_chunk]).is_err(), "cut short at the close");
    }
}
