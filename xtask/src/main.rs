//! `cargo xtask`: setup, build-ebpf, run, test, lint, bench, package. Every command that
//! builds first makes sure the machine can (see `setup`).

mod build;
mod package;
mod setup;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Always On developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need (idempotent).
    Setup,
    /// Build the XDP objects and copy them to target/bpf/.
    BuildEbpf,
    /// Run the balancer: with no arguments a self-contained demo in network
    /// namespaces; `-- --cluster` the three-node demo (router, BGP, etcd);
    /// `-- ARGS` passes ARGS to `alwayson run`.
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run every test (unit, fixtures, network-namespace end-to-end).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// rustfmt check and clippy (-D warnings) on the userspace crates and the eBPF crate.
    Lint,
    /// Benchmarks: print figures (never pass/fail).
    Bench,
    /// Build the Debian package target/package/alwayson_<version>_<arch>.deb.
    Package {
        /// Then unpack it and check it (what `cargo xtask test` does).
        #[arg(long)]
        check: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::all(),
        Command::BuildEbpf => setup::build_tools().and_then(|()| build::ebpf_objects()),
        Command::Run { args } => setup::all().and_then(|()| build::run(&args)),
        Command::Test { args } => setup::all().and_then(|()| build::test(&args)),
        Command::Lint => setup::build_tools().and_then(|()| build::lint()),
        Command::Bench => setup::all().and_then(|()| build::bench()),
        Command::Package { check } => setup::build_tools().and_then(|()| {
            let deb = package::build()?;
            if check {
                package::verify(&deb)?;
            }
            Ok(())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}
