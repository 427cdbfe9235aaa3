//! The importer on `examples/haproxy.cfg` and on `tests/haproxy/*.cfg`: each
//! result validates, and carries the fields and warnings expected.

use std::{net::IpAddr, time::Duration};

use super::{import_haproxy, ImportError, Options};
use crate::config::{Backend, CheckKind, Config, Mode, Vip};

macro_rules! cfg {
    ($name:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/haproxy/", $name))
    };
}

struct Imported {
    config: Config,
    warnings: Vec<String>,
}

impl Imported {
    fn vip(&self, name: &str) -> &Vip {
        self.config
            .vips
            .iter()
            .find(|v| v.name == name)
            .unwrap_or_else(|| panic!("no VIP {name}: {:?}", self.names()))
    }

    fn names(&self) -> Vec<&str> {
        self.config.vips.iter().map(|v| v.name.as_str()).collect()
    }

    /// Asserts a warning on `line` whose text contains `text`.
    fn warns(&self, line: usize, text: &str) {
        let prefix = format!("line {line}: ");
        assert!(
            self.warnings.iter().any(|w| w.starts_with(&prefix) && w.contains(text)),
            "no warning at line {line} containing {text:?} in {:#?}",
            self.warnings
        );
    }

    fn no_warning_at(&self, line: usize) {
        let prefix = format!("line {line}: ");
        assert!(!self.warnings.iter().any(|w| w.starts_with(&prefix)), "{:#?}", self.warnings);
    }
}

fn import_with(text: &str, options: &Options) -> Imported {
    let imported = import_haproxy(text, options).unwrap_or_else(|e| panic!("{e}"));
    let config = Config::from_toml(&imported.toml).unwrap_or_else(|e| panic!("{e}\n{}", imported.toml));
    Imported { config, warnings: imported.warnings.iter().map(ToString::to_string).collect() }
}

fn import(text: &str) -> Imported {
    import_with(text, &Options::default())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn backend<'v>(vip: &'v Vip, name: &str) -> &'v Backend {
    vip.backends
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no backend {name} in {}", vip.name))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn seed_example() {
    let i = import(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/haproxy.cfg")));
    assert_eq!(i.config.global.interface, "eth0");
    assert_eq!(i.names(), ["www"]);
    let vip = i.vip("www");
    assert_eq!((vip.address, vip.port, vip.mode), (ip("10.77.100.1"), 80, Mode::Dsr));
    let got: Vec<_> = vip.backends.iter().map(|b| (b.name.as_str(), b.address, b.port, b.weight)).collect();
    assert_eq!(
        got,
        [
            ("web1", ip("10.77.1.10"), 80, 1),
            ("web2", ip("10.77.1.11"), 80, 1),
            ("web3", ip("10.77.1.12"), 80, 1)
        ]
    );
    assert!(vip.backends.iter().all(|b| b.check.kind == CheckKind::Tcp));
    i.warns(4, "global `log`");
    i.warns(9, "`timeout connect` not carried over");
    i.warns(18, "`balance roundrobin` becomes Maglev");
    i.no_warning_at(14);
}

#[test]
fn listen_weights_and_check_timings() {
    let i = import(cfg!("01-listen-weights.cfg"));
    let vip = i.vip("db");
    assert_eq!((vip.address, vip.port), (ip("10.0.0.5"), 3306));
    let db1 = backend(vip, "db1");
    assert_eq!((db1.weight, db1.check.inter, db1.check.rise, db1.check.fall), (10, ms(2000), 3, 4));
    assert_eq!(backend(vip, "db2").weight, 256);
    let db3 = backend(vip, "db3");
    assert_eq!(
        (db3.address, db3.port, db3.weight, db3.check.kind),
        (ip("10.0.1.3"), 3306, 0, CheckKind::None)
    );
    i.warns(9, "leastconn");
}

#[test]
fn httpchk_path_status_ports_and_mode_http() {
    let i = import(cfg!("02-httpchk.cfg"));
    i.warns(2, "`mode http` imported as layer 4");
    let vip = i.vip("web");
    let a1 = backend(vip, "a1");
    assert_eq!(a1.check.kind, CheckKind::Http);
    assert_eq!(a1.check.http_path, "/healthz");
    assert_eq!(a1.check.http_status, [204]);
    assert_eq!(a1.check.timeout, ms(800));
    assert_eq!((a1.check.address, a1.check.port), (ip("10.1.0.1"), 8080));
    let a2 = backend(vip, "a2");
    assert_eq!((a2.check.address, a2.check.port), (ip("10.1.9.2"), 8081));
}

#[test]
fn http_check_send_host_slowstart_fastinter() {
    let i = import(cfg!("03-http-check-send.cfg"));
    let vip = i.vip("api");
    let s1 = backend(vip, "s1");
    assert_eq!(s1.check.kind, CheckKind::Http);
    assert_eq!(s1.check.http_path, "/status");
    assert_eq!(s1.check.http_host.as_deref(), Some("api.example.com"));
    assert_eq!(s1.slowstart, ms(30_000));
    i.warns(15, "`fastinter 500` not carried over");
    i.warns(15, "`downinter 5s` not carried over");
}

#[test]
fn backups_allbackups_and_disabled() {
    let i = import(cfg!("04-backups.cfg"));
    let vip = i.vip("smtp");
    assert!(vip.allbackups);
    let backups: Vec<_> = vip.backends.iter().map(|b| (b.name.as_str(), b.backup, b.weight)).collect();
    assert_eq!(backups, [("m1", false, 1), ("m2", true, 1), ("m3", true, 1), ("m4", false, 0)]);
    i.warns(16, "server `m4` is disabled");
    i.warns(16, "--state maint");
}

#[test]
fn default_server_in_defaults_and_backend() {
    let i = import(cfg!("05-default-server.cfg"));
    let vip = i.vip("imap");
    let i1 = backend(vip, "i1");
    assert_eq!(
        (i1.check.kind, i1.weight, i1.check.inter, i1.check.rise, i1.check.fall),
        (CheckKind::Tcp, 50, ms(1000), 5, 2)
    );
    let i2 = backend(vip, "i2");
    assert_eq!((i2.weight, i2.check.inter), (100, ms(3000)));
    assert_eq!(backend(vip, "i3").check.kind, CheckKind::None);
}

#[test]
fn several_binds_and_families() {
    let i = import(cfg!("06-multi-bind.cfg"));
    assert_eq!(i.names(), ["edge", "edge-2", "edge-3"]);
    assert_eq!(i.vip("edge-2").address, ip("203.0.113.2"));
    let v6 = i.vip("edge-3");
    assert_eq!(v6.address, ip("2001:db8::1"));
    assert_eq!(v6.backends.len(), 1);
    assert_eq!(v6.backends[0].address, ip("2001:db8:1::6"));
    assert_eq!(i.vip("edge").backends.len(), 2);
    i.warns(11, "`bind :8443` skipped: no address");
    i.warns(14, "`balance source`");
    i.warns(17, "server `t6` skipped for VIP edge");

    let options = Options { vip_address: Some(ip("203.0.113.9")), ..Options::default() };
    let i = import_with(cfg!("06-multi-bind.cfg"), &options);
    let any = i.vip("edge-4");
    assert_eq!((any.address, any.port), (ip("203.0.113.9"), 8443));
    assert!(any.backends.is_empty(), "DSR keeps the port: servers on 443 cannot serve 8443");
}

#[test]
fn acls_tls_and_http_rewriting_are_warned() {
    let i = import(cfg!("07-acl-ssl.cfg"));
    i.warns(8, "bind parameters `ssl crt site.pem` not carried over");
    i.warns(9, "`acl is_api` not carried over");
    i.warns(10, "conditions (ACLs) are not carried over");
    i.warns(11, "`http-request` not carried over");
    i.warns(15, "`ssl` not carried over");
    i.warns(15, "`verify none` not carried over");
    i.warns(17, "backend `api` is used by no frontend");
    let vip = i.vip("https");
    assert_eq!(vip.backends.len(), 1);
    assert_eq!(vip.backends[0].address, ip("10.6.0.1"));
}

#[test]
fn hostnames_resolvers_and_stick_tables_are_warned() {
    let i = import(cfg!("08-hostnames-stick.cfg"));
    i.warns(1, "section `resolvers` not carried over");
    i.warns(15, "`stick-table` not carried over");
    i.warns(16, "`stick` not carried over");
    i.warns(18, "server `g2` skipped: `localhost` is a hostname");
    assert_eq!(i.vip("game").backends.len(), 1);
}

#[test]
fn nat_takes_the_source_address_and_other_ports() {
    let options = Options { mode: Mode::Nat, ..Options::default() };
    let i = import_with(cfg!("09-nat-source.cfg"), &options);
    let vip = i.vip("redis");
    assert_eq!((vip.mode, vip.nat_address), (Mode::Nat, Some(ip("192.0.2.2"))));
    assert_eq!((backend(vip, "r1").port, backend(vip, "r2").port), (6380, 6381));

    // Without `source` nothing can be derived: warned, and the result does not validate.
    let text = cfg!("09-nat-source.cfg").replace("    source 192.0.2.2\n", "");
    match import_haproxy(&text, &options) {
        Err(ImportError::Invalid { warnings, .. }) => {
            assert!(
                warnings.iter().any(|w| w.line == 8 && w.message.contains("--nat-address")),
                "{warnings:?}"
            )
        }
        other => panic!("{other:?}"),
    }
    let options = Options { nat_address: vec![ip("192.0.2.3")], ..options };
    let i = import_with(&text, &options);
    assert_eq!(i.config.global.nat.address, [ip("192.0.2.3")]);
}

#[test]
fn dsr_and_tunnel_keep_the_port() {
    let i = import(cfg!("10-ports-differ.cfg"));
    let vip = i.vip("web");
    let names: Vec<_> = vip.backends.iter().map(|b| (b.name.as_str(), b.port)).collect();
    assert_eq!(names, [("same", 80), ("noport", 80)]);
    assert_eq!(vip.backends[0].check.timeout, ms(2000));
    i.warns(14, "port 8080 differs from the VIP's port 80");
    let options = Options { mode: Mode::Tunnel, interface: "bond0".into(), ..Options::default() };
    let i = import_with(cfg!("10-ports-differ.cfg"), &options);
    assert_eq!(i.config.global.interface, "bond0");
    assert_eq!(i.vip("web").mode, Mode::Tunnel);
    assert_eq!(i.vip("web").backends.len(), 2);
}

#[test]
fn two_frontends_share_a_backend_and_defaults() {
    let i = import(cfg!("11-two-frontends.cfg"));
    assert_eq!(i.names(), ["a", "b"]);
    for name in ["a", "b"] {
        let vip = i.vip(name);
        assert_eq!(vip.backends.len(), 2);
        assert_eq!(vip.backends[0].check.http_path, "/ping");
    }
    i.warns(2, "global `daemon`");
    i.warns(6, "`balance roundrobin`");
    i.warns(24, "backend `unused` is used by no frontend");
}

#[test]
fn syntax_errors_name_the_line() {
    let e = import_haproxy("backend b\n  server a \"10.0.0.1:80\n", &Options::default()).unwrap_err();
    assert_eq!(e.to_string(), "line 2: unterminated \"quote\"");
}

#[test]
fn unconditional_use_backend_and_odd_values_are_warned() {
    let text = "\
defaults
    option allbackups
frontend f
    bind 192.0.2.1:80,192.0.2.2:80-81
    default_backend a
    use_backend b
backend a
    server a1 10.0.0.1:80
backend b
    no option allbackups
    option httpchk HEAD /x HTTP/1.1
    http-check expect rstring ok
    server b1 10.0.0.2:80 check inter 5ms weight 300 ipv6@fe80::1
    server b2 10.0.0.3:80 check inter 2h
";
    let i = import(text);
    let vip = i.vip("f");
    assert_eq!(vip.address, ip("192.0.2.1"));
    assert!(!vip.allbackups);
    let names: Vec<_> = vip.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(names, ["b1", "b2"], "use_backend without a condition wins");
    let b1 = backend(vip, "b1");
    assert_eq!((b1.check.kind, b1.check.http_path.as_str(), b1.weight), (CheckKind::Http, "/x", 1));
    i.warns(4, "`bind 192.0.2.2:80-81` skipped");
    i.warns(7, "backend `a` is used by no frontend");
    i.warns(11, "method HEAD not carried over");
    i.warns(11, "version and headers `HTTP/1.1` not carried over");
    i.warns(12, "`http-check expect rstring ok` not carried over");
    i.warns(13, "`weight 300`");
    i.warns(13, "`inter` 5ms is out of Always On's range");
    i.warns(13, "`ipv6@fe80::1` without a value");
    i.warns(14, "`inter` 7200000ms is out of Always On's range");
    // Sorted by line.
    let lines: Vec<usize> =
        i.warnings.iter().map(|w| w[5..].split(':').next().unwrap().parse().unwrap()).collect();
    assert!(lines.windows(2).all(|p| p[0] <= p[1]), "{lines:?}");
}
