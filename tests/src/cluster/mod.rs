//! The cluster bed: several LB nodes behind a router that spreads VIP traffic
//! over them by ECMP, the paths learned over real BGP (BIRD, BFD on).
//!
//! ```text
//!  client i (eth0) ──c<i>── [clients bridge] router (eth0) ──rt──┐
//!                           BIRD, kernel multipath,              │ front (bridge namespace)
//!                           L4 hash, forwarding                  │
//!  node N   (eth0) ──lb<N>───────────────────────────────────────┤   xdp_pass on lb<N>
//!  backend i(eth0) ──b<i>────────────────────────────────────────┘
//!  node N   (eth1) ──lb<N>── cluster (bridge namespace): etcd, node to node
//! ```
//!
//! Addresses ([`plan`]): front 10.77.160.0/24 (router .1, node N .10+N,
//! backend i .100+i), clients 10.77.161.0/24 (router .1, client i .10+i),
//! cluster 10.77.162.0/24 (node N .10+N), VIPs in 10.77.163.0/24. Nodes are
//! numbered from 1, backends and clients from 0. Clients and backends route
//! everything via the router; backends hold the VIPs on `lo` and answer
//! clients directly (DSR). Nodes have no route for a VIP: their agent's XDP
//! program takes VIP traffic, and BIRD only announces.
//!
//! The clients and backends are those of a [`TestBed`] the cluster bed holds
//! ([`ClusterBed::bed`]), their `eth0` moved from the bed's own segment to
//! this one. So the bed's turn (one bed at a time per process), its temp and
//! pin directories, the backends' test servers, and the traffic helpers
//! ([`crate::traffic::Streams`], [`crate::traffic::Opener`],
//! [`TestBed::tcp_connect`]…) all work as on a single-LB bed. The held bed's
//! own LB namespace, bridge and address plan are unused: use this module's.
//!
//! Each node runs `alwayson run` with a config the bed writes
//! ([`ClusterBed::node_config`]: per-node pins, lock file, API socket) and
//! BIRD with either the config the agent writes from its `[bgp]` section
//! ([`Announcer::Agent`]) or a static one from the bed ([`Announcer::Bed`]).
//! Optionally an etcd member per node on the cluster segment, and with it a
//! `[cluster]` section per node ([`ClusterBedBuilder::cluster`]: shared
//! health by quorum, heartbeats on the cluster segment, short timers).
//!
//! Everything is torn down on drop, also when the test panics: agents, BIRDs,
//! etcds and whatever else still runs in a node's namespace killed, the
//! namespaces (and with them every veth and bridge) deleted, then the held
//! bed's namespaces, temp and pin directories.

mod bird;
mod plan;
pub mod ring_change;

use std::{
    collections::BTreeSet,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::ExitStatus,
    sync::{Mutex, MutexGuard, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::programs::XdpMode;
use lb_common::{types::PROTO_TCP, TrafficStats, VipKey};
use lb_userspace::dataplane::{Baseline, PinnedStats};

use self::{
    bird::read_log,
    plan::{mac, peer_mac, Kind, CLIENTS, CLUSTER, FRONT},
};
pub use self::{
    bird::{birdc, router_config, static_node_config, BirdFiles, BFD_INTERVAL_MS, BFD_MULTIPLIER},
    plan::*,
};
use crate::{
    agent::{VipConf, APPLIED, RELOADED, WEB_LISTEN},
    bed::TestBed,
    fixture::mac_str,
    http::Client,
    netns::Netns,
    process::{bin_path, Process},
    run,
    traffic::Streams,
    wait::{try_wait_until, wait_until},
};

/// How long an agent may take to apply its first config.
const AGENT_STARTUP: Duration = Duration::from_secs(15);
/// How long an agent may take to write its BIRD config after applying.
const BIRD_CONFIG_WRITTEN: Duration = Duration::from_secs(15);
/// How long a clean stop may take (drain included).
const AGENT_STOP: Duration = Duration::from_secs(15);
const ETCD: &str = "/usr/bin/etcd";
const ETCD_READY: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(10);
/// How long a request to an agent's API may take.
const API_TIMEOUT: Duration = Duration::from_secs(3);

/// Who writes a node's BIRD config.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Announcer {
    /// The agent, from the `[bgp]` section the bed adds to its config; the bed
    /// starts BIRD once the file exists.
    Agent,
    /// The bed: every VIP as a static blackhole route, announced whatever the
    /// agent does (to test the router side without the agent's BGP).
    Bed,
}

/// The `[bgp]` timings the bed writes (see the agent's `[bgp]` documentation).
#[derive(Clone, Debug)]
pub struct BgpTimes {
    pub grace_time: &'static str,
    pub drain_time: &'static str,
}

impl Default for BgpTimes {
    fn default() -> Self {
        Self { grace_time: "2s", drain_time: "1s" }
    }
}

/// The `[cluster]` timings the bed writes with [`ClusterBedBuilder::cluster`]
/// (see the agent's `[cluster]` documentation); short, for tests.
#[derive(Clone, Copy, Debug)]
pub struct ClusterTimes {
    pub lease_ttl: Duration,
    pub quorum_grace: Duration,
    pub odd_one_out_after: Duration,
}

impl Default for ClusterTimes {
    fn default() -> Self {
        Self {
            lease_ttl: Duration::from_secs(2),
            quorum_grace: Duration::from_secs(3),
            odd_one_out_after: Duration::from_secs(2),
        }
    }
}

/// A duration as the agent's config writes it (`"2s"`, `"1500ms"`).
fn toml_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

type NodeToml = Box<dyn Fn(usize) -> String + Send + Sync>;

pub struct ClusterBedBuilder {
    nodes: usize,
    backends: usize,
    clients: usize,
    vips: Vec<VipConf>,
    announcer: Announcer,
    times: BgpTimes,
    etcd: bool,
    cluster: Option<ClusterTimes>,
    agents: bool,
    node_toml: Option<NodeToml>,
}

impl ClusterBedBuilder {
    /// LB nodes (default 3).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Backends with their test servers (default 3).
    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n;
        self
    }

    /// Adds a VIP of every node's config (its backends by bed index). None
    /// given: [`VIP`]:80/tcp on every backend.
    pub fn vip(mut self, vip: VipConf) -> Self {
        self.vips.push(vip);
        self
    }

    /// Who writes the nodes' BIRD configs (default: the agent).
    pub fn announcer(mut self, announcer: Announcer) -> Self {
        self.announcer = announcer;
        self
    }

    pub fn bgp_times(mut self, times: BgpTimes) -> Self {
        self.times = times;
        self
    }

    /// An etcd member per node on the cluster segment, started before the
    /// agents (default: none).
    pub fn etcd(mut self, on: bool) -> Self {
        self.etcd = on;
        self
    }

    /// A `[cluster]` section in every node's config: the node's name `lb<N>`,
    /// every etcd member, heartbeats on its `eth1` to the other nodes, the
    /// timers of [`ClusterTimes`] (set them with [`Self::cluster_times`]).
    /// Implies [`Self::etcd`] (default: off).
    pub fn cluster(mut self, on: bool) -> Self {
        self.cluster = on.then(|| self.cluster.unwrap_or_default());
        self.etcd |= on;
        self
    }

    /// Other `[cluster]` timers; implies [`Self::cluster`].
    pub fn cluster_times(self, times: ClusterTimes) -> Self {
        let mut this = self.cluster(true);
        this.cluster = Some(times);
        this
    }

    /// Whether `build()` starts the agents (and BIRD on the nodes); default yes.
    pub fn start_agents(mut self, on: bool) -> Self {
        self.agents = on;
        self
    }

    /// More TOML for node N's config, appended after everything the bed
    /// writes (a `[cluster]` table, say). Called with the node's number.
    pub fn node_toml(mut self, f: impl Fn(usize) -> String + Send + Sync + 'static) -> Self {
        self.node_toml = Some(Box::new(f));
        self
    }

    pub fn build(self) -> Result<ClusterBed> {
        ensure!((1..=80).contains(&self.nodes), "1 to 80 nodes");
        ensure!(self.backends <= 150 && self.clients <= 200, "at most 150 backends and 200 clients");
        let vips = if self.vips.is_empty() {
            vec![VipConf::new(VIP, 80, "tcp").backends(0..self.backends)]
        } else {
            self.vips
        };
        for vip in &vips {
            ensure!(vip.address.is_ipv4(), "VIP {}: the cluster bed is IPv4 only for now", vip.address);
            ensure!(
                vip.backends.iter().all(|b| b.index < self.backends),
                "VIP {}: no such backend",
                vip.address
            );
        }
        let addresses: BTreeSet<IpAddr> = vips.iter().map(|v| v.address).collect();
        // The held bed: the turn, the directories, clients and backends (servers
        // started, VIPs on lo, ARP sysctls), rewired below.
        let mut held = TestBed::builder().clients(self.clients).backends(self.backends);
        for addr in &addresses {
            held = held.vip(&addr.to_string());
        }
        let bed = held.build()?;

        let mut cluster = ClusterBed {
            router_bird: Mutex::new(None),
            nodes: Vec::new(),
            xdp: None,
            router: None,
            front: None,
            cluster: None,
            vips,
            announcer: self.announcer,
            times: self.times,
            etcd: self.etcd,
            cluster_times: self.cluster,
            node_toml: self.node_toml,
            bed,
        };
        // From here on a failure drops the partial bed, which cleans up.
        cluster.router = Some(Netns::new("router")?);
        cluster.front = Some(Netns::new("front")?);
        cluster.cluster = Some(Netns::new("cluster")?);
        for n in 1..=self.nodes {
            let ns = Netns::new(&format!("lb{n}"))?;
            let dir = cluster.bed.temp_dir().join(format!("lb{n}"));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            cluster.nodes.push(Node {
                ns,
                dir,
                agent: Mutex::new(None),
                bird: Mutex::new(None),
                etcd: Mutex::new(None),
            });
        }
        cluster.wire()?;
        cluster.start_router()?;
        if cluster.etcd {
            cluster.start_etcd()?;
        }
        if self.agents {
            for n in 1..=self.nodes {
                cluster.start_agent(n)?;
            }
        }
        Ok(cluster)
    }
}

struct Node {
    ns: Netns,
    /// `<temp_dir>/lb<N>`: config, logs, sockets, BIRD's and etcd's files.
    dir: PathBuf,
    agent: Mutex<Option<Process>>,
    bird: Mutex<Option<Process>>,
    etcd: Mutex<Option<Process>>,
}

/// See the module documentation.
pub struct ClusterBed {
    router_bird: Mutex<Option<Process>>,
    nodes: Vec<Node>,
    xdp: Option<Baseline>,
    router: Option<Netns>,
    front: Option<Netns>,
    cluster: Option<Netns>,
    vips: Vec<VipConf>,
    announcer: Announcer,
    times: BgpTimes,
    etcd: bool,
    cluster_times: Option<ClusterTimes>,
    node_toml: Option<NodeToml>,
    /// Dropped last (its turn with it): the next bed starts once this one is gone.
    bed: TestBed,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Several sysctls in one `sysctl` run.
fn sysctls(ns: &Netns, pairs: &[(&str, &str)]) -> Result<()> {
    let args: Vec<String> =
        std::iter::once("-qw".to_string()).chain(pairs.iter().map(|(k, v)| format!("{k}={v}"))).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.exec("sysctl", &args).map(drop)
}

/// A bridge `name` in `ns`: no STP, no forward delay, no netfilter.
fn bridge(ns: &Netns, name: &str) -> Result<()> {
    ns.ip(&[
        "link",
        "add",
        name,
        "type",
        "bridge",
        "stp_state",
        "0",
        "forward_delay",
        "0",
        "mcast_snooping",
        "0",
    ])?;
    ns.ip(&["link", "set", name, "up"])?;
    for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"] {
        let key = format!("net.bridge.{key}");
        if ns.exec("sysctl", &["-n", &key]).is_ok() {
            ns.sysctl(&key, "0")?;
        }
    }
    Ok(())
}

/// A veth pair: `port` in `host`, on bridge `bridge` and up; `ifname` in `ns`
/// with `cidr`, up, transmit checksums done in software (XDP rewrites frames
/// on the way: a checksum left to the "hardware" would never be filled in).
#[allow(clippy::too_many_arguments)]
fn plug(
    host: &Netns,
    bridge: &str,
    port: &str,
    ns: &Netns,
    ifname: &str,
    macs: ([u8; 6], [u8; 6]),
    cidr: &str,
) -> Result<()> {
    let (inner, outer) = macs;
    host.ip(&[
        "link",
        "add",
        port,
        "address",
        &mac_str(outer),
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "address",
        &mac_str(inner),
        "netns",
        ns.name(),
    ])?;
    host.ip(&["link", "set", port, "master", bridge, "up"])?;
    ns.ip(&["addr", "add", cidr, "dev", ifname])?;
    ns.ip(&["link", "set", ifname, "up"])?;
    ns.exec("ethtool", &["-K", ifname, "tx", "off"]).map(drop)
}

impl ClusterBed {
    pub fn builder() -> ClusterBedBuilder {
        ClusterBedBuilder {
            nodes: 3,
            backends: 3,
            clients: 1,
            vips: Vec::new(),
            announcer: Announcer::Agent,
            times: BgpTimes::default(),
            etcd: false,
            cluster: None,
            agents: true,
            node_toml: None,
        }
    }

    fn wire(&mut self) -> Result<()> {
        let (router, front, cluster) = (self.router_ns(), self.front_ns(), self.cluster_ns());
        bridge(front, "br0")?;
        bridge(cluster, "br0")?;
        bridge(router, "clients")?;
        router.ip(&["addr", "add", &format!("{}/24", router_client_v4()), "dev", "clients"])?;
        sysctls(
            router,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.fib_multipath_hash_policy", "1"),
                ("net.ipv4.conf.all.rp_filter", "0"),
                ("net.ipv4.conf.default.rp_filter", "0"),
                ("net.ipv4.conf.all.send_redirects", "0"),
                ("net.ipv4.conf.default.send_redirects", "0"),
            ],
        )?;
        let macs = |segment, kind, i| (mac(segment, kind, i), peer_mac(segment, kind, i));
        plug(
            front,
            "br0",
            "rt",
            router,
            "eth0",
            macs(FRONT, Kind::Router, 1),
            &format!("{}/24", router_v4()),
        )?;

        for (i, node) in self.nodes.iter().enumerate() {
            let n = i + 1;
            let port = format!("lb{n}");
            plug(
                front,
                "br0",
                &port,
                &node.ns,
                "eth0",
                macs(FRONT, Kind::Node, n),
                &format!("{}/24", node_v4(n)),
            )?;
            let cidr = format!("{}/24", node_cluster_v4(n));
            plug(cluster, "br0", &port, &node.ns, "eth1", macs(CLUSTER, Kind::Node, n), &cidr)?;
        }

        // The held bed's clients and backends: their eth0 (and its routes) go,
        // a new eth0 on this bed's segments comes. Their sysctls stay: the
        // backends' `all` ARP and rp_filter settings cover the new eth0 too.
        for i in 0..self.bed.backends() {
            let ns = self.bed.backend_ns(i);
            ns.ip(&["link", "del", "eth0"])?;
            let cidr = format!("{}/24", backend_v4(i));
            plug(front, "br0", &format!("b{i}"), ns, "eth0", macs(FRONT, Kind::Backend, i), &cidr)?;
            ns.ip(&["route", "add", "default", "via", &router_v4().to_string(), "dev", "eth0"])?;
        }
        for i in 0..self.bed.clients() {
            let ns = self.bed.client_ns(i);
            ns.ip(&["link", "del", "eth0"])?;
            let cidr = format!("{}/24", client_v4(i));
            plug(router, "clients", &format!("c{i}"), ns, "eth0", macs(CLIENTS, Kind::Client, i), &cidr)?;
            ns.ip(&["route", "add", "default", "via", &router_client_v4().to_string(), "dev", "eth0"])?;
        }

        // XDP_TX from a node's eth0 is delivered only if its peer runs XDP.
        let mut baseline = Baseline::load().context("loading the baseline XDP programs")?;
        let ports: Vec<String> = (1..=self.nodes.len()).map(|n| format!("lb{n}")).collect();
        front.run(|| -> Result<()> {
            let pass = baseline.program_mut(Baseline::PASS)?;
            for port in &ports {
                pass.attach(port, XdpMode::default()).with_context(|| format!("xdp_pass on {port}"))?;
            }
            Ok(())
        })?;
        self.xdp = Some(baseline);
        Ok(())
    }

    // ---------------------------------------------------------------- access

    /// The held single-LB bed: clients, backends and their servers, temp and
    /// pin directories; pass it to [`crate::traffic::Streams::open`] and
    /// [`crate::traffic::Opener::start`]. Its LB namespace is unused.
    pub fn bed(&self) -> &TestBed {
        &self.bed
    }

    pub fn nodes(&self) -> usize {
        self.nodes.len()
    }

    fn node(&self, n: usize) -> &Node {
        assert!((1..=self.nodes.len()).contains(&n), "no node {n}: nodes are 1..={}", self.nodes.len());
        &self.nodes[n - 1]
    }

    pub fn node_ns(&self, n: usize) -> &Netns {
        &self.node(n).ns
    }

    pub fn router_ns(&self) -> &Netns {
        self.router.as_ref().expect("router namespace")
    }

    /// The front segment's bridge namespace (ports `rt`, `lb<N>`, `b<i>`).
    pub fn front_ns(&self) -> &Netns {
        self.front.as_ref().expect("front namespace")
    }

    /// The cluster segment's bridge namespace (ports `lb<N>`).
    pub fn cluster_ns(&self) -> &Netns {
        self.cluster.as_ref().expect("cluster namespace")
    }

    pub fn vips(&self) -> &[VipConf] {
        &self.vips
    }

    /// Node N's directory: `alwayson.toml`, `alwayson.log`, `bird.*`, `etcd.*`.
    pub fn node_dir(&self, n: usize) -> &Path {
        &self.node(n).dir
    }

    /// Node N's agent pins here (bpffs is one for all namespaces).
    pub fn pin_dir(&self, n: usize) -> PathBuf {
        self.bed.pin_dir().join(format!("lb{n}"))
    }

    pub fn config_path(&self, n: usize) -> PathBuf {
        self.node_dir(n).join("alwayson.toml")
    }

    pub fn api_socket(&self, n: usize) -> PathBuf {
        self.node_dir(n).join("api.sock")
    }

    /// Node N's BIRD files (the agent writes `config`, the bed starts BIRD with it).
    pub fn bird_files(&self, n: usize) -> BirdFiles {
        BirdFiles::in_dir(self.node_dir(n))
    }

    pub fn router_bird_files(&self) -> BirdFiles {
        BirdFiles::in_dir(&self.bed.temp_dir().join("router"))
    }

    pub fn announcer(&self) -> Announcer {
        self.announcer
    }

    /// The `[cluster]` timers, if the nodes have that section.
    pub fn cluster_times(&self) -> Option<ClusterTimes> {
        self.cluster_times
    }

    /// Node N's name in the cluster (`[cluster] node`): `lb<N>`.
    pub fn node_name(&self, n: usize) -> String {
        self.node(n);
        format!("lb{n}")
    }

    // ---------------------------------------------------------------- config

    /// Node N's agent config: `eth0`, native XDP, everything per node that
    /// must be (pins, lock file, API socket), the VIPs, `[bgp]` when the
    /// agent announces, then the builder's `node_toml`.
    pub fn node_config(&self, n: usize) -> String {
        let dir = self.node_dir(n).display().to_string();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "[global]\ninterface = \"eth0\"\nxdp_mode = \"native\"\npin_path = \"{}\"\n\
             lock_file = \"{dir}/eth0.lock\"\n",
            self.pin_dir(n).display()
        );
        let _ = writeln!(out, "[api]\nsocket = \"{dir}/api.sock\"\nruntime_file = \"{dir}/runtime.json\"\n");
        // Every namespace has its own loopback: one address fits all nodes.
        let _ = writeln!(out, "[web]\nlisten = \"{WEB_LISTEN}\"\n");
        for vip in &self.vips {
            let _ = writeln!(
                out,
                "[[vip]]\naddress = \"{}\"\nport = {}\nprotocol = \"{}\"\n{}",
                vip.address, vip.port, vip.protocol, vip.keys
            );
            for b in &vip.backends {
                let _ = writeln!(
                    out,
                    "  [[vip.backend]]\n  name = \"{}\"\n  address = \"{}\"\n  weight = {}\n  backup = {}\n",
                    self.bed.backend_name(b.index),
                    backend_v4(b.index),
                    b.weight,
                    b.backup
                );
            }
        }
        if self.announcer == Announcer::Agent {
            let files = self.bird_files(n);
            let _ = writeln!(
                out,
                "[bgp]\nrouter_id = \"{}\"\nlocal_as = {}\nbird_config = \"{}\"\nbird_socket = \"{}\"\n\
                 grace_time = \"{}\"\ndrain_time = \"{}\"\nbfd = true\nbfd_interval = \"{BFD_INTERVAL_MS}ms\"\n\
                 bfd_multiplier = {BFD_MULTIPLIER}\n\n[[bgp.neighbor]]\naddress = \"{}\"\nas = {ROUTER_AS}\n",
                node_v4(n),
                node_as(n),
                files.config.display(),
                files.socket.display(),
                self.times.grace_time,
                self.times.drain_time,
                router_v4()
            );
        }
        if let Some(times) = &self.cluster_times {
            let quote = |v: Vec<String>| v.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
            let peers = (1..=self.nodes.len()).filter(|&m| m != n).map(|m| node_heartbeat(m).to_string());
            let _ = writeln!(
                out,
                "[cluster]\nnode = \"{}\"\netcd = [{}]\nlisten = \"{}\"\npeers = [{}]\n\
                 lease_ttl = \"{}\"\nquorum_grace = \"{}\"\nodd_one_out_after = \"{}\"\n",
                self.node_name(n),
                quote(self.etcd_endpoints()),
                node_heartbeat(n),
                quote(peers.collect()),
                toml_duration(times.lease_ttl),
                toml_duration(times.quorum_grace),
                toml_duration(times.odd_one_out_after),
            );
        }
        if let Some(extra) = &self.node_toml {
            out.push_str(extra(n).trim_end());
            out.push('\n');
        }
        out
    }

    fn vip_addresses(&self) -> Vec<IpAddr> {
        let set: BTreeSet<IpAddr> = self.vips.iter().map(|v| v.address).collect();
        set.into_iter().collect()
    }

    // ---------------------------------------------------------------- processes

    fn start_router(&self) -> Result<()> {
        let files = self.router_bird_files();
        let dir = files.config.parent().expect("a directory");
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        std::fs::write(&files.config, router_config(self.nodes.len()))?;
        *lock(&self.router_bird) = Some(bird::start(self.router_ns(), &files)?);
        Ok(())
    }

    /// Starts node N's agent with [`Self::node_config`] (written afresh) and
    /// waits until it has applied it; then, unless it runs, BIRD: with the
    /// bed's static config, or once the agent has written its own.
    pub fn start_agent(&self, n: usize) -> Result<()> {
        let node = self.node(n);
        let path = self.config_path(n);
        std::fs::write(&path, self.node_config(n)).with_context(|| format!("writing {}", path.display()))?;
        let args = ["run".to_string(), "--config".into(), path.display().to_string()];
        let mut process =
            Process::spawn(&node.ns, bin_path("alwayson")?, &args, &node.dir.join("alwayson.log"))?;
        let applied = process.wait_for_line(APPLIED, AGENT_STARTUP);
        *lock(&node.agent) = Some(process);
        applied.with_context(|| format!("lb{n}'s agent"))?;
        if lock(&node.bird).as_mut().is_some_and(Process::running) {
            return Ok(());
        }
        let files = self.bird_files(n);
        match self.announcer {
            Announcer::Bed => std::fs::write(&files.config, static_node_config(n, &self.vip_addresses()))?,
            Announcer::Agent => {
                let what = format!("lb{n}'s agent to write {}", files.config.display());
                let written =
                    wait_until(&what, BIRD_CONFIG_WRITTEN, POLL, || files.config.exists().then_some(()));
                written.map_err(|e| anyhow!("{e:#}; agent log:\n{}", self.agent_log(n)))?;
            }
        }
        self.start_bird(n)
    }

    /// Starts BIRD in node N's namespace with its config file as it is.
    pub fn start_bird(&self, n: usize) -> Result<()> {
        let process =
            bird::start(self.node_ns(n), &self.bird_files(n)).with_context(|| format!("lb{n}'s BIRD"))?;
        *lock(&self.node(n).bird) = Some(process);
        Ok(())
    }

    /// SIGTERM to node N's BIRD (SIGKILL after 5 s).
    pub fn stop_bird(&self, n: usize) -> Option<ExitStatus> {
        lock(&self.node(n).bird).take().and_then(|mut p| p.stop(Duration::from_secs(5)))
    }

    /// Sends `sig` to node N's agent (SIGSTOP, SIGCONT, SIGHUP…).
    pub fn signal_agent(&self, n: usize, sig: libc::c_int) -> Result<()> {
        let mut agent = lock(&self.node(n).agent);
        agent.as_mut().ok_or_else(|| anyhow!("lb{n} has no agent"))?.signal(sig)
    }

    /// Sends `sig` to node N's BIRD.
    pub fn signal_bird(&self, n: usize, sig: libc::c_int) -> Result<()> {
        let mut bird = lock(&self.node(n).bird);
        bird.as_mut().ok_or_else(|| anyhow!("lb{n} has no BIRD"))?.signal(sig)
    }

    /// SIGTERM to node N's agent; its exit status once it has exited (fails,
    /// with its log, if it has not within 15 s).
    pub fn stop_agent(&self, n: usize) -> Result<ExitStatus> {
        let mut agent = lock(&self.node(n).agent);
        let process = agent.as_mut().ok_or_else(|| anyhow!("lb{n} has no agent"))?;
        process.signal(libc::SIGTERM)?;
        let status = process.wait(AGENT_STOP);
        drop(agent);
        status.ok_or_else(|| {
            anyhow!("lb{n}'s agent did not stop within {AGENT_STOP:?}; log:\n{}", self.agent_log(n))
        })
    }

    /// SIGKILL to node N's agent, which gets no chance to clean up.
    pub fn kill_agent(&self, n: usize) -> Result<()> {
        let mut agent = lock(&self.node(n).agent);
        let process = agent.as_mut().ok_or_else(|| anyhow!("lb{n} has no agent"))?;
        process.signal(libc::SIGKILL)?;
        ensure!(process.wait(Duration::from_secs(5)).is_some(), "lb{n}'s agent did not die on SIGKILL");
        Ok(())
    }

    pub fn agent_running(&self, n: usize) -> bool {
        lock(&self.node(n).agent).as_mut().is_some_and(Process::running)
    }

    pub fn agent_pid(&self, n: usize) -> Option<u32> {
        lock(&self.node(n).agent).as_ref().map(Process::pid)
    }

    /// Rewrites node N's config, sends SIGHUP, and waits for the agent to say
    /// it applied it (one more `reloaded config applied` line).
    pub fn reload_agent(&self, n: usize, config: &str) -> Result<()> {
        let count = || self.agent_log(n).lines().filter(|l| l.contains(RELOADED)).count();
        let before = count();
        std::fs::write(self.config_path(n), config)?;
        self.signal_agent(n, libc::SIGHUP)?;
        let what = format!("lb{n}'s agent to log {RELOADED:?}");
        let done = wait_until(&what, Duration::from_secs(10), POLL, || (count() > before).then_some(()));
        done.map_err(|e| anyhow!("{e:#}; log:\n{}", self.agent_log(n)))
    }

    /// Node N's data plane, read from its pins.
    pub fn stats(&self, n: usize) -> Result<PinnedStats> {
        PinnedStats::open(&self.pin_dir(n)).with_context(|| format!("lb{n}'s pinned maps"))
    }

    /// What node N's data plane has counted for a VIP (`proto`: `PROTO_TCP`…).
    pub fn vip_stats(&self, n: usize, vip: SocketAddr, proto: u8) -> Result<TrafficStats> {
        let stats = self.stats(n)?;
        let key = VipKey::new(vip.ip(), vip.port(), proto);
        let index = stats.vip(&key)?.ok_or_else(|| anyhow!("lb{n} has no VIP {vip}"))?.index;
        Ok(stats.vip_stats(index)?)
    }

    /// Every node's count of new flows for the VIP `vip(port)` over TCP.
    pub fn new_flows(&self, port: u16) -> Result<Vec<u64>> {
        (1..=self.nodes()).map(|n| Ok(self.vip_stats(n, plan::vip(port), PROTO_TCP)?.new_flows)).collect()
    }

    /// Opens `count` streams to `vip(port)` from client 0 and checks that
    /// ECMP spread them over every node (each node counted new flows). A
    /// stream breaks after `patience` without an echo.
    pub fn spread_streams(
        &self,
        port: u16,
        count: usize,
        period: Duration,
        patience: Duration,
    ) -> Result<Streams> {
        let before = self.new_flows(port)?;
        let streams = Streams::open_patient(self.bed(), 0, plan::vip(port), count, period, patience)
            .map_err(|e| anyhow!("opening {count} streams: {e}\n{}", self.logs()))?;
        let per_node: Vec<u64> = self.new_flows(port)?.iter().zip(&before).map(|(a, b)| a - b).collect();
        println!("{count} streams over the nodes (new flows per node): {per_node:?}");
        if !per_node.iter().all(|&n| n > 0) || per_node.iter().sum::<u64>() < count as u64 {
            bail!("ECMP should spread {count} streams over every node, got {per_node:?}\n{}", self.logs());
        }
        Ok(streams)
    }

    // ---------------------------------------------------------------- the API

    /// `GET /v1/stats` on node N's API socket: the whole document (with
    /// `cluster` when the nodes have `[cluster]`, `bgp` with `[bgp]`).
    pub fn api_stats(&self, n: usize) -> Result<serde_json::Value> {
        let client = Client::unix(self.api_socket(n)).timeout(API_TIMEOUT);
        let response = client.get("/v1/stats").with_context(|| format!("GET /v1/stats on lb{n}"))?;
        ensure!(response.status == 200, "GET /v1/stats on lb{n}: {} {}", response.status, response.text());
        serde_json::from_slice(&response.body).with_context(|| format!("lb{n}'s /v1/stats"))
    }

    /// The `cluster` part of node N's `/v1/stats`.
    pub fn cluster_status(&self, n: usize) -> Result<serde_json::Value> {
        let mut stats = self.api_stats(n)?;
        match stats.get_mut("cluster").map(serde_json::Value::take) {
            Some(status) if status.is_object() => Ok(status),
            _ => Err(anyhow!("lb{n}'s /v1/stats has no cluster part")),
        }
    }

    /// The `alwayson` command line on node N's API socket: `alwayson ARGS…
    /// --socket <node N's socket>`; its standard output.
    pub fn cli(&self, n: usize, args: &[&str]) -> Result<String> {
        let socket = self.api_socket(n).display().to_string();
        let bin = bin_path("alwayson")?;
        let mut all = args.to_vec();
        all.extend(["--socket", &socket]);
        run(&bin.display().to_string(), &all)
    }

    // ---------------------------------------------------------------- etcd

    fn start_etcd(&self) -> Result<()> {
        let initial: Vec<String> =
            (1..=self.nodes.len()).map(|n| format!("lb{n}={}", etcd_peer_url(n))).collect();
        let initial = initial.join(",");
        let token = format!("alwayson-{}", self.bed.temp_dir().display());
        for (i, node) in self.nodes.iter().enumerate() {
            let n = i + 1;
            let (client, peer) = (etcd_client_url(n), etcd_peer_url(n));
            let data = node.dir.join("etcd");
            let args = [
                "--name",
                &format!("lb{n}"),
                "--data-dir",
                &data.display().to_string(),
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
                "--initial-cluster",
                &initial,
                "--initial-cluster-token",
                &token,
                "--initial-cluster-state",
                "new",
            ]
            .map(str::to_string);
            *lock(&node.etcd) = Some(Process::spawn(&node.ns, ETCD, &args, &node.dir.join("etcd.log"))?);
        }
        for (i, node) in self.nodes.iter().enumerate() {
            let mut etcd = lock(&node.etcd);
            let process = etcd.as_mut().expect("started above");
            process
                .wait_for_line("ready to serve client requests", ETCD_READY)
                .with_context(|| format!("lb{}'s etcd", i + 1))?;
        }
        Ok(())
    }

    /// Every member's client URL.
    pub fn etcd_endpoints(&self) -> Vec<String> {
        (1..=self.nodes.len()).map(etcd_client_url).collect()
    }

    /// `etcdctl --endpoints <node N's member> ARGS…` in node N's namespace.
    pub fn etcdctl(&self, n: usize, args: &[&str]) -> Result<String> {
        let url = etcd_client_url(n);
        let mut all = vec!["--endpoints", &url];
        all.extend_from_slice(args);
        self.node_ns(n).exec("etcdctl", &all)
    }

    /// SIGKILL to node N's etcd member.
    pub fn kill_etcd(&self, n: usize) {
        drop(lock(&self.node(n).etcd).take());
    }

    // ---------------------------------------------------------------- faults

    /// `bridge link set dev PORT state STATE` in a bridge namespace: 0
    /// (disabled) drops every frame in and out of the port, 3 forwards. The
    /// veth keeps its carrier: neither end sees a link change.
    fn port_state(&self, ns: &Netns, port: &str, state: &str) -> Result<()> {
        run("bridge", &["-n", ns.name(), "link", "set", "dev", port, "state", state]).map(drop)
    }

    /// Node N goes silent: every frame to or from its eth0 and eth1 is
    /// dropped at the bridges. No FIN, RST, NOTIFICATION or carrier loss
    /// reaches the router; only BFD (or the hold timer) can tell. The node's
    /// processes keep running and see nothing either.
    pub fn silence(&self, n: usize) -> Result<()> {
        self.node(n);
        let port = format!("lb{n}");
        self.port_state(self.front_ns(), &port, "0")?;
        self.port_state(self.cluster_ns(), &port, "0")
    }

    /// Node N speaks again, on both segments.
    pub fn unsilence(&self, n: usize) -> Result<()> {
        self.node(n);
        let port = format!("lb{n}");
        self.port_state(self.front_ns(), &port, "3")?;
        self.port_state(self.cluster_ns(), &port, "3")
    }

    /// Cuts node N's eth1 (the cluster segment) silently: its etcd member and
    /// node-to-node traffic are gone, the front (router, backends) stays.
    pub fn partition_cluster(&self, n: usize) -> Result<()> {
        self.node(n);
        self.port_state(self.cluster_ns(), &format!("lb{n}"), "0")
    }

    pub fn heal_cluster(&self, n: usize) -> Result<()> {
        self.node(n);
        self.port_state(self.cluster_ns(), &format!("lb{n}"), "3")
    }

    /// Node N can no longer reach backend `i`: a blackhole route for the
    /// backend's address in the node's namespace. The node's own checks fail
    /// (connect gets an error at once); its XDP program still forwards to the
    /// backend (frames it sends back out never meet the node's routes), and
    /// every other node and the router reach it as before.
    pub fn cut_backend(&self, n: usize, i: usize) -> Result<()> {
        self.node_ns(n).ip(&["route", "add", "blackhole", &format!("{}/32", backend_v4(i))]).map(drop)
    }

    /// Removes the blackhole route of [`Self::cut_backend`].
    pub fn uncut_backend(&self, n: usize, i: usize) -> Result<()> {
        self.node_ns(n).ip(&["route", "del", "blackhole", &format!("{}/32", backend_v4(i))]).map(drop)
    }

    // ---------------------------------------------------------------- the router

    /// The next hops of the router's kernel route for `vip` (a /32), sorted;
    /// empty when it has none. Parsed from `ip -n <router> route show exact VIP/32`.
    pub fn router_paths(&self, vip: IpAddr) -> Result<Vec<IpAddr>> {
        let out = self.router_ns().ip(&["route", "show", "exact", &format!("{vip}/32")])?;
        let words: Vec<&str> = out.split_whitespace().collect();
        let mut hops = words
            .windows(2)
            .filter(|w| w[0] == "via")
            .map(|w| w[1].parse::<IpAddr>().with_context(|| format!("next hop in {out:?}")))
            .collect::<Result<Vec<_>>>()?;
        hops.sort();
        Ok(hops)
    }

    /// [`Self::router_paths`] as node numbers.
    pub fn router_nodes(&self, vip: IpAddr) -> Result<Vec<usize>> {
        self.router_paths(vip)?
            .into_iter()
            .map(|hop| node_of(hop).ok_or_else(|| anyhow!("next hop {hop} is no node")))
            .collect()
    }

    /// Waits until the router's route for `vip` has exactly `nodes` as next
    /// hops; how long that took. Fails with every log and the BGP side's state.
    pub fn wait_router_nodes(&self, vip: IpAddr, nodes: &[usize], timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let mut want = nodes.to_vec();
        want.sort();
        let what = format!("the router's route for {vip} via nodes {want:?}");
        let mut last = Vec::new();
        let waited = try_wait_until(&what, timeout, Duration::from_millis(5), || {
            last = self.router_nodes(vip)?;
            Ok((last == want).then(|| start.elapsed()))
        });
        waited.map_err(|e| anyhow!("{e:#} (last: {last:?})\n{}", self.logs()))
    }

    /// Waits until the router's route for `vip` has `n` next hops, whichever.
    pub fn wait_paths(&self, vip: IpAddr, n: usize, timeout: Duration) -> Result<Duration> {
        let start = Instant::now();
        let what = format!("the router's route for {vip} to have {n} next hops");
        let mut last = Vec::new();
        let waited = try_wait_until(&what, timeout, Duration::from_millis(5), || {
            last = self.router_paths(vip)?;
            Ok((last.len() == n).then(|| start.elapsed()))
        });
        waited.map_err(|e| anyhow!("{e:#} (last: {last:?})\n{}", self.logs()))
    }

    /// `birdc ARGS…` on the router's BIRD.
    pub fn router_birdc(&self, args: &[&str]) -> Result<String> {
        birdc(&self.router_bird_files().socket, args)
    }

    /// `birdc ARGS…` on node N's BIRD.
    pub fn node_birdc(&self, n: usize, args: &[&str]) -> Result<String> {
        birdc(&self.bird_files(n).socket, args)
    }

    // ---------------------------------------------------------------- logs

    /// Node N's agent log, every run.
    pub fn agent_log(&self, n: usize) -> String {
        read_log(&self.node_dir(n).join("alwayson.log"))
    }

    /// Node N's BIRD log (with an agent-written config, only what BIRD prints
    /// without a `log` statement).
    pub fn bird_log(&self, n: usize) -> String {
        read_log(&self.bird_files(n).log)
    }

    pub fn router_log(&self) -> String {
        read_log(&self.router_bird_files().log)
    }

    pub fn etcd_log(&self, n: usize) -> String {
        read_log(&self.node_dir(n).join("etcd.log"))
    }

    /// The BGP side now: the router's kernel route and sessions, every
    /// node's sessions and BIRD config, BIRD's logs.
    pub fn bgp_report(&self) -> String {
        let mut out = String::new();
        let ask = |r: Result<String>| r.unwrap_or_else(|e| format!("({e:#})\n"));
        let _ = writeln!(out, "== router: ip route\n{}", ask(self.router_ns().ip(&["route", "show"])));
        let _ =
            writeln!(out, "== router: show protocols\n{}", ask(self.router_birdc(&["show", "protocols"])));
        let _ = writeln!(
            out,
            "== router: show bfd sessions\n{}",
            ask(self.router_birdc(&["show", "bfd", "sessions"]))
        );
        let _ =
            writeln!(out, "== router: show route all\n{}", ask(self.router_birdc(&["show", "route", "all"])));
        let _ = writeln!(out, "== router: BIRD log\n{}", self.router_log());
        for n in 1..=self.nodes.len() {
            let _ = writeln!(
                out,
                "== lb{n}: show protocols all\n{}",
                ask(self.node_birdc(n, &["show", "protocols", "all"]))
            );
            let _ = writeln!(out, "== lb{n}: bird.conf\n{}", read_log(&self.bird_files(n).config));
            let _ = writeln!(out, "== lb{n}: BIRD log\n{}", self.bird_log(n));
        }
        out
    }

    /// Every process's log and the BGP side: for assertion messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for n in 1..=self.nodes.len() {
            let _ = writeln!(out, "== lb{n}: agent log\n{}", self.agent_log(n));
        }
        if self.cluster_times.is_some() {
            for n in 1..=self.nodes.len() {
                let status = self.cluster_status(n).map_or_else(|e| format!("({e:#})"), |s| s.to_string());
                let _ = writeln!(out, "== lb{n}: cluster status now\n{status}\n");
            }
        }
        out.push_str(&self.bgp_report());
        if self.etcd {
            for n in 1..=self.nodes.len() {
                let _ = writeln!(out, "== lb{n}: etcd log\n{}", self.etcd_log(n));
            }
        }
        out
    }
}

/// Kills every process left in `ns` (what the bed's processes started there:
/// the agent's route keeper, say), by pid.
fn kill_rest(ns: &Netns) {
    let Ok(pids) = run("ip", &["netns", "pids", ns.name()]) else { return };
    for pid in pids.split_whitespace().filter_map(|p| p.parse::<libc::pid_t>().ok()) {
        // SAFETY: kill(2) on a pid that runs in this bed's namespace.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

impl Drop for ClusterBed {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            drop(node.agent.get_mut().unwrap_or_else(PoisonError::into_inner).take());
            drop(node.bird.get_mut().unwrap_or_else(PoisonError::into_inner).take());
            drop(node.etcd.get_mut().unwrap_or_else(PoisonError::into_inner).take());
            kill_rest(&node.ns);
        }
        drop(self.router_bird.get_mut().unwrap_or_else(PoisonError::into_inner).take());
        if let Some(router) = &self.router {
            kill_rest(router);
        }
        drop(self.xdp.take());
        self.nodes.clear();
        drop(self.router.take());
        drop(self.front.take());
        drop(self.cluster.take());
        // Then `bed`: its namespaces, the temp and pin directories, the turn.
    }
}

/// Fails unless BIRD and etcd are installed where the bed runs them.
pub fn require_tools(test: &str, etcd: bool) {
    let mut missing: Vec<&str> =
        [bird::BIRD, bird::BIRDC].into_iter().filter(|p| !Path::new(p).is_file()).collect();
    if etcd && !Path::new(ETCD).is_file() {
        missing.push(ETCD);
    }
    if !missing.is_empty() {
        panic!("{test} needs {}: apt-get install bird2 etcd-server", missing.join(", "));
    }
}
