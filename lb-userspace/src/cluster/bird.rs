//! BIRD 2: the config the agent writes for it, and its control socket.
//!
//! The agent owns the whole file: router id, BFD, one static protocol per
//! family holding the announced VIPs, one BGP session per neighbour. BIRD is
//! told to re-read it with `configure` on the control socket (its documented
//! text protocol: a greeting, then per command lines `NNNN-text` and a last
//! `NNNN text`; codes 8000 and up are errors). Talking to the socket instead
//! of running `birdc` keeps timeouts in our hands and needs no process.

use std::{collections::BTreeSet, fmt::Write as _, net::IpAddr, path::Path, time::Duration};

use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixStream,
};

use crate::config::bgp::Bgp;

/// The static protocols and filters this file defines, by family.
const STATIC4: &str = "alwayson_vips4";
const STATIC6: &str = "alwayson_vips6";
/// RFC 8326: receivers lower the route's preference to the lowest.
const GRACEFUL_SHUTDOWN: &str = "(65535, 0)";
/// Longest reply we read from BIRD (a `show protocols` of a few sessions is small).
const MAX_REPLY: usize = 1 << 20;

/// What the routes carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    Normal,
    /// Tagged GRACEFUL_SHUTDOWN: routers move traffic away before the withdrawal.
    Draining,
}

/// The complete BIRD config for `routes`.
pub fn render(bgp: &Bgp, routes: &BTreeSet<IpAddr>, style: Style) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# Written by alwayson; rewritten on every change of the announced VIPs.");
    let _ = writeln!(out, "router id {};", bgp.router_id);
    // Under systemd or `bird -f`, the journal or the terminal gets it.
    let _ = writeln!(out, "log stderr all;");
    // One word per time, so `show protocols` rows split on whitespace.
    let _ = writeln!(out, "timeformat protocol \"%s\";\n");
    let _ = writeln!(out, "protocol device {{ }}\n");
    if bgp.bfd {
        let ms = bgp.bfd_interval.as_millis();
        let _ = writeln!(
            out,
            "protocol bfd alwayson_bfd {{\n  interface \"*\" {{ interval {ms} ms; multiplier {}; }};\n}}\n",
            bgp.bfd_multiplier
        );
    }
    // Routes hang on the keeper's device: they exist only while it does.
    for (name, channel, v6) in [(STATIC4, "ipv4", false), (STATIC6, "ipv6", true)] {
        let _ = writeln!(out, "protocol static {name} {{\n  {channel};\n  check link on;");
        for addr in routes.iter().filter(|a| a.is_ipv6() == v6) {
            let len = if v6 { 128 } else { 32 };
            let _ = writeln!(out, "  route {addr}/{len} via \"{}\";", bgp.device);
        }
        let _ = writeln!(out, "}}\n");
        let mark = match style {
            Style::Normal => String::new(),
            Style::Draining => format!("bgp_community.add({GRACEFUL_SHUTDOWN}); "),
        };
        let len = if v6 { 128 } else { 32 };
        // Only our host routes leave, whatever else BIRD learns.
        let _ = writeln!(
            out,
            "filter {name}_out {{\n  if proto = \"{name}\" && net.len = {len} then {{ {mark}accept; }}\n  reject;\n}}\n"
        );
    }
    for (i, n) in bgp.neighbors.iter().enumerate() {
        let (channel, filter) = if n.address.is_ipv6() { ("ipv6", STATIC6) } else { ("ipv4", STATIC4) };
        let _ = writeln!(
            out,
            "protocol bgp alwayson_peer{i} {{\n  local as {};\n  neighbor {} as {};\n  {channel} {{ import none; export filter {filter}_out; }};\n{}  connect delay time 1;\n  connect retry time 5;\n  error wait time 1, 30;\n}}\n",
            bgp.local_as,
            n.address,
            n.asn,
            if bgp.bfd { "  bfd on;\n" } else { "" },
        );
    }
    out
}

/// The protocol name of neighbour `i` in the rendered file.
pub fn peer_name(i: usize) -> String {
    format!("alwayson_peer{i}")
}

/// Writes `text` to `path` whole: BIRD never reads half a file.
pub async fn write_config(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, text).await?;
    tokio::fs::rename(&tmp, path).await
}

#[derive(Debug, thiserror::Error)]
pub enum BirdError {
    #[error("BIRD's control socket {0}: {1}")]
    Unreachable(String, std::io::Error),
    #[error("BIRD did not answer within {0:?}")]
    Timeout(Duration),
    #[error("BIRD refused: {0}")]
    Refused(String),
    #[error("BIRD's reply could not be read: {0}")]
    Garbled(String),
}

/// One reply line: its code and text.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    code: u16,
    text: String,
}

/// Sends one command and collects the reply, all within `timeout`.
async fn command(socket: &Path, cmd: &str, timeout: Duration) -> Result<Vec<Line>, BirdError> {
    tokio::time::timeout(timeout, async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| BirdError::Unreachable(socket.display().to_string(), e))?;
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        read_reply(&mut read).await?; // the greeting
        write
            .write_all(format!("{cmd}\n").as_bytes())
            .await
            .map_err(|e| BirdError::Unreachable(socket.display().to_string(), e))?;
        read_reply(&mut read).await
    })
    .await
    .map_err(|_| BirdError::Timeout(timeout))?
}

async fn read_reply(read: &mut BufReader<tokio::net::unix::OwnedReadHalf>) -> Result<Vec<Line>, BirdError> {
    let mut lines = Vec::new();
    let mut total = 0;
    let mut last_code = 0;
    loop {
        let mut raw = String::new();
        let n = read.read_line(&mut raw).await.map_err(|e| BirdError::Garbled(e.to_string()))?;
        if n == 0 {
            return Err(BirdError::Garbled("the socket closed mid-reply".into()));
        }
        total += n;
        if total > MAX_REPLY {
            return Err(BirdError::Garbled(format!("reply longer than {MAX_REPLY} bytes")));
        }
        let raw = raw.trim_end_matches(['\n', '\r']);
        match parse_line(raw) {
            Some((code, more, text)) => {
                last_code = code;
                lines.push(Line { code, text: text.to_owned() });
                if !more {
                    return Ok(lines);
                }
            }
            // A continuation of the previous line's code.
            None if raw.starts_with(' ') => lines.push(Line { code: last_code, text: raw[1..].to_owned() }),
            None => return Err(BirdError::Garbled(format!("unexpected line {raw:?}"))),
        }
    }
}

/// `NNNN-text` (more follows) or `NNNN text` (the last line).
fn parse_line(raw: &str) -> Option<(u16, bool, &str)> {
    let code = raw.get(..4)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let more = match raw.as_bytes().get(4) {
        Some(b'-') => true,
        Some(b' ') | None => false,
        _ => return None,
    };
    Some((code.parse().ok()?, more, raw.get(5..).unwrap_or("")))
}

fn refused(lines: &[Line]) -> Option<String> {
    let bad: Vec<&str> = lines.iter().filter(|l| l.code >= 8000).map(|l| l.text.as_str()).collect();
    (!bad.is_empty()).then(|| bad.join("; "))
}

/// Makes BIRD re-read its config file.
pub async fn configure(socket: &Path, timeout: Duration) -> Result<(), BirdError> {
    let lines = command(socket, "configure", timeout).await?;
    match refused(&lines) {
        Some(why) => Err(BirdError::Refused(why)),
        None => Ok(()),
    }
}

/// One of BIRD's protocols as `show protocols` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Protocol {
    pub name: String,
    /// BIRD's state: up, start, down, ...
    pub state: String,
    /// For BGP: Established, Active, Connect, ... and the last error.
    pub info: String,
}

pub async fn protocols(socket: &Path, timeout: Duration) -> Result<Vec<Protocol>, BirdError> {
    let lines = command(socket, "show protocols", timeout).await?;
    if let Some(why) = refused(&lines) {
        return Err(BirdError::Refused(why));
    }
    Ok(parse_protocols(&lines))
}

/// Rows of code 1002: `name proto table state since [info…]`.
fn parse_protocols(lines: &[Line]) -> Vec<Protocol> {
    lines
        .iter()
        .filter(|l| l.code == 1002)
        .filter_map(|l| {
            let mut words = l.text.split_whitespace();
            let name = words.next()?.to_owned();
            let _proto = words.next()?;
            let _table = words.next()?;
            let state = words.next()?.to_owned();
            let _since = words.next();
            let info = words.collect::<Vec<_>>().join(" ");
            Some(Protocol { name, state, info })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn bgp() -> Bgp {
        let text = "[global]\ninterface = \"eth0\"\n[bgp]\nrouter_id = \"10.77.160.11\"\nlocal_as = 65001\n\
                    [[bgp.neighbor]]\naddress = \"10.77.160.1\"\nas = 65000\n\
                    [[bgp.neighbor]]\naddress = \"fd77::1\"\nas = 65000\n";
        Config::from_toml(text).expect("valid").bgp.expect("a [bgp] section")
    }

    #[test]
    fn the_file_announces_exactly_the_given_routes_on_the_keepers_device() {
        let routes: BTreeSet<IpAddr> = ["10.77.163.1".parse().unwrap(), "fd77::163".parse().unwrap()].into();
        let text = render(&bgp(), &routes, Style::Normal);
        assert!(text.contains("router id 10.77.160.11;"), "{text}");
        assert!(text.contains("route 10.77.163.1/32 via \"ao-eth0\";"), "{text}");
        assert!(text.contains("route fd77::163/128 via \"ao-eth0\";"), "{text}");
        assert!(text.contains("neighbor 10.77.160.1 as 65000;"), "{text}");
        assert!(text.contains("ipv4 { import none; export filter alwayson_vips4_out; }"), "{text}");
        assert!(text.contains("ipv6 { import none; export filter alwayson_vips6_out; }"), "{text}");
        assert!(text.contains("bfd on;") && text.contains("interval 100 ms; multiplier 3;"), "{text}");
        assert!(!text.contains("65535"), "{text}");
        let draining = render(&bgp(), &routes, Style::Draining);
        assert!(draining.contains("bgp_community.add((65535, 0));"), "{draining}");
    }

    #[test]
    fn reply_lines_parse_and_errors_are_found() {
        assert_eq!(parse_line("0001 BIRD 2.0.12 ready."), Some((1, false, "BIRD 2.0.12 ready.")));
        assert_eq!(parse_line("0002-Reading configuration"), Some((2, true, "Reading configuration")));
        assert_eq!(parse_line("0000"), Some((0, false, "")));
        assert_eq!(parse_line(" continued"), None);
        assert_eq!(parse_line("abcd text"), None);
        let lines = vec![Line { code: 8002, text: "/x.conf:3:5 syntax error".into() }];
        assert_eq!(refused(&lines).as_deref(), Some("/x.conf:3:5 syntax error"));
    }

    #[test]
    fn show_protocols_rows_parse() {
        let lines = vec![
            Line { code: 2002, text: "Name       Proto      Table      State  Since         Info".into() },
            Line { code: 1002, text: "device1    Device     ---        up     22:54:23.695  ".into() },
            Line { code: 1002, text: "alwayson_peer0 BGP   ---        up     22:54:24.496  Established   ".into() },
            Line { code: 1002, text: "alwayson_peer1 BGP   ---        start  22:54:24.496  Active        Socket: Connection refused".into() },
        ];
        let got = parse_protocols(&lines);
        assert_eq!(got.len(), 3);
        assert_eq!(
            got[1],
            Protocol { name: "alwayson_peer0".into(), state: "up".into(), info: "Established".into() }
        );
        assert_eq!(got[2].info, "Active Socket: Connection refused");
    }
}
