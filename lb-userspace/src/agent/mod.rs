//! `alwayson run`: open (or adopt) the data plane, judge every backend's
//! health, apply, then run the reconcile loop — the one task that owns the
//! maps. Signals, health reports and API requests reach it as events over
//! channels; the API and the stats sampler read what it publishes. The loop
//! never waits on the network: checks and neighbour probes are tasks.

mod cluster;
mod host;
pub mod inbox;
mod judged;
mod kernel_log;
mod lock;
mod memory;
mod nat_sweep;
mod notify;
mod one_at_a_time;
mod parse_child;
mod pressure;

pub use self::{memory::settle_allocator, notify::Notifier, parse_child::Parsed};
mod requests;
mod settle;
mod signals;
mod state;

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use self::{lock::InterfaceLock, state::Agent};
use crate::{
    api::{self, Shared},
    cluster::{
        announce::{self, Announcer, BgpStatus},
        flows::FlowSender,
        member::{ClusterStatus, Member},
        share,
    },
    config::{Config, FlowRecording, Global, XdpMode},
    dataplane::{AttachMode, Dataplane, LoadSettings, Opened, PinnedOptions, Recording},
    health::{self, Supervisor},
    neighbours,
    reconcile::{ApplyReport, Reconciler},
    runtime,
    stats::{Sampler, Snapshot, Timings, Topology},
};

/// How often every backend's neighbour entry is refreshed.
const NEIGHBOUR_REFRESH: Duration = Duration::from_secs(10);
/// How often weights in slow start are recomputed.
const SLOWSTART_STEP: Duration = Duration::from_millis(250);
/// How often the kernel's counters are sampled for stats and rates.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

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

/// What signals tell the reconcile loop.
#[derive(Debug)]
pub enum Event {
    /// Re-read the config file.
    Reload,
    /// Stop; `detach` (SIGUSR2) detaches even with `--keep-running-on-exit`.
    Shutdown { detach: bool },
}

pub fn load_settings(global: &Global) -> LoadSettings {
    LoadSettings {
        max_vips: global.max_vips,
        max_backends: global.max_backends,
        ring_size: global.ring_size,
        conn_table_size: global.conn_table_size,
        hash_seed: global.hash_seed,
        kernel_debug: tracing::level_filters::LevelFilter::current()
            >= tracing::level_filters::LevelFilter::DEBUG,
        recording: recording(global),
        tunnel: global.tunnel_source(),
        nat_table_size: global.nat.table_size,
        too_big_limit: global.icmp_too_big_limit,
        ..LoadSettings::default()
    }
}

pub fn recording(global: &Global) -> Recording {
    Recording {
        every_flow: global.flow_recording == FlowRecording::EveryFlow,
        limit: global.flow_record_limit,
    }
}

pub async fn run(options: RunOptions) -> Result<()> {
    let signals = signals::Signals::install()?;
    let file = parse_child::load_config(&options.config_path)?;
    host::preflight(&file.global)?;
    host::raise_open_files_limit();
    // Nothing of the kernel's, and no socket, is touched before the lock is ours.
    let lock = InterfaceLock::acquire(&file.global.lock_file, &file.global.interface)?;
    let exec_user = health::ExecUser::lookup(&file.global.check_user)?;
    let (bird_tx, mut bird_reports) = mpsc::channel(8);
    let (mut announcer, bgp_status) = Announcer::new(exec_user, bird_tx);
    let listeners = api::Listeners::bind(&file).await?;
    let mut saved = runtime::load(&file.api.runtime_file).unwrap_or_else(|e| {
        warn!("ignoring runtime changes in {}: {e}", file.api.runtime_file.display());
        Vec::new()
    });
    if !file.api.allow_exec {
        saved.retain(|op| {
            let Some(key) = runtime::restricted_key(op) else { return true };
            warn!("saved runtime change dropped: it sets {key}, which api.allow_exec = false keeps to the file: {op:?}");
            false
        });
    }
    let file = Arc::new(file);
    let effective = runtime::replay(&file, &saved);
    for (op, why) in &effective.dropped {
        warn!("saved runtime change no longer applies and is dropped: {op:?}: {why}");
    }
    let in_force = if effective.ops.is_empty() { Arc::clone(&file) } else { Arc::new(effective.config) };
    let (cluster_tx, mut cluster_reports) = mpsc::channel(32);
    let member = match &file.cluster {
        Some(cluster) => Some(Member::start(cluster, runtime::encode(&effective.ops), cluster_tx).await?),
        None => None,
    };
    host::refuse_on_host(&in_force)
        .and_then(|()| host::refuse_small_mtu(&in_force))
        .map_err(|e| anyhow::anyhow!("{}: {e}", options.config_path.display()))?;
    let dp = open(&in_force, &options)?;
    let pin = file.global.pin_path.clone();
    match dp.program_id() {
        Ok(id) => kernel_log::forward(id),
        Err(e) => warn!("the program's notices will not be logged: {e}"),
    }

    let timings = Arc::new(Timings::default());
    let (reports_tx, mut reports) = mpsc::channel(256);
    let applied = inbox::Applied { config: Arc::clone(&in_force), admin: effective.admin.clone() };
    let (published_config, config_rx) = watch::channel(Arc::new(applied));
    let (published_topology, topology_rx) = watch::channel(Arc::new(Topology::default()));
    let mut agent = Agent {
        reconciler: Reconciler::adopt(dp)?,
        config_path: options.config_path.clone(),
        file: Arc::clone(&file),
        config: Arc::new(Config { vips: Vec::new(), ..(*file).clone() }),
        ops: effective.ops,
        admin: Default::default(),
        judged: Default::default(),
        checks: Supervisor::new(reports_tx, timings.clone(), exec_user),
        lock,
        ramping: false,
        kept: Vec::new(),
        last_report: ApplyReport::default(),
        applied: false,
        last_apply: Duration::ZERO,
        timings: timings.clone(),
        published_config,
        published_topology,
        routes: Default::default(),
        routes_generation: 0,
        member,
    };
    agent.start(in_force, effective.admin, &mut reports).await?;
    info!(
        vips = agent.config.vips.len(),
        "config applied in {:.1} ms: {:?}",
        agent.last_apply.as_secs_f64() * 1000.0,
        agent.last_report
    );

    let (cluster_status_tx, cluster_status) = watch::channel(Arc::new(ClusterStatus::default()));
    let _flow_sender = match file.cluster.as_ref().filter(|c| c.share_flows) {
        Some(c) => {
            let scanner =
                agent.reconciler.dataplane().conn_scanner().context("a handle on the connection table")?;
            Some(FlowSender::start(scanner, topology_rx.clone(), c.listen.ip(), c.peers.clone()).await?)
        }
        None => None,
    };
    let stats_rx = sample_forever(&pin, topology_rx, bgp_status, cluster_status)?;
    let (requests_tx, mut requests) = mpsc::channel(16);
    let shared = Shared { requests: requests_tx, stats: stats_rx, config: config_rx.clone(), timings };
    let socket_file = listeners.serve(shared);
    // systemd (Type=notify): started once the config is applied and the API served.
    let notifier = Notifier::from_env();
    notifier.ready();
    let watchdog_every = notifier.watchdog_every();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));

    let (events_tx, mut events) = mpsc::channel(16);
    let (loads_tx, mut loads) = mpsc::channel(4);
    // SIGHUP reloads being parsed: systemd hears READY once none is.
    let mut hup_reloads = 0usize;
    tokio::spawn(signals.forward(events_tx));
    let in_force = config_rx.clone();
    let refresh = neighbours::refresh(NEIGHBOUR_REFRESH, move || {
        let config = Arc::clone(&in_force.borrow().config);
        backend_addresses(&config).collect()
    });
    let refresh = tokio::spawn(refresh);
    let mut slowstart = tokio::time::interval(SLOWSTART_STEP);
    let (scans_tx, mut scans) = mpsc::channel(1);
    let scanner = agent.reconciler.dataplane().conn_scanner().context("a handle on the connection table")?;
    let mut settler = settle::Settler::new(scanner, scans_tx);
    let mut scan_tick = tokio::time::interval(settle::scan_every(file.global.flow_idle_timeout));
    let (sweeps_tx, mut sweeps) = mpsc::channel(1);
    let nat_scanner = agent.reconciler.dataplane().nat_scanner().context("a handle on the NAT tables")?;
    let mut nat_sweeper = nat_sweep::NatSweeper::new(nat_scanner, sweeps_tx);
    let mut sweep_tick = tokio::time::interval(nat_sweep::SWEEP_EVERY);
    let mut announce_tick = tokio::time::interval(announce::TICK);
    announce_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut announced = None;
    let mut cluster_tick = tokio::time::interval(share::ROUND);
    let mut detach = false;
    loop {
        // The cluster may forbid announcing (cut off, odd one out, rings differ).
        let held_back = agent.member.as_ref().and_then(|m| m.withdrawn_because().map(str::to_owned));
        if announced != Some((agent.routes_generation, held_back.clone())) {
            announced = Some((agent.routes_generation, held_back.clone()));
            let addresses = agent.config.vips.iter().map(|v| v.address).collect();
            if let Some(member) = agent.member.as_mut() {
                member.set_announcing(held_back.is_none() && !agent.routes.is_empty());
            }
            announcer.want(agent.config.bgp.as_ref(), agent.routes.clone(), addresses, held_back);
        }
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Reload) => {
                    notifier.reloading();
                    hup_reloads += 1;
                    agent.start_reload(false, None, &loads_tx);
                }
                Some(Event::Shutdown { detach: d }) => { detach = d; break }
                None => break,
            },
            // The loop's own heartbeat: a hung loop stops it, and systemd restarts the agent.
            _ = watchdog.tick(), if watchdog_every.is_some() => notifier.watchdog(),
            Some(report) = reports.recv() => agent.report(report),
            Some(request) = requests.recv() => agent.request(request, &loads_tx),
            Some(loaded) = loads.recv() => {
                let by_hup = !loaded.asked_by_api();
                agent.reloaded(loaded);
                if by_hup {
                    hup_reloads -= 1;
                    if hup_reloads == 0 {
                        notifier.ready();
                    }
                }
            }
            _ = slowstart.tick(), if agent.ramping => agent.apply("slow start"),
            _ = scan_tick.tick() => settler.scan(agent.config.global.flow_idle_timeout),
            Some(scanned) = scans.recv() => settler.scanned(scanned, &mut agent),
            _ = sweep_tick.tick() => nat_sweeper.sweep(agent.config.global.nat.timeouts),
            Some(swept) = sweeps.recv() => nat_sweeper.swept(swept),
            _ = announce_tick.tick() => announcer.tick(),
            Some(report) = cluster_reports.recv() => agent.cluster_report(report),
            _ = cluster_tick.tick(), if agent.member.is_some() => {
                if let Some(status) = agent.cluster_tick() {
                    cluster_status_tx.send_replace(Arc::new(status));
                }
            }
            Some(report) = bird_reports.recv() => announcer.report(report),
        }
    }

    notifier.stopping();
    refresh.abort();
    let keep = options.keep_running_on_exit && !detach;
    // Routers first: traffic moves to other nodes before this one detaches.
    if keep {
        announcer.leave();
    } else {
        announcer.withdraw_all().await;
    }
    drop(agent.checks);
    drop(socket_file);
    agent.reconciler.into_dataplane().close(keep).context("closing the data plane")?;
    if !keep {
        host::restore_settings(&mut agent.lock);
    }
    if keep {
        info!(
            "stopped; the data plane keeps running, pinned at {} (the next agent adopts it)",
            pin.display()
        );
    } else {
        info!("stopped; the XDP program is detached and its pins removed");
    }
    Ok(())
}

/// Samples the pinned counters every second on a thread of its own (map reads
/// are system calls), publishing the stats the API and `/metrics` serve.
fn sample_forever(
    pin: &std::path::Path,
    topology: watch::Receiver<Arc<Topology>>,
    bgp: watch::Receiver<Arc<BgpStatus>>,
    cluster: watch::Receiver<Arc<ClusterStatus>>,
) -> Result<watch::Receiver<Arc<Snapshot>>> {
    let mut sampler = Sampler::open(pin).context("opening the pinned maps for stats")?;
    let mut first = sampler.sample(&topology.borrow()).context("reading the counters")?;
    let mut pressure = pressure::Pressure::new();
    pressure.sample(&first.counters, Instant::now());
    first.bgp = Arc::clone(&bgp.borrow());
    first.cluster = Arc::clone(&cluster.borrow());
    let (tx, rx) = watch::channel(Arc::new(first));
    std::thread::Builder::new().name("stats".into()).spawn(move || loop {
        std::thread::sleep(SAMPLE_EVERY);
        let current = Arc::clone(&topology.borrow());
        match sampler.sample(&current) {
            Ok(mut stats) => {
                pressure.sample(&stats.counters, Instant::now());
                stats.bgp = Arc::clone(&bgp.borrow());
                stats.cluster = Arc::clone(&cluster.borrow());
                tx.send_replace(Arc::new(stats));
            }
            Err(e) => warn!("sampling the counters failed: {e}"),
        }
    })?;
    Ok(rx)
}

/// The config's word for how to attach, for the data plane (which knows no config).
fn attach_mode(mode: XdpMode) -> AttachMode {
    match mode {
        XdpMode::Native => AttachMode::Native,
        XdpMode::Generic => AttachMode::Generic,
        XdpMode::Auto => AttachMode::Auto,
    }
}

fn open(config: &Config, options: &RunOptions) -> Result<Dataplane> {
    let global = &config.global;
    // An adopted data plane goes on looking for NAT replies from the start:
    // one passed to the host meanwhile would be reset by it.
    let nat = config.vips.iter().any(|v| v.mode == crate::config::Mode::Nat);
    let pinned = PinnedOptions {
        settings: LoadSettings { nat, ..load_settings(global) },
        pin_dir: global.pin_path.clone(),
        interface: global.interface.clone(),
        mode: attach_mode(global.xdp_mode),
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
        Opened::Reattached { generic_fallback } => info!(
            interface = %global.interface,
            mode = if generic_fallback { "generic (fallback)" } else { "as configured" },
            "re-attached: the maps pinned at {pin} (connection table included) are kept, this build's \
             program runs with a new link"
        ),
    }
    Ok(dp)
}

fn backend_addresses(config: &Config) -> impl Iterator<Item = std::net::IpAddr> + '_ {
    config.vips.iter().flat_map(|v| v.backends.iter().map(|b| b.address))
}
