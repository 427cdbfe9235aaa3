//! Installs what the build and the tests need, step by step, each step first
//! checking whether there is anything to do (a second run takes a moment).
//! A step that fails says which step it was and what to do about it.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{anyhow, bail, Context as _, Result};

/// Debian packages the tests and benchmarks use, each with a command that proves it is there.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip"),
    ("procps", "sysctl"),
    ("ethtool", "ethtool"),
    ("mariadb-server", "mariadbd"),
    ("mariadb-client", "mariadb-admin"),
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
    // End-to-end benchmark: load generator, the HAProxy anchor, efficient HTTP backends.
    ("wrk", "wrk"),
    ("haproxy", "haproxy"),
    ("nginx", "nginx"),
    // Several-node tests: shared health through etcd, route announcements through BIRD.
    ("etcd-server", "etcd"),
    ("bird2", "bird"),
    // `cargo xtask package` and its checks.
    ("dpkg", "dpkg-deb"),
    ("binutils", "objcopy"),
    ("systemd", "systemd-analyze"),
];
const BPF_LINKER_VERSION: &str = "0.13";

/// Everything: build tools, then what running and testing need.
pub fn all() -> Result<()> {
    build_tools()?;
    if !is_root() {
        if ci() {
            bail!("setup: CI=true and not root: bpffs and the network-namespace tests need root");
        }
        eprintln!(
            "setup: not root: skipping bpffs and Debian packages (tests that need root will say they skip)"
        );
        return Ok(());
    }
    step("bpffs at /sys/fs/bpf", "mount it: mount -t bpf bpf /sys/fs/bpf", bpffs)?;
    let names: Vec<&str> = PACKAGES.iter().map(|(p, _)| *p).collect();
    step("Debian packages", &format!("install them: apt-get install {}", names.join(" ")), packages)
}

/// What building the eBPF program needs: nightly with rust-src, and bpf-linker.
pub fn build_tools() -> Result<()> {
    step(
        "nightly toolchain with rust-src, rustfmt, clippy",
        "rustup toolchain install nightly --component rust-src,rustfmt,clippy",
        nightly,
    )?;
    step(
        "bpf-linker",
        "it is built from crates.io against the nightly's own libLLVM (see bpf_linker() in xtask/src/setup.rs): rerun with network access",
        bpf_linker,
    )
}

fn step(name: &str, hint: &str, f: impl FnOnce() -> Result<bool>) -> Result<()> {
    match f() {
        Ok(true) => {
            eprintln!("setup: {name}: installed");
            Ok(())
        }
        Ok(false) => Ok(()),
        Err(e) => Err(e.context(format!("setup step '{name}' failed; to do: {hint}"))),
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs a command, failing with its stderr; returns stdout.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs a command with its output shown, failing unless it succeeds.
pub fn status(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// Returns whether it installed anything.
fn nightly() -> Result<bool> {
    let installed =
        output(Command::new("rustup").args(["component", "list", "--installed", "--toolchain", "nightly"]));
    let want = ["rust-src", "rustfmt", "clippy"];
    let missing: Vec<&str> = match &installed {
        Ok(list) => want.into_iter().filter(|c| !list.lines().any(|l| l.starts_with(c))).collect(),
        Err(_) => {
            status(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
            want.to_vec()
        }
    };
    if missing.is_empty() {
        return Ok(false);
    }
    status(Command::new("rustup").args(["component", "add", "--toolchain", "nightly"]).args(&missing))?;
    Ok(true)
}

fn bpf_linker() -> Result<bool> {
    let works = output(Command::new("bpf-linker").arg("--version"))
        .is_ok_and(|v| v.trim().starts_with(&format!("bpf-linker {BPF_LINKER_VERSION}")));
    if works {
        return Ok(false);
    }
    // No prebuilt bpf-linker works here: build it against the nightly's own libLLVM,
    // which rustup ships as lib/libLLVM.so.<major>.<minor>-rust-<version>.
    let sysroot =
        PathBuf::from(output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?.trim());
    let lib = sysroot.join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| anyhow!("no libLLVM.so.* in {}", lib.display()))?;
    let major = llvm
        .trim_start_matches("libLLVM.so.")
        .split('.')
        .next()
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()))
        .ok_or_else(|| anyhow!("cannot read the LLVM version from {llvm}"))?;

    // bpf-linker's build wants LLVM_PREFIX/lib/libLLVM.so; the binary keeps this
    // directory as its runpath, so it lives somewhere stable.
    let prefix = llvm_prefix()?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib).with_context(|| format!("creating {}", prefix_lib.display()))?;
    for name in ["libLLVM.so", llvm.as_str()] {
        let link = prefix_lib.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(lib.join(&llvm), &link)
            .with_context(|| format!("linking {}", link.display()))?;
    }
    eprintln!("setup: building bpf-linker {BPF_LINKER_VERSION} against LLVM {major} (about a minute)");
    status(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--version", &format!("~{BPF_LINKER_VERSION}")])
            .args(["--no-default-features", "--features", &format!("llvm-{major}")])
            .env("LLVM_PREFIX", &prefix),
    )?;
    output(Command::new("bpf-linker").arg("--version"))
        .context("bpf-linker was built but does not run (is ~/.cargo/bin on PATH?)")?;
    Ok(true)
}

fn llvm_prefix() -> Result<PathBuf> {
    let home = std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set"))?;
    Ok(Path::new(&home).join(".cache/alwayson/llvm"))
}

fn bpffs() -> Result<bool> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts.lines().any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf ")) {
        return Ok(false);
    }
    status(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    Ok(true)
}

fn packages() -> Result<bool> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(_, cmd)| output(Command::new("sh").args(["-c", &format!("command -v {cmd}")])).is_err())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(false);
    }
    eprintln!("setup: installing {}", missing.join(" "));
    status(Command::new("apt-get").args(["update", "-qq"]))?;
    status(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )?;
    Ok(true)
}
