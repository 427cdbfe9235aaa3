//! Building, running, testing and linting through cargo.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, Context as _, Result};
use serde_json::Value;

use crate::setup::{output, status};

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn target_dir() -> Result<PathBuf> {
    let meta = output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let meta: Value = serde_json::from_str(&meta).context("parsing cargo metadata")?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| anyhow!("cargo metadata has no target_directory"))
}

/// Builds lb-userspace (whose build script builds the eBPF crate) and copies the
/// objects it produced to `<target>/bpf/`.
pub fn ebpf_objects() -> Result<()> {
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--package", "lb-userspace", "--message-format=json-render-diagnostics"]);
    let out = cmd.stderr(Stdio::inherit()).output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({})", out.status);
    }
    let out_dir = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|m| m["reason"] == "build-script-executed")
        .find(|m| m["package_id"].as_str().is_some_and(|id| id.contains("lb-userspace")))
        .and_then(|m| m["out_dir"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo did not report lb-userspace's build script output"))?;
    let dest = target_dir()?.join("bpf");
    std::fs::create_dir_all(&dest)?;
    for name in ["balancer", "decap", "baseline"] {
        let (from, to) = (out_dir.join(name), dest.join(format!("{name}.o")));
        std::fs::copy(&from, &to)
            .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
        let size = std::fs::metadata(&to)?.len();
        println!("{} ({size} bytes)", to.display());
    }
    Ok(())
}

/// Without arguments, the demo; with `--cluster`, the three-node demo;
/// otherwise `alwayson run ARGS`.
pub fn run(args: &[String]) -> Result<()> {
    let demo = match args {
        [] => Some("alwayson-demo"),
        [flag] if flag == "--cluster" => Some("alwayson-demo-cluster"),
        _ => None,
    };
    if let Some(demo) = demo {
        // The demo runs the real agent and test servers; it finds them beside itself.
        status(cargo().args(["build", "--release", "--package", "lb-userspace", "--bin", "alwayson"]))?;
        status(cargo().args(["build", "--release", "--package", "alwayson-tests", "--bins"]))?;
        return status(&mut Command::new(target_dir()?.join("release").join(demo)));
    }
    status(
        cargo()
            .args(["run", "--release", "--package", "lb-userspace", "--bin", "alwayson", "--", "run"])
            .args(args),
    )
}

pub fn test(args: &[String]) -> Result<()> {
    // End-to-end tests run the real binaries (alwayson, the test servers); cargo
    // test builds a package's binaries only for that package's own tests.
    status(cargo().args(["build", "--workspace", "--exclude", "lb-ebpf", "--bins"]))?;
    let mut test = cargo();
    test.args(["test", "--workspace", "--exclude", "lb-ebpf"]).args(args);
    if runs_root_tests() {
        // Root-only tests are `#[ignore = "needs root"]`: run them here, where
        // they can run, or under CI, where being unable to must fail.
        if !args.iter().any(|a| a == "--") {
            test.arg("--");
        }
        test.arg("--include-ignored");
    } else {
        eprintln!(
            "xtask: not root: tests that need root are listed as ignored (run as root, or CI=true to fail)"
        );
    }
    status(&mut test)?;
    // The Debian package, built and checked after the tests (not for a filtered run).
    if args.is_empty() {
        let deb = crate::package::build()?;
        crate::package::verify(&deb)?;
    }
    Ok(())
}

fn runs_root_tests() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root || std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

pub fn lint() -> Result<()> {
    status(Command::new("cargo").args(["+nightly", "fmt", "--all", "--check"]))?;
    status(cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "lb-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The eBPF crate only compiles for the BPF target.
    status(Command::new("cargo").args([
        "+nightly",
        "clippy",
        "--package",
        "lb-ebpf",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ]))
}

pub fn bench() -> Result<()> {
    // End-to-end benchmarks run the release agent and test servers.
    status(cargo().args(["build", "--release", "--package", "lb-userspace", "--bin", "alwayson"]))?;
    status(cargo().args(["build", "--release", "--package", "alwayson-tests", "--bins"]))?;
    let dir = target_dir()?.join("bench");
    status(cargo().args(["bench", "--package", "alwayson-tests"]).env("ALWAYSON_BENCH_DIR", &dir))?;
    println!("\nraw figures and the chart: {}", dir.display());
    Ok(())
}
