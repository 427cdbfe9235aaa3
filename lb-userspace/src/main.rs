//! `alwayson`: the Always On agent.

use std::{io::IsTerminal as _, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use lb_userspace::{
    agent::{self, RunOptions},
    config::Config,
};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "alwayson", version, about = "XDP layer-4 load balancer agent")]
struct Cli {
    /// Log level (error, warn, info, debug, trace); RUST_LOG overrides it.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach the balancer, apply the config, keep it applied.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Swap this build's XDP program in atomically, even if one is running.
        #[arg(long)]
        replace: bool,
        /// Start from empty maps even if a running data plane is pinned (drops the connection table).
        #[arg(long)]
        fresh: bool,
        /// On SIGTERM/SIGINT, leave the data plane attached and pinned for the next agent.
        #[arg(long)]
        keep_running_on_exit: bool,
    },
    /// Validate a config file and print it with every default filled in.
    CheckConfig { file: PathBuf },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cli.log_level));
    let ansi = std::io::stderr().is_terminal();
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).init();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                print!("{}", config.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::FAILURE
            }
        },
        Command::Run { config, replace, fresh, keep_running_on_exit } => {
            let options = RunOptions { config_path: config, replace, fresh, keep_running_on_exit };
            let runtime =
                match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        eprintln!("alwayson: starting the runtime: {e}");
                        return ExitCode::FAILURE;
                    }
                };
            match runtime.block_on(agent::run(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
