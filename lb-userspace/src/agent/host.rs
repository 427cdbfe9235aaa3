//! What the agent needs from the host before it can run, and the host's
//! errors said in the config's terms.

use anyhow::{bail, Context as _, Result};
use tracing::warn;

use crate::{config::Global, dataplane::DataplaneError};

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

/// Global settings that a running data plane cannot change.
pub fn needs_restart(old: &Global, new: &Global) -> Option<String> {
    let fields = [
        ("global.interface", old.interface.clone(), new.interface.clone()),
        ("global.xdp_mode", format!("{:?}", old.xdp_mode), format!("{:?}", new.xdp_mode)),
        ("global.pin_path", old.pin_path.display().to_string(), new.pin_path.display().to_string()),
        ("global.hash_seed", old.hash_seed.to_string(), new.hash_seed.to_string()),
        ("global.ring_size", old.ring_size.to_string(), new.ring_size.to_string()),
        ("global.max_vips", old.max_vips.to_string(), new.max_vips.to_string()),
        ("global.max_backends", old.max_backends.to_string(), new.max_backends.to_string()),
        ("global.conn_table_size", old.conn_table_size.to_string(), new.conn_table_size.to_string()),
    ];
    fields.into_iter().find(|(_, a, b)| a != b).map(|(field, a, b)| {
        format!("{field} changed from {a} to {b}, which needs a restart of the agent (sizes and seed also need --fresh)")
    })
}
