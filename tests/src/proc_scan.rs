//! Finding, killing and reaping processes by what /proc says about them: for
//! programs that leave processes no `Child` owns (Chromium double-forks its
//! crash handler). Everything here acts on pids it found, never on names
//! across the system.

use std::time::Duration;

use crate::wait::wait_until;

const POLL: Duration = Duration::from_millis(20);

/// Pids of running processes (not zombies, not this one) with an argument
/// that satisfies `matches`.
pub fn pids_with_arg(matches: impl Fn(&str) -> bool) -> Vec<u32> {
    let me = std::process::id();
    proc_pids()
        .into_iter()
        .filter(|&pid| pid != me && alive(pid))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmd| cmd.split(|&b| b == 0).any(|arg| matches(&String::from_utf8_lossy(arg))))
        })
        .collect()
}

fn proc_pids() -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect()
}

struct Stat {
    comm: String,
    state: char,
    ppid: u32,
}

/// From /proc/PID/stat (the command name may hold spaces and parentheses).
fn stat(pid: u32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let mut fields = text[close + 1..].split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(Stat { comm: text[open + 1..close].to_string(), state, ppid })
}

/// Whether `pid` exists and is neither a zombie nor dead.
pub fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|s| s.state != 'Z' && s.state != 'X')
}

/// Children of this process (running or zombies) whose command name starts
/// with `comm`: with `PR_SET_CHILD_SUBREAPER` set, also the orphans it adopted.
pub fn children_named(comm: &str) -> Vec<u32> {
    let me = std::process::id();
    proc_pids()
        .into_iter()
        .filter(|&pid| stat(pid).is_some_and(|s| s.ppid == me && s.comm.starts_with(comm)))
        .collect()
}

/// Kills and reaps [`children_named`]`(comm)` until none is left (at most
/// `timeout`): an adopted process may arrive a moment after the one that
/// left it.
pub fn reap_children_named(comm: &str, timeout: Duration) {
    let mut left = Vec::new();
    let reaped = wait_until(&format!("children named {comm}* to be reaped"), timeout, POLL, || {
        left = children_named(comm);
        for &pid in &left {
            // SAFETY: kill(2) and waitpid(2) on a child of ours (adopted, so
            // no std::process::Child owns it), by its pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGKILL);
                libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
            }
        }
        left.is_empty().then_some(())
    });
    if let Err(e) = reaped {
        eprintln!("cleanup: {e:#}: {left:?} left");
    }
}

/// Every process below `root` in the process tree.
pub fn descendants(root: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> =
        proc_pids().into_iter().filter_map(|pid| Some((pid, stat(pid)?.ppid))).collect();
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        found.extend(parents.iter().filter(|(_, pp)| *pp == parent).map(|(pid, _)| *pid));
        i += 1;
    }
    found.remove(0);
    found
}

/// SIGKILLs `pids` (by pid, nothing else) and waits until they are gone.
pub fn kill_and_wait(pids: &[u32], timeout: Duration) {
    for &pid in pids {
        // SAFETY: kill(2) by pid, on processes the caller found and owns.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    let gone = wait_until("killed processes to go", timeout, POLL, || {
        (!pids.iter().any(|&p| alive(p))).then_some(())
    });
    if gone.is_err() {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        eprintln!("cleanup: processes {left:?} survived SIGKILL for {timeout:?}");
    }
}
