//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): one datagram
//! per state change to the unix socket named by `$NOTIFY_SOCKET` — a path, or
//! an abstract name when it starts with `@`. Written here rather than taken
//! from a crate: it is a datagram of `KEY=VALUE` lines, and an absent socket
//! (not under systemd) makes every call a no-op.

use std::{io, os::unix::net::UnixDatagram, path::PathBuf, time::Duration};

use tracing::warn;

/// Where systemd listens, and how often it wants `WATCHDOG=1`.
#[derive(Debug, Default)]
pub struct Notifier {
    socket: Option<(UnixDatagram, Target)>,
    watchdog: Option<Duration>,
}

#[derive(Debug)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honoured only when
    /// `$WATCHDOG_PID` is unset or this process's pid). The variables are
    /// left in place: the agent's children never see them used.
    pub fn from_env() -> Self {
        let socket = std::env::var_os("NOTIFY_SOCKET").map(|s| s.to_string_lossy().into_owned());
        let watchdog_pid = std::env::var("WATCHDOG_PID").ok();
        let watchdog_usec = std::env::var("WATCHDOG_USEC").ok();
        Self::new(socket.as_deref(), watchdog_usec.as_deref(), watchdog_pid.as_deref(), std::process::id())
    }

    pub fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Self {
        let target = match socket {
            Some(s) if s.starts_with('@') => Some(Target::Abstract(s.as_bytes()[1..].to_vec())),
            Some(s) if s.starts_with('/') => Some(Target::Path(PathBuf::from(s))),
            _ => None,
        };
        let socket = target.and_then(|t| match UnixDatagram::unbound() {
            Ok(sock) => Some((sock, t)),
            Err(e) => {
                warn!("cannot notify systemd: {e}");
                None
            }
        });
        let ours = watchdog_pid.is_none_or(|p| p.parse() == Ok(pid));
        let watchdog = watchdog_usec
            .filter(|_| ours && socket.is_some())
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0)
            .map(Duration::from_micros);
        Self { socket, watchdog }
    }

    /// How often to send `WATCHDOG=1`: half the timeout systemd set.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    pub fn ready(&self) {
        self.send("READY=1\nSTATUS=config applied");
    }

    pub fn reloading(&self) {
        // MONOTONIC_USEC lets systemd ≥ 253 match this to the SIGHUP it sent.
        let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: a valid timespec to write into.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
        let usec = now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Sends one message; a failure is logged, never fatal.
    pub fn send(&self, message: &str) {
        let Some((socket, target)) = &self.socket else { return };
        if let Err(e) = send_to(socket, target, message.as_bytes()) {
            warn!("notifying systemd ({message:?}): {e}");
        }
    }
}

fn send_to(socket: &UnixDatagram, target: &Target, message: &[u8]) -> io::Result<usize> {
    match target {
        Target::Path(path) => socket.send_to(message, path),
        Target::Abstract(name) => {
            use std::os::{linux::net::SocketAddrExt as _, unix::net::SocketAddr};
            socket.send_to_addr(message, &SocketAddr::from_abstract_name(name)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn ready_and_watchdog_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("alwayson-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let systemd = UnixDatagram::bind(&path).unwrap();
        systemd.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(path.to_str(), Some("4000000"), None, 1);
        assert_eq!(n.watchdog_every(), Some(Duration::from_secs(2)));
        n.ready();
        assert_eq!(receive(&systemd), "READY=1\nSTATUS=config applied");
        n.watchdog();
        assert_eq!(receive(&systemd), "WATCHDOG=1");
        n.reloading();
        assert!(receive(&systemd).starts_with("RELOADING=1\nMONOTONIC_USEC="));
        n.stopping();
        assert_eq!(receive(&systemd), "STOPPING=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn ready_reaches_an_abstract_socket() {
        use std::os::{linux::net::SocketAddrExt as _, unix::net::SocketAddr};
        let name = format!("alwayson-notify-test-{}", std::process::id());
        let systemd = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
        systemd.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = Notifier::new(Some(&format!("@{name}")), None, None, 1);
        assert_eq!(n.watchdog_every(), None);
        n.ready();
        assert_eq!(receive(&systemd), "READY=1\nSTATUS=config applied");
    }

    #[test]
    fn without_systemd_nothing_is_sent_and_no_watchdog() {
        let n = Notifier::new(None, Some("4000000"), None, 1);
        assert_eq!(n.watchdog_every(), None);
        n.ready();
        // Another process's watchdog is not ours.
        let n = Notifier::new(Some("/nonexistent/notify"), Some("4000000"), Some("2"), 1);
        assert_eq!(n.watchdog_every(), None);
    }
}
