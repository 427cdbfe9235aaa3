//! Validation rules 1–10: each error names the field, shows the value and says why.

use super::*;

// ---- rule 1: unknown keys, wrong types, missing keys ----

#[test]
fn unknown_key_in_global_is_a_syntax_error_with_position() {
    let message = syntax(&with("ring = 7\n"), 3, "global.ring", "unknown field `ring`");
    assert!(message.contains("line 3, column 1"), "{message}");
}

#[test]
fn unknown_key_in_vip_is_a_syntax_error() {
    syntax(&web("balance = \"roundrobin\"\n"), 7, "vip[0].balance", "unknown field `balance`");
}

#[test]
fn unknown_key_in_backend_is_a_syntax_error() {
    syntax(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nwieght = 2\n"),
        9,
        "vip[0].backend[0].wieght",
        "unknown field `wieght`",
    );
}

#[test]
fn unknown_table_is_a_syntax_error() {
    syntax(&with("[frontend]\nbind = \"*:80\"\n"), 3, "frontend", "unknown field `frontend`");
}

#[test]
fn missing_required_keys_are_syntax_errors() {
    syntax("[global]\nxdp_mode = \"auto\"\n", 1, "global", "missing field `interface`");
    syntax(&with("[[vip]]\naddress = \"10.77.100.1\"\n"), 3, "vip[0]", "missing field `port`");
    syntax(&web("[[vip.backend]]\nport = 80\n"), 7, "vip[0].backend[0]", "missing field `address`");
}

#[test]
fn wrong_types_are_syntax_errors() {
    syntax(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\nweight = \"2\"\n"),
        9,
        "vip[0].backend[0].weight",
        "invalid type",
    );
    syntax(&with("set_forwarding = \"yes\"\n"), 3, "global.set_forwarding", "invalid type");
    syntax("[global]\ninterface = \"eth0\nport = 80\n", 2, "", "invalid");
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

#[test]
fn backend_on_its_own_vip_address_is_rejected() {
    let p = problem(
        &web("[[vip.backend]]\naddress = \"10.77.1.10\"\n\
             [[vip.backend]]\nname = \"self\"\naddress = \"10.77.100.1\"\n"),
        "vip[0] (web).backend[1] (self).address",
        "\"10.77.100.1\"",
        "the address of vip[0] (web): a VIP address cannot be a backend",
    );
    assert_eq!(p.location, at(11, 11));
}

#[test]
fn backend_on_another_vips_address_is_rejected_whatever_the_port_or_order() {
    // A later VIP's address, of another port and protocol.
    let text = with(
        "[[vip]]\nname = \"web\"\naddress = \"fd77::100\"\nport = 80\n\
         [[vip.backend]]\naddress = \"fd77::200\"\n\
         [[vip]]\nname = \"dns\"\naddress = \"fd77::200\"\nport = 53\nprotocol = \"udp\"\n",
    );
    problem(&text, "vip[0] (web).backend[0].address", "\"fd77::200\"", "the address of vip[1] (dns)");
    // An earlier one's, and the VIP named by its index when it has no name.
    let text = with(
        "[[vip]]\naddress = \"10.77.100.1\"\nport = 0\n\
         [[vip]]\nname = \"web\"\naddress = \"10.77.100.2\"\nport = 80\n\
         [[vip.backend]]\naddress = \"10.77.100.1\"\n",
    );
    problem(&text, "vip[1] (web).backend[0].address", "\"10.77.100.1\"", "the address of vip[0]: ");
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

/// A tunnel VIP named "t" on `vip` port 80 with one backend table.
fn tunnel(vip: &str, backend: &str) -> String {
    with(&format!(
        "[[vip]]\nname = \"t\"\naddress = \"{vip}\"\nport = 80\nmode = \"tunnel\"\n[[vip.backend]]\n{backend}"
    ))
}

#[test]
fn tunnel_backends_may_be_routed_anywhere_in_the_vips_family() {
    // Not on any link of the balancer: a gateway carries the outer packet.
    let config = Config::from_toml(&tunnel("10.77.100.1", "address = \"192.0.2.10\"\n")).unwrap();
    assert_eq!(config.vips[0].mode, Mode::Tunnel);
    assert_eq!(config.vips[0].backends[0].socket(), "192.0.2.10:80".parse().unwrap());
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    Config::from_toml(&tunnel("fd77::100", "address = \"2001:db8::10\"\n")).unwrap();
}

#[test]
fn tunnel_backends_must_be_of_the_vips_family() {
    problem(
        &tunnel("10.77.100.1", "address = \"fd77::1:10\"\n"),
        "vip[0] (t).backend[0].address",
        "\"fd77::1:10\"",
        "a tunnel carries IPv4 in IPv4 only: an IPv6 backend cannot serve the IPv4 VIP 10.77.100.1 \
         (IPv4-in-IPv6 and IPv6-in-IPv4 are not implemented)",
    );
    problem(
        &tunnel("fd77::100", "address = \"10.77.1.10\"\n"),
        "vip[0] (t).backend[0].address",
        "\"10.77.1.10\"",
        "an IPv4 backend cannot serve the IPv6 VIP fd77::100",
    );
}

#[test]
fn tunnels_do_not_translate_ports() {
    problem(
        &tunnel("10.77.100.1", "address = \"10.77.1.10\"\nport = 8080\n"),
        "vip[0] (t).backend[0].port",
        "8080",
        "a tunnel cannot translate ports: must be the VIP's port 80",
    );
}

#[test]
fn tunnel_sources_are_prefixes_of_their_family_and_a_length_the_flow_fills() {
    let config = Config::from_toml(&with(
        "tunnel_source_v4 = \"10.77.174.0/24\"\ntunnel_source_v6 = \"fd77::174:0/112\"\n",
    ))
    .unwrap();
    assert_eq!(config.global.tunnel_source_v4.to_string(), "10.77.174.0/24");
    assert_eq!(config.global.tunnel_source_v6.to_string(), "fd77::174:0/112");
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    let source = config.global.tunnel_source();
    assert_eq!(source.v4_prefix.to_ne_bytes(), [10, 77, 174, 0]);
    assert_eq!(source.v4_host.to_ne_bytes(), [0, 0, 0, 0xff]);

    let bad = |line: &str, field: &str, value: &str, why: &str| {
        problem(&with(&format!("{line}\n")), field, value, why);
    };
    let v4 = "global.tunnel_source_v4";
    let v6 = "global.tunnel_source_v6";
    bad("tunnel_source_v4 = \"172.16.0.0\"", v4, "\"172.16.0.0\"", "not a prefix");
    bad("tunnel_source_v4 = \"172.16.0.0/8\"", v4, "\"172.16.0.0/8\"", "the length must be 16..=32");
    bad("tunnel_source_v4 = \"172.16.0.0/33\"", v4, "\"172.16.0.0/33\"", "16..=32");
    bad(
        "tunnel_source_v4 = \"10.77.174.9/24\"",
        v4,
        "\"10.77.174.9/24\"",
        "host bits set: the prefix is 10.77.174.0/24",
    );
    bad("tunnel_source_v4 = \"100::/64\"", v4, "\"100::/64\"", "an IPv6 prefix where an IPv4 one belongs");
    bad("tunnel_source_v6 = \"100::/48\"", v6, "\"100::/48\"", "the length must be 64..=128");
    bad("tunnel_source_v6 = \"fd77::174:1/112\"", v6, "\"fd77::174:1/112\"", "the prefix is fd77::174:0/112");
    bad("tunnel_source_v6 = \"172.16.0.0/16\"", v6, "\"172.16.0.0/16\"", "an IPv4 prefix where an IPv6 one");
}

#[test]
fn icmp_too_big_limit_is_a_count_from_zero_and_defaults_to_1000() {
    assert_eq!(Config::from_toml(GLOBAL).unwrap().global.icmp_too_big_limit, 1000);
    for n in [0, 1, 250_000, 100_000_000] {
        let config = Config::from_toml(&with(&format!("icmp_too_big_limit = {n}\n"))).unwrap();
        assert_eq!(config.global.icmp_too_big_limit, n);
        assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config, "round trip");
        assert_eq!(crate::agent::load_settings(&config.global).too_big_limit, n, "into the data plane");
    }
    let field = "global.icmp_too_big_limit";
    problem(&with("icmp_too_big_limit = -1\n"), field, "-1", "0..=100000000");
    problem(&with("icmp_too_big_limit = 100000001\n"), field, "100000001", "0..=100000000");
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
