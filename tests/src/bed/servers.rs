//! Processes on the bed: each backend's test servers (started, stopped, their
//! HTTP status set), and any program run in one of the bed's namespaces with
//! its log in the bed's temp dir.

use std::{ffi::OsStr, path::PathBuf, sync::PoisonError, time::Duration};

use anyhow::{bail, ensure, Result};

use super::{TestBed, HTTP_PORT, TCP_PORTS, UDP_PORT};
use crate::{netns::Netns, process::Process};

/// How long a test server may take to say it is ready.
pub(super) const SERVER_READY: Duration = Duration::from_secs(10);
const SERVER_GRACE: Duration = Duration::from_secs(3);

impl TestBed {
    /// Starts `program args…` in `ns`, output to `<temp_dir>/<tag>.log`.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        ns: &Netns,
        program: impl AsRef<OsStr>,
        args: &[S],
        tag: &str,
    ) -> Result<Process> {
        Process::spawn(ns, program, args, &self.temp_dir.join(format!("{tag}.log")))
    }

    /// `alwayson-testsrv --name NAME ARGS…` in `ns`, once it is ready.
    pub fn spawn_testsrv(&self, ns: &Netns, name: &str, args: &[&str]) -> Result<Process> {
        let mut all = vec!["--name", name];
        all.extend_from_slice(args);
        let mut process = self.spawn(ns, &self.testsrv, &all, name)?;
        process.wait_for_line("ready", SERVER_READY)?;
        Ok(process)
    }

    fn status_file(&self, i: usize) -> PathBuf {
        self.temp_dir.join(format!("backend{i}.status"))
    }

    pub(super) fn spawn_servers(&self, i: usize) -> Result<Process> {
        ensure!(i < self.backends.len(), "no backend {i}");
        let mut args: Vec<String> = vec!["--name".into(), self.backend_name(i)];
        let mut both = |flag: &str, port: u16| {
            for addr in [format!("0.0.0.0:{port}"), format!("[::]:{port}")] {
                args.extend([flag.to_string(), addr]);
            }
        };
        for port in TCP_PORTS {
            both("--tcp", port);
        }
        both("--udp", UDP_PORT);
        both("--http", HTTP_PORT);
        args.extend(["--status-file".into(), self.status_file(i).display().to_string()]);
        self.spawn(&self.backends[i], &self.testsrv, &args, &self.backend_name(i))
    }

    /// Starts backend `i`'s servers (TCP echo on 80 and 8080, UDP on 53, HTTP
    /// on 8081, IPv4 and IPv6) and waits until they listen. Already running: nothing to do.
    pub fn start_servers(&self, i: usize) -> Result<()> {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(process) = servers.get_mut(i).and_then(Option::as_mut) {
            if process.running() {
                return Ok(());
            }
        }
        let mut process = self.spawn_servers(i)?;
        process.wait_for_line("ready", SERVER_READY)?;
        servers[i] = Some(process);
        Ok(())
    }

    /// Stops backend `i`'s servers (SIGTERM, SIGKILL after a grace period):
    /// connects to them are refused afterwards.
    pub fn stop_servers(&self, i: usize) -> Result<()> {
        ensure!(i < self.backends.len(), "no backend {i}");
        let process = self.servers.lock().unwrap_or_else(PoisonError::into_inner)[i].take();
        if let Some(mut process) = process {
            if process.stop(SERVER_GRACE).is_none() {
                bail!("backend{i}'s servers did not exit; log:\n{}", process.log());
            }
        }
        Ok(())
    }

    pub fn servers_running(&self, i: usize) -> bool {
        let mut servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        servers.get_mut(i).and_then(Option::as_mut).is_some_and(Process::running)
    }

    /// What backend `i`'s servers have logged (this run).
    pub fn server_log(&self, i: usize) -> String {
        let servers = self.servers.lock().unwrap_or_else(PoisonError::into_inner);
        servers.get(i).and_then(Option::as_ref).map(Process::log).unwrap_or_default()
    }

    /// The status backend `i`'s HTTP server answers: `Some(code)`, or `None` for 200.
    pub fn set_http_status(&self, i: usize, status: Option<u16>) -> Result<()> {
        ensure!(i < self.backends.len(), "no backend {i}");
        let path = self.status_file(i);
        match status {
            Some(code) => {
                // Written aside and renamed: the server never reads half a file.
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, format!("{code}\n"))?;
                std::fs::rename(&tmp, &path)?;
            }
            None => match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
                _ => {}
            },
        }
        Ok(())
    }
}
