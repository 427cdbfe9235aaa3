//! Valid configs, defaults, round trips, and how problems are reported.

use super::*;

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
                flow_recording: FlowRecording::ChangedSlots,
                flow_record_limit: lb_common::sizes::DEFAULT_RECORD_LIMIT,
                flow_idle_timeout: Duration::from_secs(900),
                pin_path: "/sys/fs/bpf/alwayson/eth0".into(),
                set_forwarding: true,
                lock_file: "/run/alwayson/eth0.lock".into(),
                check_user: "nobody".into(),
                tunnel_source_v4: Prefix { address: "172.16.0.0".parse().unwrap(), len: 16 },
                tunnel_source_v6: Prefix { address: "100::".parse().unwrap(), len: 64 },
                nat: crate::config::nat::NatSettings::default(),
                icmp_too_big_limit: lb_common::sizes::DEFAULT_TOO_BIG_LIMIT,
            },
            api: Api {
                socket: "/run/alwayson/eth0.sock".into(),
                tcp: None,
                token: None,
                runtime_file: "/run/alwayson/eth0.runtime.json".into(),
                allow_exec: false,
                max_connections: 128,
            },
            web: Web { listen: Some("127.0.0.1:9180".parse().unwrap()), max_connections: 128 },
            bgp: None,
            cluster: None,
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
    let token = "token = \"0123456789abcdef\"";
    bad(&format!("[api]\ntcp = \"0.0.0.0:9181\"\n{token}\n"), "api.tcp", "travel in clear");
    bad(&format!("[api]\ntcp = \"[2001:db8::1]:9181\"\n{token}\n"), "api.tcp", "loopback");
    bad("[api]\nmax_connections = 0\n", "api.max_connections", "1..=65536");
    bad("[web]\nmax_connections = 70000\n", "web.max_connections", "1..=65536");
    bad("check_user = \"root; rm\"\n", "global.check_user", "not a user name");
    bad("lock_file = \"eth0.lock\"\n", "global.lock_file", "absolute");
    let ipv6 = Config::from_toml(&format!("{GLOBAL}[api]\ntcp = \"[::1]:9181\"\n{token}\n")).unwrap();
    assert_eq!(ipv6.api.tcp, Some("[::1]:9181".parse().unwrap()));
}

#[test]
fn a_token_file_is_held_to_the_rules_of_a_token() {
    let dir = std::env::temp_dir().join(format!("alwayson-token-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, contents: &str| {
        let path = dir.join(name);
        std::fs::write(&path, contents).unwrap();
        Token::File(path)
    };
    assert_eq!(file("good", "0123456789abcdef\n").secret().unwrap(), "0123456789abcdef");
    for (name, contents) in [("short", "0123\n"), ("spaced", "0123456789 abcdef\n"), ("empty", "")] {
        let refused = file(name, contents).secret().unwrap_err();
        assert!(
            refused.starts_with("api.token_file = ") && refused.contains("at least 16"),
            "{name}: {refused}"
        );
    }
    let missing = Token::File(dir.join("missing")).secret().unwrap_err();
    assert!(missing.contains("cannot be read"), "{missing}");
    std::fs::remove_dir_all(&dir).unwrap();
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
