//! `alwayson run`: open (or adopt) the data plane, judge every backend's
//! health, apply, then run the reconcile loop — the one task that owns the
//! maps. Signals and health transitions reach it as events over channels.

mod host;
mod signals;

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use lb_common::BackendState;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

use crate::{
    config::{Config, Global, XdpMode},
    dataplane::{AttachMode, Dataplane, LoadSettings, Opened, PinnedOptions},
    desired::{desired, BackendHealth},
    health::{self, BackendRef, Supervisor, Target, Transition},
    neighbours,
    reconcile::{ApplyReport, Reconciler},
};

/// How often every backend's neighbour entry is refreshed.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(10);
/// How often weights in slow start are recomputed.
const SLOWSTART_STEP: Duration = Duration::from_millis(250);

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

/// What the reconcile loop is told, besides health transitions.
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

/// The reconcile loop's state: the one owner of the data plane.
struct Agent {
    reconciler: Reconciler,
    config: Config,
    health: HashMap<BackendRef, BackendHealth>,
    checks: Supervisor,
    /// A weight is still in slow start: recompute soon.
    ramping: bool,
    /// VIPs serving from DOWN backends because of `on_all_down = "keep"`.
    kept: Vec<String>,
    last_report: ApplyReport,
}

pub async fn run(options: RunOptions) -> Result<()> {
    let config = Config::load(&options.config_path)?;
    host::preflight(&config.global)?;
    if config.global.set_forwarding {
        host::enable_forwarding(&config.global.interface)?;
    }
    let dp = open(&config, &options)?;
    let pin = config.global.pin_path.display().to_string();

    let (transitions_tx, mut transitions) = mpsc::channel(256);
    let mut agent = Agent {
        reconciler: Reconciler::adopt(dp)?,
        config: Config { vips: Vec::new(), ..config.clone() },
        health: HashMap::new(),
        checks: Supervisor::new(transitions_tx),
        ramping: false,
        kept: Vec::new(),
        last_report: ApplyReport::default(),
    };
    agent.switch_to(config).await?;
    info!(vips = agent.config.vips.len(), "config applied: {:?}", agent.last_report);

    let (events_tx, mut events) = mpsc::channel(16);
    tokio::spawn(signals::forward(options.config_path.clone(), events_tx));
    let mut neighbour_refresh = tokio::time::interval(NEIGHBOUR_REFRESH);
    neighbour_refresh.reset();
    let mut slowstart = tokio::time::interval(SLOWSTART_STEP);
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Reload(next)) => agent.reload(*next).await,
                Some(Event::Shutdown) | None => break,
            },
            Some(transition) = transitions.recv() => agent.transition(transition),
            _ = slowstart.tick(), if agent.ramping => agent.apply("slow start"),
            _ = neighbour_refresh.tick() => {
                neighbours::probe(backend_addresses(&agent.config)).await;
            }
        }
    }

    drop(agent.checks);
    let keep = options.keep_running_on_exit;
    agent.reconciler.into_dataplane().close(keep).context("closing the data plane")?;
    if keep {
        info!("stopped; the data plane keeps running, pinned at {pin} (the next agent adopts it)");
    } else {
        info!("stopped; the XDP program is detached and its pins removed");
    }
    Ok(())
}

fn open(config: &Config, options: &RunOptions) -> Result<Dataplane> {
    let global = &config.global;
    let pinned = PinnedOptions {
        settings: load_settings(global),
        pin_dir: global.pin_path.clone(),
        interface: global.interface.clone(),
        mode: match global.xdp_mode {
            XdpMode::Native => AttachMode::Native,
            XdpMode::Generic => AttachMode::Generic,
            XdpMode::Auto => AttachMode::Auto,
        },
        replace: options.replace,
        fresh: options.fresh,
    };
    let (dp, opened) = Dataplane::open(&pinned).map_err(|e| host::explain(e, global))?;
    let pin = global.pin_path.display();
    match opened {
        Opened::Attached { generic_fallback } => info!(
            interface = %global.interface,
            mode = if generic_fallback { "generic (fallback)" } else { "as configured" },
            "attached a new data plane, pinned at {pin}"
        ),
        Opened::Adopted => info!("adopted the running data plane pinned at {pin} (program and maps kept)"),
        Opened::Replaced => info!("adopted the maps pinned at {pin} and swapped in this build's program"),
    }
    Ok(dp)
}

fn backend_addresses(config: &Config) -> impl Iterator<Item = std::net::IpAddr> + '_ {
    config.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.address))
}

impl Agent {
    /// Moves to `next`: backends nobody has judged yet get one check first (the
    /// kernel's state counts as a judgement for adopted ones), so nothing enters
    /// a ring before it has answered; then the maps, then the checker tasks.
    async fn switch_to(&mut self, next: Config) -> Result<()> {
        let targets = health::targets(&next);
        let unjudged: Vec<Target> =
            targets.iter().filter(|t| !self.health.contains_key(&t.backend)).cloned().collect();
        let mut first = health::first_results(&unjudged).await;
        for t in &unjudged {
            let adopted = self.reconciler.backend_state(&t.backend.vip, t.backend.addr);
            let (up, reason) = match adopted {
                Some(state) => {
                    (state != BackendState::Down as u8, "state kept from the running data plane".into())
                }
                None => match first.remove(&t.backend) {
                    Some(Ok(())) => (true, "first check passed".to_string()),
                    Some(Err(why)) => (false, why),
                    None => (false, "first check did not finish".to_string()),
                },
            };
            if !up {
                warn!("health: {} starts DOWN: {reason}", t.label);
            }
            self.health.insert(t.backend, BackendHealth { up, came_up: None, transitions: 0, reason });
        }
        let wanted: std::collections::HashSet<BackendRef> = targets.iter().map(|t| t.backend).collect();
        self.health.retain(|b, _| wanted.contains(b));

        let known: Vec<_> = backend_addresses(&self.config).collect();
        let new: Vec<_> = backend_addresses(&next).filter(|a| !known.contains(a)).collect();
        if neighbours::probe(new).await > 0 {
            // Give the kernel a moment to resolve them before rings point at them.
            tokio::time::sleep(neighbours::SETTLE).await;
        }
        self.config = next;
        self.try_apply()?;
        let health = &self.health;
        self.checks.sync(&targets, |b| health.get(b).is_some_and(|h| h.up));
        Ok(())
    }

    async fn reload(&mut self, next: Config) {
        if let Some(why) = host::needs_restart(&self.config.global, &next.global) {
            error!("reload refused: {why}; the running config stays");
            return;
        }
        match self.switch_to(next).await {
            Ok(()) => info!(vips = self.config.vips.len(), "reloaded config applied: {:?}", self.last_report),
            Err(e) => error!("applying the reloaded config failed: {e:#}"),
        }
    }

    fn transition(&mut self, t: Transition) {
        let Some(h) = self.health.get_mut(&t.backend) else { return };
        h.up = t.up;
        h.came_up = t.up.then(Instant::now);
        h.transitions += 1;
        h.reason = t.reason;
        self.apply("health");
    }

    fn apply(&mut self, why: &str) {
        if let Err(e) = self.try_apply() {
            error!("applying the desired state ({why}) failed: {e:#}");
        }
    }

    fn try_apply(&mut self) -> Result<()> {
        let want = desired(&self.config, &self.health, Instant::now());
        self.ramping = want.ramping;
        if want.kept != self.kept {
            for vip in want.kept.iter().filter(|v| !self.kept.contains(v)) {
                warn!("VIP {vip}: every backend is DOWN; on_all_down = keep, so they all stay in service");
            }
            self.kept = want.kept.clone();
        }
        self.last_report = self.reconciler.apply(&want.vips)?;
        Ok(())
    }
}
