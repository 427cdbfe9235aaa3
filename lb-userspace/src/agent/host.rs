//! What the agent needs from the host before it can run, and the host's
//! errors said in the config's terms.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use anyhow::{bail, Context as _, Result};
use tracing::{info, warn};

use super::{load_settings, lock::InterfaceLock};
use crate::{
    config::{
        capture, mtu,
        nat::{self, PortRange},
        Config, ConfigError, Global, Mode, Problem, Token,
    },
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

/// `bpf_fib_lookup` answers "forwarding disabled" unless the ingress
/// interface forwards the packet's family: it reads that interface's own
/// setting (never `all`), so only that is turned on, and only for the families
/// of `config`'s VIPs. Host-wide IPv6 forwarding would make every interface a
/// router, and one with `accept_ra = 1` would then drop its SLAAC addresses
/// and default route. What was there before is remembered in the lock file.
pub fn enable_forwarding(lock: &mut InterfaceLock, config: &Config) -> Result<()> {
    let interface = &config.global.interface;
    for (family, wanted) in [("ipv4", true), ("ipv6", false)] {
        if !config.vips.iter().any(|v| v.address.is_ipv4() == wanted) {
            continue;
        }
        let path = PathBuf::from(format!("/proc/sys/net/{family}/conf/{interface}/forwarding"));
        let shown = path.display();
        let now = std::fs::read_to_string(&path).with_context(|| format!("reading {shown}"))?;
        if now.trim() != "1" {
            lock.remember(&path, now.trim())?;
            std::fs::write(&path, "1").with_context(|| format!("enabling forwarding: writing {shown}"))?;
            warn!("enabled forwarding ({shown} = 1) for {family} VIPs because global.set_forwarding is true");
        }
    }
    Ok(())
}

/// Every address of this host (in the agent's network namespace), for
/// [`crate::config::capture`].
pub fn addresses() -> Vec<IpAddr> {
    addresses_where(|_| true)
}

/// The addresses of one interface.
pub fn interface_addresses(interface: &str) -> Vec<IpAddr> {
    addresses_where(|name| name.to_bytes() == interface.as_bytes())
}

fn addresses_where(on: impl Fn(&std::ffi::CStr) -> bool) -> Vec<IpAddr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `list`, freed below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        warn!("listing this host's addresses failed: {}", std::io::Error::last_os_error());
        return Vec::new();
    }
    let mut found = Vec::new();
    let mut at = list;
    while !at.is_null() {
        // SAFETY: a node of the list getifaddrs returned; its address, when
        // present, is a sockaddr of the family it names.
        unsafe {
            let addr = (*at).ifa_addr;
            if !addr.is_null() && !(*at).ifa_name.is_null() && on(std::ffi::CStr::from_ptr((*at).ifa_name)) {
                match i32::from((*addr).sa_family) {
                    libc::AF_INET => {
                        let v4 = &*(addr as *const libc::sockaddr_in);
                        found.push(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()));
                    }
                    libc::AF_INET6 => {
                        let v6 = &*(addr as *const libc::sockaddr_in6);
                        found.push(IpAddr::from(v6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            at = (*at).ifa_next;
        }
    }
    // SAFETY: the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

/// Refuses a config whose VIPs would capture the host's own traffic, or
/// whose NAT the host cannot carry (see [`nat_problems`]).
pub fn refuse_on_host(config: &Config) -> Result<(), ConfigError> {
    let mut problems = capture::problems(config, &addresses());
    problems.extend(nat_problems(config));
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// What the host says against `config`'s NAT: addresses not on the
/// interface, a port range over the host's ephemeral ports.
pub fn nat_problems(config: &Config) -> Vec<Problem> {
    if !config.vips.iter().any(|v| v.mode == Mode::Nat) {
        return Vec::new();
    }
    nat::host_problems(config, &interface_addresses(&config.global.interface), local_port_range())
}

/// `net.ipv4.ip_local_port_range` (IPv6 sockets use it too); `None` if unreadable.
fn local_port_range() -> Option<PortRange> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut ports = text.split_whitespace().map(|p| p.parse::<u16>().ok());
    let (first, last) = (ports.next()??, ports.next()??);
    Some(PortRange { first, last })
}

/// The MTU of interface `name` in this process's network namespace (asked
/// by ioctl: sysfs may show another namespace's interfaces).
pub fn interface_mtu(name: &str) -> std::io::Result<u32> {
    let bytes = name.as_bytes();
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    if bytes.len() >= request.ifr_name.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    for (to, from) in request.ifr_name.iter_mut().zip(bytes) {
        *to = *from as libc::c_char;
    }
    // SAFETY: a plain socket call; the descriptor is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu of a valid ifreq.
    let rc = unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&socket), libc::SIOCGIFMTU, &mut request) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel filled in the MTU member.
    Ok(unsafe { request.ifr_ifru.ifru_mtu } as u32)
}

/// Refuses a config with an IPv6 tunnel VIP the interface's MTU is too
/// small for (see [`mtu`]).
pub fn refuse_small_mtu(config: &Config) -> Result<(), ConfigError> {
    let interface = &config.global.interface;
    if !config.vips.iter().any(|v| mtu::too_small(v, interface, 0).is_some()) {
        return Ok(());
    }
    let found = interface_mtu(interface).map_err(|e| {
        ConfigError::Invalid(vec![crate::config::Problem::new(
            "global.interface",
            format!("{interface:?}"),
            format!("its MTU cannot be read ({e}), which IPv6 tunnel VIPs need to know"),
        )])
    })?;
    let problems = mtu::problems(config, found);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(problems))
    }
}

/// Puts back what agents on this interface changed (on a stop that detaches).
pub fn restore_settings(lock: &mut InterfaceLock) {
    let restores = match lock.take_restores() {
        Ok(r) => r,
        Err(e) => return warn!("host settings not restored: {e:#}"),
    };
    for (path, value) in restores {
        match std::fs::write(&path, &value) {
            Ok(()) => info!("restored {} = {value}", path.display()),
            Err(e) => warn!("restoring {} = {value}: {e}", path.display()),
        }
    }
}

/// Raises the soft limit of open files to the hard one: listeners, checks
/// and maps all take descriptors, and systemd's default soft limit is 1,024.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a valid rlimit buffer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 || limit.rlim_cur >= limit.rlim_max {
            return;
        }
        let was = limit.rlim_cur;
        limit.rlim_cur = limit.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
            info!("raised the open-files limit from {was} to {}", limit.rlim_max);
        }
    }
}

/// Names the config setting behind a data plane error the kernel raised.
pub fn explain(error: DataplaneError, global: &Global) -> anyhow::Error {
    use lb_common::maps::SizedBy;
    if let Some(refused) = error.refused_map() {
        let setting = match refused.sized_by {
            SizedBy::Vips => format!("global.max_vips = {}", global.max_vips),
            SizedBy::Backends => format!("global.max_backends = {}", global.max_backends),
            SizedBy::ConnTable => format!("global.conn_table_size = {}", global.conn_table_size),
            SizedBy::NatTable => "the NAT tables' size".to_string(),
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
            "global.lock_file",
            o.lock_file != n.lock_file,
            o.lock_file.display().to_string(),
            n.lock_file.display().to_string(),
        ),
        ("global.check_user", o.check_user != n.check_user, o.check_user.clone(), n.check_user.clone()),
        (
            "api.allow_exec",
            old.api.allow_exec != new.api.allow_exec,
            old.api.allow_exec.to_string(),
            new.api.allow_exec.to_string(),
        ),
        (
            "api.max_connections",
            old.api.max_connections != new.api.max_connections,
            old.api.max_connections.to_string(),
            new.api.max_connections.to_string(),
        ),
        (
            "web.max_connections",
            old.web.max_connections != new.web.max_connections,
            old.web.max_connections.to_string(),
            new.web.max_connections.to_string(),
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
        // Membership (node name, etcd, heartbeats) is set up once, at start.
        ("[cluster]", old.cluster != new.cluster, String::new(), String::new()),
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
