//! Health-check and slow-start keys, layered: a backend's own value, else its
//! VIP's, else the built-in default. Each key is checked once, in the table
//! it is written in; the rules between keys (`exec` needs a command, a port-0
//! backend needs `check_port`) are checked on each backend's resolved
//! settings and reported where the fix belongs: at the backend when it sets
//! `check` itself, else once at the VIP it inherits from.

use std::{net::IpAddr, ops::Range, time::Duration};

use toml::Spanned;

use super::{
    problems::{Problems, Shown},
    raw::RawCheck,
    values::{
        choice, duration, exec_command, http_host, http_path, in_range, ip, CHECK_KINDS, CHECK_PORT,
        DEFAULT_FALL, DEFAULT_HTTP_PATH, DEFAULT_INTER, DEFAULT_RISE, DEFAULT_TIMEOUT, HTTP_STATUS, INTER,
        RISE_FALL, SLOWSTART, TIMEOUT,
    },
    CheckKind, HealthCheck,
};

/// One key of one table.
#[derive(Clone, Debug)]
enum Key<T> {
    /// Not written: inherited.
    Absent,
    Valid(T),
    /// Written and wrong; already reported.
    Invalid,
}

impl<T: Clone> Key<T> {
    fn of<V: Shown>(
        p: &mut Problems,
        field: String,
        raw: Option<&Spanned<V>>,
        parse: impl FnOnce(&V) -> Result<T, String>,
    ) -> Self {
        match raw {
            None => Key::Absent,
            Some(raw) => p.check(field, raw, parse).map_or(Key::Invalid, Key::Valid),
        }
    }

    /// This table's value if written, else `parent`'s.
    fn over<'k>(&'k self, parent: &'k Key<T>) -> &'k Key<T> {
        match self {
            Key::Absent => parent,
            _ => self,
        }
    }

    /// The value, `default` when nobody wrote one; `None` when it is invalid.
    fn or(&self, default: Option<T>) -> Option<T> {
        match self {
            Key::Absent => default,
            Key::Valid(value) => Some(value.clone()),
            Key::Invalid => None,
        }
    }

    /// For optional settings: `Some(None)` when nobody wrote one.
    fn optional(&self) -> Option<Option<T>> {
        match self {
            Key::Absent => Some(None),
            Key::Valid(value) => Some(Some(value.clone())),
            Key::Invalid => None,
        }
    }

    fn is_written(&self) -> bool {
        !matches!(self, Key::Absent)
    }
}

/// The check keys of one `[[vip]]` or `[[vip.backend]]`, each checked.
struct Keys {
    kind: Key<CheckKind>,
    /// Where `check` is written, for problems about the kind.
    kind_span: Option<Range<usize>>,
    inter: Key<Duration>,
    timeout: Key<Duration>,
    rise: Key<u32>,
    fall: Key<u32>,
    port: Key<u16>,
    address: Key<IpAddr>,
    http_path: Key<String>,
    http_status: Key<Vec<u16>>,
    http_host: Key<String>,
    exec_command: Key<String>,
    slowstart: Key<Duration>,
}

impl Keys {
    fn check(at: &str, raw: RawCheck, p: &mut Problems) -> Keys {
        let field = |key: &str| format!("{at}.{key}");
        Keys {
            kind: Key::of(p, field("check"), raw.check, |s| choice(s, CHECK_KINDS)),
            kind_span: raw.check.map(Spanned::span),
            inter: Key::of(p, field("inter"), raw.inter, duration(INTER)),
            timeout: Key::of(p, field("timeout"), raw.timeout, duration(TIMEOUT)),
            rise: Key::of(p, field("rise"), raw.rise, in_range(RISE_FALL)),
            fall: Key::of(p, field("fall"), raw.fall, in_range(RISE_FALL)),
            port: Key::of(p, field("check_port"), raw.check_port, in_range(CHECK_PORT)),
            address: Key::of(p, field("check_address"), raw.check_address, |s| ip(s)),
            http_path: Key::of(p, field("http_path"), raw.http_path, |s| http_path(s)),
            http_status: match raw.http_status {
                None => Key::Absent,
                Some(codes) => {
                    let codes: Vec<Option<u16>> = codes
                        .iter()
                        .enumerate()
                        .map(|(i, code)| {
                            p.check(field(&format!("http_status[{i}]")), code, in_range(HTTP_STATUS))
                        })
                        .collect();
                    codes.into_iter().collect::<Option<_>>().map_or(Key::Invalid, Key::Valid)
                }
            },
            http_host: Key::of(p, field("http_host"), raw.http_host, |s| http_host(s)),
            exec_command: Key::of(p, field("exec_command"), raw.exec_command, |s| exec_command(s)),
            slowstart: Key::of(p, field("slowstart"), raw.slowstart, duration(SLOWSTART)),
        }
    }
}

/// A rule between keys, checked on each backend's resolved settings.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rule {
    ExecNeedsCommand,
    PortZeroNeedsCheckPort,
}

impl Rule {
    fn reason(self) -> &'static str {
        match self {
            Rule::ExecNeedsCommand => "check = \"exec\" needs exec_command",
            Rule::PortZeroNeedsCheckPort => "a port-0 backend needs check_port for a tcp/http check",
        }
    }
}

/// A VIP's check keys: the defaults of its backends.
pub(super) struct VipChecks {
    at: String,
    keys: Keys,
    /// `check` when neither the VIP nor the backend says: tcp for TCP services;
    /// none for UDP ones, where a connect to the service port cannot work.
    default_kind: CheckKind,
    /// Rules the VIP's own keys break, reported once however many backends inherit them.
    reported: Vec<Rule>,
}

impl VipChecks {
    pub(super) fn new(at: &str, raw: RawCheck, default_kind: CheckKind, p: &mut Problems) -> Self {
        VipChecks { at: at.to_owned(), keys: Keys::check(at, raw, p), default_kind, reported: Vec::new() }
    }

    /// A backend's health check and slow start. `address` and `port` are the
    /// backend's, the defaults of check_address and check_port; `None` where
    /// invalid (reported elsewhere), which makes the result `None`.
    pub(super) fn backend(
        &mut self,
        at: &str,
        raw: RawCheck,
        address: Option<IpAddr>,
        port: Option<u16>,
        p: &mut Problems,
    ) -> Option<(HealthCheck, Duration)> {
        let own = Keys::check(at, raw, p);
        let vip = &self.keys;
        let kind = own.kind.over(&vip.kind).or(Some(self.default_kind));
        let exec_command = own.exec_command.over(&vip.exec_command);
        let check_port = own.port.over(&vip.port);

        let mut broken = Vec::new();
        if kind == Some(CheckKind::Exec) && !exec_command.is_written() {
            broken.push(Rule::ExecNeedsCommand);
        }
        if matches!(kind, Some(CheckKind::Tcp | CheckKind::Http))
            && port == Some(0)
            && !check_port.is_written()
        {
            broken.push(Rule::PortZeroNeedsCheckPort);
        }
        let kind_shown = kind.map_or_else(String::new, |kind| kind_name(kind).shown());
        for rule in &broken {
            if own.kind.is_written() {
                p.add(format!("{at}.check"), kind_shown.clone(), rule.reason().into(), own.kind_span.clone());
            } else if !self.reported.contains(rule) {
                // Neither the backend's check nor the missing key is its own: the VIP's settings are at fault.
                self.reported.push(*rule);
                p.add(
                    format!("{}.check", self.at),
                    kind_shown.clone(),
                    rule.reason().into(),
                    vip.kind_span.clone(),
                );
            }
        }
        if !broken.is_empty() {
            return None;
        }

        let check = HealthCheck {
            kind: kind?,
            inter: own.inter.over(&vip.inter).or(Some(DEFAULT_INTER))?,
            timeout: own.timeout.over(&vip.timeout).or(Some(DEFAULT_TIMEOUT))?,
            rise: own.rise.over(&vip.rise).or(Some(DEFAULT_RISE))?,
            fall: own.fall.over(&vip.fall).or(Some(DEFAULT_FALL))?,
            address: own.address.over(&vip.address).or(address)?,
            port: check_port.or(port)?,
            http_path: own.http_path.over(&vip.http_path).or(Some(DEFAULT_HTTP_PATH.into()))?,
            http_status: own.http_status.over(&vip.http_status).or(Some(Vec::new()))?,
            http_host: own.http_host.over(&vip.http_host).optional()?,
            exec_command: exec_command.optional()?,
        };
        let slowstart = own.slowstart.over(&vip.slowstart).or(Some(Duration::ZERO))?;
        Some((check, slowstart))
    }
}

fn kind_name(kind: CheckKind) -> String {
    CHECK_KINDS.iter().find(|&&(_, k)| k == kind).map_or("?", |&(name, _)| name).to_owned()
}
