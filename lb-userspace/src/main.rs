//! `alwayson`: the Always On agent, and the commands that talk to it.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};
use lb_userspace::{
    agent::{self, RunOptions},
    api::client::Client,
    cli,
    config::{Config, Mode},
    decap, import,
};
use serde_json::json;
use tracing_subscriber::EnvFilter;

const DEFAULT_CONFIG: &str = "/etc/alwayson/alwayson.toml";

#[derive(Parser)]
#[command(name = "alwayson", version, about = "XDP layer-4 load balancer agent")]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

/// Where a running agent listens.
#[derive(Args)]
struct Target {
    /// The agent's control socket (default: the one its config names).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The agent's config file, to find its socket.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach the balancer, apply the config, keep it applied.
    Run {
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Swap this build's XDP program in atomically, even if one is running.
        #[arg(long)]
        replace: bool,
        /// Start from empty maps even if a running data plane is pinned (drops the connection table).
        #[arg(long)]
        fresh: bool,
        /// On SIGTERM/SIGINT, leave the data plane attached and pinned for the next agent
        /// (SIGUSR2 still detaches: the systemd unit's stop).
        #[arg(long)]
        keep_running_on_exit: bool,
    },
    /// Validate a config file and print it with every default filled in.
    CheckConfig { file: PathBuf },
    /// Convert an HAProxy configuration: the Always On config on stdout, what
    /// was not carried over on stderr (with the HAProxy file's line numbers).
    ImportHaproxy {
        file: PathBuf,
        /// Every VIP's mode.
        #[arg(long, default_value = "dsr", value_parser = ["dsr", "tunnel", "nat"])]
        mode: String,
        /// `[global] interface` of the config.
        #[arg(long, default_value = "eth0")]
        interface: String,
        /// The VIP address of `bind :PORT` / `bind *:PORT` (skipped, with a warning, without it).
        #[arg(long)]
        vip_address: Option<std::net::IpAddr>,
        /// `[global] nat_address` for `--mode nat` (one per family; repeatable).
        #[arg(long)]
        nat_address: Vec<std::net::IpAddr>,
    },
    /// For the agent: parse and validate a config, print the result as JSON.
    #[command(hide = true)]
    ParseConfig { file: PathBuf },
    /// For the agent: hold the device announced routes hang on (fd 3) while
    /// heartbeats arrive on stdin.
    #[command(hide = true)]
    KeepRoutes {
        #[arg(long)]
        grace_ms: u64,
        #[arg(long)]
        device: String,
    },
    /// On a backend of tunnel VIPs: attach the XDP program that strips their
    /// IPIP / IP6IP6 packets, pinned so it runs on after this command exits.
    Decap {
        /// The interface tunnel packets arrive on.
        #[arg(long)]
        interface: String,
        /// bpffs directory for the program's link and counters.
        #[arg(long, value_name = "DIR")]
        pin_path: Option<PathBuf>,
        #[arg(long, default_value = "auto", value_parser = ["auto", "native", "generic"])]
        xdp_mode: String,
        /// Print the running program's counters instead.
        #[arg(long, conflicts_with = "detach")]
        stats: bool,
        /// Detach the program and remove its pins.
        #[arg(long)]
        detach: bool,
    },
    /// Counters and rates per VIP and backend, and drop reasons.
    Stats {
        #[command(flatten)]
        target: Target,
        /// Print the JSON document instead of tables.
        #[arg(long)]
        json: bool,
        /// Refresh every N seconds.
        #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "1")]
        watch: Option<u64>,
    },
    /// List, add or remove VIPs.
    Vip {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: VipAction,
    },
    /// Add, remove or change backends.
    Backend {
        #[command(flatten)]
        target: Target,
        #[command(subcommand)]
        action: BackendAction,
    },
    /// Re-read the config file and replay the runtime changes on it.
    Reload {
        #[command(flatten)]
        target: Target,
        /// Forget the changes made through the API; apply the file alone.
        #[arg(long)]
        discard_runtime: bool,
    },
    /// For packaging: write the man page or a shell's completions, generated
    /// from this very command line, to stdout.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
        /// The shell, for `completions`.
        #[arg(value_enum, required_if_eq("what", "completions"))]
        shell: Option<clap_complete::Shell>,
        /// For `man`: write alwayson.8 and a page per subcommand into DIR instead.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Generated {
    Man,
    Completions,
}

/// The man pages (section 8: a system administration command) or completions.
fn generate(
    what: Generated,
    shell: Option<clap_complete::Shell>,
    dir: Option<PathBuf>,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    let command = Cli::command();
    match (what, shell) {
        (Generated::Man, _) => match dir {
            Some(dir) => {
                let mut command = command.disable_help_subcommand(true);
                command.build();
                man_pages(command, &dir)
            }
            None => clap_mangen::Man::new(command).section("8").render(&mut out),
        },
        (Generated::Completions, Some(shell)) => {
            let name = command.get_name().to_string();
            clap_complete::generate(shell, &mut command.clone(), name, &mut out);
            Ok(())
        }
        (Generated::Completions, None) => unreachable!("clap requires the shell"),
    }
}

/// A page for the command and for each of its visible subcommands, which
/// its SUBCOMMANDS section names (alwayson-run(8), alwayson-vip-add(8)).
fn man_pages(command: clap::Command, dir: &std::path::Path) -> std::io::Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()).cloned() {
        man_pages(sub, dir)?;
    }
    clap_mangen::Man::new(command).section("8").generate_to(dir).map(drop)
}

#[derive(Subcommand)]
enum VipAction {
    List,
    /// Add a VIP (backends come with `alwayson backend add`).
    Add {
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        address: String,
        #[arg(long)]
        port: u16,
        #[arg(long, default_value = "tcp")]
        protocol: String,
    },
    Remove {
        name: String,
    },
}

#[derive(Subcommand)]
enum BackendAction {
    Add {
        #[arg(long)]
        vip: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        address: String,
        #[arg(long)]
        port: Option<u16>,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long)]
        backup: bool,
    },
    Remove {
        #[arg(long)]
        vip: String,
        name: String,
    },
    /// Change a backend's weight and/or admin state (ready, drain, maint).
    Set {
        #[arg(long)]
        vip: String,
        name: String,
        #[arg(long)]
        weight: Option<u32>,
        #[arg(long, value_parser = ["ready", "drain", "maint"])]
        state: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    if let Command::Generate { what, shell, dir } = cli.command {
        return match generate(what, shell, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alwayson generate: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::KeepRoutes { grace_ms, device } = &cli.command {
        return match lb_userspace::cluster::keeper::run(std::time::Duration::from_millis(*grace_ms), device) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alwayson keep-routes: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::ParseConfig { file } = &cli.command {
        let parsed = agent::Parsed::from(Config::load(file));
        return match serde_json::to_writer(std::io::stdout().lock(), &parsed) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alwayson parse-config: {e}");
                ExitCode::FAILURE
            }
        };
    }
    if let Command::ImportHaproxy { file, mode, interface, vip_address, nat_address } = &cli.command {
        return import_haproxy(file, mode, interface, *vip_address, nat_address);
    }
    if let Command::CheckConfig { file } = &cli.command {
        return match Config::load(file) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                let count = e.problems().len();
                if count > 1 {
                    eprintln!("{}: {count} problems:\n{e}", file.display());
                } else {
                    eprintln!("{}: {e}", file.display());
                }
                ExitCode::FAILURE
            }
        };
    }
    if let Command::Decap { interface, pin_path, xdp_mode, stats, detach } = &cli.command {
        let action = if *stats {
            decap::Action::Stats
        } else if *detach {
            decap::Action::Detach
        } else {
            decap::Action::Attach(decap::xdp_mode(xdp_mode))
        };
        return match decap::run(interface, pin_path.clone(), action) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("alwayson decap: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if matches!(cli.command, Command::Run { .. }) {
        // Before any thread exists, so every thread shares the one arena it sets up.
        agent::settle_allocator();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("alwayson: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let is_run = matches!(cli.command, Command::Run { .. });
    match runtime.block_on(command(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_run => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("alwayson: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn import_haproxy(
    file: &std::path::Path,
    mode: &str,
    interface: &str,
    vip_address: Option<std::net::IpAddr>,
    nat_address: &[std::net::IpAddr],
) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("alwayson import-haproxy: {}: {e}", file.display());
            return ExitCode::FAILURE;
        }
    };
    let mode = match mode {
        "tunnel" => Mode::Tunnel,
        "nat" => Mode::Nat,
        _ => Mode::Dsr,
    };
    let options = import::Options {
        mode,
        interface: interface.to_owned(),
        vip_address,
        nat_address: nat_address.to_vec(),
    };
    let warn = |w: &[import::Warning]| {
        for w in w {
            eprintln!("{}:{}: warning: {}", file.display(), w.line, w.message);
        }
    };
    match import::import_haproxy(&text, &options) {
        Ok(imported) => {
            warn(&imported.warnings);
            print!("{}", imported.toml);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let import::ImportError::Invalid { warnings, .. } = &e {
                warn(warnings);
            }
            eprintln!("alwayson import-haproxy: {}: {e}", file.display());
            ExitCode::FAILURE
        }
    }
}

async fn command(command: Command) -> anyhow::Result<()> {
    let client = |t: &Target| -> anyhow::Result<Client> {
        Ok(Client::new(&cli::socket(t.socket.clone(), &t.config)?))
    };
    match command {
        Command::Run { config, replace, fresh, keep_running_on_exit } => {
            agent::run(RunOptions { config_path: config, replace, fresh, keep_running_on_exit }).await
        }
        Command::CheckConfig { .. }
        | Command::ImportHaproxy { .. }
        | Command::ParseConfig { .. }
        | Command::KeepRoutes { .. }
        | Command::Decap { .. }
        | Command::Generate { .. } => {
            unreachable!("handled before the runtime starts")
        }
        Command::Stats { target, json, watch } => cli::stats(&client(&target)?, json, watch).await,
        Command::Vip { target, action } => {
            let client = client(&target)?;
            match action {
                VipAction::List => cli::vip_list(&client).await,
                VipAction::Add { name, address, port, protocol } => {
                    let mut vip = json!({ "address": address, "port": port, "protocol": protocol });
                    if let Some(n) = name {
                        vip["name"] = json!(n);
                    }
                    cli::vip_add(&client, vip).await
                }
                VipAction::Remove { name } => cli::vip_remove(&client, &name).await,
            }
        }
        Command::Backend { target, action } => {
            let client = client(&target)?;
            match action {
                BackendAction::Add { vip, name, address, port, weight, backup } => {
                    let mut backend = json!({ "address": address, "backup": backup });
                    if let Some(n) = name {
                        backend["name"] = json!(n);
                    }
                    if let Some(p) = port {
                        backend["port"] = json!(p);
                    }
                    if let Some(w) = weight {
                        backend["weight"] = json!(w);
                    }
                    cli::backend_add(&client, &vip, backend).await
                }
                BackendAction::Remove { vip, name } => cli::backend_remove(&client, &vip, &name).await,
                BackendAction::Set { vip, name, weight, state } => {
                    cli::backend_set(&client, &vip, &name, weight, state).await
                }
            }
        }
        Command::Reload { target, discard_runtime } => cli::reload(&client(&target)?, discard_runtime).await,
    }
}
