//! `alwayson run`: open (or adopt) the data plane, apply the config, then run
//! the reconcile loop — the one task that owns the maps. Signals, and later
//! health checks and the API, reach it as events over a channel.

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context as _, Result};
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::mpsc,
};
use tracing::{error, info, warn};

use crate::{
    config::{Config, Global, XdpMode},
    dataplane::{AttachMode, Dataplane, DataplaneError, LoadSettings, Opened, PinnedOptions},
    neighbours,
    reconcile::{DesiredBackend, DesiredVip, Reconciler},
};

/// How often every backend's neighbour entry is refreshed.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Swap this build's XDP program in even if one is running.
    pub replace: bool,
    /// Discard pinned maps (and the connection table) and start empty.
    pub fresh: bool,
    /// On a clean stop, leave the data plane attached and pinned.
    pub keep_running_on_exit: bool,
}

/// What the reconcile loop is told.
#[derive(Debug)]
pub enum Event {
    /// A new, already validated config.
    Reload(Box<Config>),
    Shutdown,
}

pub fn load_settings(global: &Global) -> LoadSettings {
    LoadSettings {
        max_vips: global.max_vips,
        max_backends: global.max_backends,
        ring_size: global.ring_size,
        conn_table_size: global.conn_table_size,
        hash_seed: global.hash_seed,
    }
}

/// The desired data plane for a config (every backend up until health checks say otherwise).
pub fn desired(config: &Config) -> Vec<DesiredVip> {
    config
        .vips
        .iter()
        .map(|vip| DesiredVip {
            key: vip.key(),
            mode: vip.mode.into(),
            backends: vip
                .backends
                .iter()
                .map(|b| DesiredBackend { addr: b.socket(), weight: b.weight, backup: b.backup, up: true })
                .collect(),
        })
        .collect()
}

pub async fn run(options: RunOptions) -> Result<()> {
    let config = Config::load(&options.config_path)?;
    preflight(&config.global)?;
    if config.global.set_forwarding {
        enable_forwarding(&config.global.interface)?;
    }
    let pinned = PinnedOptions {
        settings: load_settings(&config.global),
        pin_dir: config.global.pin_path.clone(),
        interface: config.global.interface.clone(),
        mode: match config.global.xdp_mode {
            XdpMode::Native => AttachMode::Native,
            XdpMode::Generic => AttachMode::Generic,
            XdpMode::Auto => AttachMode::Auto,
        },
        replace: options.replace,
        fresh: options.fresh,
    };
    let (dp, opened) = Dataplane::open(&pinned).map_err(|e| explain(e, &config.global))?;
    let pin = config.global.pin_path.display().to_string();
    match opened {
        Opened::Attached { generic_fallback } => info!(
            interface = %config.global.interface,
            mode = if generic_fallback { "generic (fallback)" } else { "as configured" },
            "attached a new data plane, pinned at {pin}"
        ),
        Opened::Adopted => info!("adopted the running data plane pinned at {pin} (program and maps kept)"),
        Opened::Replaced => info!("adopted the maps pinned at {pin} and swapped in this build's program"),
    }

    let mut reconciler = Reconciler::adopt(dp)?;
    let probed = neighbours::probe(backend_addresses(&config)).await;
    if probed > 0 {
        // Give the kernel a moment to resolve them before rings point at them.
        tokio::time::sleep(neighbours::SETTLE).await;
    }
    let report = reconciler.apply(&desired(&config))?;
    info!(?report, vips = config.vips.len(), "config applied");

    let (events, mut inbox) = mpsc::channel(16);
    tokio::spawn(signals(options.config_path.clone(), events));
    let mut current = config;
    let mut refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    refresh.reset();
    loop {
        tokio::select! {
            event = inbox.recv() => match event {
                Some(Event::Reload(next)) => reload(&mut reconciler, &mut current, *next).await,
                Some(Event::Shutdown) | None => break,
            },
            _ = refresh.tick() => {
                neighbours::probe(backend_addresses(&current)).await;
            }
        }
    }

    let keep = options.keep_running_on_exit;
    reconciler.into_dataplane().close(keep).context("closing the data plane")?;
    if keep {
        info!("stopped; the data plane keeps running, pinned at {pin} (the next agent adopts it)");
    } else {
        info!("stopped; the XDP program is detached and its pins removed");
    }
    Ok(())
}

async fn reload(reconciler: &mut Reconciler, current: &mut Config, next: Config) {
    if let Some(why) = needs_restart(&current.global, &next.global) {
        error!("reload refused: {why}; the running config stays");
        return;
    }
    let known: Vec<_> = backend_addresses(current).collect();
    let new: Vec<_> = backend_addresses(&next).filter(|a| !known.contains(a)).collect();
    if neighbours::probe(new).await > 0 {
        tokio::time::sleep(neighbours::SETTLE).await;
    }
    match reconciler.apply(&desired(&next)) {
        Ok(report) => {
            info!(?report, vips = next.vips.len(), "reloaded config applied");
            *current = next;
        }
        Err(e) => error!("applying the reloaded config failed: {e}"),
    }
}

/// Global settings that a running data plane cannot change.
fn needs_restart(old: &Global, new: &Global) -> Option<String> {
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

fn backend_addresses(config: &Config) -> impl Iterator<Item = std::net::IpAddr> + '_ {
    config.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.address))
}

/// Turns SIGHUP into a validated `Reload` (a bad file is logged and dropped) and
/// SIGTERM/SIGINT into `Shutdown`.
async fn signals(path: PathBuf, events: mpsc::Sender<Event>) {
    let (Ok(mut hup), Ok(mut term), Ok(mut int)) =
        (signal(SignalKind::hangup()), signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        error!("cannot install signal handlers");
        let _ = events.send(Event::Shutdown).await;
        return;
    };
    loop {
        let event = tokio::select! {
            _ = hup.recv() => match Config::load(&path) {
                Ok(config) => Event::Reload(Box::new(config)),
                Err(e) => {
                    error!("reload of {} refused, the running config stays:\n{e}", path.display());
                    continue;
                }
            },
            _ = term.recv() => Event::Shutdown,
            _ = int.recv() => Event::Shutdown,
        };
        let stop = matches!(event, Event::Shutdown);
        if events.send(event).await.is_err() || stop {
            return;
        }
    }
}

fn preflight(global: &Global) -> Result<()> {
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
fn enable_forwarding(interface: &str) -> Result<()> {
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
fn explain(error: DataplaneError, global: &Global) -> anyhow::Error {
    use aya::{maps::MapError, EbpfError};
    if let DataplaneError::Load(EbpfError::MapError(MapError::CreateError { name, io_error })) = &error {
        let setting = lb_common::maps::SIZED_MAPS.iter().find(|(n, _)| n == name).map(|(_, by)| match by {
            lb_common::maps::SizedBy::Vips => format!("global.max_vips = {}", global.max_vips),
            lb_common::maps::SizedBy::Backends => format!("global.max_backends = {}", global.max_backends),
            lb_common::maps::SizedBy::ConnTable => {
                format!("global.conn_table_size = {}", global.conn_table_size)
            }
            lb_common::maps::SizedBy::Ring => {
                format!("global.max_vips × global.ring_size = {} × {}", global.max_vips, global.ring_size)
            }
        });
        if let Some(setting) = setting {
            return anyhow::anyhow!(
                "the kernel refused to create map {name} sized by {setting}: {io_error}; lower it"
            );
        }
    }
    anyhow::Error::new(error)
}
