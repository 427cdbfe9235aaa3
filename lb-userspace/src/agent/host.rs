//! What the agent needs from the host before it can run, and the host's
//! errors said in the config's terms.

use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};
use tracing::warn;

use super::load_settings;
use crate::{
    config::{Config, Global, Token},
    dataplane::DataplaneError,
};

pub fn preflight(global: &Global) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("alwayson run needs root (CAP_BPF and CAP_NET_ADMIN, to load and attach XDP programs)");
    }
    // if_nametoindex asks this process's network namespace (sysfs may show another one).
    let name = std::ffi::CString::new(global.interface.as_str())?;
    // SAFETY: a valid C string.
    if unsafe { libc::if_nametoindex(name.as_ptr()) } == 0 {
        bail!("global.interface: interface {:?} does not exist on this host", global.interface);
    }
    Ok(())
}

/// `bpf_fib_lookup` answers "forwarding disabled" unless the ingress interface
/// forwards IPv4 and the host forwards IPv6.
pub fn enable_forwarding(interface: &str) -> Result<()> {
    for path in [
        format!("/proc/sys/net/ipv4/conf/{interface}/forwarding"),
        "/proc/sys/net/ipv6/conf/all/forwarding".into(),
    ] {
        let now = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        if now.trim() != "1" {
            std::fs::write(&path, "1").with_context(|| format!("enabling forwarding: writing {path}"))?;
            warn!("enabled forwarding ({path} = 1) because global.set_forwarding is true");
        }
    }
    Ok(())
}

/// Names the config setting behind a data plane error the kernel raised.
pub fn explain(error: DataplaneError, global: &Global) -> anyhow::Error {
    use lb_common::maps::SizedBy;
    if let Some(refused) = error.refused_map() {
        let setting = match refused.sized_by {
            SizedBy::Vips => format!("global.max_vips = {}", global.max_vips),
            SizedBy::Backends => format!("global.max_backends = {}", global.max_backends),
            SizedBy::ConnTable => format!("global.conn_table_size = {}", global.conn_table_size),
            SizedBy::Ring => {
                format!("global.max_vips × global.ring_size = {} × {}", global.max_vips, global.ring_size)
            }
        };
        return anyhow::anyhow!(
            "the kernel refused to create map {} sized by {setting}: {}; lower it",
            refused.name,
            refused.reason
        );
    }
    anyhow::Error::new(error)
}

/// The first setting a reload from `old` to `new` cannot change in a running
/// agent, said as what changed and what to do instead.
pub fn needs_restart(old: &Config, new: &Config) -> Option<String> {
    if let Some((field, was, is)) = load_settings(&new.global).changed_from(&load_settings(&old.global)) {
        return Some(format!(
            "global.{field} changed from {was} to {is}: the data plane is sized and seeded when it is \
             loaded, so this needs a restart with --fresh (which drops the connection table)"
        ));
    }
    let (o, n) = (&old.global, &new.global);
    let listener = |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    // The token is a secret: said to have changed, never shown.
    let token = |t: &Option<Token>| {
        match t {
            None => "none",
            Some(Token::Value(_)) => "a token in the file",
            Some(Token::File(_)) => "a token file",
        }
        .to_string()
    };
    let fields = [
        ("global.interface", o.interface != n.interface, o.interface.clone(), n.interface.clone()),
        (
            "global.xdp_mode",
            o.xdp_mode != n.xdp_mode,
            format!("{:?}", o.xdp_mode),
            format!("{:?}", n.xdp_mode),
        ),
        (
            "global.pin_path",
            o.pin_path != n.pin_path,
            o.pin_path.display().to_string(),
            n.pin_path.display().to_string(),
        ),
        (
            "global.set_forwarding",
            o.set_forwarding != n.set_forwarding,
            o.set_forwarding.to_string(),
            n.set_forwarding.to_string(),
        ),
        (
            "api.socket",
            old.api.socket != new.api.socket,
            old.api.socket.display().to_string(),
            new.api.socket.display().to_string(),
        ),
        ("api.tcp", old.api.tcp != new.api.tcp, listener(old.api.tcp), listener(new.api.tcp)),
        ("api.token", old.api.token != new.api.token, token(&old.api.token), token(&new.api.token)),
        ("web.listen", old.web.listen != new.web.listen, listener(old.web.listen), listener(new.web.listen)),
    ];
    fields.into_iter().find(|(_, changed, ..)| *changed).map(|(field, _, was, is)| {
        let was_is = if was == is { String::new() } else { format!(" from {was} to {is}") };
        format!("{field} changed{was_is}, which needs a restart of the agent")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[global]\ninterface = \"lo\"\n{extra}\n[[vip]]\naddress = \"10.77.100.1\"\nport = 80\nprotocol = \"tcp\"\n\
             [[vip.backend]]\naddress = \"10.77.1.10\"\n"
        );
        Config::from_toml(&text).unwrap()
    }

    fn why(old: &str, new: &str) -> Option<String> {
        needs_restart(&config(old), &config(new))
    }

    #[test]
    fn reload_names_what_only_a_restart_changes() {
        assert_eq!(why("", ""), None);
        let mut weight = config("");
        std::sync::Arc::make_mut(&mut weight.vips[0]).backends[0].weight = 7;
        assert_eq!(needs_restart(&config(""), &weight), None, "backends reload");

        let ring = why("", "ring_size = 4099").unwrap();
        assert!(
            ring.starts_with("global.ring_size changed from 65537 to 4099") && ring.contains("--fresh"),
            "{ring}"
        );
        assert!(why("", "xdp_mode = \"generic\"")
            .unwrap()
            .starts_with("global.xdp_mode changed from Auto to Generic"));
        assert!(why("", "set_forwarding = false").unwrap().starts_with("global.set_forwarding"));
        let web = why("", "[web]\nlisten = \"off\"").unwrap();
        assert!(web.starts_with("web.listen changed from 127.0.0.1:9180 to off"), "{web}");
        let tcp = why("", "[api]\ntcp = \"127.0.0.1:9181\"\ntoken = \"first-token-0123456\"").unwrap();
        assert!(tcp.starts_with("api.tcp changed from off to 127.0.0.1:9181"), "{tcp}");
    }

    #[test]
    fn a_changed_token_is_named_but_not_shown() {
        let api = |token: &str| format!("[api]\ntcp = \"127.0.0.1:9181\"\ntoken = \"{token}\"");
        let msg = why(&api("first-token-0123456"), &api("second-token-012345")).unwrap();
        assert_eq!(msg, "api.token changed, which needs a restart of the agent");
    }
}
