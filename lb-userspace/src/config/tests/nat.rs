//! `mode = "nat"`: the `nat_*` keys, a NAT VIP's rules, and what the host
//! says against them.

use super::*;
use crate::config::nat::{host_problems, NatTimeouts, PortRange};

/// A NAT VIP on `vip` port 80 with `extra` keys and one backend on port 8080.
fn nat_vip(global: &str, vip: &str, extra: &str) -> String {
    format!(
        "[global]\ninterface = \"eth0\"\n{global}[[vip]]\nname = \"n\"\naddress = \"{vip}\"\nport = 80\n\
         mode = \"nat\"\n{extra}[[vip.backend]]\naddress = \"10.77.50.5\"\nport = 8080\n"
    )
}

#[test]
fn a_nat_vip_leaves_from_the_global_address_of_its_family_and_translates_ports() {
    let text = nat_vip(
        "nat_address = [\"10.77.1.2\", \"fd77:1::2\"]\nnat_ports = \"20000-20999\"\nnat_table_size = 4096\n\
         nat_tcp_timeout = \"1h\"\nnat_udp_timeout = \"30s\"\n",
        "10.77.100.1",
        "",
    );
    let config = Config::from_toml(&text).unwrap();
    let nat = &config.global.nat;
    assert_eq!(nat.ports, PortRange { first: 20_000, last: 20_999 });
    assert_eq!(nat.table_size, 4096);
    assert_eq!(nat.timeouts.tcp, Duration::from_secs(3600));
    assert_eq!(nat.timeouts.udp, Duration::from_secs(30));
    assert_eq!(nat.timeouts.tcp_opening, Duration::from_secs(10), "default");
    let vip = &config.vips[0];
    assert_eq!(vip.mode, Mode::Nat);
    assert_eq!(vip.backends[0].port, 8080, "NAT may change the port");
    assert_eq!(vip.nat_source(nat), Some("10.77.1.2".parse().unwrap()));
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
}

#[test]
fn a_vips_own_nat_address_wins_and_round_trips() {
    let text = nat_vip("nat_address = [\"10.77.1.2\"]\n", "10.77.100.1", "nat_address = \"10.77.1.3\"\n");
    let config = Config::from_toml(&text).unwrap();
    assert_eq!(config.vips[0].nat_source(&config.global.nat), Some("10.77.1.3".parse().unwrap()));
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    // Without any global address, the VIP's own is enough.
    Config::from_toml(
        &nat_vip("", "fd77::100", "nat_address = \"fd77:1::2\"\n").replace("10.77.50.5", "fd77:50::5"),
    )
    .unwrap();
}

#[test]
fn a_nat_vip_needs_an_address_of_its_family() {
    problem(
        &nat_vip("nat_address = [\"fd77:1::2\"]\n", "10.77.100.1", ""),
        "vip[0] (n).mode",
        "\"nat\"",
        "needs a balancer address of its family",
    );
    problem(
        &nat_vip("", "10.77.100.1", "nat_address = \"fd77:1::2\"\n"),
        "vip[0] (n).nat_address",
        "\"fd77:1::2\"",
        "NAT keeps the family",
    );
}

#[test]
fn nat_keys_are_checked_where_they_are_written() {
    let bad = |global: &str, field: &str, value: &str, why: &str| {
        problem(
            &nat_vip(&format!("nat_address = [\"10.77.1.2\"]\n{global}"), "10.77.100.1", ""),
            field,
            value,
            why,
        );
    };
    bad("nat_ports = \"30000\"\n", "global.nat_ports", "\"30000\"", "not a port range");
    bad("nat_ports = \"30000-20000\"\n", "global.nat_ports", "\"30000-20000\"", "30000 is above 20000");
    bad("nat_ports = \"80-2000\"\n", "global.nat_ports", "\"80-2000\"", "1024 or above");
    bad("nat_ports = \"20000-20003\"\n", "global.nat_ports", "\"20000-20003\"", "at least 8");
    bad("nat_table_size = 10\n", "global.nat_table_size", "10", "out of range");
    bad("nat_udp_timeout = \"0s\"\n", "global.nat_udp_timeout", "\"0s\"", "out of range");
    problem(
        &nat_vip("nat_address = [\"10.77.1.2\", \"10.77.1.3\"]\n", "10.77.100.1", ""),
        "global.nat_address[1]",
        "\"10.77.1.3\"",
        "one per family",
    );
    problem(
        &nat_vip("nat_address = [\"0.0.0.0\"]\n", "10.77.100.1", ""),
        "global.nat_address[0]",
        "\"0.0.0.0\"",
        "unicast",
    );
}

#[test]
fn nat_needs_a_port_and_keeps_the_family_of_its_backends() {
    let text =
        nat_vip("nat_address = [\"10.77.1.2\"]\n", "10.77.100.1", "").replace("port = 80\n", "port = 0\n");
    let list = problems(&text);
    assert!(
        list.iter().any(|p| p.field == "vip[0] (n).port" && p.reason.contains("needs a port")),
        "{list:#?}"
    );
    problem(
        &nat_vip("nat_address = [\"10.77.1.2\"]\n", "10.77.100.1", "").replace("10.77.50.5", "fd77:50::5"),
        "vip[0] (n).backend[0].address",
        "\"fd77:50::5\"",
        "NAT keeps the family",
    );
    // A nat_address on a VIP of another mode is a mistake, not a silent no-op.
    problem(
        &with("[[vip]]\naddress = \"10.77.100.1\"\nport = 80\nnat_address = \"10.77.1.2\"\n"),
        "vip[0].nat_address",
        "\"10.77.1.2\"",
        "only a VIP with mode = \"nat\"",
    );
}

#[test]
fn the_host_must_hold_the_nat_address_and_keep_its_ephemeral_ports_apart() {
    let text = nat_vip("nat_address = [\"10.77.1.2\"]\nnat_ports = \"20000-29999\"\n", "10.77.100.1", "");
    let config = Config::from_toml(&text).unwrap();
    let here: Vec<IpAddr> = vec!["10.77.1.2".parse().unwrap()];
    let linux_default = Some(PortRange { first: 32_768, last: 60_999 });
    assert!(host_problems(&config, &here, linux_default).is_empty());

    let elsewhere = host_problems(&config, &["10.77.1.9".parse().unwrap()], linux_default);
    assert_eq!(elsewhere.len(), 1, "{elsewhere:#?}");
    assert_eq!(elsewhere[0].field, "global.nat_address[0]");
    assert!(elsewhere[0].reason.contains("not an address of eth0"), "{}", elsewhere[0]);

    let wide = Some(PortRange { first: 10_000, last: 60_999 });
    let overlap = host_problems(&config, &here, wide);
    assert_eq!(overlap.len(), 1, "{overlap:#?}");
    assert_eq!(overlap[0].field, "global.nat_ports");
    assert!(overlap[0].reason.contains("10000-60999"), "{}", overlap[0]);

    // No NAT VIP: nothing to hold.
    let plain = Config::from_toml(&with("nat_address = [\"10.77.1.2\"]\n")).unwrap_or_else(|e| panic!("{e}"));
    assert!(host_problems(&plain, &[], wide).is_empty());
}

#[test]
fn a_mapping_times_out_by_what_it_has_seen() {
    use lb_common::{
        nat::{NAT_SEEN_CLOSE, NAT_SEEN_REPLY},
        types::{PROTO_TCP, PROTO_UDP},
    };
    let s = |n| Duration::from_secs(n);
    let t = NatTimeouts { tcp: s(900), tcp_opening: s(5), tcp_closing: s(10), udp: s(60) };
    assert_eq!(t.of(PROTO_TCP, 0), s(5), "a SYN the backend never answered");
    assert_eq!(t.of(PROTO_TCP, NAT_SEEN_REPLY), s(900));
    assert_eq!(t.of(PROTO_TCP, NAT_SEEN_REPLY | NAT_SEEN_CLOSE), s(10));
    assert_eq!(t.of(PROTO_TCP, NAT_SEEN_CLOSE), s(10));
    assert_eq!(t.of(PROTO_UDP, 0), s(60));
    assert_eq!(t.of(PROTO_UDP, NAT_SEEN_REPLY), s(60));
}

#[test]
fn the_example_of_each_mode_is_valid_and_of_that_mode() {
    let examples = [
        (include_str!("../../../../examples/dsr.toml"), Mode::Dsr),
        (include_str!("../../../../examples/tunnel.toml"), Mode::Tunnel),
        (include_str!("../../../../examples/nat.toml"), Mode::Nat),
    ];
    for (text, mode) in examples {
        let config = Config::from_toml(text).unwrap_or_else(|e| panic!("the {mode:?} example: {e}"));
        assert!(!config.vips.is_empty() && config.vips.iter().all(|v| v.mode == mode), "{mode:?}");
        assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    }
}
