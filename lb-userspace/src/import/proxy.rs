//! The lines of `defaults`, `frontend`, `backend` and `listen` sections:
//! what each proxy binds, which backend it uses, its servers and the
//! settings (checks, backups) that become VIP keys.

use std::net::IpAddr;

use super::{
    haproxy::{time_ms, Line},
    server::{self, Server, ServerOpts},
    Warnings,
};

/// Settings a `defaults` section passes on to the proxies after it.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    /// `option httpchk`: the path HTTP checks request.
    pub http_path: Option<String>,
    pub http_host: Option<String>,
    pub http_status: Vec<u16>,
    pub timeout_check_ms: Option<u64>,
    pub allbackups: bool,
    pub default_server: ServerOpts,
    /// `source ADDR`: where proxied connections leave from (NAT's address).
    pub source: Option<IpAddr>,
}

/// A `bind` address and port.
#[derive(Clone, Copy, Debug)]
pub struct Bind {
    pub line: usize,
    pub address: IpAddr,
    pub port: u16,
}

/// One `frontend`, `backend` or `listen` section, read.
#[derive(Clone, Debug, Default)]
pub struct Proxy {
    pub settings: Settings,
    pub binds: Vec<Bind>,
    /// `default_backend`, or an unconditional `use_backend` (which wins).
    pub default_backend: Option<String>,
    pub use_backend: Option<String>,
    pub servers: Vec<Server>,
}

/// Reads one line of a proxy (or `defaults`: `proxy` is then only settings).
pub fn line(proxy: &mut Proxy, line: &Line, vip_address: Option<IpAddr>, w: &mut Warnings) {
    let n = line.number;
    let s = &mut proxy.settings;
    let args = &line.words[1..];
    match (line.word(0), line.word(1)) {
        ("mode", "tcp") => {}
        ("mode", "http") => w.add(
            n,
            "`mode http` imported as layer 4: connections are forwarded as they are, \
             no HTTP processing (headers, rewriting, routing, logging) is done",
        ),
        ("mode", other) => w.add(n, format!("`mode {other}` not carried over: imported as TCP")),
        ("balance", algo) => w.add(n, balance(algo)),
        ("option", "httpchk") => httpchk(s, &args[1..], n, w),
        ("http-check", "send") => http_check_send(s, &args[1..], n, w),
        ("http-check", "expect") => match (line.word(2), line.word(3).parse::<u16>()) {
            ("status", Ok(code)) if (100..=599).contains(&code) => s.http_status = vec![code],
            _ => w.add(n, format!("`{}` not carried over: only `http-check expect status N` is", line.words.join(" "))),
        },
        ("option", "allbackups") => s.allbackups = true,
        ("no", "option") if line.word(2) == "allbackups" => s.allbackups = false,
        ("option", "tcp-check") => s.http_path = None,
        ("timeout", "check") => match time_ms(line.word(2)) {
            Some(ms) => s.timeout_check_ms = Some(ms),
            None => w.add(n, format!("`timeout check {}` is not a time: not carried over", line.word(2))),
        },
        ("timeout", what) => w.add(
            n,
            format!("`timeout {what}` not carried over: Always On forwards packets and holds no connection to time out"),
        ),
        ("default-server", _) => server::apply(&mut s.default_server, args, n, w),
        ("source", addr) => match server::address(addr) {
            Ok((ip, _)) => s.source = Some(ip),
            Err(reason) => w.add(n, format!("`source {addr}` not carried over: {reason}")),
        },
        ("server", _) => {
            if let Some(server) = server::server(line, &s.default_server, w) {
                proxy.servers.push(server);
            }
        }
        ("bind", _) => bind(proxy, line, vip_address, w),
        ("default_backend", name) => proxy.default_backend = Some(name.to_owned()),
        ("use_backend", name) => {
            if args.len() > 1 {
                w.add(
                    n,
                    format!(
                        "`use_backend {name} {}`: conditions (ACLs) are not carried over; the rule is ignored",
                        args[1..].join(" ")
                    ),
                );
            } else {
                proxy.use_backend = Some(name.to_owned());
            }
        }
        ("acl", name) => w.add(n, format!("`acl {name}` not carried over: Always On has no ACLs")),
        (kw @ ("stick-table" | "stick"), _) => {
            w.add(n, format!("`{kw}` not carried over: the connection table keeps each flow on its backend, nothing else sticks"))
        }
        (kw, _) if kw.starts_with("http-") || kw.starts_with("req") || kw.starts_with("rsp") || kw == "redirect" => {
            w.add(n, format!("`{kw}` not carried over: Always On does not process HTTP"))
        }
        (kw, _) => w.add(n, format!("`{}` not carried over", shorten(&line.words, kw))),
    }
}

fn shorten(words: &[String], kw: &str) -> String {
    if words.len() > 1 {
        format!("{kw} {}", words[1])
    } else {
        kw.to_owned()
    }
}

fn balance(algo: &str) -> String {
    let what = match algo {
        "source" => "a flow stays on its server, but a client's connections are spread over the servers (the hash takes the client's port too)",
        "roundrobin" | "static-rr" => "new flows are spread by weight, by hash rather than in turn",
        "leastconn" => "new flows are spread by weight, not by how many connections each server has",
        "first" => "new flows are spread by weight over all servers, not packed onto the first ones",
        _ => "new flows are spread by weight over the servers, by a hash of the flow",
    };
    format!("`balance {algo}` becomes Maglev consistent hashing of the flow: {what}")
}

/// `option httpchk`, `option httpchk URI`, `option httpchk METH URI [VER]`.
fn httpchk(s: &mut Settings, args: &[String], n: usize, w: &mut Warnings) {
    let (method, uri) = match args {
        [] => ("GET", "/"),
        [uri] => ("GET", uri.as_str()),
        [method, uri, rest @ ..] => {
            if !rest.is_empty() {
                w.add(
                    n,
                    format!("`option httpchk` version and headers `{}` not carried over", rest.join(" ")),
                );
            }
            (method.as_str(), uri.as_str())
        }
    };
    set_check(s, method, uri, n, w);
}

/// `http-check send [meth M] [uri U] [ver V] [hdr NAME VALUE]…`.
fn http_check_send(s: &mut Settings, args: &[String], n: usize, w: &mut Warnings) {
    let (mut method, mut uri) = ("GET".to_owned(), s.http_path.clone().unwrap_or_else(|| "/".into()));
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "meth" => method = value,
            "uri" => uri = value,
            "ver" => {}
            "hdr" if value.eq_ignore_ascii_case("host") => {
                s.http_host = args.get(i + 2).cloned();
                i += 1;
            }
            other => {
                w.add(n, format!("`http-check send {other}` not carried over"));
                if other == "hdr" {
                    i += 1;
                }
            }
        }
        i += 2;
    }
    set_check(s, &method, &uri, n, w);
}

fn set_check(s: &mut Settings, method: &str, uri: &str, n: usize, w: &mut Warnings) {
    if !method.eq_ignore_ascii_case("GET") {
        w.add(n, format!("HTTP check method {method} not carried over: Always On's HTTP checks send GET"));
    }
    if uri.starts_with('/') && !uri.contains(char::is_whitespace) {
        s.http_path = Some(uri.to_owned());
    } else {
        w.add(
            n,
            format!("HTTP check URI `{uri}` not carried over (must start with '/'): path \"/\" is used"),
        );
        s.http_path = Some("/".into());
    }
}

/// `bind ADDR:PORT[,ADDR:PORT…] [params]`.
fn bind(proxy: &mut Proxy, line: &Line, vip_address: Option<IpAddr>, w: &mut Warnings) {
    let n = line.number;
    for spec in line.word(1).split(',') {
        let parsed = match server::address(spec) {
            Ok((address, Some(port))) => Ok((address, port)),
            Ok((_, None)) => Err("no port".to_owned()),
            Err(reason) if reason == "no address" => {
                let port = spec.rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
                match (vip_address, port) {
                    (Some(a), Some(p)) => Ok((a, p)),
                    (None, Some(_)) => Err("no address (a VIP needs one: pass --vip-address)".to_owned()),
                    (_, None) => Err("the port is not a plain port".to_owned()),
                }
            }
            Err(reason) => Err(reason),
        };
        match parsed {
            Ok((address, port)) if port != 0 => proxy.binds.push(Bind { line: n, address, port }),
            Ok(_) => w.add(n, format!("`bind {spec}`: port 0 skipped")),
            Err(reason) => w.add(n, format!("`bind {spec}` skipped: {reason}")),
        }
    }
    if line.words.len() > 2 {
        w.add(
            n,
            format!(
                "bind parameters `{}` not carried over (no TLS, no socket options: packets are forwarded as they are)",
                line.words[2..].join(" ")
            ),
        );
    }
}
