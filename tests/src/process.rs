//! Children started inside a network namespace, their output in a log file,
//! killed on drop.

use std::{
    ffi::OsStr,
    fs::{File, OpenOptions},
    io::{Read as _, Seek as _, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{netns::Netns, wait::try_wait_until};

/// How often `wait_for_line` and `wait` look.
const POLL: Duration = Duration::from_millis(10);

/// A program run in a namespace by [`Netns::command`] (only the network
/// namespace changes; the child's pid is the program's). Stdout and stderr go
/// to one log file (appended to: a restarted server keeps its history; `log()`
/// shows only this run's part). Killed with SIGKILL and reaped on drop.
pub struct Process {
    child: Child,
    label: String,
    log_path: PathBuf,
    /// Where this run's output starts in the log file.
    log_start: u64,
}

impl Process {
    pub fn spawn<S: AsRef<OsStr>>(
        ns: &Netns,
        program: impl AsRef<OsStr>,
        args: &[S],
        log: &Path,
    ) -> Result<Self> {
        let program = program.as_ref();
        let label = format!("{} in {}", Path::new(program).display(), ns.name());
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening log {}", log.display()))?;
        let log_start = out.metadata()?.len();
        let err = out.try_clone()?;
        let child = ns
            .command(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {label}"))?;
        Ok(Self { child, label, log_path: log.to_path_buf(), log_start })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What this run has written so far (stdout and stderr interleaved).
    pub fn log(&self) -> String {
        let mut text = Vec::new();
        if let Ok(mut file) = File::open(&self.log_path) {
            if file.seek(SeekFrom::Start(self.log_start)).is_ok() {
                let _ = file.read_to_end(&mut text);
            }
        }
        String::from_utf8_lossy(&text).into_owned()
    }

    /// Waits until the log holds a line containing `needle`. Fails, with the
    /// log, on timeout or when the process exits first.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let what = format!("{} to print {needle:?}", self.label);
        let printed = try_wait_until(&what, timeout, POLL, || {
            if self.log().lines().any(|line| line.contains(needle)) {
                return Ok(Some(()));
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before printing {needle:?}", self.label);
            }
            Ok(None)
        });
        printed.map_err(|e| anyhow!("{e:#}; log:\n{}", self.log()))
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`, `libc::SIGHUP`, `libc::SIGKILL`).
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            bail!("{} has already exited", self.label);
        }
        // SAFETY: kill(2) on our own, not yet reaped, child.
        if unsafe { libc::kill(self.child.id() as libc::pid_t, sig) } != 0 {
            bail!("kill({}, {sig}) on {}: {}", self.child.id(), self.label, std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The exit status, once the process has exited within `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let what = format!("{} to exit", self.label);
        try_wait_until(&what, timeout, POLL, || Ok(self.child.try_wait()?)).ok()
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`.
    pub fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.child.try_wait().ok().flatten() {
            return Some(status);
        }
        let _ = self.signal(libc::SIGTERM);
        self.wait(grace).or_else(|| {
            let _ = self.child.kill();
            self.child.wait().ok()
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Where a binary of this workspace is: `$ALWAYSON_BIN_DIR`, else beside the
/// running executable or one directory up (integration tests run from
/// `target/<profile>/deps/`, binaries live in `target/<profile>/`).
pub fn bin_path(name: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    if let Some(dir) = std::env::var_os("ALWAYSON_BIN_DIR") {
        let path = Path::new(&dir).join(name);
        if path.is_file() {
            return Ok(path);
        }
        tried.push(path);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    for dir in exe.ancestors().skip(1).take(2) {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
        tried.push(path);
    }
    let package = match name {
        "alwayson" => "lb-userspace",
        n if n.starts_with("alwayson-test") => "alwayson-tests",
        _ => "<its package>",
    };
    bail!(
        "binary {name} not found (tried {}); build it first: cargo build -p {package}, \
         or point ALWAYSON_BIN_DIR at its directory",
        tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )
}
