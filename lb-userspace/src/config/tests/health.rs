//! Rule 11: health checks, slow start, backups.

use super::*;

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
    let message =
        syntax(&checked("", "inter = true\n"), 9, "vip[0].backend[0].inter", "invalid type: boolean `true`");
    assert!(message.contains("a string like \"250ms\""), "{message}");
    syntax(&checked("", "inter = 1.5\n"), 9, "vip[0].backend[0].inter", "invalid type: floating point");
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
    syntax(
        &checked("", "allbackups = true\n"),
        9,
        "vip[0].backend[0].allbackups",
        "unknown field `allbackups`",
    );
    syntax(
        &checked("", "on_all_down = \"keep\"\n"),
        9,
        "vip[0].backend[0].on_all_down",
        "unknown field `on_all_down`",
    );
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
    let text = include_str!("../../../../examples/alwayson.toml");
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
