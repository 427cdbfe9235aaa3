//! TCP connections to chromedriver, made from inside its network namespace.
//!
//! A socket belongs to the namespace of the thread that created it, and
//! chromedriver listens on 127.0.0.1 of a bed's namespace: hyper's own
//! `HttpConnector` would reach the test process's loopback instead. So each
//! connection is opened on a short-lived thread that has entered the
//! namespace (never a pooled runtime thread: setns would stay on it), then
//! handed to tokio as a non-blocking stream.

use std::{
    future::Future,
    io,
    net::{SocketAddr, TcpStream},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use hyper::Uri;
use hyper_util::rt::TokioIo;

use crate::netns;

/// A hyper connector (what `fantoccini::ClientBuilder::new` takes) that
/// connects to one address inside one namespace, whatever the URI's host.
#[derive(Clone, Debug)]
pub struct NetnsConnector {
    netns: Arc<str>,
    addr: SocketAddr,
    timeout: Duration,
}

impl NetnsConnector {
    /// `netns`: the namespace's name (see [`crate::netns::Netns::name`]).
    pub fn new(netns: &str, addr: SocketAddr, timeout: Duration) -> Self {
        Self { netns: netns.into(), addr, timeout }
    }

    /// The URL to give the WebDriver client; the connector decides where it
    /// really goes, so the host here only has to be valid.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    async fn connect(self) -> io::Result<TokioIo<tokio::net::TcpStream>> {
        let Self { netns, addr, timeout } = self;
        let stream = tokio::task::spawn_blocking(move || {
            netns::run_in(&netns, || TcpStream::connect_timeout(&addr, timeout)).map_err(|e| {
                io::Error::new(e.kind(), format!("connecting to {addr} in namespace {netns}: {e}"))
            })
        })
        .await
        .map_err(io::Error::other)??;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(TokioIo::new(tokio::net::TcpStream::from_std(stream)?))
    }
}

impl tower_service::Service<Uri> for NetnsConnector {
    type Response = TokioIo<tokio::net::TcpStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read as _, Write as _},
        net::TcpListener,
    };

    use tower_service::Service as _;

    use super::*;
    use crate::{netns::Netns, require_root};

    #[test]
    #[ignore = "needs root"]
    fn connects_inside_the_namespace() {
        require_root("connects_inside_the_namespace");
        let ns = Netns::new("connect").expect("netns");
        // Only reachable from inside `ns`: its own loopback.
        let listener = ns.run(|| TcpListener::bind("127.0.0.1:0")).expect("listen in the namespace");
        let addr = listener.local_addr().expect("address");
        let server = std::thread::spawn(move || {
            let (mut peer, _) = listener.accept().expect("accept");
            peer.write_all(b"hello from the namespace").expect("write");
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let mut connector = NetnsConnector::new(ns.name(), addr, Duration::from_secs(5));
        let uri: Uri = "http://example.invalid/".parse().expect("uri");
        let io = runtime.block_on(async { connector.call(uri).await }).expect("connect");
        let mut stream = runtime.block_on(async { io.into_inner().into_std() }).expect("std stream");
        stream.set_nonblocking(false).expect("blocking");
        let mut said = String::new();
        stream.read_to_string(&mut said).expect("read");
        assert_eq!(said, "hello from the namespace");
        server.join().expect("server");
    }
}
