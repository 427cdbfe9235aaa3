//! `server NAME ADDR[:PORT] [params]` and `default-server [params]`: the
//! parameters Always On has a key for, and a warning for every other.

use std::{
    net::{IpAddr, SocketAddr},
    ops::RangeInclusive,
};

use super::{
    haproxy::{time_ms, Line},
    Warnings,
};
use crate::config::values::{CHECK_PORT, RISE_FALL, WEIGHT};

/// A server's parameters as HAProxy's `default-server` and `server` set them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerOpts {
    pub check: bool,
    pub inter_ms: Option<u64>,
    pub rise: Option<u32>,
    pub fall: Option<u32>,
    pub weight: Option<u32>,
    pub backup: bool,
    pub disabled: bool,
    pub slowstart_ms: Option<u64>,
    pub check_port: Option<u16>,
    pub check_address: Option<IpAddr>,
}

/// A `server` line: where it is, where it sends to.
#[derive(Clone, Debug)]
pub struct Server {
    pub line: usize,
    pub name: String,
    pub address: IpAddr,
    /// None: HAProxy keeps the client's destination port (the VIP's).
    pub port: Option<u16>,
    pub opts: ServerOpts,
}

/// Parameters without a value that Always On has no equivalent for.
const FLAGS: &[&str] = &[
    "ssl",
    "no-ssl",
    "check-ssl",
    "no-check-ssl",
    "send-proxy",
    "send-proxy-v2",
    "send-proxy-v2-ssl",
    "send-proxy-v2-ssl-cn",
    "no-send-proxy",
    "check-send-proxy",
    "agent-check",
    "no-agent-check",
    "non-stick",
    "stick",
    "tfo",
    "allow-0rtt",
    "no-tls-tickets",
    "no-verifyhost",
    "force-sslv3",
    "force-tlsv10",
    "force-tlsv11",
    "force-tlsv12",
    "force-tlsv13",
    "no-sslv3",
    "no-tlsv10",
    "no-tlsv11",
    "no-tlsv12",
    "no-tlsv13",
    "ssl-reuse",
    "no-ssl-reuse",
    "check-via-socks4",
];

/// Applies the parameters `words` (after the name and address) to `opts`.
pub fn apply(opts: &mut ServerOpts, words: &[String], line: usize, w: &mut Warnings) {
    let mut i = 0;
    while i < words.len() {
        let key = words[i].as_str();
        let value = words.get(i + 1).map(String::as_str);
        let mut takes_value = true;
        match (key, value) {
            ("check", _) => (opts.check, takes_value) = (true, false),
            ("no-check", _) => (opts.check, takes_value) = (false, false),
            ("backup", _) => (opts.backup, takes_value) = (true, false),
            ("no-backup", _) => (opts.backup, takes_value) = (false, false),
            ("disabled", _) => (opts.disabled, takes_value) = (true, false),
            ("enabled", _) => (opts.disabled, takes_value) = (false, false),
            (flag, _) if FLAGS.contains(&flag) => {
                takes_value = false;
                w.add(line, format!("server parameter `{flag}` not carried over: Always On forwards packets, it does not terminate or originate connections"));
            }
            (_, None) => {
                takes_value = false;
                w.add(line, format!("server parameter `{key}` without a value: ignored"));
            }
            ("inter", Some(v)) => opts.inter_ms = time(v, key, line, w),
            ("fastinter" | "downinter", Some(v)) => w.add(
                line,
                format!(
                    "`{key} {v}` not carried over: Always On checks at one interval (`inter`) whatever the state"
                ),
            ),
            ("rise", Some(v)) => opts.rise = number(v, key, RISE_FALL, line, w),
            ("fall", Some(v)) => opts.fall = number(v, key, RISE_FALL, line, w),
            ("weight", Some(v)) => opts.weight = number(v, key, WEIGHT, line, w),
            ("slowstart", Some(v)) => opts.slowstart_ms = time(v, key, line, w),
            ("port", Some(v)) => {
                opts.check_port = number(v, key, CHECK_PORT, line, w).map(|p| p as u16);
            }
            ("addr", Some(v)) => match v.parse() {
                Ok(a) => opts.check_address = Some(a),
                Err(_) => w.add(line, format!("`addr {v}` is not an IP address: not carried over")),
            },
            ("resolvers", Some(v)) => w.add(
                line,
                format!("`resolvers {v}` not carried over: Always On does not resolve names; servers keep the address written"),
            ),
            (_, Some(v)) => w.add(line, format!("server parameter `{key} {v}` not carried over")),
        }
        i += if takes_value { 2 } else { 1 };
    }
}

/// `ADDR:PORT`, `[V6]:PORT`, `ADDR`, `ipv4@ADDR:PORT`: the address and port,
/// or a warning why it cannot be used.
pub fn address(s: &str) -> Result<(IpAddr, Option<u16>), String> {
    let s = s.strip_prefix("ipv4@").or_else(|| s.strip_prefix("ipv6@")).unwrap_or(s);
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Ok((sa.ip(), Some(sa.port())));
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    // A plain IPv6 address has colons too: only the last one may be a port.
    let (host, port) = s.rsplit_once(':').unwrap_or((s, ""));
    if host.parse::<IpAddr>().is_ok() {
        return Err(format!("port `{port}` is not a plain port (ranges and +/- offsets are not supported)"));
    }
    if host.is_empty() || host == "*" {
        return Err("no address".into());
    }
    Err(format!("`{host}` is a hostname, not an IP address: Always On does not resolve names"))
}

fn time(v: &str, key: &str, line: usize, w: &mut Warnings) -> Option<u64> {
    let ms = time_ms(v);
    if ms.is_none() {
        w.add(line, format!("`{key} {v}` is not a time: not carried over"));
    }
    ms
}

fn number(v: &str, key: &str, range: RangeInclusive<i64>, line: usize, w: &mut Warnings) -> Option<u32> {
    match v.parse::<u32>() {
        Ok(n) if range.contains(&i64::from(n)) => Some(n),
        _ => {
            w.add(
                line,
                format!("`{key} {v}`: Always On takes {}..={}: not carried over", range.start(), range.end()),
            );
            None
        }
    }
}

/// `server NAME ADDR [params]` on top of the section's `default-server`.
pub fn server(line: &Line, defaults: &ServerOpts, w: &mut Warnings) -> Option<Server> {
    let name = line.word(1).to_owned();
    let (address, port) = match address(line.word(2)) {
        Ok(a) => a,
        Err(reason) => {
            w.add(line.number, format!("server `{name}` skipped: {reason}"));
            return None;
        }
    };
    let mut opts = defaults.clone();
    apply(&mut opts, line.words.get(3..).unwrap_or_default(), line.number, w);
    Some(Server { line: line.number, name, address, port, opts })
}
