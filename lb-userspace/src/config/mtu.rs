//! The egress MTU an IPv6 tunnel VIP needs. A packet too big for the tunnel
//! is answered with ICMPv6 packet-too-big carrying the egress MTU less the
//! 40-byte outer header, and IPv6 hosts take no path MTU below 1,280 (RFC
//! 8200): below 1,320 the answer could name no MTU a client would use, and
//! its full-size packets would never get through. So such a VIP is refused.
//! The MTU is the agent's interface's, which the host says (on start,
//! reload and every API change); this only judges. IPv4 needs no such rule:
//! its minimum MTU is 68.

use super::{Config, Mode, Problem, Vip};

/// IPv6's minimum MTU and the outer header of IP6IP6.
pub const IPV6_TUNNEL_MIN_MTU: u32 = 1280 + 40;

/// Why `vip` cannot run with an egress of MTU `mtu` (on `interface`).
pub fn too_small(vip: &Vip, interface: &str, mtu: u32) -> Option<String> {
    if vip.mode != Mode::Tunnel || !vip.address.is_ipv6() || mtu >= IPV6_TUNNEL_MIN_MTU {
        return None;
    }
    Some(format!(
        "the IPv6 tunnel VIP {} needs an egress MTU of at least {IPV6_TUNNEL_MIN_MTU} (IPv6's minimum 1280 \
         plus the 40-byte outer header), but interface {interface} has MTU {mtu}: raise the MTU or use \
         mode \"dsr\"",
        vip.address
    ))
}

/// Every VIP of `config` the interface's MTU `mtu` is too small for.
pub fn problems(config: &Config, mtu: u32) -> Vec<Problem> {
    let interface = &config.global.interface;
    config
        .vips
        .iter()
        .enumerate()
        .filter_map(|(i, vip)| {
            let reason = too_small(vip, interface, mtu)?;
            Some(Problem::new(format!("vip[{i}] ({}).mode", vip.name), "\"tunnel\"", reason))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vips: &str) -> Config {
        Config::from_toml(&format!("[global]\ninterface = \"eth0\"\n{vips}")).unwrap()
    }

    const VIPS: &str = "[[vip]]\nname = \"t6\"\naddress = \"fd77::100\"\nport = 80\nmode = \"tunnel\"\n\
                        [[vip]]\nname = \"t4\"\naddress = \"10.77.100.1\"\nport = 80\nmode = \"tunnel\"\n\
                        [[vip]]\nname = \"d6\"\naddress = \"fd77::101\"\nport = 80\nmode = \"dsr\"\n";

    #[test]
    fn ipv6_tunnel_vips_need_1320_and_nothing_else_does() {
        let config = config(VIPS);
        assert_eq!(problems(&config, 1320), vec![]);
        assert_eq!(problems(&config, 9000), vec![]);
        let found = problems(&config, 1319);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].field, "vip[0] (t6).mode");
        assert_eq!(found[0].value, "\"tunnel\"");
        let reason = &found[0].reason;
        for part in ["fd77::100", "at least 1320", "1280", "40-byte", "interface eth0 has MTU 1319"] {
            assert!(reason.contains(part), "{part:?} not in {reason:?}");
        }
        // IPv4 tunnels and IPv6 DSR take any MTU.
        assert_eq!(problems(&config, 576).len(), 1);
    }
}
