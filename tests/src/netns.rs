//! Network namespaces that clean up after themselves.

use std::{
    ffi::OsStr,
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, Result};

use crate::run;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A named network namespace, deleted on drop (also when the test panics).
/// Names carry the process id and a counter, so concurrent tests never collide.
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Result<Self> {
        let name = format!("ao{}-{}-{tag}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        run("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS…`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    pub fn sysctl(&self, key: &str, value: &str) -> Result<()> {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]).map(drop)
    }

    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{ifname}/ifindex")])?;
        out.trim().parse().with_context(|| format!("ifindex of {ifname} in {}", self.name))
    }

    /// Runs `f` on a thread that has entered the namespace, so sockets it opens
    /// and `BPF_PROG_TEST_RUN` calls it makes see this namespace's devices.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in(&self.name, f)
    }

    /// `nsenter --net=/run/netns/NAME -- PROGRAM`, arguments and stdio still
    /// to add: only the network namespace changes. (`ip netns exec` would also
    /// remount /sys, hiding the host's bpffs at /sys/fs/bpf, so an agent's pins
    /// would vanish with it.) nsenter execs the program, so the child's pid is
    /// the program's and killing the child kills the program.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/run/netns/{}", self.name)).arg("--").arg(program);
        command
    }
}

/// [`Netns::run`] by the namespace's name, for callers that keep only the
/// name (a `Clone + 'static` HTTP client).
pub fn run_in<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let thread = scope.spawn(move || {
            enter(name);
            f()
        });
        match thread.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// Moves the calling thread into namespace `name` (for threads of their own;
/// [`Netns::run`] and [`run_in`] are the scoped way).
pub fn enter(name: &str) {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    // SAFETY: setns affects only the calling thread.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        panic!("setns({path}): {}", std::io::Error::last_os_error());
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}
