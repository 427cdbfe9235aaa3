//! A small etcd v3 client over etcd's gRPC-JSON gateway (`POST /v3/...`).
//!
//! Why not the `etcd-client` crate: its build needs `protoc`, and a plain
//! `cargo build` on a fresh machine must keep working. The gateway speaks the
//! same API as JSON: keys and values in base64, int64 fields as strings, and
//! fields at their default value (0, false, empty) left out.
//!
//! Everything from the network is treated as hostile: bodies are capped, every
//! field is checked, nothing panics on bad input.

use std::{
    net::Ipv6Addr,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{body::Bytes, header, Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value as Json};

pub type LeaseId = i64;

/// Larger answers are refused: a range over our keys is far smaller.
const MAX_BODY: usize = 4 << 20;
/// gRPC's UNAVAILABLE: the member has no leader or is stopping; another may do.
const GRPC_UNAVAILABLE: i64 = 14;

#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("bad etcd endpoint: {0}")]
    Endpoint(String),
    #[error("no etcd endpoint answered: {0}")]
    Unreachable(String),
    #[error("etcd refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("etcd's answer makes no sense: {0}")]
    Decode(String),
    #[error("the etcd lease is gone (expired or revoked)")]
    LeaseGone,
}

/// The members to talk to. Each request goes to the member that answered
/// last, then to the others in turn; each attempt has its own timeout.
#[derive(Debug)]
pub struct Etcd {
    endpoints: Vec<String>,
    timeout: Duration,
    last: AtomicUsize,
}

/// What one member did with one request.
enum Attempt {
    Answered(Json),
    /// Worth trying another member.
    Failed(String),
    Final(EtcdError),
}

impl Etcd {
    /// `endpoints`: `http://HOST:PORT` or `HOST:PORT` (IPv6 in brackets).
    pub fn new(endpoints: &[String], timeout: Duration) -> Result<Self, EtcdError> {
        if endpoints.is_empty() {
            return Err(EtcdError::Endpoint("no endpoints given".into()));
        }
        let endpoints = endpoints.iter().map(|e| parse_endpoint(e)).collect::<Result<_, _>>()?;
        Ok(Self { endpoints, timeout, last: AtomicUsize::new(0) })
    }

    /// A lease of `ttl` rounded up to whole seconds; etcd itself raises a
    /// TTL shorter than its election timeout allows.
    pub async fn grant(&self, ttl: Duration) -> Result<LeaseId, EtcdError> {
        let ttl = (ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0)).max(1);
        let answer = self.call("/v3/lease/grant", json!({ "TTL": ttl.to_string() })).await?;
        let error = string(&answer, "error")?;
        if !error.is_empty() {
            return Err(EtcdError::Refused { status: 200, message: error });
        }
        match int(&answer, "ID")? {
            0 => Err(EtcdError::Decode("lease grant without an ID".into())),
            id => Ok(id),
        }
    }

    /// The lease's TTL once renewed.
    pub async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, EtcdError> {
        // A bidirectional stream through the gateway: newline-separated
        // objects, `{"result": ...}` or `{"error": ...}`. Our request body is
        // one message, so one answer comes back and the stream ends.
        let answer = self.call("/v3/lease/keepalive", json!({ "ID": lease.to_string() })).await?;
        if let Some(error) = answer.get("error") {
            let message = string(error, "message").unwrap_or_default();
            return Err(refusal(int(error, "http_code").unwrap_or(0), &message));
        }
        let result =
            answer.get("result").ok_or_else(|| EtcdError::Decode("keepalive without a result".into()))?;
        // An unknown or expired lease comes back with TTL 0 (so left out).
        match int(result, "TTL")? {
            ttl if ttl <= 0 => Err(EtcdError::LeaseGone),
            ttl => Ok(Duration::from_secs(ttl as u64)),
        }
    }

    /// Deletes the lease and every key attached to it; [`EtcdError::LeaseGone`]
    /// when it was already gone.
    pub async fn revoke(&self, lease: LeaseId) -> Result<(), EtcdError> {
        self.call("/v3/lease/revoke", json!({ "ID": lease.to_string() })).await.map(drop)
    }

    /// Returns the store's revision after the put.
    pub async fn put(&self, key: &str, value: &[u8], lease: Option<LeaseId>) -> Result<i64, EtcdError> {
        let answer = self.call("/v3/kv/put", put_request(key, value, lease)).await?;
        revision(&answer)
    }

    /// Every key starting with `prefix`, in key order, with the revision read at.
    pub async fn get_prefix(&self, prefix: &str) -> Result<(i64, Vec<(String, Vec<u8>)>), EtcdError> {
        let (key, end) = match prefix.as_bytes() {
            // etcd's convention for "every key": from \0 to the end.
            [] => (vec![0], vec![0]),
            p => (p.to_vec(), prefix_end(p)),
        };
        let request = json!({ "key": B64.encode(key), "range_end": B64.encode(end) });
        let answer = self.call("/v3/kv/range", request).await?;
        let kvs =
            kvs(&answer)?.into_iter().map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v)).collect();
        Ok((revision(&answer)?, kvs))
    }

    pub async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        let answer = self.call("/v3/kv/range", json!({ "key": B64.encode(key) })).await?;
        Ok(kvs(&answer)?.into_iter().next().map(|(_, v)| v))
    }

    pub async fn delete(&self, key: &str) -> Result<(), EtcdError> {
        self.call("/v3/kv/deleterange", json!({ "key": B64.encode(key) })).await.map(drop)
    }

    /// Creates the key only if it does not exist (txn compare create_revision
    /// == 0); true when created. Returns the value in force either way.
    pub async fn put_if_absent(
        &self,
        key: &str,
        value: &[u8],
        lease: Option<LeaseId>,
    ) -> Result<(bool, Vec<u8>), EtcdError> {
        let request = json!({
            "compare": [{ "result": "EQUAL", "target": "CREATE", "key": B64.encode(key), "create_revision": "0" }],
            "success": [{ "request_put": put_request(key, value, lease) }],
            "failure": [{ "request_range": { "key": B64.encode(key) } }],
        });
        let answer = self.call("/v3/kv/txn", request).await?;
        if answer.get("succeeded").and_then(Json::as_bool).unwrap_or(false) {
            return Ok((true, value.to_vec()));
        }
        let range = answer
            .get("responses")
            .and_then(|r| r.get(0))
            .and_then(|r| r.get("response_range"))
            .ok_or_else(|| EtcdError::Decode("failed txn without its range response".into()))?;
        let (_, current) = kvs(range)?
            .into_iter()
            .next()
            .ok_or_else(|| EtcdError::Decode("failed txn, yet the key is not there".into()))?;
        Ok((false, current))
    }

    /// The etcd version of the member that answered: a cheap "are you there".
    pub async fn status(&self) -> Result<String, EtcdError> {
        string(&self.call("/v3/maintenance/status", json!({})).await?, "version")
    }

    async fn call(&self, path: &str, request: Json) -> Result<Json, EtcdError> {
        let body = Bytes::from(request.to_string());
        let first = self.last.load(Ordering::Relaxed);
        let mut failures = Vec::new();
        for i in (0..self.endpoints.len()).map(|k| (first + k) % self.endpoints.len()) {
            let endpoint = &self.endpoints[i];
            let attempt =
                match tokio::time::timeout(self.timeout, exchange(endpoint, path, body.clone())).await {
                    Ok(attempt) => attempt,
                    Err(_) => Attempt::Failed(format!("no answer within {:?}", self.timeout)),
                };
            match attempt {
                Attempt::Answered(json) => {
                    self.last.store(i, Ordering::Relaxed);
                    return Ok(json);
                }
                Attempt::Final(e) => {
                    self.last.store(i, Ordering::Relaxed);
                    return Err(e);
                }
                Attempt::Failed(why) => failures.push(format!("{endpoint}: {why}")),
            }
        }
        Err(EtcdError::Unreachable(failures.join("; ")))
    }
}

/// One request on a fresh connection. The connection is driven here rather
/// than spawned, so a timeout drops it together with the request.
async fn exchange(endpoint: &str, path: &str, body: Bytes) -> Attempt {
    let stream = match tokio::net::TcpStream::connect(endpoint).await {
        Ok(s) => s,
        Err(e) => return Attempt::Failed(format!("connecting: {e}")),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
        Ok(pair) => pair,
        Err(e) => return Attempt::Failed(format!("HTTP handshake: {e}")),
    };
    let request = Request::builder()
        .method(Method::POST)
        .uri(path)
        .header(header::HOST, endpoint)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Attempt::Final(EtcdError::Endpoint(format!("{endpoint}: {e}"))),
    };
    let work = async {
        let response = sender.send_request(request).await.map_err(|e| format!("sending: {e}"))?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok::<_, String>((status, body))
    };
    let mut work = std::pin::pin!(work);
    let outcome = tokio::select! {
        biased;
        outcome = &mut work => outcome,
        ended = connection => match ended {
            // Closed after answering: the body is already with `work`.
            Ok(()) => work.await,
            Err(e) => Err(format!("connection: {e}")),
        },
    };
    match outcome {
        Ok((status, body)) => judge(status, &body),
        Err(why) => Attempt::Failed(why),
    }
}

fn judge(status: u16, body: &[u8]) -> Attempt {
    // A stream's body holds several objects; anything after the first is not ours.
    let first = serde_json::Deserializer::from_slice(body).into_iter::<Json>().next();
    if (200..300).contains(&status) {
        return match first {
            Some(Ok(json @ Json::Object(_))) => Attempt::Answered(json),
            Some(Err(e)) => Attempt::Final(EtcdError::Decode(format!("not JSON: {e}"))),
            _ => Attempt::Final(EtcdError::Decode("not a JSON object".into())),
        };
    }
    let (code, message) = match &first {
        Some(Ok(json)) => (int(json, "code").unwrap_or(0), string(json, "message").unwrap_or_default()),
        _ => (0, String::new()),
    };
    let message = if message.is_empty() { clip(&String::from_utf8_lossy(body)) } else { clip(&message) };
    if code == GRPC_UNAVAILABLE || status == 503 {
        return Attempt::Failed(format!("HTTP {status}: {message}"));
    }
    Attempt::Final(refusal(status as i64, &message))
}

fn refusal(status: i64, message: &str) -> EtcdError {
    if message.contains("requested lease not found") {
        return EtcdError::LeaseGone;
    }
    EtcdError::Refused { status: u16::try_from(status).unwrap_or(0), message: clip(message) }
}

/// A message from the network, short enough for a log line.
fn clip(message: &str) -> String {
    message.chars().take(300).collect()
}

fn put_request(key: &str, value: &[u8], lease: Option<LeaseId>) -> Json {
    let mut request = json!({ "key": B64.encode(key), "value": B64.encode(value) });
    if let Some(lease) = lease {
        request["lease"] = Json::String(lease.to_string());
    }
    request
}

/// `HOST:PORT` from `http://HOST:PORT` or `HOST:PORT`.
fn parse_endpoint(endpoint: &str) -> Result<String, EtcdError> {
    let bad = |why: &str| EtcdError::Endpoint(format!("{endpoint:?}: {why}"));
    let trimmed = endpoint.trim();
    let rest = match trimmed.split_once("://") {
        None => trimmed,
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {
            return Err(bad("https is not supported (the client speaks plain HTTP to etcd's gateway)"))
        }
        Some(_) => return Err(bad("the scheme must be http")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '@', '?', '#']) || rest.contains(char::is_whitespace) {
        return Err(bad("expected HOST:PORT, nothing more"));
    }
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    if !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
        return Err(bad("the port must be 1..=65535"));
    }
    let v6 = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if host.is_empty() || (host.contains(':') && v6.is_none_or(|h| h.parse::<Ipv6Addr>().is_err())) {
        return Err(bad("the host must be a name, an IPv4 address or an IPv6 address in brackets"));
    }
    Ok(rest.to_owned())
}

/// The first key after every key that starts with `prefix` (etcd's range_end);
/// `\0` (to the end) when there is none, as for a prefix of only 0xff bytes.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// An int64 field: a JSON string on the gateway (a number also passes); 0 when left out.
fn int(json: &Json, field: &str) -> Result<i64, EtcdError> {
    match json.get(field) {
        None | Some(Json::Null) => Ok(0),
        Some(Json::String(s)) => {
            s.parse().map_err(|_| EtcdError::Decode(format!("{field}: {s:?} is not an int64")))
        }
        Some(Json::Number(n)) => {
            n.as_i64().ok_or_else(|| EtcdError::Decode(format!("{field}: {n} is not an int64")))
        }
        Some(other) => Err(EtcdError::Decode(format!("{field}: {other} is not an int64"))),
    }
}

fn string(json: &Json, field: &str) -> Result<String, EtcdError> {
    match json.get(field) {
        None | Some(Json::Null) => Ok(String::new()),
        Some(Json::String(s)) => Ok(s.clone()),
        Some(other) => Err(EtcdError::Decode(format!("{field}: {other} is not a string"))),
    }
}

fn bytes(json: &Json, field: &str) -> Result<Vec<u8>, EtcdError> {
    B64.decode(string(json, field)?).map_err(|e| EtcdError::Decode(format!("{field}: not base64: {e}")))
}

fn revision(answer: &Json) -> Result<i64, EtcdError> {
    let header = answer.get("header").ok_or_else(|| EtcdError::Decode("no header".into()))?;
    int(header, "revision")
}

/// A key and its value, as etcd stores them: bytes.
type Kv = (Vec<u8>, Vec<u8>);

/// A range answer's keys and values (`kvs` is left out when there are none).
fn kvs(answer: &Json) -> Result<Vec<Kv>, EtcdError> {
    match answer.get("kvs") {
        None | Some(Json::Null) => Ok(Vec::new()),
        Some(Json::Array(kvs)) => kvs.iter().map(|kv| Ok((bytes(kv, "key")?, bytes(kv, "value")?))).collect(),
        Some(other) => Err(EtcdError::Decode(format!("kvs: {other} is not a list"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_the_last_byte_below_0xff() {
        assert_eq!(prefix_end(b"alwayson/health/"), b"alwayson/health0");
        assert_eq!(prefix_end(b"a"), b"b");
        assert_eq!(prefix_end(&[b'a', 0xff, 0xff]), b"b");
        assert_eq!(prefix_end(&[0xff]), [0]);
    }

    #[test]
    fn keys_round_trip_through_base64() {
        for key in ["alwayson/health/10.0.0.1:80", "", "ü/é", "a\nb"] {
            let json = json!({ "key": B64.encode(key) });
            assert_eq!(bytes(&json, "key").unwrap(), key.as_bytes());
        }
        assert_eq!(B64.encode("a/x"), "YS94");
        assert!(matches!(bytes(&json!({ "key": "!!!" }), "key"), Err(EtcdError::Decode(_))));
    }

    #[test]
    fn range_answer_with_int64_as_strings() {
        let body = br#"{"header":{"cluster_id":"15118495548433857066","member_id":"13668033151171901709","revision":"9223372036854775807","raft_term":"2"},"kvs":[{"key":"YS94","create_revision":"2","mod_revision":"2","version":"1","value":"aGVsbG8=","lease":"4111120466818224901"},{"key":"YS95","create_revision":"3","mod_revision":"3","version":"1"}],"count":"2"}"#;
        let Attempt::Answered(answer) = judge(200, body) else { panic!("not answered") };
        assert_eq!(revision(&answer).unwrap(), i64::MAX);
        assert_eq!(int(&answer["kvs"][0], "lease").unwrap(), 4111120466818224901);
        let kvs = kvs(&answer).unwrap();
        assert_eq!(kvs, vec![(b"a/x".to_vec(), b"hello".to_vec()), (b"a/y".to_vec(), Vec::new())]);
    }

    #[test]
    fn hostile_answers_are_errors_not_panics() {
        assert!(matches!(judge(200, b"not json"), Attempt::Final(EtcdError::Decode(_))));
        assert!(matches!(judge(200, b"[1]"), Attempt::Final(EtcdError::Decode(_))));
        assert!(matches!(judge(200, b""), Attempt::Final(EtcdError::Decode(_))));
        let Attempt::Answered(answer) = judge(200, br#"{"header":{"revision":"x"},"kvs":{}}"#) else {
            panic!()
        };
        assert!(matches!(revision(&answer), Err(EtcdError::Decode(_))));
        assert!(matches!(kvs(&answer), Err(EtcdError::Decode(_))));
        assert!(matches!(int(&json!({ "TTL": 1.5 }), "TTL"), Err(EtcdError::Decode(_))));
        assert!(matches!(revision(&json!({})), Err(EtcdError::Decode(_))));
    }

    #[test]
    fn error_answers() {
        let gone = br#"{"error":"etcdserver: requested lease not found","message":"etcdserver: requested lease not found","code":5}"#;
        assert!(matches!(judge(404, gone), Attempt::Final(EtcdError::LeaseGone)));
        let bad = br#"{"error":"illegal base64 data","message":"illegal base64 data","code":3}"#;
        assert!(
            matches!(judge(400, bad), Attempt::Final(EtcdError::Refused { status: 400, message }) if message == "illegal base64 data")
        );
        let no_leader = br#"{"error":"etcdserver: no leader","message":"etcdserver: no leader","code":14}"#;
        assert!(matches!(judge(503, no_leader), Attempt::Failed(_)));
        assert!(matches!(judge(502, b"<html>"), Attempt::Final(EtcdError::Refused { status: 502, .. })));
    }

    #[test]
    fn keepalive_stream_first_object_counts() {
        let body =
            b"{\"result\":{\"header\":{\"revision\":\"2\"},\"ID\":\"7\",\"TTL\":\"30\"}}\n{\"result\":{}}\n";
        let Attempt::Answered(answer) = judge(200, body) else { panic!() };
        assert_eq!(int(&answer["result"], "TTL").unwrap(), 30);
    }

    #[test]
    fn endpoints() {
        let ok = |e: &str| parse_endpoint(e).unwrap();
        assert_eq!(ok("http://127.0.0.1:2379"), "127.0.0.1:2379");
        assert_eq!(ok("HTTP://127.0.0.1:2379/"), "127.0.0.1:2379");
        assert_eq!(ok("10.0.0.1:2379"), "10.0.0.1:2379");
        assert_eq!(ok("etcd-1:2379"), "etcd-1:2379");
        assert_eq!(ok("http://[::1]:2379"), "[::1]:2379");
        let https = parse_endpoint("https://10.0.0.1:2379").unwrap_err().to_string();
        assert!(https.contains("https is not supported"), "{https}");
        for bad in [
            "",
            "10.0.0.1",
            "10.0.0.1:0",
            "10.0.0.1:70000",
            "::1:2379",
            "ftp://a:1",
            "http://a:1/v3",
            "a b:1",
            ":2379",
        ] {
            assert!(matches!(parse_endpoint(bad), Err(EtcdError::Endpoint(_))), "{bad:?} accepted");
        }
        assert!(Etcd::new(&[], Duration::from_secs(1)).is_err());
    }
}
