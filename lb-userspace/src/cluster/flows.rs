//! Sharing recorded flows between nodes, so a flow survives its node's
//! failure even when the rings changed while it ran. Only flows on ring slots
//! in flux are recorded at all (see the README's recording rule), so this is
//! a small stream: every [`EVERY`] the recently seen entries of the
//! connection table that were not sent yet go to each peer by UDP, and all
//! of them again every [`RESEND`] for a peer that restarted.
//!
//! A peer's entry names the backend by address and port (slot numbers are
//! per node) and is taken only for a VIP and backend this node has too, and
//! only where this node has no entry of its own.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use lb_common::{
    types::{words_addr, FAMILY_V4, FAMILY_V6},
    FlowKey,
};
use tokio::{net::UdpSocket, sync::watch, task::JoinHandle};
use tracing::{debug, warn};

use crate::{dataplane::ConnScanner, stats::Topology};

pub const EVERY: Duration = Duration::from_millis(250);
const RESEND: Duration = Duration::from_secs(10);
/// Entries seen within this many coarse seconds count as live.
const RECENT: u32 = 3;
/// Marks a datagram of flows (heartbeats are JSON: `{`).
pub const TAG: u8 = b'F';
const VERSION: u8 = 1;
const ENTRY: usize = 16 + 16 + 2 + 2 + 1 + 1 + 1 + 16 + 2;
const PER_DATAGRAM: usize = 24;

/// One flow as it travels: its 5-tuple and its backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedFlow {
    pub key: FlowKey,
    pub backend: SocketAddr,
}

fn put_addr(out: &mut Vec<u8>, words: &[u32; 4]) {
    for w in words {
        out.extend_from_slice(&w.to_ne_bytes());
    }
}

fn encode(flows: &[SharedFlow]) -> Vec<Vec<u8>> {
    flows
        .chunks(PER_DATAGRAM)
        .map(|chunk| {
            let mut out = Vec::with_capacity(3 + chunk.len() * ENTRY);
            out.extend_from_slice(&[TAG, VERSION, chunk.len() as u8]);
            for f in chunk {
                put_addr(&mut out, &f.key.src);
                put_addr(&mut out, &f.key.dst);
                out.extend_from_slice(&f.key.sport_be.to_ne_bytes());
                out.extend_from_slice(&f.key.dport_be.to_ne_bytes());
                out.extend_from_slice(&[f.key.proto, f.key.family]);
                let (words, family) = lb_common::types::addr_words(f.backend.ip());
                out.push(family);
                put_addr(&mut out, &words);
                out.extend_from_slice(&f.backend.port().to_be_bytes());
            }
            out
        })
        .collect()
}

/// `None` for anything malformed: it came from the network.
pub fn decode(datagram: &[u8]) -> Option<Vec<SharedFlow>> {
    let (&[tag, version, count], body) = datagram.split_first_chunk::<3>()?;
    if tag != TAG || version != VERSION || body.len() != usize::from(count) * ENTRY {
        return None;
    }
    let words = |b: &[u8]| -> [u32; 4] {
        std::array::from_fn(|i| u32::from_ne_bytes(b[i * 4..i * 4 + 4].try_into().expect("4 bytes")))
    };
    let family_ok = |f: u8| f == FAMILY_V4 || f == FAMILY_V6;
    body.chunks_exact(ENTRY)
        .map(|e| {
            let (proto, family, backend_family) = (e[36], e[37], e[38]);
            if !family_ok(family) || backend_family != family {
                return None;
            }
            let key = FlowKey {
                src: words(&e[0..16]),
                dst: words(&e[16..32]),
                sport_be: u16::from_ne_bytes([e[32], e[33]]),
                dport_be: u16::from_ne_bytes([e[34], e[35]]),
                proto,
                family,
                _pad: [0; 2],
            };
            let ip: IpAddr = words_addr(words(&e[39..55]), backend_family);
            let port = u16::from_be_bytes([e[55], e[56]]);
            Some(SharedFlow { key, backend: SocketAddr::new(ip, port) })
        })
        .collect()
}

/// Scans, and sends what is new to the peers, until dropped.
pub struct FlowSender {
    task: JoinHandle<()>,
}

impl Drop for FlowSender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FlowSender {
    pub async fn start(
        scanner: ConnScanner,
        topology: watch::Receiver<Arc<Topology>>,
        bind: IpAddr,
        peers: Vec<SocketAddr>,
    ) -> std::io::Result<Self> {
        let socket = UdpSocket::bind(SocketAddr::new(bind, 0)).await?;
        Ok(Self { task: tokio::spawn(send_forever(scanner, topology, socket, peers)) })
    }
}

async fn send_forever(
    mut scanner: ConnScanner,
    topology: watch::Receiver<Arc<Topology>>,
    socket: UdpSocket,
    peers: Vec<SocketAddr>,
) {
    let mut sent: HashSet<FlowKey> = HashSet::new();
    let mut resent = Instant::now();
    let mut round = tokio::time::interval(EVERY);
    loop {
        round.tick().await;
        let scanned = tokio::task::spawn_blocking(move || {
            let recent = scanner.recent(RECENT);
            (scanner, recent)
        })
        .await;
        let Ok((back, recent)) = scanned else { return };
        scanner = back;
        let names = identities(&topology.borrow());
        if resent.elapsed() >= RESEND {
            sent.clear();
            resent = Instant::now();
        }
        let live: HashSet<FlowKey> = recent.iter().map(|(k, _)| *k).collect();
        sent.retain(|k| live.contains(k));
        let fresh: Vec<SharedFlow> = recent
            .into_iter()
            .filter(|(k, _)| !sent.contains(k))
            .filter_map(|(key, v)| Some(SharedFlow { key, backend: *names.get(&(v.vip, v.backend))? }))
            .collect();
        if fresh.is_empty() {
            continue;
        }
        debug!(flows = fresh.len(), "sharing recorded flows with the peers");
        for datagram in encode(&fresh) {
            for peer in &peers {
                if let Err(e) = socket.send_to(&datagram, peer).await {
                    warn!("sending flows to {peer}: {e}");
                }
            }
        }
        sent.extend(fresh.iter().map(|f| f.key));
    }
}

/// (VIP index, backend slot) → the backend's address, as this node numbers them.
fn identities(topology: &Topology) -> HashMap<(u32, u32), SocketAddr> {
    topology
        .vips
        .iter()
        .flat_map(|v| {
            v.vip
                .backends
                .iter()
                .zip(&v.backends)
                .map(move |(conf, info)| ((v.index, info.slot), conf.socket()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src: &str, dst: &str, backend: &str) -> SharedFlow {
        let src: SocketAddr = src.parse().unwrap();
        let dst: SocketAddr = dst.parse().unwrap();
        SharedFlow {
            key: FlowKey::new(src.ip(), src.port(), dst.ip(), dst.port(), 6),
            backend: backend.parse().unwrap(),
        }
    }

    #[test]
    fn flows_cross_the_wire_unchanged_in_datagrams_that_fit() {
        let mut flows: Vec<SharedFlow> = (0..50)
            .map(|i| {
                flow(&format!("10.77.161.{}:{}", 10 + i, 40_000 + i), "10.77.163.1:80", "10.77.160.101:80")
            })
            .collect();
        flows.push(flow("[fd77::161:10]:5555", "[fd77::163]:443", "[fd77::160:101]:8443"));
        let datagrams = encode(&flows);
        assert_eq!(datagrams.len(), 3);
        assert!(datagrams.iter().all(|d| d.len() <= 1400), "fits an Ethernet MTU");
        let back: Vec<SharedFlow> = datagrams.iter().flat_map(|d| decode(d).expect("valid")).collect();
        assert_eq!(back, flows);
    }

    #[test]
    fn malformed_datagrams_are_refused() {
        let good = encode(&[flow("10.77.161.10:40000", "10.77.163.1:80", "10.77.160.101:80")]).remove(0);
        assert!(decode(&good).is_some());
        assert!(decode(&good[..good.len() - 1]).is_none(), "short");
        assert!(decode(b"{\"node\":\"lb1\"}").is_none(), "a heartbeat");
        let mut bad = good.clone();
        bad[2] = 2;
        assert!(decode(&bad).is_none(), "count and length disagree");
        let mut bad = good.clone();
        bad[3 + 37] = 9;
        assert!(decode(&bad).is_none(), "unknown family");
        let mut bad = good;
        bad[3 + 38] = FAMILY_V6;
        assert!(decode(&bad).is_none(), "backend of another family");
        assert!(decode(&[]).is_none());
    }
}
