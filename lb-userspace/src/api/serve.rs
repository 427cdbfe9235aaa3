//! Serving a listener without letting its callers starve the agent: at most
//! `max_connections` at once (past it a new connection is closed at once, the
//! ones already served are unaffected), a deadline for a request's headers,
//! and an idle limit on every read and write. Each request carries who sent it
//! ([`Caller`]), so changes can be logged with their author.

use std::{
    fmt, io,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use axum::{Extension, Router};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, UnixListener},
    sync::Semaphore,
};
use tokio_io_timeout::TimeoutStream;
use tracing::{debug, warn};

use crate::stats::ConnCounts;

/// A caller must send a request's headers within this time of the connection
/// (or its previous request) being ready for them.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A read or write that makes no progress for this long ends the connection:
/// an idle keep-alive connection, or a caller that stopped reading its answer.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// After a failed accept (EMFILE: the process is out of descriptors), wait
/// this long before the next, instead of spinning on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Who sent a request: the unix socket's peer credentials or the TCP peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    Unix {
        uid: u32,
        pid: Option<i32>,
    },
    Tcp(SocketAddr),
    /// Not through a listener: SIGHUP, or a router used without one (tests).
    Internal,
}

impl fmt::Display for Caller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Caller::Unix { uid, pid: Some(pid) } => write!(f, "uid {uid} (pid {pid}) on the control socket"),
            Caller::Unix { uid, pid: None } => write!(f, "uid {uid} on the control socket"),
            Caller::Tcp(addr) => write!(f, "{addr} over tcp"),
            Caller::Internal => f.write_str("the agent itself"),
        }
    }
}

/// A listener the servers below can take connections from.
pub trait Accept: Send + 'static {
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;
    fn accept(&self) -> impl std::future::Future<Output = io::Result<(Self::Stream, Caller)>> + Send;
}

impl Accept for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, Caller)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        Ok((stream, Caller::Tcp(peer)))
    }
}

impl Accept for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(Self::Stream, Caller)> {
        let (stream, _) = UnixListener::accept(self).await?;
        // The kernel vouches for these: the socket's access is root-only, and
        // the uid is what the change log names.
        let cred = stream.peer_cred()?;
        Ok((stream, Caller::Unix { uid: cred.uid(), pid: cred.pid() }))
    }
}

/// Serves `router` on `listener` until the process ends.
pub async fn serve<L: Accept>(
    what: &'static str,
    listener: L,
    router: Router,
    max_connections: u32,
    counts: Arc<ConnCounts>,
) {
    let slots = Arc::new(Semaphore::new(max_connections as usize));
    let mut refusals_logged = 0u64;
    loop {
        let (stream, caller) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Our own shortage (EMFILE, ENFILE, ENOBUFS): back off, keep serving.
                warn!("{what}: accepting a connection failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            drop(stream);
            let refused = counts.refused.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at powers of two: a flood says so without flooding the log.
            if refused.is_power_of_two() && refused > refusals_logged {
                refusals_logged = refused;
                warn!(
                    "{what}: {max_connections} connections are being served; refused {refused} so far \
                     (the limit is {what}'s max_connections)"
                );
            }
            continue;
        };
        let router = router.clone();
        let counts = Arc::clone(&counts);
        tokio::spawn(async move {
            counts.open.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = connection(stream, caller.clone(), router).await {
                if is_timeout(&e) {
                    counts.timed_out.fetch_add(1, Ordering::Relaxed);
                }
                debug!("{what}: connection from {caller} ended: {e}");
            }
            counts.open.fetch_sub(1, Ordering::Relaxed);
            drop(slot);
        });
    }
}

async fn connection<S>(stream: S, caller: Caller, router: Router) -> Result<(), hyper::Error>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let mut stream = TimeoutStream::new(stream);
    stream.set_read_timeout(Some(IDLE_TIMEOUT));
    stream.set_write_timeout(Some(IDLE_TIMEOUT));
    let service = TowerToHyperService::new(router.layer(Extension(caller)));
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(Box::pin(stream)), service)
        .await
}

fn is_timeout(e: &hyper::Error) -> bool {
    if e.is_timeout() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        if inner.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::TimedOut) {
            return true;
        }
        source = inner.source();
    }
    false
}
