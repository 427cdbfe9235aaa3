//! One health check of one backend: TCP connect, an HTTP request, or a command.
//! A failure is the reason an operator reads in the log ("connection refused",
//! "status 503", "exit 2"), or, when this host could not run the check at all
//! (no file descriptors, buffers or local ports left), [`Failure::NotRun`]:
//! that says nothing about the backend, so whoever exhausts the agent's
//! resources cannot make its backends go DOWN.

use std::{io, net::SocketAddr, process::Stdio};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use super::ExecUser;
use crate::config::{show_duration, CheckKind, HealthCheck};

/// The search path of exec check commands.
const EXEC_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The most of an HTTP response read to find its status line.
const HTTP_HEAD_LIMIT: usize = 1024;

/// Why a check did not pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The backend failed it; the reason, for the log.
    Backend(String),
    /// This host could not run it.
    NotRun(NotRun),
}

/// A check that could not run for a local reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRun {
    /// The errno's name in lower case (`emfile`): a metric label.
    pub cause: &'static str,
    /// The error as the system put it, with what was being done.
    pub detail: String,
}

impl std::fmt::Display for NotRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl From<String> for Failure {
    fn from(reason: String) -> Self {
        Self::Backend(reason)
    }
}

/// What the check was doing when it failed; a spawn failure is never the
/// backend's doing, and may also be the process limit (EAGAIN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Network,
    Spawn,
}

/// The errno name of an error that comes from this host's limits rather than
/// from the backend, if it is one: out of file descriptors (EMFILE, ENFILE),
/// buffers or memory (ENOBUFS, ENOMEM), local ports (EADDRNOTAVAIL), or, for
/// a spawn, processes (EAGAIN).
pub fn local_cause(e: &io::Error, step: Step) -> Option<&'static str> {
    match (e.raw_os_error()?, step) {
        (libc::EMFILE, _) => Some("emfile"),
        (libc::ENFILE, _) => Some("enfile"),
        (libc::ENOBUFS, _) => Some("enobufs"),
        (libc::ENOMEM, _) => Some("enomem"),
        (libc::EADDRNOTAVAIL, Step::Network) => Some("eaddrnotavail"),
        (libc::EAGAIN, Step::Spawn) => Some("eagain"),
        _ => None,
    }
}

/// `e`, met while `doing` (`"sending the request"`; empty: no prefix), as a failure.
fn io_failure(e: io::Error, step: Step, doing: &str) -> Failure {
    let detail = if doing.is_empty() { e.to_string() } else { format!("{doing}: {e}") };
    match local_cause(&e, step) {
        Some(cause) => Failure::NotRun(NotRun { cause, detail }),
        None => Failure::Backend(detail),
    }
}

/// Runs `check` against `backend` (the backend's own address and port, passed to
/// exec checks), within the check's timeout.
pub async fn probe(check: &HealthCheck, backend: SocketAddr, user: Option<ExecUser>) -> Result<(), Failure> {
    let work = async {
        match check.kind {
            CheckKind::None => Ok(()),
            CheckKind::Tcp => connect(check.target()).await.map(drop),
            CheckKind::Http => http(check).await,
            CheckKind::Exec => exec(check, backend, user).await,
        }
    };
    match tokio::time::timeout(check.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Backend(format!("timeout after {}", show_duration(check.timeout)))),
    }
}

async fn connect(target: SocketAddr) -> Result<TcpStream, Failure> {
    TcpStream::connect(target).await.map_err(|e| match e.kind() {
        io::ErrorKind::ConnectionRefused => Failure::Backend("connection refused".into()),
        _ => io_failure(e, Step::Network, ""),
    })
}

async fn http(check: &HealthCheck) -> Result<(), Failure> {
    let target = check.target();
    let mut stream = connect(target).await?;
    let host = check.http_host.clone().unwrap_or_else(|| target.to_string());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: alwayson-check\r\nConnection: close\r\n\r\n",
        check.http_path
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| io_failure(e, Step::Network, "sending the request"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < HTTP_HEAD_LIMIT {
        let n =
            stream.read(&mut buf).await.map_err(|e| io_failure(e, Step::Network, "reading the response"))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let status = status_code(&head).ok_or_else(|| "no HTTP status line in the response".to_string())?;
    let ok = if check.http_status.is_empty() {
        (200..400).contains(&status)
    } else {
        check.http_status.contains(&status)
    };
    if ok {
        Ok(())
    } else {
        Err(format!("status {status}").into())
    }
}

/// The code of an `HTTP/1.x NNN reason` status line.
fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r' || b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut words = line.split_whitespace();
    words.next().filter(|v| v.starts_with("HTTP/"))?;
    words.next()?.parse().ok().filter(|c| (100..600).contains(c))
}

async fn exec(check: &HealthCheck, backend: SocketAddr, user: Option<ExecUser>) -> Result<(), Failure> {
    let command = check.exec_command.as_deref().ok_or_else(|| "no exec_command".to_string())?;
    let mut cmd = Command::new("/bin/sh");
    if let Some(user) = user {
        // Set after fork, before exec; as root, the supplementary groups are dropped too.
        cmd.uid(user.uid).gid(user.gid);
    }
    let mut child = cmd
        .arg("-c")
        .arg(command)
        // Nothing of the agent's environment or working directory.
        .env_clear()
        .env("PATH", EXEC_PATH)
        .current_dir("/")
        .env("ALWAYSON_BACKEND_ADDR", backend.ip().to_string())
        .env("ALWAYSON_BACKEND_PORT", backend.port().to_string())
        .env("ALWAYSON_CHECK_ADDR", check.address.to_string())
        .env("ALWAYSON_CHECK_PORT", check.port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group, so that what the shell starts can be killed with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| io_failure(e, Step::Spawn, "running the command"))?;
    // The timeout drops this future; nothing the command started may outlive it.
    let mut group = GroupKiller(child.id());
    let status = child.wait().await.map_err(|e| io_failure(e, Step::Spawn, "running the command"))?;
    group.0 = None;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(format!("exit {code}").into()),
        None => Err("killed by a signal".to_string().into()),
    }
}

/// SIGKILLs a process group when dropped, unless disarmed (`None`): the shell
/// of an exec check and whatever it started.
struct GroupKiller(Option<u32>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            // SAFETY: kill(2) on the group this check created and has not reaped yet.
            unsafe { libc::kill(-(pgid as libc::pid_t), libc::SIGKILL) };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A check of `kind` aimed at `backend`, running `command` if it is an exec check.
    fn check_of(kind: CheckKind, backend: SocketAddr, command: &str) -> HealthCheck {
        HealthCheck {
            kind,
            inter: Duration::from_secs(1),
            timeout: Duration::from_secs(2),
            rise: 1,
            fall: 1,
            address: backend.ip(),
            port: backend.port(),
            http_path: "/".into(),
            http_status: Vec::new(),
            http_host: None,
            exec_command: Some(command.into()),
        }
    }

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nX: y\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 abc\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 999 Nope\r\n"), None);
    }

    #[test]
    fn only_this_hosts_limits_keep_a_check_from_running() {
        let os = io::Error::from_raw_os_error;
        for (errno, cause) in [
            (libc::EMFILE, "emfile"),
            (libc::ENFILE, "enfile"),
            (libc::ENOBUFS, "enobufs"),
            (libc::ENOMEM, "enomem"),
        ] {
            assert_eq!(local_cause(&os(errno), Step::Network), Some(cause));
            assert_eq!(local_cause(&os(errno), Step::Spawn), Some(cause));
        }
        // Out of local ports: connecting; out of processes: spawning.
        assert_eq!(local_cause(&os(libc::EADDRNOTAVAIL), Step::Network), Some("eaddrnotavail"));
        assert_eq!(local_cause(&os(libc::EAGAIN), Step::Spawn), Some("eagain"));
        assert_eq!(local_cause(&os(libc::EAGAIN), Step::Network), None);
        // What the backend (or the way to it) does is the backend's failure.
        for errno in
            [libc::ECONNREFUSED, libc::ECONNRESET, libc::EHOSTUNREACH, libc::ENETUNREACH, libc::ETIMEDOUT]
        {
            assert_eq!(local_cause(&os(errno), Step::Network), None, "errno {errno}");
        }
        assert_eq!(local_cause(&io::Error::other("no errno"), Step::Network), None);

        let not_run = io_failure(os(libc::EMFILE), Step::Network, "sending the request");
        let Failure::NotRun(why) = not_run else { panic!("{not_run:?}") };
        assert_eq!(why.cause, "emfile");
        assert!(why.detail.starts_with("sending the request: "), "{why}");
        assert_eq!(
            io_failure(os(libc::ECONNRESET), Step::Network, ""),
            Failure::Backend(os(libc::ECONNRESET).to_string())
        );
    }

    const CHILD: &str = "ALWAYSON_TEST_OUT_OF_FDS";

    /// Runs [`checks_in_a_process_out_of_file_descriptors`] in a child process
    /// (the file-descriptor limit is per process; this one is shared by tests).
    #[test]
    fn a_host_out_of_file_descriptors_runs_no_check() {
        let name = "health::check::tests::checks_in_a_process_out_of_file_descriptors";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text =
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && text.contains("1 passed"), "{text}");
    }

    /// Only in the child of [`a_host_out_of_file_descriptors_runs_no_check`].
    #[test]
    fn checks_in_a_process_out_of_file_descriptors() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        // A backend that answers: what fails is this process, not the backend.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let backend = listener.local_addr().unwrap();
        let check = |kind| check_of(kind, backend, "true");
        let ran = |kind| runtime.block_on(probe(&check(kind), backend, None));
        assert_eq!(ran(CheckKind::Tcp), Ok(()), "the check passes while descriptors are left");
        assert_eq!(ran(CheckKind::Exec), Ok(()));

        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit with a valid pointer; this process is the test's own child.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            limit.rlim_cur = limit.rlim_cur.min(256);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
        }
        let mut held = Vec::new();
        loop {
            match std::fs::File::open("/dev/null") {
                Ok(file) => held.push(file),
                Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
                Err(e) => panic!("{e}"),
            }
        }
        for kind in [CheckKind::Tcp, CheckKind::Http, CheckKind::Exec] {
            match ran(kind) {
                Err(Failure::NotRun(why)) => assert_eq!(why.cause, "emfile", "{kind:?}: {why}"),
                other => panic!("{kind:?} without file descriptors: {other:?}"),
            }
        }
        drop(held);
        assert_eq!(ran(CheckKind::Tcp), Ok(()), "the check runs again once descriptors are free");
    }

    #[test]
    #[ignore = "needs root"]
    fn exec_checks_run_as_the_check_user_with_nothing_of_the_agents_environment() {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "needs root: run it as root");
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let backend: SocketAddr = "127.0.0.1:9".parse().unwrap();
        std::env::set_var("ALWAYSON_TEST_SECRET", "x");
        let check = check_of(
            CheckKind::Exec,
            backend,
            "test \"$(id -u)\" = 65534 && test \"$(id -G)\" = 65534 && test -z \"$ALWAYSON_TEST_SECRET\" \
             && test \"$(pwd)\" = /",
        );
        let nobody = ExecUser::lookup("nobody").unwrap();
        assert_eq!(nobody, Some(ExecUser { uid: 65534, gid: 65534 }));
        assert_eq!(runtime.block_on(probe(&check, backend, nobody)), Ok(()));
        // As the agent itself (root), the same command fails: the test can tell.
        assert!(runtime.block_on(probe(&check, backend, None)).is_err());
        assert!(ExecUser::lookup("no-such-user-here").unwrap_err().to_string().contains("global.check_user"));
    }
}
