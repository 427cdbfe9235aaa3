//! Keeping backends' neighbour entries resolved. `bpf_fib_lookup` only reads
//! the neighbour table; an unresolved backend would see its traffic dropped as
//! `no_neighbour`. Any datagram the host sends to a backend makes the kernel
//! resolve it, so the agent sends one (to the discard port) when a backend
//! appears and every few seconds after, from tasks of their own: the reconcile
//! loop never waits for them.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use tokio::net::UdpSocket;
use tracing::debug;

/// How long resolution of directly connected backends takes at most, in practice.
pub const SETTLE: Duration = Duration::from_millis(50);
/// RFC 863: the backend drops it (or answers port unreachable); either way the
/// neighbour entry is made.
const DISCARD_PORT: u16 = 9;

/// Probes `addresses` and, if there were any, gives the kernel [`SETTLE`] to
/// resolve them: once this returns, rings may point at them.
pub async fn resolve(addresses: Vec<IpAddr>) {
    if probe(addresses).await > 0 {
        tokio::time::sleep(SETTLE).await;
    }
}

/// Probes every address `addresses` gives, every `period`, forever: entries
/// the kernel let go stale are resolved again before traffic needs them.
pub async fn refresh(period: Duration, addresses: impl Fn() -> Vec<IpAddr>) {
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.reset();
    loop {
        ticker.tick().await;
        probe(addresses()).await;
    }
}

/// Probes each distinct address once; returns how many were probed.
pub async fn probe(addresses: impl IntoIterator<Item = IpAddr>) -> usize {
    let addresses: BTreeSet<IpAddr> = addresses.into_iter().collect();
    let (v4, v6) = tokio::join!(
        UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0))),
        UdpSocket::bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
    );
    for addr in &addresses {
        let socket = if addr.is_ipv4() { v4.as_ref() } else { v6.as_ref() };
        let result = match socket {
            Ok(socket) => socket.send_to(&[], SocketAddr::new(*addr, DISCARD_PORT)).await.map(drop),
            Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
        };
        if let Err(e) = result {
            debug!(%addr, "neighbour probe not sent: {e}");
        }
    }
    addresses.len()
}
