//! One health check of one backend: TCP connect, an HTTP request, or a command.
//! The error is the reason an operator reads in the log ("connection refused",
//! "status 503", "exit 2").

use std::{net::SocketAddr, process::Stdio};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    process::Command,
};

use crate::config::{show_duration, CheckKind, HealthCheck};

/// The most of an HTTP response read to find its status line.
const HTTP_HEAD_LIMIT: usize = 1024;

/// Runs `check` against `backend` (the backend's own address and port, passed to
/// exec checks), within the check's timeout.
pub async fn probe(check: &HealthCheck, backend: SocketAddr) -> Result<(), String> {
    let work = async {
        match check.kind {
            CheckKind::None => Ok(()),
            CheckKind::Tcp => connect(check.target()).await.map(drop),
            CheckKind::Http => http(check).await,
            CheckKind::Exec => exec(check, backend).await,
        }
    };
    match tokio::time::timeout(check.timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(format!("timeout after {}", show_duration(check.timeout))),
    }
}

async fn connect(target: SocketAddr) -> Result<TcpStream, String> {
    TcpStream::connect(target).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => e.to_string(),
    })
}

async fn http(check: &HealthCheck) -> Result<(), String> {
    let target = check.target();
    let mut stream = connect(target).await?;
    let host = check.http_host.clone().unwrap_or_else(|| target.to_string());
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: alwayson-check\r\nConnection: close\r\n\r\n",
        check.http_path
    );
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("sending the request: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < HTTP_HEAD_LIMIT {
        let n = stream.read(&mut buf).await.map_err(|e| format!("reading the response: {e}"))?;
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
        Err(format!("status {status}"))
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

async fn exec(check: &HealthCheck, backend: SocketAddr) -> Result<(), String> {
    let command = check.exec_command.as_deref().ok_or("no exec_command")?;
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(command)
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
        .map_err(|e| format!("running the command: {e}"))?;
    // The timeout drops this future; nothing the command started may outlive it.
    let mut group = GroupKiller(child.id());
    let status = child.wait().await.map_err(|e| format!("running the command: {e}"))?;
    group.0 = None;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(format!("exit {code}")),
        None => Err("killed by a signal".into()),
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
    use super::*;

    #[test]
    fn reads_status_lines() {
        assert_eq!(status_code(b"HTTP/1.1 200 OK\r\nX: y\r\n"), Some(200));
        assert_eq!(status_code(b"HTTP/1.0 503 Service Unavailable\r\n"), Some(503));
        assert_eq!(status_code(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 abc\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 999 Nope\r\n"), None);
    }
}
