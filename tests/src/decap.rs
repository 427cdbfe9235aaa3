//! `alwayson decap` on every backend of a [`TestBed`], for tunnel VIPs served
//! by the bed's own backends; detached, its pins removed, when dropped.

use std::{path::PathBuf, process::Output};

use anyhow::{bail, Context as _, Result};
use lb_common::DecapCounter;

use crate::{bed::TestBed, process::bin_path};

pub struct DecapAll<'b> {
    bed: &'b TestBed,
}

impl<'b> DecapAll<'b> {
    /// Attaches the decap program to `eth0` of every backend.
    pub fn attach(bed: &'b TestBed) -> Result<Self> {
        let decap = Self { bed };
        for i in 0..bed.backends() {
            let out = decap.run(i, &[])?;
            if !out.status.success() {
                bail!(
                    "alwayson decap on backend {i}: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(decap)
    }

    fn dir(&self, i: usize) -> PathBuf {
        PathBuf::from(format!("{}-decap-b{i}", self.bed.pin_dir().display()))
    }

    fn run(&self, i: usize, args: &[&str]) -> Result<Output> {
        self.bed
            .backend_ns(i)
            .command(bin_path("alwayson")?)
            .args(["decap", "--interface", "eth0", "--pin-path"])
            .arg(self.dir(i))
            .args(args)
            .output()
            .context("running alwayson decap")
    }

    /// Packets backend `i` decapsulated so far.
    pub fn decapsulated(&self, i: usize) -> Result<u64> {
        let out = self.run(i, &["--stats"])?;
        let text = String::from_utf8_lossy(&out.stdout);
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
            if let Err(e) = self.run(i, &["--detach"]) {
                eprintln!("cleanup: detaching decap on backend {i}: {e:#}");
            }
            let dir = self.dir(i);
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("cleanup: removing {}: {e}", dir.display());
                }
            }
        }
    }
}
