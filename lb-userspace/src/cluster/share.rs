//! The tasks that talk to the other nodes, reporting to the reconcile loop:
//! one keeps this node's view in etcd under a lease and reads everyone's,
//! one exchanges heartbeats with the peers directly over UDP. The heartbeats
//! carry whether each node reaches etcd: that is how a node cut off from etcd
//! tells "I am cut off" (peers reach it) from "etcd is down for everyone"
//! (peers answer, none reaches it).

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    task::JoinHandle,
};
use tracing::warn;

use super::{
    etcd::{Etcd, EtcdError, LeaseId},
    quorum::View,
};
use crate::config::cluster::Cluster;

/// How often views are written and read, and heartbeats sent.
pub const ROUND: Duration = Duration::from_millis(500);
/// A heartbeat is a few dozen bytes, a datagram of flows under 1,400.
const MAX_BEAT: usize = 1500;

#[derive(Debug)]
pub enum ClusterReport {
    /// Every live node's view, this one's included, as etcd has them; the
    /// shared runtime changes etcd holds; the last document this node wrote;
    /// whether this node holds a slot to be out (see `keep_slot`).
    Views {
        views: Vec<View>,
        runtime: Option<Vec<u8>>,
        wrote: Option<Vec<u8>>,
        out_slot: bool,
    },
    EtcdFailed(String),
    Beat {
        from: SocketAddr,
        beat: Beat,
    },
    /// Flows a peer recorded (see `flows.rs`).
    Flows(Vec<super::flows::SharedFlow>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Beat {
    pub node: String,
    pub etcd_ok: bool,
}

/// The running tasks; dropping this stops them (the lease then expires).
pub struct Sharing {
    pub view: watch::Sender<View>,
    /// The runtime changes (API operations) to write for every node.
    pub runtime: watch::Sender<Option<Vec<u8>>>,
    /// `Some(slots)`: claim one of `slots` slots to be out (odd one out);
    /// `None`: hold none.
    pub claim: watch::Sender<Option<usize>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Sharing {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn node_key(cluster: &Cluster, node: &str) -> String {
    format!("{}/nodes/{node}", cluster.prefix)
}

pub async fn start(
    cluster: &Cluster,
    first: View,
    reports: mpsc::Sender<ClusterReport>,
) -> anyhow::Result<Sharing> {
    // A loaded etcd syncs slowly; a round must still fit well inside the lease.
    let timeout = (cluster.lease_ttl / 2).min(Duration::from_secs(1));
    let etcd = Etcd::new(&cluster.etcd, timeout).map_err(|e| anyhow::anyhow!("cluster.etcd: {e}"))?;
    let socket = UdpSocket::bind(cluster.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cluster.listen = {}: {e}", cluster.listen))?;
    let socket = Arc::new(socket);
    let (view, view_rx) = watch::channel(first);
    let (runtime, runtime_rx) = watch::channel(None);
    let (claim, claim_rx) = watch::channel(None);
    let etcd_ok = Arc::new(AtomicBool::new(false));
    let tasks = vec![
        tokio::spawn(keep_views(
            etcd,
            cluster.clone(),
            Wanted { view: view_rx, runtime: runtime_rx, claim: claim_rx },
            Arc::clone(&etcd_ok),
            reports.clone(),
        )),
        tokio::spawn(send_beats(Arc::clone(&socket), cluster.clone(), etcd_ok)),
        tokio::spawn(hear_beats(socket, cluster.peers.clone(), reports)),
    ];
    Ok(Sharing { view, runtime, claim, tasks })
}

/// What the loop wants the etcd task to keep in etcd.
struct Wanted {
    view: watch::Receiver<View>,
    runtime: watch::Receiver<Option<Vec<u8>>>,
    claim: watch::Receiver<Option<usize>>,
}

async fn keep_views(
    etcd: Etcd,
    cluster: Cluster,
    wanted: Wanted,
    ok: Arc<AtomicBool>,
    reports: mpsc::Sender<ClusterReport>,
) {
    let mut held = Held::default();
    let mut round = tokio::time::interval(ROUND);
    round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        round.tick().await;
        let mine = wanted.view.borrow().clone();
        let runtime = wanted.runtime.borrow().clone();
        let claim = *wanted.claim.borrow();
        let report = match exchange(&etcd, &cluster, &mine, runtime, claim, &mut held).await {
            Ok((views, runtime)) => ClusterReport::Views {
                views,
                runtime,
                wrote: held.runtime.clone(),
                out_slot: held.slot.is_some(),
            },
            Err(e) => {
                if matches!(e, EtcdError::LeaseGone) {
                    // Everything under the lease went with it.
                    held = Held { runtime: held.runtime.take(), ..Held::default() };
                }
                ClusterReport::EtcdFailed(e.to_string())
            }
        };
        ok.store(matches!(report, ClusterReport::Views { .. }), Ordering::Relaxed);
        if reports.send(report).await.is_err() {
            return;
        }
    }
}

/// What this node has in etcd.
#[derive(Default)]
struct Held {
    lease: Option<LeaseId>,
    /// The view last written under the lease: written again only when it changes.
    view: Option<View>,
    /// The runtime-changes document last written.
    runtime: Option<Vec<u8>>,
    slot: Option<(usize, String)>,
}

/// One round: the lease kept alive, what changed written, everything under
/// the prefix read at once. Writes are few (etcd syncs each to disk): a view
/// is written when it changes, the lease is renewed without one.
async fn exchange(
    etcd: &Etcd,
    cluster: &Cluster,
    mine: &View,
    runtime: Option<Vec<u8>>,
    claim: Option<usize>,
    held: &mut Held,
) -> Result<(Vec<View>, Option<Vec<u8>>), EtcdError> {
    let runtime_key = format!("{}/runtime", cluster.prefix);
    if runtime.is_some() && runtime != held.runtime {
        etcd.put(&runtime_key, runtime.as_deref().expect("checked"), None).await?;
        held.runtime = runtime;
    }
    let id = match held.lease {
        Some(id) => {
            etcd.keep_alive(id).await?;
            id
        }
        None => {
            let id = etcd.grant(cluster.lease_ttl).await?;
            held.lease = Some(id);
            held.view = None;
            id
        }
    };
    if held.view.as_ref() != Some(mine) {
        let value = serde_json::to_vec(mine).map_err(|e| EtcdError::Decode(e.to_string()))?;
        etcd.put(&node_key(cluster, &mine.node), &value, Some(id)).await?;
        held.view = Some(mine.clone());
    }
    keep_slot(etcd, cluster, id, claim, &mut held.slot).await?;
    let nodes = format!("{}/nodes/", cluster.prefix);
    let (_, kvs) = etcd.get_prefix(&format!("{}/", cluster.prefix)).await?;
    let mut views = Vec::new();
    let mut shared_runtime = None;
    for (key, value) in kvs {
        if key == runtime_key {
            shared_runtime = Some(value);
            continue;
        }
        if !key.starts_with(&nodes) {
            continue;
        }
        match serde_json::from_slice::<View>(&value) {
            Ok(v) if key.ends_with(&format!("/{}", v.node)) => views.push(v),
            Ok(v) => warn!("etcd key {key} holds the view of {:?}: ignored", v.node),
            Err(e) => warn!("etcd key {key} is not a view: {e}"),
        }
    }
    Ok((views, shared_runtime))
}

/// Claims, keeps or gives back a slot to be out: `prefix/out/<i>` created
/// only if absent (etcd lets one claim win), under this node's lease so a
/// dead node's slot frees itself.
async fn keep_slot(
    etcd: &Etcd,
    cluster: &Cluster,
    lease: LeaseId,
    claim: Option<usize>,
    slot: &mut Option<(usize, String)>,
) -> Result<(), EtcdError> {
    let me = cluster.node.as_bytes();
    if let Some((i, key)) = slot.clone() {
        let still_mine = etcd.get(&key).await?.as_deref() == Some(me);
        let wanted = claim.is_some_and(|n| i < n);
        if still_mine && !wanted {
            etcd.delete(&key).await?;
        }
        if !still_mine || !wanted {
            *slot = None;
        }
    }
    if let (Some(slots), None) = (claim, &slot) {
        for i in 0..slots {
            let key = format!("{}/out/{i}", cluster.prefix);
            let (_, holder) = etcd.put_if_absent(&key, me, Some(lease)).await?;
            if holder == me {
                *slot = Some((i, key));
                break;
            }
        }
    }
    Ok(())
}

async fn send_beats(socket: Arc<UdpSocket>, cluster: Cluster, etcd_ok: Arc<AtomicBool>) {
    let mut round = tokio::time::interval(ROUND / 2);
    loop {
        round.tick().await;
        let beat = Beat { node: cluster.node.clone(), etcd_ok: etcd_ok.load(Ordering::Relaxed) };
        let Ok(bytes) = serde_json::to_vec(&beat) else { continue };
        for peer in &cluster.peers {
            // A peer that is down or unreachable is what heartbeats are for: no noise.
            let _ = socket.send_to(&bytes, peer).await;
        }
    }
}

async fn hear_beats(socket: Arc<UdpSocket>, peers: Vec<SocketAddr>, reports: mpsc::Sender<ClusterReport>) {
    let mut buf = [0u8; MAX_BEAT];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        // Only configured peers count; anyone else could fake a majority.
        if !peers.iter().any(|p| p.ip() == from.ip()) {
            continue;
        }
        let report = if buf[..n].first() == Some(&super::flows::TAG) {
            let Some(flows) = super::flows::decode(&buf[..n]) else { continue };
            ClusterReport::Flows(flows)
        } else {
            let Ok(beat) = serde_json::from_slice::<Beat>(&buf[..n]) else { continue };
            if beat.node.len() > 63 {
                continue;
            }
            ClusterReport::Beat { from, beat }
        };
        if reports.send(report).await.is_err() {
            return;
        }
    }
}
