//! A node failover after a ring change, on the cluster bed: 3 nodes with
//! `[cluster]` (etcd, `share_flows` on or off), streams opened before a
//! backend is added and after, the router switched to 5-tuple hashing so that
//! the ring model and `ip route get` tell which streams are on moved slots and
//! which change node, then the node carrying most of the post-change streams
//! on moved slots silenced. With shared flows no stream should break; without,
//! the streams opened after the change on moved slots that change node do.
//!
//! `tests/tests/cluster_failover.rs` asserts on the outcome,
//! `tests/benches/cluster.rs` counts the broken streams.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::{anyhow, ensure, Context as _, Result};
use lb_common::{sizes::DEFAULT_RING_SIZE, types::PROTO_TCP, DropReason, Event, FlowKey, Verdict};
use lb_userspace::{
    config::DEFAULT_HASH_SEED,
    maglev::{self, Member, NO_MEMBER},
};

use super::{backend_v4, client_v4, etcd_client_url, node_cluster_v4, node_of, vip, ClusterBed, VIP};
use crate::{agent::VipConf, traffic::Streams, wait::wait_until};

/// Streams in each group: opened before the ring change, and after it.
pub const GROUP: usize = 60;
/// Backends 0, 1, 2 at first; the ring change adds backend 3.
const BEFORE: [usize; 3] = [0, 1, 2];
const AFTER: [usize; 4] = [0, 1, 2, 3];
/// What an agent logs once the addresses of new backends are resolved and
/// their ring slots written (`lb-userspace/src/agent/state.rs`).
const NEIGHBOURS_RESOLVED: &str = "neighbours of new backends resolved, applied in";
/// Flows are shared every 250 ms: wait a few rounds before a node fails.
const SHARE_WAIT: Duration = Duration::from_millis(1500);
/// After the router has dropped a path: retransmissions settle, then
/// every stream makes round trips on its new path.
const AFTER_FAILOVER: Duration = Duration::from_secs(3);
const STREAM_PERIOD: Duration = Duration::from_millis(10);
/// How long the streams opened before the change may take for two round
/// trips after it (they take a few periods).
const OLD_TRIPS: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(5);
/// BGP sessions up and every path in the router's table.
const CONVERGE: Duration = Duration::from_secs(30);

/// Node N's `[cluster]` table: etcd on every node, heartbeats and shared
/// flows on the cluster segment.
pub fn cluster_toml(n: usize, nodes: usize, share_flows: bool) -> String {
    let quoted = |v: Vec<String>| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
    let etcd = quoted((1..=nodes).map(etcd_client_url).collect());
    let peers =
        quoted((1..=nodes).filter(|&m| m != n).map(|m| format!("{}:7947", node_cluster_v4(m))).collect());
    format!(
        "[cluster]\nnode = \"lb{n}\"\netcd = [{etcd}]\nlisten = \"{}:7947\"\npeers = [{peers}]\n\
         lease_ttl = \"2s\"\nshare_flows = {share_flows}\n",
        node_cluster_v4(n)
    )
}

/// A VIP's ring as every node builds it: slot -> bed backend index. The
/// cluster bed's backend addresses (not the held bed's), the default seed and
/// ring size, weight 1 each, every backend up (no checks).
struct ClusterRing(Vec<Option<usize>>);

impl ClusterRing {
    fn of(backends: &[usize]) -> Self {
        let members: Vec<Member> =
            backends.iter().map(|&i| Member { id: SocketAddr::new(backend_v4(i), 80), weight: 1 }).collect();
        let slots = maglev::build(&members, DEFAULT_RING_SIZE)
            .into_iter()
            .map(|m| (m != NO_MEMBER).then(|| backends[m as usize]))
            .collect();
        Self(slots)
    }

    fn owner(&self, local: SocketAddr) -> Option<usize> {
        let flow = FlowKey::new(local.ip(), local.port(), vip(80).ip(), 80, PROTO_TCP);
        self.0[(flow.hash(DEFAULT_HASH_SEED) % DEFAULT_RING_SIZE) as usize]
    }
}

/// Node N's config with backend 3 added to the VIP (the bed's config has
/// backends 0..3): the VIP's backend tables end where `[bgp]` begins.
fn with_backend_3(bed: &ClusterBed, n: usize) -> Result<String> {
    let config = bed.node_config(n);
    let backend = format!(
        "  [[vip.backend]]\n  name = \"{}\"\n  address = \"{}\"\n  weight = 1\n  backup = false\n\n[bgp]\n",
        bed.bed().backend_name(3),
        backend_v4(3)
    );
    ensure!(config.matches("\n[bgp]\n").count() == 1, "one [bgp] table in\n{config}");
    Ok(config.replacen("\n[bgp]\n", &format!("\n{backend}"), 1))
}

/// Makes the router's ECMP a function of the 5-tuple alone, so that
/// `ip route get` predicts it. The bed's `fib_multipath_hash_policy = 1`
/// takes a packet's L4 hash as it is when the skb already has one, and over
/// veth a client's packets arrive with their socket's random `sk_txhash`
/// (which TCP also re-rolls on a retransmission timeout): the path then
/// depends on neither ports nor addresses. Policy 3 with the five fields
/// always hashes the headers, as a real router does.
fn hash_the_five_tuple(bed: &ClusterBed) -> Result<()> {
    let set = |kv: &str| bed.router_ns().exec("sysctl", &["-qw", kv]).with_context(|| kv.to_string());
    // source and destination address, protocol, source and destination port
    set("net.ipv4.fib_multipath_hash_fields=0x37")?;
    set("net.ipv4.fib_multipath_hash_policy=3")?;
    Ok(())
}

/// The node the router's ECMP sends a client 0 flow from `local` to (the
/// kernel's own multipath hash, asked with `ip route get` on the 5-tuple).
fn ecmp_node(bed: &ClusterBed, local: SocketAddr) -> Result<usize> {
    let (sport, vip) = (local.port().to_string(), VIP.to_string());
    let from = client_v4(0).to_string();
    let args = [
        "route", "get", &vip, "from", &from, "iif", "clients", "ipproto", "tcp", "sport", &sport, "dport",
        "80",
    ];
    let out = bed.router_ns().ip(&args).context("ip route get")?;
    let words: Vec<&str> = out.split_whitespace().collect();
    let hop = words.windows(2).find(|w| w[0] == "via").map(|w| w[1]);
    hop.and_then(|h| node_of(h.parse().ok()?)).ok_or_else(|| anyhow!("no node in {out:?}"))
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// One stream of the failover scenario.
#[derive(Clone, Debug)]
pub struct Tracked {
    /// Opened after the ring change.
    pub after_change: bool,
    pub local: SocketAddr,
    pub backend: String,
    /// The ring change gave its slot another owner.
    pub moved: bool,
    /// The node ECMP sent it to before the failover, and after it.
    pub node: usize,
    pub node_after: usize,
    /// Round trips done when the node went silent, and in all.
    pub trips_at_silence: u64,
    pub trips: u64,
    pub error: Option<String>,
}

impl Tracked {
    /// Only a stream opened after the change, on a moved slot, that changed
    /// node needs a shared flow: its new node has no entry, takes its next
    /// packet (not a SYN) for a flow older than the change and sends it to
    /// the slot's prior owner, which resets it. Streams opened before the
    /// change are kept by the prior-owner rule, on any node.
    pub fn needs_sharing(&self) -> bool {
        self.after_change && self.moved && self.node != self.node_after
    }

    pub fn broke(&self) -> bool {
        self.error.is_some()
    }

    pub fn describe(&self) -> String {
        format!(
            "{} stream {} on {} ({} slot), lb{} -> lb{}: {} round trips after the silencing{}",
            if self.after_change { "new" } else { "old" },
            self.local,
            self.backend,
            if self.moved { "moved" } else { "unmoved" },
            self.node,
            self.node_after,
            self.trips - self.trips_at_silence,
            self.error.as_ref().map(|e| format!(", broke: {e}")).unwrap_or_default()
        )
    }
}

/// One group of streams (opened before the ring change, or after it), counted.
#[derive(Clone, Debug, Default)]
pub struct GroupCounts {
    pub streams: usize,
    /// On slots the ring change gave another owner.
    pub moved: usize,
    /// Carried by the silenced node (before the failover), and of those on
    /// moved slots.
    pub carried: usize,
    pub carried_moved: usize,
    /// Sent to another node after the failover, and of those on moved slots.
    pub changed_node: usize,
    pub changed_node_moved: usize,
    /// Broken, and of those on moved slots.
    pub broken: usize,
    pub broken_moved: usize,
}

/// How long the steps of one run took.
#[derive(Clone, Debug, Default)]
pub struct RingChangeTimings {
    /// From the bed being up until the router had a path via every node.
    pub paths_up: Duration,
    /// From the ring change's start until each node's reload was applied.
    pub reloads: Vec<Duration>,
    /// From the ring change's start until every node had written its new ring.
    pub rings_written: Duration,
    /// From the ring change's start until the node was silenced.
    pub silenced_after_change: Duration,
    /// From the silencing until the router had dropped the node's path.
    pub path_dropped: Duration,
    /// The whole run, the bed's start included.
    pub total: Duration,
}

/// What one failover run saw.
#[derive(Clone, Debug)]
pub struct RingChangeOutcome {
    pub share_flows: bool,
    /// The node silenced: the one carrying the most streams opened after the
    /// change on moved slots.
    pub silenced: usize,
    /// The router's paths for the VIP after the failover.
    pub paths_after: Vec<usize>,
    /// Every stream, those opened before the change first.
    pub streams: Vec<Tracked>,
    /// Per group: `[opened before the change, opened after it]`.
    pub groups: [GroupCounts; 2],
    /// Streams that needed a shared flow ([`Tracked::needs_sharing`]), and
    /// how many of them broke.
    pub needed_sharing: usize,
    pub broken_needing_sharing: usize,
    /// Broken streams, in all.
    pub broken: usize,
    pub timings: RingChangeTimings,
    /// The run in one paragraph (what [`Self::describe`] starts with).
    pub summary: String,
    /// The bed's logs, taken at the end of the run.
    pub logs: String,
}

impl RingChangeOutcome {
    pub fn count(&self, f: impl Fn(&Tracked) -> bool) -> usize {
        self.streams.iter().filter(|t| f(t)).count()
    }

    /// Per group: how many streams the silenced node carried (on moved
    /// slots), how many changed node (on moved slots), how many broke.
    pub fn describe(&self) -> String {
        let mut out = format!("{}\n", self.summary);
        for (g, name) in
            [(&self.groups[0], "opened before the change"), (&self.groups[1], "opened after the change")]
        {
            out.push_str(&format!(
                "{} streams {name}: {} on moved slots; lb{} carried {} ({} on moved slots); {} changed \
                 node ({} on moved slots); {} broke ({} on moved slots)\n",
                g.streams,
                g.moved,
                self.silenced,
                g.carried,
                g.carried_moved,
                g.changed_node,
                g.changed_node_moved,
                g.broken,
                g.broken_moved,
            ));
        }
        for t in self.streams.iter().filter(|t| t.broke()) {
            out.push_str(&format!("  {}\n", t.describe()));
        }
        out
    }
}

/// An error with the bed's logs.
fn logged(bed: &ClusterBed, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e:#}\n{}", bed.logs())
}

/// Opens `GROUP` streams, checks the ring model against their banners (each
/// on its slot's owner in `ring`; `prior`, the ring before the change, for the
/// message) and the ECMP model against the nodes' new-flow counters. The
/// node each stream went to, by the router's `ip route get`.
fn open_group(
    bed: &ClusterBed,
    ring: &ClusterRing,
    prior: &ClusterRing,
    what: &str,
) -> Result<(Streams, Vec<usize>)> {
    let before = bed.new_flows(80).map_err(|e| logged(bed, e))?;
    let streams = Streams::open(bed.bed(), 0, vip(80), GROUP, STREAM_PERIOD)
        .map_err(|e| logged(bed, format!("opening {GROUP} streams {what}: {e}")))?;
    let per_node: Vec<u64> =
        bed.new_flows(80).map_err(|e| logged(bed, e))?.iter().zip(&before).map(|(a, b)| a - b).collect();
    let nodes = streams
        .local_addrs()
        .iter()
        .map(|l| ecmp_node(bed, *l))
        .collect::<Result<Vec<usize>>>()
        .map_err(|e| logged(bed, e))?;
    let predicted: Vec<u64> =
        (1..=bed.nodes()).map(|n| nodes.iter().filter(|&&m| m == n).count() as u64).collect();
    let name = |r: &ClusterRing, local| bed.bed().backend_name(r.owner(local).expect("a full ring"));
    let mut wrong = Vec::new();
    for ((&local, backend), node) in streams.local_addrs().iter().zip(streams.backends()).zip(&nodes) {
        let (owner, prior) = (name(ring, local), name(prior, local));
        if *backend != owner {
            wrong.push(format!(
                "{local} via lb{node}: on {backend}, its slot's owner {owner} (before the change {prior})"
            ));
        }
    }
    // Else what the model says about moved slots means nothing.
    if !wrong.is_empty() {
        return Err(anyhow!(
            "{} of {GROUP} streams {what} are not on their slot's owner: {wrong:#?}\nnodes' counters:\n{}\n{}",
            wrong.len(),
            node_counters(bed),
            bed.logs()
        ));
    }
    if per_node != predicted {
        return Err(anyhow!(
            "the nodes counted new flows {per_node:?} for the {GROUP} streams {what}, the router's `ip route \
             get` predicted {predicted:?}\nnodes' counters:\n{}\n{}",
            node_counters(bed),
            bed.logs()
        ));
    }
    Ok((streams, nodes))
}

/// Every node's non-zero data-plane counters, a line each.
fn node_counters(bed: &ClusterBed) -> String {
    (1..=bed.nodes())
        .map(|n| {
            let counters = match bed.stats(n).and_then(|s| Ok(s.counters()?)) {
                Ok(c) => c,
                Err(e) => return format!("lb{n}: {e:#}"),
            };
            let verdicts = Verdict::ALL.iter().map(|v| (v.name(), counters.verdict(*v)));
            let drops = DropReason::ALL.iter().map(|r| (r.name(), counters.drop(*r)));
            let events = Event::ALL.iter().map(|e| (e.name(), counters.event(*e)));
            let all: Vec<String> = verdicts
                .chain(drops)
                .chain(events)
                .filter(|(_, n)| *n != 0)
                .map(|(name, n)| format!("{name} {n}"))
                .collect();
            format!("lb{n}: {}", all.join(", "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// 3 nodes with `[cluster]` (etcd, `share_flows`), backends 0..3: 60 streams,
/// the ring change (backend 3 added on every node), 60 more streams, a
/// wait for the flows to be shared, then the node that carries the most new
/// streams on moved slots goes silent. About 12 s.
///
/// An error means the scenario could not be run as meant (the bed, the ring
/// or ECMP model, the router keeping the silenced node's path); it carries the
/// bed's logs when there was a bed. Broken streams are no error: they are the
/// outcome.
pub fn failover_after_ring_change(share_flows: bool) -> Result<RingChangeOutcome> {
    let started = Instant::now();
    let bed = ClusterBed::builder()
        .nodes(3)
        .backends(4)
        .vip(VipConf::new(VIP, 80, "tcp").backends(BEFORE))
        .etcd(true)
        .node_toml(move |n| cluster_toml(n, 3, share_flows))
        .build()
        .context("cluster bed")?;
    let up = bed
        .wait_router_nodes(vip(80).ip(), &[1, 2, 3], CONVERGE)
        .map_err(|e| logged(&bed, e.context("three paths")))?;
    hash_the_five_tuple(&bed).map_err(|e| logged(&bed, e))?;
    let (ring_before, ring_after) = (ClusterRing::of(&BEFORE), ClusterRing::of(&AFTER));

    let (old, old_nodes) = open_group(&bed, &ring_before, &ring_before, "before the change")?;
    std::thread::sleep(Duration::from_millis(500));
    // A reload that adds a backend applies in two steps: `reloaded config
    // applied` (what `reload_agent` waits for) before the new backend's
    // neighbour is resolved, and only then the ring, logged as
    // NEIGHBOURS_RESOLVED. A stream opened in between is not "after the change".
    let resolved = |n| bed.agent_log(n).matches(NEIGHBOURS_RESOLVED).count();
    let resolved_before: Vec<usize> = (1..=bed.nodes()).map(resolved).collect();
    let change = Instant::now();
    let mut reloads = Vec::new();
    for n in 1..=bed.nodes() {
        let config = with_backend_3(&bed, n)?;
        bed.reload_agent(n, &config).map_err(|e| logged(&bed, e.context(format!("reloading lb{n}"))))?;
        reloads.push(change.elapsed());
    }
    for n in 1..=bed.nodes() {
        let what = format!("lb{n}'s agent to write the new ring ({NEIGHBOURS_RESOLVED:?})");
        let written = wait_until(&what, Duration::from_secs(5), POLL, || {
            (resolved(n) > resolved_before[n - 1]).then_some(())
        });
        written.map_err(|e| logged(&bed, e))?;
    }
    let rings_written = change.elapsed();
    // A stream opened before the change on a moved slot has no entry on its
    // node (its slot was settled): its first packet on the new ring misses,
    // goes to the prior owner and counts as a new flow. Every such stream
    // sends within a period of the ring being written, but the last node's
    // ring is written just before the next group's counters are read: wait
    // for a round trip of every old stream sent after now (its count up by
    // two), else those late counts land in the next group's. A stream that
    // broke makes none: the outcome shows it, so the wait is not an error.
    let trips = old.round_trips_so_far();
    let _ = wait_until("a round trip of every old stream on the new rings", OLD_TRIPS, POLL, || {
        old.round_trips_so_far().iter().zip(&trips).all(|(now, then)| *now >= then + 2).then_some(())
    });
    let (new, new_nodes) = open_group(&bed, &ring_after, &ring_before, "after the change")?;
    if !new.backends().contains(&bed.bed().backend_name(3)) {
        return Err(logged(
            &bed,
            format!("no new stream reached backend3 after the change: {:?}", new.backends()),
        ));
    }
    std::thread::sleep(SHARE_WAIT);

    // The node that carries the most new streams on moved slots: those are
    // the ones only a shared flow can keep.
    let mut at_risk = BTreeMap::<usize, usize>::new();
    for (i, local) in new.local_addrs().iter().enumerate() {
        if ring_before.owner(*local) != ring_after.owner(*local) {
            *at_risk.entry(new_nodes[i]).or_default() += 1;
        }
    }
    let silenced =
        (1..=bed.nodes()).max_by_key(|n| (at_risk.get(n).copied().unwrap_or(0), *n)).expect("nodes");
    let survivors: Vec<usize> = (1..=bed.nodes()).filter(|&n| n != silenced).collect();
    let trips_at_silence = [old.round_trips_so_far(), new.round_trips_so_far()];
    let silenced_at = Instant::now();
    bed.silence(silenced).map_err(|e| logged(&bed, e.context(format!("silencing lb{silenced}"))))?;
    let dropped = bed.wait_router_nodes(vip(80).ip(), &survivors, Duration::from_secs(10));
    std::thread::sleep(AFTER_FAILOVER);
    let paths_after = bed.router_nodes(vip(80).ip()).map_err(|e| logged(&bed, e.context("route")))?;

    let locals = [old.local_addrs().to_vec(), new.local_addrs().to_vec()];
    let stopped = [old.stop(), new.stop()];
    let mut streams = Vec::new();
    for (g, nodes) in [old_nodes, new_nodes].iter().enumerate() {
        for (i, s) in stopped[g].streams.iter().enumerate() {
            let local = locals[g][i];
            streams.push(Tracked {
                after_change: g == 1,
                local,
                backend: s.backend.clone(),
                moved: ring_before.owner(local) != ring_after.owner(local),
                node: nodes[i],
                node_after: ecmp_node(&bed, local).map_err(|e| logged(&bed, e))?,
                trips_at_silence: trips_at_silence[g][i],
                trips: s.round_trips,
                error: s.error.clone(),
            });
        }
    }
    let summary = format!(
        "share_flows = {share_flows}: three paths {} after the bed was up; the ring change (backend3 \
         added) reloaded lb1..lb3 after {}, every ring written after {}; lb{silenced} silenced {} after \
         the change, the router dropped its path after {} (paths then {paths_after:?}); the run took {}",
        ms(up),
        reloads.iter().map(|d| ms(*d)).collect::<Vec<_>>().join(", "),
        ms(rings_written),
        ms(silenced_at - change),
        dropped.as_ref().map(|d| ms(*d)).unwrap_or_else(|e| format!("never ({e:#})")),
        ms(started.elapsed()),
    );
    let path_dropped = dropped
        .map_err(|e| logged(&bed, format!("the router kept lb{silenced}'s path: {e:#}\n{summary}")))?;

    let count = |f: &dyn Fn(&Tracked) -> bool| streams.iter().filter(|t| f(t)).count();
    let groups = [false, true].map(|after| {
        let g = |f: &dyn Fn(&Tracked) -> bool| count(&|t| t.after_change == after && f(t));
        GroupCounts {
            streams: g(&|_| true),
            moved: g(&|t| t.moved),
            carried: g(&|t| t.node == silenced),
            carried_moved: g(&|t| t.node == silenced && t.moved),
            changed_node: g(&|t| t.node != t.node_after),
            changed_node_moved: g(&|t| t.node != t.node_after && t.moved),
            broken: g(&|t| t.broke()),
            broken_moved: g(&|t| t.broke() && t.moved),
        }
    });
    let needed_sharing = count(&Tracked::needs_sharing);
    let broken_needing_sharing = count(&|t| t.needs_sharing() && t.broke());
    let broken = count(&Tracked::broke);
    let timings = RingChangeTimings {
        paths_up: up,
        reloads,
        rings_written,
        silenced_after_change: silenced_at - change,
        path_dropped,
        total: started.elapsed(),
    };
    Ok(RingChangeOutcome {
        share_flows,
        silenced,
        paths_after,
        groups,
        needed_sharing,
        broken_needing_sharing,
        broken,
        timings,
        summary,
        logs: bed.logs(),
        streams,
    })
}
