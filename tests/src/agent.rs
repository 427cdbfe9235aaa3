//! The real `alwayson` binary on a test bed: its config written from a short
//! description, started in the LB namespace, reloaded, killed and restarted.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{anyhow, ensure, Context as _, Result};
use lb_common::{types::words_addr, Backend};
use lb_userspace::dataplane::PinnedStats;

use crate::{
    bed::TestBed,
    process::{bin_path, Process},
    wait::try_wait_until,
};

const STARTUP: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);
/// The agent's log line once a config (first or reloaded) is in the maps.
pub const APPLIED: &str = "config applied";
pub const RELOADED: &str = "reloaded config applied";
pub const REFUSED: &str = "refused";
/// The agent's read-only web listener inside the LB namespace.
pub const WEB_LISTEN: &str = "127.0.0.1:9180";

/// A VIP of the config: backends are bed backend indices, addressed in the VIP's family.
#[derive(Clone, Debug)]
pub struct VipConf {
    pub address: IpAddr,
    pub port: u16,
    pub protocol: &'static str,
    pub backends: Vec<BackendConf>,
    /// More `key = value` lines for the VIP's table (see [`VipConf::keys`]).
    pub keys: String,
}

#[derive(Clone, Copy, Debug)]
pub struct BackendConf {
    pub index: usize,
    pub weight: u32,
    pub backup: bool,
}

impl VipConf {
    pub fn new(address: &str, port: u16, protocol: &'static str) -> Self {
        Self {
            address: address.parse().expect("VIP address"),
            port,
            protocol,
            backends: Vec::new(),
            keys: String::new(),
        }
    }

    /// Adds `key = value` lines (TOML, one or more) to the VIP's table: health
    /// checks, `allbackups`, `slowstart`, `on_all_down`…
    pub fn keys(mut self, toml: &str) -> Self {
        self.keys.push_str(toml.trim_end());
        self.keys.push('\n');
        self
    }

    /// Backends `indices`, weight 1 each.
    pub fn backends(mut self, indices: impl IntoIterator<Item = usize>) -> Self {
        self.backends.extend(indices.into_iter().map(|index| BackendConf {
            index,
            weight: 1,
            backup: false,
        }));
        self
    }

    pub fn backend(mut self, index: usize, weight: u32, backup: bool) -> Self {
        self.backends.push(BackendConf { index, weight, backup });
        self
    }
}

/// More `key = value` lines for the config's fixed tables (TOML, one or more each).
#[derive(Clone, Copy, Debug, Default)]
pub struct Tables<'a> {
    pub global: &'a str,
    pub api: &'a str,
}

/// A config for `bed`: the LB's eth0, native XDP, pins in the bed's pin dir.
pub fn config_toml(bed: &TestBed, vips: &[VipConf]) -> String {
    config_toml_with(bed, vips, Tables::default())
}

/// [`config_toml`] with `extra` keys in `[global]` and `[api]`.
pub fn config_toml_with(bed: &TestBed, vips: &[VipConf], extra: Tables) -> String {
    let lines = |keys: &str| if keys.is_empty() { String::new() } else { format!("{}\n", keys.trim_end()) };
    let mut out = String::new();
    let pin = bed.pin_dir().display();
    let tmp = bed.temp_dir().display();
    let _ = writeln!(
        out,
        "[global]\ninterface = \"eth0\"\nxdp_mode = \"native\"\npin_path = \"{pin}\"\n\
         lock_file = \"{tmp}/eth0.lock\"\n{}",
        lines(extra.global)
    );
    let _ = writeln!(
        out,
        "[api]\nsocket = \"{tmp}/api.sock\"\nruntime_file = \"{tmp}/runtime.json\"\n{}",
        lines(extra.api)
    );
    let _ = writeln!(out, "[web]\nlisten = \"{WEB_LISTEN}\"\n");
    for vip in vips {
        let _ = writeln!(
            out,
            "[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{}\"\n{}",
            vip.address, vip.port, vip.protocol, vip.keys
        );
        for b in &vip.backends {
            let addr = if vip.address.is_ipv6() { bed.backend_v6(b.index) } else { bed.backend_v4(b.index) };
            let _ = writeln!(
                out,
                "  [[vip.backend]]\n  name = \"{}\"\n  address = \"{addr}\"\n  weight = {}\n  backup = {}\n",
                bed.backend_name(b.index),
                b.weight,
                b.backup
            );
        }
    }
    out
}

/// `alwayson run` in the bed's LB namespace.
pub struct Agent<'b> {
    bed: &'b TestBed,
    process: Process,
    config: PathBuf,
    args: Vec<String>,
    /// A command the agent runs under (`prlimit …`), empty for none.
    wrapper: Vec<String>,
}

impl<'b> Agent<'b> {
    /// Writes the config and starts the agent; returns once the config is applied.
    pub fn start(bed: &'b TestBed, config: &str, args: &[&str]) -> Result<Self> {
        Self::start_under(bed, &[], config, args)
    }

    /// [`Agent::start`], the agent run by `wrapper` (e.g. `prlimit --nofile=1024:1024 --`).
    pub fn start_under(bed: &'b TestBed, wrapper: &[&str], config: &str, args: &[&str]) -> Result<Self> {
        let path = write_config(bed, config)?;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let wrapper: Vec<String> = wrapper.iter().map(|a| a.to_string()).collect();
        let process = spawn(bed, &wrapper, &path, &args)?;
        let mut agent = Self { bed, process, config: path, args, wrapper };
        agent.wait_for(APPLIED, 1, STARTUP)?;
        Ok(agent)
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// How many lines of this run's log hold `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Waits until `needle` has appeared `n` times in this run's log.
    pub fn wait_for(&mut self, needle: &str, n: usize, timeout: Duration) -> Result<()> {
        let what = format!("alwayson to log {needle:?}");
        let logged = try_wait_until(&what, timeout, POLL, || {
            if self.count(needle) >= n {
                return Ok(Some(()));
            }
            ensure!(self.process.running(), "alwayson exited before logging {needle:?}");
            Ok(None)
        });
        logged.map_err(|e| anyhow!("{e:#}; log:\n{}", self.log()))
    }

    /// Rewrites the config, sends SIGHUP and waits for the agent to say it applied it.
    pub fn reload(&mut self, config: &str) -> Result<()> {
        self.reload_expecting(config, RELOADED)
    }

    /// Like `reload`, but waits for the agent to log `needle` (e.g. `REFUSED`).
    pub fn reload_expecting(&mut self, config: &str, needle: &str) -> Result<()> {
        let before = self.count(needle);
        std::fs::write(&self.config, config).with_context(|| format!("writing {}", self.config.display()))?;
        self.process.signal(libc::SIGHUP)?;
        self.wait_for(needle, before + 1, Duration::from_secs(10))
    }

    /// SIGKILL: the agent gets no chance to clean up (the data plane stays pinned).
    pub fn kill(&mut self) -> Result<()> {
        self.process.signal(libc::SIGKILL)?;
        let died = self.process.wait(Duration::from_secs(5));
        ensure!(died.is_some(), "alwayson did not die on SIGKILL; log:\n{}", self.log());
        Ok(())
    }

    /// Starts the agent again with the same config and `args`.
    pub fn restart_with(&mut self, args: &[&str]) -> Result<()> {
        self.args = args.iter().map(|a| a.to_string()).collect();
        self.restart()
    }

    /// Starts the agent again with the same config and arguments.
    pub fn restart(&mut self) -> Result<()> {
        self.process = spawn(self.bed, &self.wrapper, &self.config, &self.args)?;
        self.wait_for(APPLIED, 1, STARTUP)
    }

    /// SIGTERM; fails, with the agent's log, unless it exits successfully.
    pub fn stop(&mut self) -> Result<()> {
        let status = self.stop_status()?;
        ensure!(status.success(), "alwayson exited with {status} on SIGTERM; log:\n{}", self.log());
        Ok(())
    }

    /// SIGTERM and the exit status (fails, with the log, if it does not exit).
    pub fn stop_status(&mut self) -> Result<ExitStatus> {
        self.stop_by(libc::SIGTERM)
    }

    /// `signal` (SIGTERM, SIGINT, SIGUSR2) and the exit status.
    pub fn stop_by(&mut self, signal: i32) -> Result<ExitStatus> {
        self.process.signal(signal)?;
        let status = self.process.wait(Duration::from_secs(10));
        status.ok_or_else(|| {
            anyhow!("alwayson did not stop on signal {signal} within 10 s; log:\n{}", self.log())
        })
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` to the agent and returns at once.
    pub fn signal(&mut self, signal: i32) -> Result<()> {
        self.process.signal(signal)
    }

    /// The config file the agent reads on start and on SIGHUP.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The control API's unix socket.
    pub fn api_socket(&self) -> PathBuf {
        self.bed.temp_dir().join("api.sock")
    }

    /// The pinned maps, read directly.
    pub fn stats(&self) -> Result<PinnedStats> {
        Ok(PinnedStats::open(self.bed.pin_dir())?)
    }

    /// `alwayson ARGS --socket <this agent's API socket>`, run to its end.
    pub fn cli(&self, args: &[&str]) -> Result<Cli> {
        let socket = self.api_socket().display().to_string();
        let mut all = args.to_vec();
        all.extend(["--socket", &socket]);
        cli(&all)
    }
}

/// What an `alwayson` command line did.
#[derive(Debug)]
pub struct Cli {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// `alwayson ARGS` in the caller's namespace, run to its end.
pub fn cli(args: &[&str]) -> Result<Cli> {
    let out = Command::new(bin_path("alwayson")?).args(args).output().context("running alwayson")?;
    Ok(Cli {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// The slot and contents of the backend at `addr` in the kernel's backend
/// table, if it has one (pass one [`PinnedStats`] to poll without reopening).
pub fn find_backend(stats: &PinnedStats, addr: IpAddr) -> Result<Option<(u32, Backend)>> {
    Ok(stats.backends()?.into_iter().find(|(_, b)| words_addr(b.addr, b.family) == addr))
}

fn write_config(bed: &TestBed, config: &str) -> Result<PathBuf> {
    let path = bed.temp_dir().join("alwayson.toml");
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn spawn(bed: &TestBed, wrapper: &[String], config: &std::path::Path, args: &[String]) -> Result<Process> {
    let mut all = wrapper.to_vec();
    all.push(bin_path("alwayson")?.display().to_string());
    all.extend(["run".to_string(), "--config".into(), config.display().to_string()]);
    all.extend(args.iter().cloned());
    bed.spawn(bed.lb_ns(), &all[0], &all[1..], "alwayson")
}

/// `alwayson run` with `config` in the bed's LB namespace, started and left
/// running (for tests of what happens at the very start, or of a start that
/// must fail). Its log goes to `<tag>.log` in the bed's directory.
pub fn spawn_agent(bed: &TestBed, config: &str, tag: &str) -> Result<Process> {
    let path = bed.temp_dir().join(format!("{tag}.toml"));
    std::fs::write(&path, config).with_context(|| format!("writing {}", path.display()))?;
    let args = ["run".to_string(), "--config".into(), path.display().to_string()];
    bed.spawn(bed.lb_ns(), bin_path("alwayson")?, &args, tag)
}
