//! The network-namespace test bed: real clients, a balancer namespace and real
//! backends on one L2 segment.
//!
//! ```text
//!  client i (eth0) ──c<i>──┐
//!  LB       (eth0) ──lb────┤ br0 (bridge namespace)
//!  backend i(eth0) ──b<i>──┘
//! ```
//!
//! One segment, 10.77.0.0/16 and fd77::/64: the LB is 10.77.0.2 / fd77::2,
//! backend i 10.77.1.(10+i) / fd77::1:(10+i), client i 10.77.2.(10+i) /
//! fd77::2:(10+i) (the IPv6 group written with the same digits as the IPv4
//! octet). Clients route each VIP via the LB; backends hold every VIP on `lo`
//! (DSR), answer no ARP for it, and run `alwayson-testsrv --name backend<i>`.
//! `xdp_pass` sits on the LB's bridge-side veth so XDP_TX from the LB delivers.
//!
//! Beds of one process take turns: a bed holds a process-wide turn from
//! `build()` to drop, so tests in one binary never run traffic at the same
//! time. Building a second bed on a thread that already holds one panics
//! instead of deadlocking.

mod client;
mod plan;
mod servers;
pub mod sock;

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicU32, Ordering},
        Condvar, Mutex, PoisonError,
    },
    thread::ThreadId,
};

use anyhow::{ensure, Context as _, Result};
use aya::programs::XdpMode;
use lb_userspace::dataplane::Baseline;

use self::servers::SERVER_READY;
pub use self::{
    client::Family,
    plan::{vip4, DEFAULT_VIPS, VIP4, VIP6},
};
use crate::{
    fixture::mac_str,
    netns::Netns,
    process::{bin_path, Process},
};

/// Ports every backend serves on both families.
pub const TCP_PORTS: [u16; 2] = [80, 8080];
pub const UDP_PORT: u16 = 53;
pub const HTTP_PORT: u16 = 8081;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The process-wide turn: which thread's bed is live.
static TURN: Mutex<Option<ThreadId>> = Mutex::new(None);
static TURN_FREED: Condvar = Condvar::new();

struct Turn;

impl Turn {
    fn take() -> Self {
        let me = std::thread::current().id();
        let mut holder = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(other) = *holder {
            assert!(
                other != me,
                "this thread already holds a TestBed: beds of one process run one at a time"
            );
            holder = TURN_FREED.wait(holder).unwrap_or_else(PoisonError::into_inner);
        }
        *holder = Some(me);
        Turn
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *TURN.lock().unwrap_or_else(PoisonError::into_inner) = None;
        TURN_FREED.notify_one();
    }
}

pub struct TestBedBuilder {
    clients: usize,
    backends: usize,
    vips: Option<Vec<String>>,
    servers: bool,
    mtu: Option<u32>,
}

impl TestBedBuilder {
    pub fn clients(mut self, n: usize) -> Self {
        self.clients = n;
        self
    }

    pub fn backends(mut self, n: usize) -> Self {
        self.backends = n;
        self
    }

    /// Adds a VIP; the first call replaces the defaults (10.77.100.1, fd77::100).
    pub fn vip(mut self, addr: &str) -> Self {
        self.vips.get_or_insert_with(Vec::new).push(addr.to_string());
        self
    }

    /// Whether `build()` starts every backend's servers (default: yes).
    pub fn start_servers(mut self, start: bool) -> Self {
        self.servers = start;
        self
    }

    /// The MTU of the bridge and of every link, both ends (default: the kernel's, 1500).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    pub fn build(self) -> Result<TestBed> {
        ensure!(self.backends <= 200 && self.clients <= 200, "at most 200 clients and 200 backends");
        let vips = match &self.vips {
            Some(v) => v.clone(),
            None => DEFAULT_VIPS.iter().map(|s| s.to_string()).collect(),
        };
        let vips = vips
            .iter()
            .map(|v| v.parse::<IpAddr>().with_context(|| format!("VIP {v:?}")))
            .collect::<Result<Vec<_>>>()?;
        let testsrv = bin_path("alwayson-testsrv")?;
        let turn = Turn::take();

        let unique = format!("{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let temp_dir = std::env::temp_dir().join(format!("alwayson-bed-{unique}"));
        std::fs::create_dir_all(&temp_dir).with_context(|| format!("creating {}", temp_dir.display()))?;
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/alwayson-test-{unique}"));
        // From here on a failure drops the partial bed, which cleans up.
        let mut bed = TestBed {
            servers: Mutex::new(Vec::new()),
            xdp: None,
            clients: Vec::new(),
            backends: Vec::new(),
            lb: None,
            bridge: None,
            vips,
            mtu: self.mtu,
            temp_dir,
            pin_dir,
            testsrv,
            _turn: turn,
        };
        bed.bridge = Some(Netns::new("br")?);
        bed.lb = Some(Netns::new("lb")?);
        for i in 0..self.clients {
            bed.clients.push(Netns::new(&format!("c{i}"))?);
        }
        for i in 0..self.backends {
            bed.backends.push(Netns::new(&format!("b{i}"))?);
        }
        bed.servers.get_mut().unwrap_or_else(PoisonError::into_inner).resize_with(self.backends, || None);
        bed.wire()?;
        if self.servers {
            let mut started = Vec::new();
            for i in 0..self.backends {
                started.push(bed.spawn_servers(i)?);
            }
            for (i, mut process) in started.into_iter().enumerate() {
                process.wait_for_line("ready", SERVER_READY)?;
                bed.servers.get_mut().unwrap_or_else(PoisonError::into_inner)[i] = Some(process);
            }
        }
        Ok(bed)
    }
}

/// See the module documentation. Everything is torn down on drop, also when
/// the test panics: processes killed, namespaces (and with them the veths)
/// deleted, the temp and pin directories removed.
pub struct TestBed {
    servers: Mutex<Vec<Option<Process>>>,
    xdp: Option<Baseline>,
    clients: Vec<Netns>,
    backends: Vec<Netns>,
    lb: Option<Netns>,
    bridge: Option<Netns>,
    vips: Vec<IpAddr>,
    mtu: Option<u32>,
    temp_dir: PathBuf,
    pin_dir: PathBuf,
    testsrv: PathBuf,
    /// Dropped last: the next bed starts only once this one is gone.
    _turn: Turn,
}

/// Several sysctls in one `sysctl` run; keys the kernel lacks are an error.
fn sysctls(ns: &Netns, pairs: &[(&str, &str)]) -> Result<()> {
    let args: Vec<String> =
        std::iter::once("-qw".to_string()).chain(pairs.iter().map(|(k, v)| format!("{k}={v}"))).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ns.exec("sysctl", &args).map(drop)
}

/// Connects `ns` to the bridge: a veth pair, `eth0` in `ns` (MAC `mac`, the
/// addresses, up) and `port` on `br0` (the same MAC with byte 2 = 0xff), both
/// ends of MTU `mtu` if given.
fn plug(
    bridge: &Netns,
    ns: &Netns,
    port: &str,
    mac: [u8; 6],
    v4: IpAddr,
    v6: IpAddr,
    mtu: Option<u32>,
) -> Result<()> {
    // Link-local addresses skip DAD too: nothing on the segment waits a second.
    sysctls(ns, &[("net.ipv6.conf.default.accept_dad", "0"), ("net.ipv6.conf.all.accept_dad", "0")])?;
    let mut bridge_mac = mac;
    bridge_mac[2] = 0xff;
    bridge.ip(&[
        "link",
        "add",
        port,
        "address",
        &mac_str(bridge_mac),
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "address",
        &mac_str(mac),
        "netns",
        ns.name(),
    ])?;
    if let Some(mtu) = mtu {
        let mtu = mtu.to_string();
        bridge.ip(&["link", "set", port, "mtu", &mtu])?;
        ns.ip(&["link", "set", "eth0", "mtu", &mtu])?;
    }
    bridge.ip(&["link", "set", port, "master", "br0", "up"])?;
    ns.ip(&["addr", "add", &format!("{v4}/16"), "dev", "eth0"])?;
    ns.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", "eth0", "nodad"])?;
    ns.ip(&["link", "set", "eth0", "up"])?;
    Ok(())
}

impl TestBed {
    pub fn builder() -> TestBedBuilder {
        TestBedBuilder { clients: 1, backends: 3, vips: None, servers: true, mtu: None }
    }

    /// Wires namespaces, addresses, routes and the pass-through XDP program.
    fn wire(&mut self) -> Result<()> {
        let bridge = self.bridge_ns();
        bridge.ip(&[
            "link",
            "add",
            "br0",
            "type",
            "bridge",
            "stp_state",
            "0",
            "forward_delay",
            "0",
            "mcast_snooping",
            "0",
        ])?;
        if let Some(mtu) = self.mtu {
            bridge.ip(&["link", "set", "br0", "mtu", &mtu.to_string()])?;
        }
        bridge.ip(&["link", "set", "br0", "up"])?;
        for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"] {
            let key = format!("net.bridge.{key}");
            if bridge.exec("sysctl", &["-n", &key]).is_ok() {
                bridge.sysctl(&key, "0")?;
            }
        }

        let mut nodes = vec![(self.lb_ns(), "lb".to_string(), self.lb_mac(), self.lb_v4(), self.lb_v6())];
        for (i, ns) in self.clients.iter().enumerate() {
            nodes.push((ns, format!("c{i}"), self.client_mac(i), self.client_v4(i), self.client_v6(i)));
        }
        for (i, ns) in self.backends.iter().enumerate() {
            nodes.push((ns, format!("b{i}"), self.backend_mac(i), self.backend_v4(i), self.backend_v6(i)));
        }
        for (ns, port, mac, v4, v6) in &nodes {
            plug(bridge, ns, port, *mac, *v4, *v6, self.mtu)?;
        }

        for ns in &self.clients {
            for vip in &self.vips {
                let (host, via) = match vip {
                    IpAddr::V4(_) => (format!("{vip}/32"), self.lb_v4()),
                    IpAddr::V6(_) => (format!("{vip}/128"), self.lb_v6()),
                };
                ns.ip(&["route", "add", &host, "via", &via.to_string(), "dev", "eth0"])?;
            }
            // The LB rewrites client frames in XDP: checksums must be complete.
            ns.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
            ns.sysctl("net.ipv4.ip_local_port_range", "10000 65000")?;
        }
        for ns in &self.backends {
            for vip in &self.vips {
                let host = match vip {
                    IpAddr::V4(_) => format!("{vip}/32"),
                    IpAddr::V6(_) => format!("{vip}/128"),
                };
                ns.ip(&["addr", "add", &host, "dev", "lo"])?;
            }
            sysctls(
                ns,
                &[
                    ("net.ipv4.conf.all.arp_ignore", "1"),
                    ("net.ipv4.conf.all.arp_announce", "2"),
                    ("net.ipv4.conf.eth0.arp_ignore", "1"),
                    ("net.ipv4.conf.eth0.arp_announce", "2"),
                    // Decapsulated (tunnel mode) packets arrive on another device
                    // than the route back to the client.
                    ("net.ipv4.conf.all.rp_filter", "0"),
                    ("net.ipv4.conf.default.rp_filter", "0"),
                    ("net.ipv4.conf.eth0.rp_filter", "0"),
                ],
            )?;
            // NAT mode rewrites backend replies in XDP: same reason as the clients.
            ns.exec("ethtool", &["-K", "eth0", "tx", "off"])?;
        }

        self.xdp = Some(Baseline::load().context("loading the baseline XDP programs")?);
        self.pass_on_lb_port()
    }

    /// `xdp_pass` on the LB's bridge-side veth, so frames the LB sends with
    /// XDP_TX are delivered to the bridge.
    fn pass_on_lb_port(&mut self) -> Result<()> {
        let bridge = self.bridge.as_ref().expect("bridge namespace");
        let baseline = self.xdp.as_mut().expect("baseline programs");
        bridge.run(|| -> Result<()> {
            baseline.program_mut(Baseline::PASS)?.attach("lb", XdpMode::default())?;
            Ok(())
        })
    }

    /// Deletes the LB's `eth0` (with its bridge-side peer, and whatever XDP
    /// program or link was on it) and builds it again as `build()` did: same
    /// names, MACs, addresses and bridge port, `xdp_pass` on the bridge side.
    /// The new `eth0` has a new ifindex, as after a driver reload or a VF reset.
    pub fn recreate_lb_link(&mut self) -> Result<()> {
        let bridge = self.bridge_ns();
        // Deleting one end of a veth pair deletes the other.
        bridge.ip(&["link", "del", "lb"])?;
        plug(bridge, self.lb_ns(), "lb", self.lb_mac(), self.lb_v4(), self.lb_v6(), self.mtu)?;
        self.pass_on_lb_port()
    }

    pub fn bridge_ns(&self) -> &Netns {
        self.bridge.as_ref().expect("bridge namespace")
    }

    pub fn lb_ns(&self) -> &Netns {
        self.lb.as_ref().expect("LB namespace")
    }

    pub fn client_ns(&self, i: usize) -> &Netns {
        &self.clients[i]
    }

    pub fn backend_ns(&self, i: usize) -> &Netns {
        &self.backends[i]
    }

    pub fn clients(&self) -> usize {
        self.clients.len()
    }

    pub fn backends(&self) -> usize {
        self.backends.len()
    }

    /// Every namespace of the bed, by name.
    pub fn namespace_names(&self) -> Vec<String> {
        let fixed = self.bridge.iter().chain(&self.lb);
        fixed.chain(&self.clients).chain(&self.backends).map(|ns| ns.name().to_string()).collect()
    }

    /// Unique per bed, removed on drop. Logs and status files live here.
    pub fn temp_dir(&self) -> &Path {
        &self.temp_dir
    }

    /// A unique path under /sys/fs/bpf for the agent under test to pin into;
    /// not created by the bed, removed recursively on drop if it exists.
    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    pub fn vips(&self) -> &[IpAddr] {
        &self.vips
    }
}

impl Drop for TestBed {
    fn drop(&mut self) {
        for process in self.servers.get_mut().unwrap_or_else(PoisonError::into_inner).iter_mut() {
            drop(process.take());
        }
        drop(self.xdp.take());
        self.clients.clear();
        self.backends.clear();
        drop(self.lb.take());
        drop(self.bridge.take());
        for dir in [&self.pin_dir, &self.temp_dir] {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(dir) {
                    eprintln!("cleanup: removing {}: {e}", dir.display());
                }
            }
        }
    }
}
