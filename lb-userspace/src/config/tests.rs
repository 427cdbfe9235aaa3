//! Every rule has a test that the error names the field, shows the value and
//! says why.

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
const EXAMPLE: &str = include_str!("../../../examples/alwayson.toml");

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
    p
}

/// The message of a syntax error, checked to carry a line and column.
#[track_caller]
fn syntax(text: &str, line: usize, why: &str) -> String {
    match Config::from_toml(text) {
        Err(e @ ConfigError::Syntax(_)) => {
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

// ---- valid configs, defaults, round trip ----

#[test]
fn minimal_config_gets_every_default() {
    let config = Config::from_toml(GLOBAL).unwrap();
    assert_eq!(
        config,
        Config {
            global: Global {
                interface: "eth0".into(),
                xdp_mode: XdpMode::Auto,
                hash_seed: DEFAULT_HASH_SEED,
                ring_size: DEFAULT_RING_SIZE,
                max_vips: DEFAULT_MAX_VIPS,
                max_backends: DEFAULT_MAX_BACKENDS,
                conn_table_size: DEFAULT_CONN_TABLE_SIZE,
                pin_path: "/sys/fs/bpf/alwayson/eth0".into(),
                set_forwarding: true,
            },
            api: Api {
                socket: "/run/alwayson/eth0.sock".into(),
                tcp: None,
                token: None,
                runtime_file: "/run/alwayson/eth0.runtime.json".into(),
            },
            web: Web { listen: Some("127.0.0.1:9180".parse().unwrap()) },
            vips: vec![],
        }
    );
}

#[test]
fn api_and_web_listeners_parse_validate_and_round_trip() {
    let text = format!(
        "{GLOBAL}[api]\nsocket = \"/tmp/a.sock\"\ntcp = \"127.0.0.1:9181\"\ntoken = \"0123456789abcdef\"\n\
         runtime_file = \"/tmp/rt.json\"\n[web]\nlisten = \"off\"\n"
    );
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(config.api.tcp, Some("127.0.0.1:9181".parse().unwrap()));
    assert_eq!(config.api.token, Some(Token::Value("0123456789abcdef".into())));
    assert_eq!(config.web.listen, None);
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);

    let bad = |extra: &str, field: &str, reason: &str| {
        let err = Config::from_toml(&format!("{GLOBAL}{extra}")).unwrap_err();
        let p = err.problems().iter().find(|p| p.field == field).unwrap_or_else(|| panic!("{field}: {err}"));
        assert!(p.reason.contains(reason), "{field}: {}", p.reason);
    };
    bad("[api]\ntcp = \"127.0.0.1:9181\"\n", "api.tcp", "needs api.token");
    bad("[api]\ntcp = \"localhost\"\ntoken = \"0123456789abcdef\"\n", "api.tcp", "address:port");
    bad("[api]\ntoken = \"short\"\n", "api.token", "at least 16");
    bad("[api]\nsocket = \"api.sock\"\n", "api.socket", "absolute");
    bad("[api]\ntoken = \"0123456789abcdef\"\ntoken_file = \"/etc/t\"\n", "api.token_file", "either");
    bad("[web]\nlisten = \"everywhere\"\n", "web.listen", "address:port");
}

#[test]
fn vip_and_backend_defaults() {
    let config = Config::from_toml(&with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n[[vip.backend]]\naddress = \"10.77.1.10\"\n",
    ))
    .unwrap();
    let vip = &config.vips[0];
    assert_eq!(vip.name, "10.77.100.1:80/tcp");
    assert_eq!((vip.protocol, vip.mode), (Protocol::Tcp, Mode::Dsr));
    assert_eq!((vip.allbackups, vip.on_all_down), (false, OnAllDown::Drop));
    let backend = &vip.backends[0];
    assert_eq!(
        backend,
        &Backend {
            name: "10.77.1.10:80".into(),
            address: "10.77.1.10".parse().unwrap(),
            port: 80,
            weight: 1,
            backup: false,
            check: HealthCheck {
                kind: CheckKind::Tcp,
                inter: Duration::from_millis(250),
                timeout: Duration::from_millis(200),
                rise: 2,
                fall: 2,
                address: "10.77.1.10".parse().unwrap(),
                port: 80,
                http_path: "/".into(),
                http_status: vec![],
                http_host: None,
                exec_command: None,
            },
            slowstart: Duration::ZERO,
        }
    );
}

#[test]
fn ipv6_default_names_bracket_the_address() {
    let config = Config::from_toml(&with(
        "[[vip]]\naddress = \"fd77::100\"\nport = 53\nprotocol = \"udp\"\n[[vip.backend]]\naddress = \"fd77::1:10\"\n",
    ))
    .unwrap();
    assert_eq!(config.vips[0].name, "[fd77::100]:53/udp");
    assert_eq!(config.vips[0].backends[0].name, "[fd77::1:10]:53");
}

#[test]
fn no_vips_is_valid() {
    assert!(Config::from_toml(GLOBAL).unwrap().vips.is_empty());
}

#[test]
fn vip_without_backends_is_valid() {
    let config = Config::from_toml(&web("")).unwrap();
    assert!(config.vips[0].backends.is_empty());
}

#[test]
fn full_config_parses_and_round_trips() {
    let text = r#"
[global]
interface = "ens3"
xdp_mode = "native"
hash_seed = 42
ring_size = 251
max_vips = 8
max_backends = 100
conn_table_size = 1024
pin_path = "/sys/fs/bpf/lb"
set_forwarding = false

[[vip]]
name = "web"
address = "10.77.100.1"
port = 443
protocol = "tcp"
mode = "dsr"
  [[vip.backend]]
  name = "a"
  address = "10.77.1.10"
  port = 443
  weight = 256
  [[vip.backend]]
  address = "10.77.1.11"
  weight = 0
  backup = true

[[vip]]
address = "fd77::100"
port = 0
protocol = "udp"
check_port = 8053
  [[vip.backend]]
  address = "fd77::1:10"
  port = 0
  [[vip.backend]]
  address = "fd77::1:11"
"#;
    let config = Config::from_toml(text).unwrap();
    assert_eq!(config.global.xdp_mode, XdpMode::Native);
    assert_eq!(config.global.pin_path, PathBuf::from("/sys/fs/bpf/lb"));
    assert!(!config.global.set_forwarding);
    assert_eq!(config.vips[1].backends[1].port, 0);
    let again = Config::from_toml(&config.to_toml()).unwrap();
    assert_eq!(again, config);
}

#[test]
fn to_toml_writes_every_default() {
    let config = Config::from_toml(&web("[[vip.backend]]\naddress = \"10.77.1.10\"\n")).unwrap();
    let text = config.to_toml();
    for key in [
        "xdp_mode = \"auto\"",
        "hash_seed = 1096175438",
        "ring_size = 65537",
        "pin_path = \"/sys/fs/bpf/alwayson/eth0\"",
        "set_forwarding = true",
        "protocol = \"tcp\"",
        "mode = \"dsr\"",
        "[[vip.backend]]",
        "name = \"10.77.1.10:80\"",
        "weight = 1",
        "backup = false",
    ] {
        assert!(text.contains(key), "{key} missing from\n{text}");
    }
    assert_eq!(Config::from_toml(&text).unwrap(), config);
}

#[test]
fn to_toml_of_no_vips_has_no_vip_key() {
    let config = Config::from_toml(GLOBAL).unwrap();
    let text = config.to_toml();
    assert!(text.starts_with("[global]\n") && !text.contains("[[vip]]"), "{text}");
    assert_eq!(Config::from_toml(&text).unwrap(), config);
}

#[test]
fn example_config_parses() {
    let config = Config::from_toml(EXAMPLE).unwrap();
    assert_eq!(config.global.interface, "eth0");
    assert_eq!(config.global.hash_seed, DEFAULT_HASH_SEED);
    let [web, dns] = &config.vips[..] else { panic!("two VIPs expected: {config:#?}") };
    assert_eq!((web.name.as_str(), web.protocol, web.backends.len()), ("web", Protocol::Tcp, 3));
    assert_eq!(web.backends.iter().filter(|b| b.backup).count(), 1);
    let kinds: Vec<CheckKind> = web.backends.iter().map(|b| b.check.kind).collect();
    assert_eq!(
        kinds,
        [CheckKind::Http, CheckKind::Http, CheckKind::Tcp],
        "web-sorry overrides the VIP's check"
    );
    assert!(web
        .backends
        .iter()
        .all(|b| b.check.http_path == "/health" && b.slowstart == Duration::from_secs(10)));
    assert!(dns.address.is_ipv6());
    assert_eq!((dns.protocol, dns.backends.len()), (Protocol::Udp, 2));
    assert_eq!(dns.backends[0].check.kind, CheckKind::Tcp);
    assert_eq!(dns.backends[0].check.target(), dns.backends[0].socket());
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
}

#[test]
fn load_reads_a_file_and_names_it_when_it_cannot() {
    let path = std::env::temp_dir().join(format!("alwayson-config-{}.toml", std::process::id()));
    std::fs::write(&path, EXAMPLE).unwrap();
    let loaded = Config::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap(), Config::from_toml(EXAMPLE).unwrap());

    let err = Config::load(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err:?}");
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
}

#[test]
fn helpers_give_sockets_keys_and_protocol_numbers() {
    let config = Config::from_toml(EXAMPLE).unwrap();
    let web = &config.vips[0];
    let vip_addr = IpAddr::V4(Ipv4Addr::new(10, 77, 100, 1));
    assert_eq!(web.socket(), SocketAddr::new(vip_addr, 80));
    assert_eq!(web.key(), VipKey::new(vip_addr, 80, 6));
    assert_eq!(web.backends[0].socket(), "10.77.1.10:80".parse().unwrap());
    let dns = &config.vips[1];
    assert_eq!(dns.key(), VipKey::new(IpAddr::V6(Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 0x100)), 53, 17));
    assert_eq!((Protocol::Tcp.number(), Protocol::Udp.number()), (6, 17));
    assert_eq!(lb_common::Mode::from(Mode::Dsr), lb_common::Mode::Dsr);
}

// ---- error reporting ----

#[test]
fn all_problems_are_reported_at_once_in_file_order() {
    let text = with(
        "ring_size = 10\n\
         [[vip]]\naddress = \"foo\"\nport = 80\n\
         [[vip.backend]]\naddress = \"10.77.1.10\"\nweight = 300\n",
    );
    let list = problems(&text);
    let fields: Vec<&str> = list.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(fields, ["global.ring_size", "vip[0].address", "vip[0].backend[0].weight"]);
    let err = ConfigError::Invalid(list);
    let lines: Vec<String> = err.to_string().lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 3, "{err}");
    assert_eq!(
        lines[2],
        "vip[0].backend[0].weight = 300: out of range, must be 0..=256 (at line 9, column 10)"
    );
    assert_eq!(err.problems().len(), 3);
}

#[test]
fn problems_point_at_the_value() {
    let p = problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nweight = 300\n"),
        "vip[0] (web).backend[0].weight",
        "300",
        "out of range, must be 0..=256",
    );
    assert_eq!(p.location, at(9, 10));
}

// ---- rule 1: unknown keys, wrong types, missing keys ----

#[test]
fn unknown_key_in_global_is_a_syntax_error_with_position() {
    let message = syntax(&with("ring = 7\n"), 3, "unknown field `ring`");
    assert!(message.contains("line 3, column 1"), "{message}");
}

#[test]
fn unknown_key_in_vip_is_a_syntax_error() {
    syntax(&web("balance = \"roundrobin\"\n"), 7, "unknown field `balance`");
}

#[test]
fn unknown_key_in_backend_is_a_syntax_error() {
    syntax(&web("[[vip.backend]]\naddress = \"10.77.1.10\"\nwieght = 2\n"), 9, "unknown field `wieght`");
}

#[test]
fn unknown_table_is_a_syntax_error() {
    syntax(&with("[frontend]\nbind = \"*:80\"\n"), 3, "unknown field `frontend`");
}

#[test]
fn missing_required_keys_are_syntax_errors() {
    syntax("[global]\nxdp_mode = \"auto\"\n", 1, "missing field `interface`");
    syntax(&with("[[vip]]\naddress = \"10.77.100.1\"\n"), 3, "missing field `port`");
    syntax(&web("[[vip.backend]]\nport = 80\n"), 7, "missing field `address`");
}

#[test]
fn wrong_types_are_syntax_errors() {
    syntax(&web("[[vip.backend]]\naddress = \"10.77.1.10\"\nweight = \"2\"\n"), 9, "invalid type");
    syntax(&with("set_forwarding = \"yes\"\n"), 3, "invalid type");
    syntax("[global]\ninterface = \"eth0\nport = 80\n", 2, "invalid");
}

// ---- rule 2: duplicate VIPs and VIP names ----

#[test]
fn duplicate_vip_is_rejected() {
    let text = with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
         [[vip]]\nname = \"again\"\naddress = \"10.77.100.1\"\nport = 80\nprotocol = \"tcp\"\n",
    );
    let p =
        problem(&text, "vip[1] (again)", "10.77.100.1:80/tcp", "same address, port and protocol as vip[0]");
    assert_eq!(p.location, at(8, 11));
}

#[test]
fn unnamed_duplicate_vips_are_reported_once() {
    let twice = "[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n".repeat(2);
    problem(&with(&twice), "vip[1]", "10.77.100.1:80/tcp", "duplicate VIP");
}

#[test]
fn same_address_and_port_with_another_protocol_is_another_vip() {
    let text = with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 53\n\
         [[vip]]\naddress = \"10.77.100.1\"\nport = 53\nprotocol = \"udp\"\n",
    );
    assert_eq!(Config::from_toml(&text).unwrap().vips.len(), 2);
}

#[test]
fn duplicate_vip_name_is_rejected() {
    let text = with(
        "[[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n\
         [[vip]]\nname = \"web\"\naddress = \"10.77.100.2\"\nport = 80\n",
    );
    problem(&text, "vip[1] (web).name", "\"web\"", "duplicate name: vip[0] (web) has it too");
}

#[test]
fn explicit_name_equal_to_a_default_name_is_a_duplicate() {
    let text = with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
         [[vip]]\nname = \"10.77.100.1:80/tcp\"\naddress = \"10.77.100.2\"\nport = 80\n",
    );
    problem(&text, "vip[1] (10.77.100.1:80/tcp).name", "\"10.77.100.1:80/tcp\"", "duplicate name: vip[0]");
}

#[test]
fn empty_name_is_rejected() {
    problem(
        &with("[[vip]]\nname = \" \"\naddress = \"10.77.100.1\"\nport = 80\n"),
        "vip[0] ( ).name",
        "\" \"",
        "empty",
    );
}

// ---- rule 3: duplicate backends and backend names ----

#[test]
fn backend_listed_twice_is_rejected() {
    let text = web("[[vip.backend]]\naddress = \"10.77.1.10\"\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"10.77.1.10\"\nport = 80\n");
    problem(
        &text,
        "vip[0] (web).backend[1] (b)",
        "10.77.1.10:80",
        "listed twice: same address and port as vip[0] (web).backend[0]",
    );
}

#[test]
fn duplicate_backend_name_is_rejected() {
    let text = web("[[vip.backend]]\nname = \"b\"\naddress = \"10.77.1.10\"\n\
         [[vip.backend]]\nname = \"b\"\naddress = \"10.77.1.11\"\n");
    problem(
        &text,
        "vip[0] (web).backend[1] (b).name",
        "\"b\"",
        "duplicate name: vip[0] (web).backend[0] (b) has it too",
    );
}

#[test]
fn one_backend_may_serve_several_vips() {
    let text = with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n[[vip.backend]]\naddress = \"10.77.1.10\"\nname = \"b\"\n\
         [[vip]]\naddress = \"10.77.100.2\"\nport = 80\n[[vip.backend]]\naddress = \"10.77.1.10\"\nname = \"b\"\n",
    );
    assert_eq!(Config::from_toml(&text).unwrap().vips.len(), 2);
}

// ---- rule 4: addresses ----

#[test]
fn bad_vip_address_is_rejected() {
    let p = problem(
        &with("[[vip]]\naddress = \"10.77.1.300\"\nport = 80\n"),
        "vip[0].address",
        "\"10.77.1.300\"",
        "not an IPv4 or IPv6 address",
    );
    assert_eq!(p.location, at(4, 11));
}

#[test]
fn bad_backend_address_is_rejected() {
    problem(
        &web("[[vip.backend]]\naddress = \"foo\"\n"),
        "vip[0] (web).backend[0].address",
        "\"foo\"",
        "not an IPv4 or IPv6 address",
    );
}

// ---- rule 5: ports ----

#[test]
fn vip_port_above_65535_is_rejected() {
    problem(
        &with("[[vip]]\naddress = \"10.77.100.1\"\nport = 65536\n"),
        "vip[0].port",
        "65536",
        "out of range, must be 0..=65535",
    );
}

#[test]
fn negative_vip_port_is_rejected() {
    problem(
        &with("[[vip]]\naddress = \"10.77.100.1\"\nport = -1\n"),
        "vip[0].port",
        "-1",
        "out of range, must be 0..=65535",
    );
}

#[test]
fn backend_port_0_needs_a_port_0_vip() {
    problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nport = 0\n"),
        "vip[0] (web).backend[0].port",
        "0",
        "only allowed when the VIP port is 0",
    );
}

#[test]
fn backend_port_above_65535_is_rejected() {
    problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nport = 70000\n"),
        "vip[0] (web).backend[0].port",
        "70000",
        "out of range, must be 1..=65535",
    );
}

#[test]
fn port_0_vip_takes_backends_with_port_0_or_none() {
    let text = with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 0\ncheck_port = 8080\n\
         [[vip.backend]]\naddress = \"10.77.1.10\"\nport = 0\n[[vip.backend]]\naddress = \"10.77.1.11\"\n",
    );
    let config = Config::from_toml(&text).unwrap();
    assert!(config.vips[0].backends.iter().all(|b| b.port == 0));
    assert_eq!(config.vips[0].backends[1].name, "10.77.1.11:0");
}

// ---- rule 6: DSR keeps the IP header and the port ----

#[test]
fn dsr_rejects_ipv6_backend_on_ipv4_vip() {
    problem(
        &web("[[vip.backend]]\naddress = \"fd77::1:10\"\n"),
        "vip[0] (web).backend[0].address",
        "\"fd77::1:10\"",
        "DSR does not change the IP header: an IPv6 backend cannot serve the IPv4 VIP 10.77.100.1",
    );
}

#[test]
fn dsr_rejects_ipv4_backend_on_ipv6_vip() {
    problem(
        &with("[[vip]]\naddress = \"fd77::100\"\nport = 80\n[[vip.backend]]\naddress = \"10.77.1.10\"\n"),
        "vip[0].backend[0].address",
        "\"10.77.1.10\"",
        "an IPv4 backend cannot serve the IPv6 VIP fd77::100",
    );
}

#[test]
fn dsr_rejects_another_backend_port() {
    problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nport = 8080\n"),
        "vip[0] (web).backend[0].port",
        "8080",
        "DSR cannot translate ports: must be the VIP's port 80",
    );
}

#[test]
fn dsr_rejects_a_backend_port_behind_a_port_0_vip() {
    problem(
        &with("[[vip]]\naddress = \"10.77.100.1\"\nport = 0\n[[vip.backend]]\naddress = \"10.77.1.10\"\nport = 80\n"),
        "vip[0].backend[0].port",
        "80",
        "DSR cannot translate ports: behind a port-0 VIP the port must be 0 or omitted",
    );
}

// ---- rule 7: weight ----

#[test]
fn weight_above_256_is_rejected() {
    problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nweight = 257\n"),
        "vip[0] (web).backend[0].weight",
        "257",
        "out of range, must be 0..=256",
    );
}

#[test]
fn negative_weight_is_rejected() {
    problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nweight = -1\n"),
        "vip[0] (web).backend[0].weight",
        "-1",
        "out of range, must be 0..=256",
    );
}

#[test]
fn weights_0_and_256_are_valid() {
    let text = web(
        "[[vip.backend]]\naddress = \"10.77.1.10\"\nweight = 0\n[[vip.backend]]\naddress = \"10.77.1.11\"\nweight = 256\n",
    );
    let weights: Vec<u32> =
        Config::from_toml(&text).unwrap().vips[0].backends.iter().map(|b| b.weight).collect();
    assert_eq!(weights, [0, 256]);
}

// ---- rule 8: ring size ----

#[test]
fn ring_size_must_be_prime() {
    problem(
        &with("ring_size = 65536\n"),
        "global.ring_size",
        "65536",
        "not prime (Maglev needs a prime ring size); nearest primes: 65521, 65537",
    );
}

#[test]
fn ring_size_below_7_is_rejected() {
    problem(&with("ring_size = 5\n"), "global.ring_size", "5", "out of range, must be 7..=1048573");
}

#[test]
fn ring_size_above_the_maximum_is_rejected() {
    problem(
        &with("ring_size = 1048583\n"),
        "global.ring_size",
        "1048583",
        "out of range, must be 7..=1048573",
    );
}

#[test]
fn ring_size_must_exceed_each_vips_backend_count() {
    let backends: String =
        (10..18).map(|i| format!("[[vip.backend]]\naddress = \"10.77.1.{i}\"\n")).collect();
    let text = format!(
        "[global]\ninterface = \"eth0\"\nring_size = 7\n\
         [[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n{backends}"
    );
    problem(&text, "vip[0] (web).backend", "8 backends", "more backends than global.ring_size = 7");
}

// ---- rule 9: sizes the maps can hold ----

#[test]
fn ring_map_must_hold_max_vips_rings() {
    let p = problem(
        &with("max_vips = 65536\n"),
        "global.max_vips × global.ring_size",
        "65536 × 65537 = 4295032832",
        &format!("more ring slots than the ring map can hold ({MAX_RING_ENTRIES})"),
    );
    assert_eq!(p.location, at(3, 12));
}

#[test]
fn more_vips_than_max_vips_is_rejected() {
    let vips: String =
        (1..=3).map(|i| format!("[[vip]]\naddress = \"10.77.100.{i}\"\nport = 80\n")).collect();
    problem(&with(&format!("max_vips = 2\n{vips}")), "vip", "3 VIPs", "more VIPs than global.max_vips = 2");
}

#[test]
fn more_backends_than_max_backends_is_rejected() {
    let vips: String = (1..=2)
        .map(|i| format!("[[vip]]\naddress = \"10.77.100.{i}\"\nport = 80\n[[vip.backend]]\naddress = \"10.77.1.{i}\"\n"))
        .collect();
    problem(
        &with(&format!("max_backends = 1\n{vips}")),
        "vip[*].backend",
        "2 backends",
        "more backends over all VIPs than global.max_backends = 1",
    );
}

#[test]
fn sizes_outside_their_ranges_are_rejected() {
    for (key, value, range) in [
        ("max_vips", "0", "1..=65536"),
        ("max_vips", "65537", "1..=65536"),
        ("max_backends", "0", "1..=1048576"),
        ("max_backends", "1048577", "1..=1048576"),
        ("conn_table_size", "1023", "1024..=67108864"),
        ("conn_table_size", "67108865", "1024..=67108864"),
        ("hash_seed", "-1", "0..=4294967295"),
        ("hash_seed", "4294967296", "0..=4294967295"),
    ] {
        problem(
            &with(&format!("{key} = {value}\n")),
            &format!("global.{key}"),
            value,
            &format!("out of range, must be {range}"),
        );
    }
}

#[test]
fn hash_seed_takes_hex() {
    assert_eq!(Config::from_toml(&with("hash_seed = 0xffff_ffff\n")).unwrap().global.hash_seed, u32::MAX);
}

// ---- rule 10: interface, pin path, mode, protocol, xdp_mode ----

#[test]
fn interface_name_must_be_valid() {
    for (name, why) in [
        ("", "must not be empty"),
        ("abcdefghijklmnop", "too long: 16 bytes, Linux allows at most 15"),
        ("eth/0", "contains '/'"),
        ("eth 0", "contains ' '"),
        ("eth0:1", "contains ':'"),
        ("..", "not an interface name"),
    ] {
        problem(&format!("[global]\ninterface = {name:?}\n"), "global.interface", &format!("{name:?}"), why);
    }
}

#[test]
fn fifteen_byte_interface_name_is_valid() {
    let config = Config::from_toml("[global]\ninterface = \"abcdefghijklmno\"\n").unwrap();
    assert_eq!(config.global.pin_path, PathBuf::from("/sys/fs/bpf/alwayson/abcdefghijklmno"));
}

#[test]
fn relative_pin_path_is_rejected() {
    problem(
        &with("pin_path = \"bpf/alwayson\"\n"),
        "global.pin_path",
        "\"bpf/alwayson\"",
        "must be an absolute path",
    );
}

#[test]
fn tunnel_and_nat_modes_are_not_supported_yet() {
    for mode in ["tunnel", "nat"] {
        problem(
            &with(&format!("[[vip]]\naddress = \"10.77.100.1\"\nport = 80\nmode = \"{mode}\"\n")),
            "vip[0].mode",
            &format!("\"{mode}\""),
            "not supported yet: only dsr",
        );
    }
}

#[test]
fn unknown_mode_is_rejected() {
    problem(
        &with("[[vip]]\naddress = \"10.77.100.1\"\nport = 80\nmode = \"DR\"\n"),
        "vip[0].mode",
        "\"DR\"",
        "must be one of \"dsr\", \"tunnel\", \"nat\"",
    );
}

#[test]
fn unknown_protocol_is_rejected() {
    problem(
        &with("[[vip]]\naddress = \"10.77.100.1\"\nport = 80\nprotocol = \"icmp\"\n"),
        "vip[0].protocol",
        "\"icmp\"",
        "must be one of \"tcp\", \"udp\"",
    );
}

#[test]
fn unknown_xdp_mode_is_rejected() {
    problem(
        &with("xdp_mode = \"driver\"\n"),
        "global.xdp_mode",
        "\"driver\"",
        "must be one of \"native\", \"generic\", \"auto\"",
    );
}

// ---- rule 11: health checks, slow start, backups ----

/// A backend table with `keys`, on the "web" VIP.
fn checked(vip_keys: &str, backend_keys: &str) -> String {
    web(&format!("{vip_keys}[[vip.backend]]\naddress = \"10.77.1.10\"\n{backend_keys}"))
}

fn check_of(text: &str) -> HealthCheck {
    Config::from_toml(text).unwrap().vips[0].backends[0].check.clone()
}

#[test]
fn udp_backends_default_to_no_check() {
    let text = with("[[vip]]\naddress = \"fd77::100\"\nport = 53\nprotocol = \"udp\"\n[[vip.backend]]\naddress = \"fd77::1:10\"\n");
    assert_eq!(check_of(&text).kind, CheckKind::None);
    let tcp = with("[[vip]]\naddress = \"fd77::100\"\nport = 53\nprotocol = \"udp\"\ncheck = \"tcp\"\n[[vip.backend]]\naddress = \"fd77::1:10\"\n");
    assert_eq!(check_of(&tcp).kind, CheckKind::Tcp);
}

#[test]
fn check_defaults_come_from_the_backend() {
    let text = with(
        "[[vip]]\naddress = \"fd77::100\"\nport = 53\nprotocol = \"tcp\"\n[[vip.backend]]\naddress = \"fd77::1:10\"\n",
    );
    let config = Config::from_toml(&text).unwrap();
    let backend = &config.vips[0].backends[0];
    let check = &backend.check;
    assert_eq!((check.kind, check.rise, check.fall), (CheckKind::Tcp, 2, 2));
    assert_eq!((check.inter, check.timeout), (Duration::from_millis(250), Duration::from_millis(200)));
    assert_eq!(check.target(), "[fd77::1:10]:53".parse().unwrap());
    assert_eq!((check.http_path.as_str(), check.http_status.is_empty()), ("/", true));
    assert_eq!((&check.http_host, &check.exec_command), (&None, &None));
    assert_eq!(backend.slowstart, Duration::ZERO);
    assert_eq!((config.vips[0].allbackups, config.vips[0].on_all_down), (false, OnAllDown::Drop));
}

#[test]
fn vip_check_keys_are_inherited_by_backends() {
    let vip =
        "check = \"http\"\ninter = \"1s\"\ntimeout = \"500ms\"\nrise = 3\nfall = 4\ncheck_port = 8080\n\
               check_address = \"10.77.2.1\"\nhttp_path = \"/health\"\nhttp_status = [200, 204]\n\
               http_host = \"example.com\"\nexec_command = \"true\"\nslowstart = \"30s\"\n";
    let text = web(&format!(
        "{vip}[[vip.backend]]\naddress = \"10.77.1.10\"\n[[vip.backend]]\naddress = \"10.77.1.11\"\n"
    ));
    let config = Config::from_toml(&text).unwrap();
    for backend in &config.vips[0].backends {
        assert_eq!(
            backend.check,
            HealthCheck {
                kind: CheckKind::Http,
                inter: Duration::from_secs(1),
                timeout: Duration::from_millis(500),
                rise: 3,
                fall: 4,
                address: "10.77.2.1".parse().unwrap(),
                port: 8080,
                http_path: "/health".into(),
                http_status: vec![200, 204],
                http_host: Some("example.com".into()),
                exec_command: Some("true".into()),
            }
        );
        assert_eq!(backend.slowstart, Duration::from_secs(30));
    }
}

#[test]
fn backend_check_keys_override_the_vip() {
    let vip = "check = \"http\"\ninter = \"1s\"\nrise = 3\ncheck_port = 8080\nhttp_path = \"/health\"\n\
               http_status = [200]\nslowstart = \"30s\"\n";
    let text = web(&format!(
        "{vip}[[vip.backend]]\naddress = \"10.77.1.10\"\n\
         [[vip.backend]]\naddress = \"10.77.1.11\"\ncheck = \"exec\"\nexec_command = \"/usr/local/bin/ok\"\n\
         inter = 500\nrise = 1\nfall = 5\ncheck_port = 9000\ncheck_address = \"10.77.2.11\"\nhttp_status = []\n\
         slowstart = \"0s\"\n"
    ));
    let config = Config::from_toml(&text).unwrap();
    let [plain, own] = &config.vips[0].backends[..] else { panic!("two backends") };
    assert_eq!(
        (plain.check.kind, plain.check.inter, plain.check.rise),
        (CheckKind::Http, Duration::from_secs(1), 3)
    );
    assert_eq!(
        (plain.check.target(), plain.slowstart),
        ("10.77.1.10:8080".parse().unwrap(), Duration::from_secs(30))
    );
    assert_eq!(
        own.check,
        HealthCheck {
            kind: CheckKind::Exec,
            inter: Duration::from_millis(500),
            timeout: Duration::from_millis(200),
            rise: 1,
            fall: 5,
            address: "10.77.2.11".parse().unwrap(),
            port: 9000,
            http_path: "/health".into(),
            http_status: vec![],
            http_host: None,
            exec_command: Some("/usr/local/bin/ok".into()),
        }
    );
    assert_eq!(own.slowstart, Duration::ZERO);
}

#[test]
fn durations_take_units_and_bare_milliseconds() {
    for (written, ms) in [
        ("\"250ms\"", 250),
        ("\"2s\"", 2_000),
        ("\"1m\"", 60_000),
        ("\"1.5s\"", 1_500),
        ("300", 300),
        ("\"0.25s\"", 250),
        ("\"1.000s\"", 1_000),
        ("\"1h\"", 3_600_000),
    ] {
        let check = check_of(&checked("", &format!("inter = {written}\n")));
        assert_eq!(check.inter, Duration::from_millis(ms), "inter = {written}");
    }
    let slow = |v: &str| {
        Config::from_toml(&checked("", &format!("slowstart = {v}\n"))).unwrap().vips[0].backends[0].slowstart
    };
    assert_eq!(
        (slow("\"0s\""), slow("0"), slow("\"0ms\"")),
        (Duration::ZERO, Duration::ZERO, Duration::ZERO)
    );
}

#[test]
fn bad_durations_are_rejected() {
    for (written, why) in [
        ("\"fast\"", "not a duration: write a number and a unit"),
        ("\"10 parsecs\"", "unknown unit \"parsecs\": use \"ms\", \"s\", \"m\" or \"h\""),
        ("\"5d\"", "unknown unit \"d\""),
        ("\"-1s\"", "must not be negative"),
        ("-1", "must not be negative"),
        ("\"300\"", "needs a unit"),
        ("\"10 s\"", "no space allowed: write \"10s\""),
        ("\"0.5ms\"", "finer than a millisecond"),
        ("\"1.2.3s\"", "\"1.2.3\" is not a number"),
        ("\"1.s\"", "\"1.\" is not a number"),
        ("\"\"", "not a duration"),
    ] {
        problem(&checked("", &format!("inter = {written}\n")), "vip[0] (web).backend[0].inter", written, why);
    }
}

#[test]
fn durations_outside_their_ranges_are_rejected() {
    for (key, written, range) in [
        ("inter", "\"9ms\"", "10ms..=1h"),
        ("inter", "\"61m\"", "10ms..=1h"),
        ("inter", "0", "10ms..=1h"),
        ("timeout", "\"0s\"", "1ms..=1h"),
        ("timeout", "3600001", "1ms..=1h"),
        ("slowstart", "\"1.5h\"", "0s..=1h"),
        ("inter", "\"99999999999999999999999999999999999999999s\"", "10ms..=1h"),
    ] {
        problem(
            &checked("", &format!("{key} = {written}\n")),
            &format!("vip[0] (web).backend[0].{key}"),
            written,
            &format!("out of range, must be {range}"),
        );
    }
}

#[test]
fn a_duration_of_the_wrong_type_is_a_syntax_error() {
    let message = syntax(&checked("", "inter = true\n"), 9, "invalid type: boolean `true`");
    assert!(message.contains("a string like \"250ms\""), "{message}");
    syntax(&checked("", "inter = 1.5\n"), 9, "invalid type: floating point");
}

#[test]
fn bad_duration_points_at_the_value() {
    let p = problem(&checked("inter = \"fast\"\n", ""), "vip[0] (web).inter", "\"fast\"", "not a duration");
    assert_eq!(p.location, at(7, 9));
}

#[test]
fn counts_and_ports_outside_their_ranges_are_rejected() {
    for (key, value, range) in [
        ("rise", "0", "1..=100"),
        ("rise", "101", "1..=100"),
        ("fall", "0", "1..=100"),
        ("fall", "101", "1..=100"),
        ("check_port", "0", "1..=65535"),
        ("check_port", "65536", "1..=65535"),
    ] {
        let key_value = format!("{key} = {value}\n");
        for (text, at) in
            [(checked("", &key_value), "vip[0] (web).backend[0]"), (checked(&key_value, ""), "vip[0] (web)")]
        {
            problem(&text, &format!("{at}.{key}"), value, &format!("out of range, must be {range}"));
        }
    }
}

#[test]
fn http_status_codes_outside_100_to_599_are_rejected() {
    let list = problems(&checked("", "http_status = [200, 99, 600]\n"));
    let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "vip[0] (web).backend[0].http_status[1] = 99: out of range, must be 100..=599 (at line 9, column 21)",
            "vip[0] (web).backend[0].http_status[2] = 600: out of range, must be 100..=599 (at line 9, column 25)",
        ]
    );
    assert_eq!(check_of(&checked("", "http_status = [100, 599]\n")).http_status, [100, 599]);
}

#[test]
fn exec_check_needs_a_command() {
    problem(
        &checked("", "check = \"exec\"\n"),
        "vip[0] (web).backend[0].check",
        "\"exec\"",
        "check = \"exec\" needs exec_command",
    );
    problem(
        &checked("", "check = \"exec\"\nexec_command = \" \"\n"),
        "vip[0] (web).backend[0].exec_command",
        "\" \"",
        "must not be empty",
    );
    // The command may come from the VIP, and a VIP's command does not force exec.
    assert_eq!(check_of(&checked("exec_command = \"true\"\n", "check = \"exec\"\n")).kind, CheckKind::Exec);
    assert_eq!(check_of(&checked("exec_command = \"true\"\n", "")).kind, CheckKind::Tcp);
}

#[test]
fn a_vips_exec_check_without_command_is_reported_once_at_the_vip() {
    let text = web(
        "check = \"exec\"\n[[vip.backend]]\naddress = \"10.77.1.10\"\n[[vip.backend]]\naddress = \"10.77.1.11\"\n\
         [[vip.backend]]\naddress = \"10.77.1.12\"\nexec_command = \"true\"\n",
    );
    let p = problem(&text, "vip[0] (web).check", "\"exec\"", "check = \"exec\" needs exec_command");
    assert_eq!(p.location, at(7, 9));
}

#[test]
fn a_vip_key_that_is_wrong_is_reported_once() {
    let text = web(
        "rise = 0\n[[vip.backend]]\naddress = \"10.77.1.10\"\n[[vip.backend]]\naddress = \"10.77.1.11\"\n",
    );
    problem(&text, "vip[0] (web).rise", "0", "out of range");
}

#[test]
fn http_path_must_be_an_absolute_path_without_spaces() {
    for (path, why) in [
        ("health", "must start with '/'"),
        ("", "must start with '/'"),
        ("/a b", "contains ' ': no whitespace or control characters"),
        ("/a\\r\\nX: y", "contains '\\r'"),
        ("/caf\u{e9}", "only ASCII"),
    ] {
        problem(
            &checked("", &format!("http_path = \"{path}\"\n")),
            "vip[0] (web).backend[0].http_path",
            &format!("\"{path}\""),
            why,
        );
    }
}

#[test]
fn http_host_must_be_a_plain_name() {
    for (host, why) in [("www example.com", "contains ' '"), ("", "must not be empty")] {
        problem(
            &checked(&format!("http_host = {host:?}\n"), ""),
            "vip[0] (web).http_host",
            &format!("{host:?}"),
            why,
        );
    }
}

#[test]
fn check_address_must_be_an_ip_address_of_either_family() {
    problem(
        &checked("", "check_address = \"backend.local\"\n"),
        "vip[0] (web).backend[0].check_address",
        "\"backend.local\"",
        "not an IPv4 or IPv6 address",
    );
    assert_eq!(
        check_of(&checked("", "check_address = \"fd77::2:10\"\n")).target(),
        "[fd77::2:10]:80".parse().unwrap()
    );
}

#[test]
fn port_0_backend_needs_check_port_for_tcp_and_http() {
    let vip = |keys: &str, backend: &str| {
        with(&format!(
            "[[vip]]\naddress = \"10.77.100.1\"\nport = 0\n{keys}[[vip.backend]]\naddress = \"10.77.1.10\"\n{backend}\
             [[vip.backend]]\naddress = \"10.77.1.11\"\n"
        ))
    };
    // The default check, inherited by both backends: one problem, at the VIP, with no place in the file.
    let p = problem(
        &vip("", ""),
        "vip[0].check",
        "\"tcp\"",
        "a port-0 backend needs check_port for a tcp/http check",
    );
    assert_eq!(p.location, None);
    problem(&vip("check = \"http\"\n", ""), "vip[0].check", "\"http\"", "needs check_port");
    // The backend chose the check itself: reported there.
    let text = vip("check = \"none\"\n", "check = \"http\"\n");
    let p = problem(&text, "vip[0].backend[0].check", "\"http\"", "a port-0 backend needs check_port");
    assert_eq!(p.location, at(9, 9));
    // Fixed by check_port anywhere, or by a check that needs no port.
    for (keys, backend) in [
        ("check_port = 8080\n", ""),
        ("check = \"none\"\n", ""),
        ("check = \"exec\"\nexec_command = \"true\"\n", ""),
    ] {
        let config = Config::from_toml(&vip(keys, backend)).unwrap();
        assert_eq!(config.vips[0].backends[0].port, 0);
    }
    let text = vip("check = \"none\"\n", "check = \"tcp\"\ncheck_port = 22\n");
    assert_eq!(check_of(&text).target(), "10.77.1.10:22".parse().unwrap());
}

#[test]
fn unknown_check_kind_is_rejected() {
    problem(
        &checked("check = \"icmp\"\n", ""),
        "vip[0] (web).check",
        "\"icmp\"",
        "must be one of \"tcp\", \"http\", \"exec\", \"none\"",
    );
}

#[test]
fn unknown_on_all_down_is_rejected() {
    problem(
        &checked("on_all_down = \"reject\"\n", ""),
        "vip[0] (web).on_all_down",
        "\"reject\"",
        "must be one of \"drop\", \"keep\"",
    );
}

#[test]
fn vip_only_keys_are_unknown_on_a_backend() {
    syntax(&checked("", "allbackups = true\n"), 9, "unknown field `allbackups`");
    syntax(&checked("", "on_all_down = \"keep\"\n"), 9, "unknown field `on_all_down`");
}

#[test]
fn allbackups_and_on_all_down_are_read() {
    let config = Config::from_toml(&checked("allbackups = true\non_all_down = \"keep\"\n", "")).unwrap();
    assert_eq!((config.vips[0].allbackups, config.vips[0].on_all_down), (true, OnAllDown::Keep));
}

#[test]
fn every_health_key_round_trips() {
    let text = with(
        r#"
[[vip]]
name = "web"
address = "10.77.100.1"
port = 80
allbackups = true
on_all_down = "keep"
check = "http"
inter = "1.5s"
timeout = 300
rise = 5
fall = 3
check_port = 8080
check_address = "10.77.2.1"
http_path = "/health?full=1"
http_status = [200, 204]
http_host = "www.example.com"
exec_command = "test -e /tmp/up"
slowstart = "1m"
  [[vip.backend]]
  address = "10.77.1.10"
  [[vip.backend]]
  address = "10.77.1.11"
  check = "exec"
  inter = "2s"
  slowstart = "0s"
  [[vip.backend]]
  address = "10.77.1.12"
  check = "none"

[[vip]]
address = "10.77.100.2"
port = 0
check = "exec"
exec_command = "exit 0"
  [[vip.backend]]
  address = "10.77.1.20"
"#,
    );
    let config = Config::from_toml(&text).unwrap();
    let out = config.to_toml();
    assert_eq!(Config::from_toml(&out).unwrap(), config, "{out}");
    for key in [
        "check = \"http\"",
        "check = \"exec\"",
        "check = \"none\"",
        "inter = \"1500ms\"",
        "inter = \"2s\"",
        "timeout = \"300ms\"",
        "check_address = \"10.77.2.1\"",
        "check_address = \"10.77.1.20\"",
        "check_port = 8080",
        "http_status = [200, 204]",
        "http_host = \"www.example.com\"",
        "slowstart = \"1m\"",
        "slowstart = \"0s\"",
        "allbackups = true",
        "on_all_down = \"keep\"",
    ] {
        assert!(out.contains(key), "{key} missing from\n{out}");
    }
    // Each backend carries its resolved settings; the VIP tables hold none of them.
    assert_eq!(out.matches("rise = ").count(), 4, "{out}");
    assert!(!out.contains("check_port = 0"), "a port-0 exec backend has no check port to write:\n{out}");
}

#[test]
fn to_toml_writes_the_default_check() {
    let text = Config::from_toml(&checked("", "")).unwrap().to_toml();
    for key in [
        "check = \"tcp\"",
        "inter = \"250ms\"",
        "timeout = \"200ms\"",
        "rise = 2",
        "fall = 2",
        "check_address = \"10.77.1.10\"",
        "check_port = 80",
        "http_path = \"/\"",
        "http_status = []",
        "slowstart = \"0s\"",
        "allbackups = false",
        "on_all_down = \"drop\"",
    ] {
        assert!(text.contains(key), "{key} missing from\n{text}");
    }
    assert!(!text.contains("http_host") && !text.contains("exec_command"), "{text}");
}

#[test]
fn resolved_configs_travel_as_json() {
    let text = include_str!("../../../examples/alwayson.toml");
    let config = Config::from_toml(text).unwrap();
    let json = serde_json::to_vec(&config).unwrap();
    assert_eq!(serde_json::from_slice::<Config>(&json).unwrap(), config);
    let with_token = format!(
        "{GLOBAL}[api]\ntcp = \"127.0.0.1:9181\"\ntoken_file = \"/etc/t\"\n[web]\nlisten = \"off\"\n"
    );
    let config = Config::from_toml(&with_token).unwrap();
    let json = serde_json::to_vec(&config).unwrap();
    assert_eq!(serde_json::from_slice::<Config>(&json).unwrap(), config);
}
