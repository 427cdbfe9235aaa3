//! This node as a member of the cluster, as the reconcile loop sees it: the
//! views etcd last gave, the heartbeats heard, and from them the effective
//! health the rings are built from and whether this node may announce.
//!
//! - etcd answers: effective = the quorum of the live nodes' views. A node
//!   that sees DOWN a backend the effective state uses is the odd one out:
//!   after `odd_one_out_after` it withdraws, unless that would leave fewer
//!   than half of the nodes announcing. A ring digest that differs from the
//!   majority's for as long withdraws too.
//! - etcd is silent for this node, and peers that reach it make up at least
//!   half of the nodes: this node is cut off. It keeps the last effective
//!   state for `quorum_grace`, then withdraws. So does a node that hears too
//!   few peers to be on the majority side of a partition.
//! - etcd is silent, and a majority of nodes answer heartbeats but none
//!   reaches etcd: etcd is down for everyone. Each node falls back to its own
//!   checks and says so loudly; losing etcd never takes the VIP down. When
//!   some reach it but fewer than half, etcd is slow or electing: stay.

use std::{
    collections::{BTreeMap, HashMap},
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use super::{
    quorum::{self, View},
    share::{self, ClusterReport, Sharing},
};
use crate::config::{cluster::Cluster, Backend, Vip};

/// A backend's identity across nodes: its VIP's address, port and protocol,
/// and its own address and port (names may differ between files; these not).
pub fn backend_id(vip: &Vip, backend: &Backend) -> String {
    format!("{}/{} {}", std::net::SocketAddr::new(vip.address, vip.port), vip.protocol, backend.socket())
}

/// Without an answer from etcd for this long, etcd counts as lost.
const ETCD_LOST_AFTER: Duration = Duration::from_secs(2);
/// A peer not heard from for this long counts as unreachable.
const BEAT_LOST_AFTER: Duration = Duration::from_millis(1500);

/// Where the rings' health comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Not yet heard from etcd: this node's own checks.
    Starting,
    /// The quorum of the live nodes' views.
    Quorum,
    /// etcd is silent for this node only: the last quorum, kept for `quorum_grace`.
    LastQuorum,
    /// etcd is down for every node: this node's own checks.
    LocalOnly,
}

impl Source {
    pub const ALL: [Source; 4] = [Source::Starting, Source::Quorum, Source::LastQuorum, Source::LocalOnly];

    /// As the stats and metrics write it.
    pub fn name(self) -> &'static str {
        match self {
            Source::Starting => "starting",
            Source::Quorum => "quorum",
            Source::LastQuorum => "last_quorum",
            Source::LocalOnly => "local_only",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub enabled: bool,
    pub node: String,
    pub source: Option<Source>,
    pub live_nodes: Vec<String>,
    pub peers_heard: Vec<String>,
    /// `None`: this node may announce; else why it must not.
    pub withdrawn_because: Option<String>,
    pub odd_one_out: Vec<String>,
    pub digests_differ: Vec<String>,
    /// Per VIP name: this node's digest of its ring inputs (equal on every node when all agree).
    pub digests: BTreeMap<String, String>,
    pub etcd_error: Option<String>,
}

pub struct Member {
    config: Cluster,
    sharing: Sharing,
    local: View,
    views: Vec<View>,
    effective: Option<BTreeMap<String, bool>>,
    etcd_ok_at: Option<Instant>,
    etcd_error: Option<String>,
    started: Instant,
    beats: HashMap<String, (Instant, bool)>,
    odd_since: Option<Instant>,
    digest_since: Option<Instant>,
    source: Source,
    withdraw: Option<String>,
    /// The runtime-changes document in force here, as shared.
    runtime: Option<Vec<u8>>,
    /// This node's own changes at start, shared if etcd has none yet.
    first_runtime: Option<Vec<u8>>,
    incoming_runtime: Option<Vec<u8>>,
    /// Ours, not yet confirmed written to etcd.
    pending: Option<Vec<u8>>,
    /// Whether this node holds one of the slots to be out.
    out_slot: bool,
}

impl Member {
    pub async fn start(
        config: &Cluster,
        own_runtime: Vec<u8>,
        reports: tokio::sync::mpsc::Sender<ClusterReport>,
    ) -> anyhow::Result<Self> {
        let local = View {
            node: config.node.clone(),
            up: BTreeMap::new(),
            digests: BTreeMap::new(),
            announcing: false,
            wants_out: false,
            came_up: BTreeMap::new(),
        };
        let sharing = share::start(config, local.clone(), reports).await?;
        info!(node = %config.node, etcd = ?config.etcd, "sharing health with the cluster");
        Ok(Self {
            config: config.clone(),
            sharing,
            local,
            views: Vec::new(),
            effective: None,
            etcd_ok_at: None,
            etcd_error: None,
            started: Instant::now(),
            beats: HashMap::new(),
            odd_since: None,
            digest_since: None,
            source: Source::Starting,
            withdraw: None,
            runtime: None,
            first_runtime: Some(own_runtime),
            incoming_runtime: None,
            pending: None,
            out_slot: false,
        })
    }

    /// The effective health the rings use; `None` = this node's own checks.
    pub fn effective(&self) -> Option<&BTreeMap<String, bool>> {
        match self.source {
            Source::Quorum | Source::LastQuorum => self.effective.as_ref(),
            Source::Starting | Source::LocalOnly => None,
        }
    }

    /// When backends came up, as the cluster agrees (Unix milliseconds).
    pub fn came_up(&self) -> BTreeMap<String, u64> {
        quorum::came_up(&self.views)
    }

    /// This node's own checks, when they came up, and its ring digests, as of the last apply.
    pub fn set_local(
        &mut self,
        up: BTreeMap<String, bool>,
        came_up: BTreeMap<String, u64>,
        digests: BTreeMap<String, String>,
    ) {
        self.local.up = up;
        self.local.came_up = came_up;
        self.local.digests = digests;
        self.publish_local();
    }

    /// Whether this node announces, as the announcer was last told.
    pub fn set_announcing(&mut self, announcing: bool) {
        if self.local.announcing != announcing {
            self.local.announcing = announcing;
            self.publish_local();
        }
    }

    fn publish_local(&self) {
        self.sharing.view.send_if_modified(|v| {
            let changed = *v != self.local;
            if changed {
                *v = self.local.clone();
            }
            changed
        });
    }

    /// The runtime changes this node now holds, for every node to take.
    pub fn share_runtime(&mut self, doc: Vec<u8>) {
        if self.runtime.as_ref() != Some(&doc) {
            self.runtime = Some(doc.clone());
            self.pending = Some(doc.clone());
            self.sharing.runtime.send_replace(Some(doc));
        }
    }

    /// Runtime changes another node made (taken only once this node's own
    /// writes are in etcd: an older read must not undo a newer change of ours).
    pub fn take_runtime(&mut self) -> Option<Vec<u8>> {
        self.incoming_runtime.take()
    }

    /// Takes a report in; true when the effective health changed (apply again).
    pub fn report(&mut self, report: ClusterReport, now: Instant) -> bool {
        match report {
            ClusterReport::Views { mut views, runtime, wrote, out_slot } => {
                self.out_slot = out_slot;
                if self.pending.is_some() && wrote == self.pending {
                    self.pending = None;
                }
                // Until our own change is in etcd, what etcd says is older than it.
                if self.pending.is_none() {
                    match runtime {
                        Some(doc) if Some(&doc) != self.runtime.as_ref() => {
                            self.runtime = Some(doc.clone());
                            self.incoming_runtime = Some(doc);
                        }
                        // First of the cluster: ours become everyone's.
                        None if self.runtime.is_none() => {
                            if let Some(doc) = self.first_runtime.take() {
                                self.share_runtime(doc);
                            }
                        }
                        _ => {}
                    }
                }
                if self.etcd_error.take().is_some() || self.etcd_ok_at.is_none() {
                    info!(nodes = views.len(), "etcd answers: health is shared by quorum");
                }
                self.etcd_ok_at = Some(now);
                // Our own entry may lag a round behind what we know now.
                views.retain(|v| v.node != self.local.node);
                views.push(self.local.clone());
                views.sort_by(|a, b| a.node.cmp(&b.node));
                self.views = views;
                let effective = quorum::effective(&self.views);
                let changed = self.effective.as_ref() != Some(&effective);
                self.effective = Some(effective);
                self.reconsider(now) || changed
            }
            ClusterReport::EtcdFailed(e) => {
                if self.etcd_error.as_ref() != Some(&e) {
                    warn!("etcd: {e}");
                }
                self.etcd_error = Some(e);
                self.reconsider(now)
            }
            ClusterReport::Beat { beat, .. } => {
                // Only configured peers get here; still, a name per peer is all there can be.
                if self.beats.len() < self.config.peers.len() || self.beats.contains_key(&beat.node) {
                    self.beats.insert(beat.node, (now, beat.etcd_ok));
                }
                false
            }
            // The loop takes flows itself: they go to the data plane.
            ClusterReport::Flows(_) => false,
        }
    }

    /// Time passing changes decisions too; true when the source of health changed.
    pub fn tick(&mut self, now: Instant) -> bool {
        self.reconsider(now)
    }

    fn etcd_ok(&self, now: Instant) -> bool {
        self.etcd_ok_at.is_some_and(|t| now.duration_since(t) < ETCD_LOST_AFTER)
    }

    /// Recomputes where health comes from and whether to withdraw.
    fn reconsider(&mut self, now: Instant) -> bool {
        let before = self.source;
        let nodes = self.config.peers.len() + 1;
        let heard: Vec<bool> = self
            .beats
            .values()
            .filter(|(at, _)| now.duration_since(*at) < BEAT_LOST_AFTER)
            .map(|&(_, ok)| ok)
            .collect();
        let reachable = heard.len() + 1;
        let withdraw = if self.etcd_ok(now) {
            self.source = Source::Quorum;
            self.quorum_decision(now)
        } else {
            let lost_since = self.etcd_ok_at.unwrap_or(self.started);
            let majority_heard = 2 * reachable > nodes;
            let others_ok = heard.iter().filter(|ok| **ok).count();
            // Reasons stay the same while the cause does: they are compared.
            let grace = crate::config::show_duration(self.config.quorum_grace);
            let past_grace = now.duration_since(lost_since) >= self.config.quorum_grace;
            if now.duration_since(lost_since) < ETCD_LOST_AFTER {
                // Just started: nobody has had a round with etcd yet.
                None
            } else if !majority_heard {
                // The minority side of a partition: the others go on without it.
                self.hold_last_quorum();
                past_grace.then(|| {
                    format!("cut off from etcd and from most peers for longer than quorum_grace ({grace})")
                })
            } else if others_ok == 0 {
                if self.source != Source::LocalOnly {
                    error!(
                        "etcd is down for every node that answers ({reachable} of {nodes}): rings follow this \
                         node's own checks until it returns; nodes may disagree meanwhile"
                    );
                }
                self.source = Source::LocalOnly;
                None
            } else if 2 * others_ok >= nodes {
                // etcd works for at least half of the nodes, not for this one.
                self.hold_last_quorum();
                past_grace.then(|| {
                    format!("cut off from etcd for longer than quorum_grace ({grace}) while peers reach it")
                })
            } else {
                // etcd answers too few nodes to tell who is cut off: a slow or
                // electing etcd, not this node's fault. Stay, on the last quorum.
                self.hold_last_quorum();
                None
            }
        };
        if withdraw != self.withdraw {
            match &withdraw {
                Some(why) => warn!("withdrawing this node's routes: {why}"),
                None => info!("this node may announce again"),
            }
            self.withdraw = withdraw;
        }
        self.source != before
    }

    fn hold_last_quorum(&mut self) {
        if self.effective.is_some() {
            self.source = Source::LastQuorum;
        }
    }

    fn quorum_decision(&mut self, now: Instant) -> Option<String> {
        let effective = self.effective.as_ref()?;
        let odd = quorum::odd_one_out(&self.local, effective);
        let odd_for = if odd.is_empty() {
            self.odd_since = None;
            Duration::ZERO
        } else {
            now.duration_since(*self.odd_since.get_or_insert(now))
        };
        let wants_out = odd_for >= self.config.odd_one_out_after;
        if self.local.wants_out != wants_out {
            self.local.wants_out = wants_out;
            self.publish_local();
        }
        let digests = quorum::check_digests(&self.views, &self.local);
        let differ_for = if digests.differs.is_empty() {
            self.digest_since = None;
            Duration::ZERO
        } else {
            now.duration_since(*self.digest_since.get_or_insert(now))
        };
        if differ_for >= self.config.odd_one_out_after {
            return Some(format!(
                "the rings of {} differ from the majority's for longer than odd_one_out_after ({})",
                digests.differs.join(", "),
                crate::config::show_duration(self.config.odd_one_out_after)
            ));
        }
        // Views may be a round old: two nodes could each think the other stays.
        // A slot claimed in etcd settles who goes; refused, staying is the
        // lesser evil (too few nodes would announce).
        let claim = (wants_out && quorum::may_withdraw(&self.views, &self.local.node))
            .then(|| quorum::out_slots(&self.views));
        self.sharing.claim.send_if_modified(|c| {
            let changed = *c != claim;
            *c = claim;
            changed
        });
        (claim.is_some() && self.out_slot)
            .then(|| format!("sees DOWN what the others use: {}", odd.join(", ")))
    }

    /// `None`: may announce; else why not.
    pub fn withdrawn_because(&self) -> Option<&str> {
        self.withdraw.as_deref()
    }

    pub fn status(&self, now: Instant) -> ClusterStatus {
        let effective = self.effective.clone().unwrap_or_default();
        ClusterStatus {
            enabled: true,
            node: self.local.node.clone(),
            source: Some(self.source),
            live_nodes: self.views.iter().map(|v| v.node.clone()).collect(),
            peers_heard: self
                .beats
                .iter()
                .filter(|(_, (at, _))| now.duration_since(*at) < BEAT_LOST_AFTER)
                .map(|(n, _)| n.clone())
                .collect(),
            withdrawn_because: self.withdraw.clone(),
            odd_one_out: quorum::odd_one_out(&self.local, &effective),
            digests_differ: quorum::check_digests(&self.views, &self.local).differs,
            digests: self.local.digests.clone(),
            etcd_error: self.etcd_error.clone(),
        }
    }

    /// Every view with its node's name, for the API.
    pub fn views(&self) -> &[View] {
        &self.views
    }
}
