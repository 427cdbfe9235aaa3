//! `alwayson decap` on every backend of a [`TestBed`], for tunnel VIPs served
//! by the bed's own backends; detached, its pins removed, when dropped.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use lb_common::DecapCounter;

use crate::{agent::Cli, bed::TestBed, process::bin_path};

/// Where backend `i`'s decap program of `bed` is pinned.
pub fn dir(bed: &TestBed, i: usize) -> PathBuf {
    PathBuf::from(format!("{}-decap-b{i}", bed.pin_dir().display()))
}

/// `alwayson decap --interface eth0 --pin-path <dir(i)> ARGS` in backend
/// `i`'s namespace, run to its end.
pub fn run(bed: &TestBed, i: usize, args: &[&str]) -> Result<Cli> {
    let out = bed
        .backend_ns(i)
        .command(bin_path("alwayson")?)
        .args(["decap", "--interface", "eth0", "--pin-path"])
        .arg(dir(bed, i))
        .args(args)
        .output()
        .context("running alwayson decap")?;
    Ok(Cli {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

pub struct DecapAll<'b> {
    bed: &'b TestBed,
}

impl<'b> DecapAll<'b> {
    /// Attaches the decap program to `eth0` of every backend.
    pub fn attach(bed: &'b TestBed) -> Result<Self> {
        let decap = Self { bed };
        for i in 0..bed.backends() {
            let out = run(bed, i, &[])?;
            if !out.status.success() {
                bail!("alwayson decap on backend {i}: {}{}", out.stdout, out.stderr);
            }
        }
        Ok(decap)
    }

    /// Packets backend `i` decapsulated so far.
    pub fn decapsulated(&self, i: usize) -> Result<u64> {
        let out = run(self.bed, i, &["--stats"])?;
        let text = out.stdout;
        let name = DecapCounter::Decapsulated.name();
        text.lines()
            .find_map(|l| {
                l.split_once(' ').filter(|(n, _)| *n == name).and_then(|(_, v)| v.trim().parse().ok())
            })
            .with_context(|| format!("no {name} in `decap --stats` of backend {i}: {text}"))
    }
}

impl Drop for DecapAll<'_> {
    fn drop(&mut self) {
        for i in 0..self.bed.backends() {
            if let Err(e) = run(self.bed, i, &["--detach"]) {
                eprintln!("cleanup: detaching decap on backend {i}: {e:#}");
            }
            let dir = dir(self.bed, i);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("cleanup: removing {}: {e}", dir.display());
                }
            }
        }
    }
}
