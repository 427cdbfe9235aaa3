//! `[bgp]`: defaults, round trip, and each rule naming its field.

use super::*;

const NEIGHBOR: &str = "[[bgp.neighbor]]\naddress = \"10.77.160.1\"\nas = 65000\n";

fn bgp(keys: &str) -> String {
    with(&format!("[bgp]\nrouter_id = \"10.77.160.11\"\nlocal_as = 65001\n{keys}\n{NEIGHBOR}"))
}

#[test]
fn a_bgp_section_gets_every_default_and_round_trips() {
    let config = Config::from_toml(&bgp("")).unwrap();
    let b = config.bgp.as_ref().expect("[bgp]");
    assert_eq!(b.router_id, Ipv4Addr::new(10, 77, 160, 11));
    assert_eq!(b.local_as, 65001);
    assert_eq!(b.bird_config, std::path::Path::new("/run/alwayson/bird-eth0.conf"));
    assert_eq!(b.bird_socket, std::path::Path::new("/run/bird/bird.ctl"));
    assert_eq!(b.device, "ao-eth0");
    assert_eq!((b.grace_time, b.drain_time), (Duration::from_secs(3), Duration::from_secs(5)));
    assert!(b.bfd);
    assert_eq!((b.bfd_interval, b.bfd_multiplier), (Duration::from_millis(100), 3));
    assert_eq!(
        b.neighbors,
        vec![crate::config::bgp::Neighbor { address: "10.77.160.1".parse().unwrap(), asn: 65000 }]
    );
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    assert_eq!(Config::from_toml(GLOBAL).unwrap().bgp, None, "no [bgp], nothing announced");
}

#[test]
fn a_long_interface_name_gives_a_device_name_linux_takes() {
    let text =
        "[global]\ninterface = \"enp129s0f1np1\"\n[bgp]\nrouter_id = \"10.77.160.11\"\nlocal_as = 65001\n";
    let config = Config::from_toml(&format!("{text}{NEIGHBOR}")).unwrap();
    assert_eq!(config.bgp.unwrap().device, "ao-enp129s0f1np");
}

#[test]
fn each_bgp_rule_names_its_field() {
    problem(
        &with(&format!("[bgp]\nrouter_id = \"fd77::1\"\nlocal_as = 65001\n{NEIGHBOR}")),
        "bgp.router_id",
        "\"fd77::1\"",
        "not an IPv4 address",
    );
    problem(
        &with(&format!("[bgp]\nrouter_id = \"10.77.160.11\"\nlocal_as = 23456\n{NEIGHBOR}")),
        "bgp.local_as",
        "23456",
        "AS_TRANS",
    );
    problem(
        &with(&format!("[bgp]\nrouter_id = \"10.77.160.11\"\nlocal_as = 0\n{NEIGHBOR}")),
        "bgp.local_as",
        "0",
        "out of range",
    );
    problem(&bgp("grace_time = \"100ms\""), "bgp.grace_time", "\"100ms\"", "out of range");
    problem(&bgp("bfd_multiplier = 0"), "bgp.bfd_multiplier", "0", "out of range");
    problem(&bgp("device = \"eth0\""), "bgp.device", "\"eth0\"", "must not be global.interface");
    problem(&bgp("bird_socket = \"bird.ctl\""), "bgp.bird_socket", "\"bird.ctl\"", "absolute");
    problem(
        &with("[bgp]\nrouter_id = \"10.77.160.11\"\nlocal_as = 65001\n"),
        "bgp.neighbor",
        "none",
        "at least one",
    );
    problem(&bgp(NEIGHBOR), "bgp.neighbor[1].address", "10.77.160.1", "duplicate neighbour");
}
