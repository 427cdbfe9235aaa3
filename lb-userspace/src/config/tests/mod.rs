//! Every rule has a test that the error names the field, shows the value and
//! says why. Here the helpers; `valid` holds what parses (defaults, round
//! trips, error reporting), `rules` the validation rules 1–10, `health` rule 11.

mod bgp;
mod cluster;
mod health;
mod nat;
mod rules;
mod valid;

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use lb_common::{
    sizes::{
        DEFAULT_CONN_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, DEFAULT_RING_SIZE, MAX_RING_ENTRIES,
    },
    VipKey,
};

use super::*;

const GLOBAL: &str = "[global]\ninterface = \"eth0\"\n";
const EXAMPLE: &str = include_str!("../../../../examples/alwayson.toml");

/// `[global]` with only the interface, then `rest`.
fn with(rest: &str) -> String {
    format!("{GLOBAL}{rest}")
}

/// A TCP VIP on port 80 named "web" with the given backend tables.
fn web(backends: &str) -> String {
    with(&format!("[[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n{backends}"))
}

fn problems(text: &str) -> Vec<Problem> {
    match Config::from_toml(text) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

/// The single problem of `text`, checked to name `field`, show `value` and
/// give a reason containing `why`.
#[track_caller]
fn problem(text: &str, field: &str, value: &str, why: &str) -> Problem {
    let list = problems(text);
    assert_eq!(list.len(), 1, "expected one problem, got {list:#?}");
    let p = list.into_iter().next().unwrap();
    assert_eq!((p.field.as_str(), p.value.as_str()), (field, value), "{p}");
    assert!(p.reason.contains(why), "reason {:?} lacks {why:?}", p.reason);
    assert!(p.to_string().starts_with(&format!("{field} = {value}: ")), "{p}");
    let repeats = p.reason.starts_with("duplicate") || p.reason.starts_with("listed twice");
    assert_eq!(p.repeat, repeats, "marked as a repeat exactly when it is one: {p}");
    p
}

/// The message of a syntax error, checked to carry a line and column and
/// to name `field`: the key that failed, as a path.
#[track_caller]
fn syntax(text: &str, line: usize, field: &str, why: &str) -> String {
    match Config::from_toml(text) {
        Err(e @ ConfigError::Syntax { .. }) => {
            let ConfigError::Syntax { field: named, .. } = &e else { unreachable!() };
            assert_eq!(named, field, "{e}");
            let message = e.to_string();
            assert!(message.contains(&format!("line {line}, column ")), "{message}");
            assert!(message.contains(why), "{message} lacks {why:?}");
            message
        }
        other => panic!("expected Syntax, got {other:?}"),
    }
}

fn at(line: usize, column: usize) -> Option<Location> {
    Some(Location { line, column })
}
