//! VIPs that would capture the host's own management traffic. The balancer
//! takes every packet to a VIP before the host's stack sees it, so a port-0
//! VIP on one of the host's addresses would take SSH, the API and every
//! other service of the host, and a VIP on the address and port of the
//! agent's own listeners would cut the agent off. Whether an address is the
//! host's is the host's to say, so the agent asks it (on start, reload and
//! every API change) and this only judges. A VIP on a host address with a
//! specific port that no listener uses stays possible (NAT mode needs it).

use std::net::{IpAddr, SocketAddr};

use super::{Config, Problem, Vip};

/// Why `vip` would capture management traffic: the key at fault and the reason.
pub fn captures(vip: &Vip, host: &[IpAddr], listeners: &[SocketAddr]) -> Option<(&'static str, String)> {
    let on_host = host.contains(&vip.address);
    if vip.port == 0 && on_host {
        return Some((
            "port",
            format!(
                "a port-0 VIP on {}, an address of this host, would take all of the host's own {} traffic \
                 (SSH, the control API): give the VIP a port",
                vip.address, vip.protocol
            ),
        ));
    }
    if vip.protocol != super::Protocol::Tcp {
        return None;
    }
    let listener = listeners.iter().find(|l| {
        let address = l.ip() == vip.address || (l.ip().is_unspecified() && on_host);
        address && (vip.port == l.port() || vip.port == 0)
    })?;
    Some((
        "address",
        format!("the agent itself listens on {listener}: a VIP there would cut it off from its own callers"),
    ))
}

/// Every VIP of `config` that captures management traffic, named as the file names it.
pub fn problems(config: &Config, host: &[IpAddr]) -> Vec<Problem> {
    let listeners = listeners(config);
    config
        .vips
        .iter()
        .enumerate()
        .filter_map(|(i, vip)| {
            let (key, reason) = captures(vip, host, &listeners)?;
            let value =
                if key == "port" { vip.port.to_string() } else { format!("{:?}", vip.address.to_string()) };
            Some(Problem::new(format!("vip[{i}] ({}).{key}", vip.name), value, reason))
        })
        .collect()
}

/// The agent's own TCP listeners.
pub fn listeners(config: &Config) -> Vec<SocketAddr> {
    config.api.tcp.into_iter().chain(config.web.listen).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vips: &str) -> Config {
        let text = format!(
            "[global]\ninterface = \"eth0\"\n[api]\ntcp = \"127.0.0.1:9181\"\ntoken = \"0123456789abcdef\"\n\
             [web]\nlisten = \"0.0.0.0:9180\"\n{vips}"
        );
        Config::from_toml(&text).unwrap()
    }

    fn fields(vips: &str) -> Vec<String> {
        let host: Vec<IpAddr> =
            ["10.77.0.2", "127.0.0.1", "fd77::2"].iter().map(|a| a.parse().unwrap()).collect();
        problems(&config(vips), &host).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn port_zero_on_a_host_address_and_the_agents_own_listeners_are_refused() {
        let vip = |name: &str, address: &str, port: u16, protocol: &str| {
            format!("[[vip]]\nname = \"{name}\"\naddress = \"{address}\"\nport = {port}\nprotocol = \"{protocol}\"\n")
        };
        assert_eq!(fields(&vip("all", "10.77.0.2", 0, "tcp")), ["vip[0] (all).port"]);
        assert_eq!(fields(&vip("all6", "fd77::2", 0, "udp")), ["vip[0] (all6).port"]);
        // The web listener on 0.0.0.0: every host address at its port.
        assert_eq!(fields(&vip("web", "10.77.0.2", 9180, "tcp")), ["vip[0] (web).address"]);
        assert_eq!(fields(&vip("api", "127.0.0.1", 9181, "tcp")), ["vip[0] (api).address"]);
        // Allowed: a specific port on a host address, a UDP VIP at a TCP listener's
        // port, a port-0 VIP on an address that is not the host's.
        for ok in [
            vip("nat", "10.77.0.2", 443, "tcp"),
            vip("dns", "10.77.0.2", 9180, "udp"),
            vip("any", "10.77.100.1", 0, "tcp"),
            vip("web", "10.77.100.1", 9180, "tcp"),
        ] {
            assert_eq!(fields(&ok), Vec::<String>::new(), "{ok}");
        }
    }
}
