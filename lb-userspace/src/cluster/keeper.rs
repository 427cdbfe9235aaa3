//! What keeps announced routes tied to a live agent. BIRD's static routes for
//! the VIPs hang on a tun device ("check link"); the device exists while one
//! of its queues is open. The agent opens it and hands it to a keeper process
//! running as an unprivileged user. The reconcile loop sends the keeper a
//! heartbeat; when heartbeats stop (the loop hangs, the agent is stopped) or
//! the pipe closes (the agent died) for `grace_time`, the keeper exits, the
//! device vanishes and BIRD withdraws every route at once. A restarted agent
//! opens another queue on the same device before the old keeper gives up, so
//! an upgrade does not flap the routes.

use std::{
    ffi::CString,
    io::{ErrorKind, Read as _, Write as _},
    os::{
        fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
        unix::process::CommandExt as _,
    },
    process::{Child, ChildStdin, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context as _, Result};

use crate::health::ExecUser;

/// A byte on the keeper's stdin: the agent is alive.
const HEARTBEAT: u8 = b'h';
/// A byte on the keeper's stdin: the agent withdrew and stops; go now.
const QUIT: u8 = b'q';
/// The descriptor the device arrives on in the keeper.
const DEVICE_FD: i32 = 3;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: i16 = 0x0001;
const IFF_NO_PI: i16 = 0x1000;
const IFF_MULTI_QUEUE: i16 = 0x0100;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfreqFlags {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

impl IfreqFlags {
    fn new(device: &str, flags: i16) -> Result<Self> {
        let mut name = [0u8; libc::IFNAMSIZ];
        anyhow::ensure!(device.len() < libc::IFNAMSIZ, "device name {device:?} is too long");
        name[..device.len()].copy_from_slice(device.as_bytes());
        Ok(Self { name, flags, _pad: [0; 22] })
    }
}

/// The agent's handle on its keeper.
pub struct Keeper {
    child: Child,
    stdin: ChildStdin,
    pub device: String,
}

impl Keeper {
    /// Opens a queue of `device` (creating it if this is the first), brings it
    /// up and hands it to a new keeper that gives up after `grace` of silence.
    pub fn spawn(device: &str, grace: Duration, user: Option<ExecUser>) -> Result<Self> {
        let queue = open_queue(device).with_context(|| format!("opening tun device {device}"))?;
        set_up(device).with_context(|| format!("bringing {device} up"))?;
        let exe = std::env::current_exe().context("finding our own executable")?;
        let mut cmd = Command::new(exe);
        cmd.args(["keep-routes", "--grace-ms", &grace.as_millis().to_string(), "--device", device])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .env_clear();
        if let Some(user) = user {
            cmd.uid(user.uid).gid(user.gid);
        }
        let raw = queue.as_raw_fd();
        // SAFETY: between fork and exec only async-signal-safe calls: dup2 and setsid.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, DEVICE_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // Its own session: a Ctrl-C meant for the agent must not withdraw.
                libc::setsid();
                Ok(())
            });
        }
        let mut child = cmd.spawn().context("starting the route keeper")?;
        drop(queue);
        let stdin = child.stdin.take().context("the keeper's stdin")?;
        // SAFETY: fcntl on a descriptor we own.
        unsafe {
            let fd = stdin.as_raw_fd();
            libc::fcntl(fd, libc::F_SETFL, libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK);
        }
        Ok(Self { child, stdin, device: device.to_owned() })
    }

    /// Tells the keeper the agent is alive. Never blocks: a keeper that does
    /// not read is one that will soon give up anyway.
    pub fn heartbeat(&mut self) {
        match self.stdin.write(&[HEARTBEAT]) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => tracing::debug!("heartbeat to the route keeper: {e}"),
        }
    }

    /// Whether the keeper still runs (the device, and so the routes, with it).
    pub fn alive_now(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Ends the keeper now: the device goes, and with it any route left.
    pub fn quit(mut self) {
        let _ = self.stdin.write(&[QUIT]);
        drop(self.stdin);
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn open_queue(device: &str) -> Result<OwnedFd> {
    let path = CString::new("/dev/net/tun").expect("no NUL");
    // SAFETY: open with a valid C string.
    let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("/dev/net/tun");
    }
    // SAFETY: fd was just opened and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfreqFlags::new(device, IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE)?;
    // SAFETY: TUNSETIFF reads and writes a struct ifreq.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req) } < 0 {
        return Err(std::io::Error::last_os_error()).context("TUNSETIFF");
    }
    Ok(fd)
}

fn set_up(device: &str) -> Result<()> {
    // SAFETY: a plain datagram socket, closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(std::io::Error::last_os_error()).context("socket");
    }
    // SAFETY: sock is ours.
    let sock = unsafe { OwnedFd::from_raw_fd(sock) };
    let mut req = IfreqFlags::new(device, 0)?;
    // SAFETY: SIOCGIFFLAGS / SIOCSIFFLAGS read and write a struct ifreq.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCGIFFLAGS");
        }
        req.flags |= libc::IFF_UP as i16;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error()).context("SIOCSIFFLAGS");
        }
    }
    Ok(())
}

/// The keeper process itself (`alwayson keep-routes`): holds the device on
/// descriptor 3 until the agent goes quiet for `grace` or says to quit.
pub fn run(grace: Duration, device: &str) -> Result<()> {
    // SAFETY: fcntl F_GETFD only asks whether the descriptor is open.
    if unsafe { libc::fcntl(DEVICE_FD, libc::F_GETFD) } < 0 {
        bail!("no device on descriptor {DEVICE_FD}: keep-routes is started by `alwayson run`");
    }
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 64];
    loop {
        let mut poll = libc::pollfd { fd: 0, events: libc::POLLIN, revents: 0 };
        let ms = i32::try_from(grace.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: one pollfd, its count, a timeout.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e).context("poll");
        }
        if ready == 0 {
            eprintln!("alwayson keep-routes: no heartbeat from the agent for {grace:?}: removing {device}, BIRD withdraws its routes");
            return Ok(());
        }
        match stdin.read(&mut buf) {
            Ok(0) => {
                // The agent is gone. A restarted one opens its own queue in the meantime.
                std::thread::sleep(grace);
                eprintln!("alwayson keep-routes: the agent exited {grace:?} ago: letting {device} go");
                return Ok(());
            }
            Ok(n) if buf[..n].contains(&QUIT) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("reading heartbeats"),
        }
    }
}
