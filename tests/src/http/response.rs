//! A response as the tests see it: status, headers and the whole body, taken
//! from what hyper read, so tests compare plain strings and bytes.

use hyper::{body::Bytes, ext::ReasonPhrase, http::response::Parts};

/// A response: status, headers in order, and the body with any transfer
/// coding removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// The reason phrase as sent, or the standard one for the status.
    pub reason: String,
    /// Names in lower case, as hyper keeps them.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub(super) fn from_parts(parts: &Parts, body: Bytes) -> Self {
        // hyper records the phrase only when it is not the standard one.
        let reason = match parts.extensions.get::<ReasonPhrase>() {
            Some(phrase) => String::from_utf8_lossy(phrase.as_bytes()).into_owned(),
            None => parts.status.canonical_reason().unwrap_or_default().to_string(),
        };
        let headers = parts
            .headers
            .iter()
            .map(|(name, value)| {
                (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned())
            })
            .collect();
        Self { status: parts.status.as_u16(), reason, headers, body: body.to_vec() }
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
