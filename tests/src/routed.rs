//! The routed bed: backends behind a router, not on the balancer's segment,
//! for tunnel VIPs (a DSR backend must be on a link; a tunnel's need not).
//!
//! ```text
//!  client i (eth0) ──c<i>──┐
//!  LB       (eth0) ──lb────┤ front: the held bed's bridge
//!  router   (eth0) ──rt────┘
//!  router   (eth1) ──rt────┐
//!  backend i(eth0) ──b<i>──┘ back (bridge namespace)
//! ```
//!
//! Addresses, inside the ranges tests may use: front 10.77.170.0/24 and
//! fd77::170:0/112 (router .1, LB .2, client i .(10+i), IPv6 groups written
//! with the same digits), back 10.77.171.0/24 and fd77::171:0/112 (router
//! .1, backend i .(10+i)), VIPs 10.77.172.1 and fd77::172:1 (on every
//! backend's `lo`), tunnel sources [`TUNNEL_SOURCE_V4`] and
//! [`TUNNEL_SOURCE_V6`].
//!
//! Clients route the VIPs via the LB; the LB routes the back segment via the
//! router; backends route everything via the router, so they answer clients
//! directly, never through the LB. The router forwards both families with
//! rp_filter off (outer sources are in no subnet of its). The LB and router
//! links and the whole back segment have MTU [`TUNNEL_MTU`]: room for an
//! outer header on a client's full-size frame; clients keep 1500.
//!
//! The clients, backends (their servers started, VIPs on `lo`, rp_filter
//! off), LB namespace, temp and pin directories and the turn are those of a
//! held [`TestBed`] ([`RoutedBed::bed`]), rewired: an agent started with
//! [`crate::agent::Agent::start`] on `bed()` runs in the LB namespace as
//! usual, with a config from [`RoutedBed::config`].

use std::{
    fmt::Write as _,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
    time::Duration,
};

use anyhow::Result;

use crate::{
    agent::{Cli, WEB_LISTEN},
    bed::TestBed,
    decap,
    fixture::mac_str,
    netns::Netns,
};

pub const VIP4: &str = "10.77.172.1";
pub const VIP6: &str = "fd77::172:1";
/// Outer sources of the bed's tunnels: in the test ranges, and no address of
/// any namespace. (A /16 such as 10.77.0.0/16 would make some outer sources
/// equal to the bed's own addresses, the router's included, which the router
/// then drops as martians.)
pub const TUNNEL_SOURCE_V4: &str = "10.77.173.0/24";
pub const TUNNEL_SOURCE_V6: &str = "fd77::173:0/112";
/// 1500 for the clients' frames, and room for a 40-byte outer header.
pub const TUNNEL_MTU: u32 = 1600;

/// `base` with a last group that reads like the decimal `n`.
fn v6(base: u16, n: usize) -> IpAddr {
    let digits = u16::from_str_radix(&n.to_string(), 16).expect("at most 4 decimal digits");
    Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, base, digits).into()
}

pub fn router_front_v4() -> IpAddr {
    Ipv4Addr::new(10, 77, 170, 1).into()
}

pub fn router_front_v6() -> IpAddr {
    v6(0x170, 1)
}

pub fn router_back_v4() -> IpAddr {
    Ipv4Addr::new(10, 77, 171, 1).into()
}

pub fn router_back_v6() -> IpAddr {
    v6(0x171, 1)
}

pub fn lb_v4() -> IpAddr {
    Ipv4Addr::new(10, 77, 170, 2).into()
}

pub fn lb_v6() -> IpAddr {
    v6(0x170, 2)
}

pub fn client_v4(i: usize) -> IpAddr {
    Ipv4Addr::new(10, 77, 170, 10 + i as u8).into()
}

pub fn client_v6(i: usize) -> IpAddr {
    v6(0x170, 10 + i)
}

pub fn backend_v4(i: usize) -> IpAddr {
    Ipv4Addr::new(10, 77, 171, 10 + i as u8).into()
}

pub fn backend_v6(i: usize) -> IpAddr {
    v6(0x171, 10 + i)
}

/// See the module documentation. Torn down on drop: the decap pins, the
/// router and back namespaces, then the held bed.
pub struct RoutedBed {
    router: Option<Netns>,
    back: Option<Netns>,
    /// Dropped last (its turn with it).
    bed: TestBed,
}

/// A veth pair: `port` in `host` on its bridge `br0`, `ifname` in `ns`, both
/// ends of MTU `mtu`, `ns`'s end with the addresses, up, transmit checksums
/// in software (a rewritten frame's checksum is never filled in later).
fn plug(
    host: &Netns,
    port: &str,
    ns: &Netns,
    ifname: &str,
    mac: [u8; 6],
    addrs: [(IpAddr, u8); 2],
) -> Result<()> {
    let mut peer = mac;
    peer[4] = 0xff;
    host.ip(&[
        "link",
        "add",
        port,
        "address",
        &mac_str(peer),
        "type",
        "veth",
        "peer",
        "name",
        ifname,
        "address",
        &mac_str(mac),
        "netns",
        ns.name(),
    ])?;
    let mtu = TUNNEL_MTU.to_string();
    host.ip(&["link", "set", port, "mtu", &mtu, "master", "br0", "up"])?;
    ns.ip(&["link", "set", ifname, "mtu", &mtu])?;
    address(ns, ifname, addrs)?;
    ns.ip(&["link", "set", ifname, "up"])?;
    ns.exec("ethtool", &["-K", ifname, "tx", "off"]).map(drop)
}

/// Gives `ifname` in `ns` these addresses (and no other global ones).
fn address(ns: &Netns, ifname: &str, addrs: [(IpAddr, u8); 2]) -> Result<()> {
    ns.ip(&["addr", "flush", "dev", ifname, "scope", "global"])?;
    for (addr, len) in addrs {
        let cidr = format!("{addr}/{len}");
        if addr.is_ipv4() {
            ns.ip(&["addr", "add", &cidr, "dev", ifname])?;
        } else {
            ns.ip(&["-6", "addr", "add", &cidr, "dev", ifname, "nodad"])?;
        }
    }
    Ok(())
}

/// `ip route replace` of `dest` via `via` on eth0, in `ns`.
fn route(ns: &Netns, dest: &str, via: IpAddr) -> Result<()> {
    let family = if via.is_ipv4() { "-4" } else { "-6" };
    ns.ip(&[family, "route", "replace", dest, "via", &via.to_string(), "dev", "eth0"]).map(drop)
}

impl RoutedBed {
    /// `clients` clients and `backends` backends, servers started.
    pub fn build(clients: usize, backends: usize) -> Result<Self> {
        let bed = TestBed::builder().clients(clients).backends(backends).vip(VIP4).vip(VIP6).build()?;
        let mut routed = Self { router: None, back: None, bed };
        routed.router = Some(Netns::new("router")?);
        routed.back = Some(Netns::new("back")?);
        routed.wire()?;
        Ok(routed)
    }

    fn wire(&self) -> Result<()> {
        let (bed, router, back) = (&self.bed, self.router_ns(), self.back_ns());
        let front = bed.bridge_ns();
        back.ip(&["link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"])?;
        back.ip(&["link", "set", "br0", "up"])?;
        for key in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables", "bridge-nf-call-arptables"] {
            let key = format!("net.bridge.{key}");
            if back.exec("sysctl", &["-n", &key]).is_ok() {
                back.sysctl(&key, "0")?;
            }
        }
        for (key, value) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
        ] {
            router.sysctl(key, value)?;
        }
        let mac = |segment: u8, kind: u8, i: usize| [0x02, 0x77, segment, kind, 0, i as u8];
        plug(
            front,
            "rt",
            router,
            "eth0",
            mac(170, 0, 1),
            [(router_front_v4(), 24), (router_front_v6(), 112)],
        )?;
        plug(back, "rt", router, "eth1", mac(171, 0, 1), [(router_back_v4(), 24), (router_back_v6(), 112)])?;

        // The LB and the clients stay on the held bed's segment, addressed anew.
        let lb = bed.lb_ns();
        let mtu = TUNNEL_MTU.to_string();
        front.ip(&["link", "set", "lb", "mtu", &mtu])?;
        lb.ip(&["link", "set", "eth0", "mtu", &mtu])?;
        address(lb, "eth0", [(lb_v4(), 24), (lb_v6(), 112)])?;
        route(lb, "10.77.171.0/24", router_front_v4())?;
        route(lb, "fd77::171:0/112", router_front_v6())?;
        for i in 0..bed.clients() {
            let ns = bed.client_ns(i);
            address(ns, "eth0", [(client_v4(i), 24), (client_v6(i), 112)])?;
            route(ns, &format!("{VIP4}/32"), lb_v4())?;
            route(ns, &format!("{VIP6}/128"), lb_v6())?;
        }
        // The backends move to the back segment.
        for i in 0..bed.backends() {
            let ns = bed.backend_ns(i);
            ns.ip(&["link", "del", "eth0"])?;
            plug(
                back,
                &format!("b{i}"),
                ns,
                "eth0",
                mac(171, 2, i),
                [(backend_v4(i), 24), (backend_v6(i), 112)],
            )?;
            ns.sysctl("net.ipv4.conf.eth0.rp_filter", "0")?;
            route(ns, "default", router_back_v4())?;
            route(ns, "default", router_back_v6())?;
        }
        Ok(())
    }

    /// The held bed: clients, backends and their servers, the LB namespace,
    /// temp and pin directories. Its own address plan is unused: use this module's.
    pub fn bed(&self) -> &TestBed {
        &self.bed
    }

    pub fn router_ns(&self) -> &Netns {
        self.router.as_ref().expect("router namespace")
    }

    pub fn back_ns(&self) -> &Netns {
        self.back.as_ref().expect("back namespace")
    }

    /// Where backend `i`'s decap program is pinned.
    pub fn decap_dir(&self, i: usize) -> PathBuf {
        decap::dir(&self.bed, i)
    }

    /// `alwayson decap` in backend `i`'s namespace ([`decap::run`]).
    pub fn decap(&self, i: usize, args: &[&str]) -> Result<Cli> {
        decap::run(&self.bed, i, args)
    }

    /// An agent config for the bed: native XDP on the LB's eth0, the bed's
    /// pins, tunnel sources, and `vips` as (address, port, protocol), each a
    /// tunnel VIP on every backend (weight 1).
    pub fn config(&self, vips: &[(&str, u16, &str)]) -> String {
        let (pin, tmp) = (self.bed.pin_dir().display(), self.bed.temp_dir().display());
        let mut out = format!(
            "[global]\ninterface = \"eth0\"\nxdp_mode = \"native\"\npin_path = \"{pin}\"\n\
             lock_file = \"{tmp}/eth0.lock\"\ntunnel_source_v4 = \"{TUNNEL_SOURCE_V4}\"\n\
             tunnel_source_v6 = \"{TUNNEL_SOURCE_V6}\"\n\n\
             [api]\nsocket = \"{tmp}/api.sock\"\nruntime_file = \"{tmp}/runtime.json\"\n\n\
             [web]\nlisten = \"{WEB_LISTEN}\"\n\n"
        );
        for (address, port, protocol) in vips {
            let _ = writeln!(out, "[[vip]]\naddress = \"{address}\"\nport = {port}\nprotocol = \"{protocol}\"\nmode = \"tunnel\"");
            for i in 0..self.bed.backends() {
                let address: IpAddr = address.parse().expect("VIP address");
                let backend = if address.is_ipv4() { backend_v4(i) } else { backend_v6(i) };
                let _ = writeln!(
                    out,
                    "  [[vip.backend]]\n  name = \"{}\"\n  address = \"{backend}\"",
                    self.bed.backend_name(i)
                );
            }
            out.push('\n');
        }
        out
    }

    /// Sends `bytes` bytes through `vip` from client 0 and checks the echo.
    /// Both directions time out after `patience`: a path that loses
    /// full-size packets fails the test rather than hanging it.
    pub fn bulk_echo(&self, vip: SocketAddr, bytes: usize, patience: Duration) {
        let stream =
            self.bed.tcp_connect(0, vip, patience).unwrap_or_else(|e| panic!("connect to {vip}: {e}"));
        stream.set_read_timeout(Some(patience)).unwrap();
        stream.set_write_timeout(Some(patience)).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let mut name = String::new();
        reader.read_line(&mut name).unwrap_or_else(|e| panic!("{vip}: name line: {e}"));
        let data: Vec<u8> = (0..bytes).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|scope| {
            let sent = &data;
            let send = scope.spawn(move || writer.write_all(sent));
            let mut echo = vec![0u8; bytes];
            reader.read_exact(&mut echo).unwrap_or_else(|e| panic!("{vip}: reading the echo: {e}"));
            send.join().unwrap().unwrap_or_else(|e| panic!("{vip}: sending: {e}"));
            assert!(echo == data, "{vip}: the echo differs from what was sent");
        });
    }
}

impl Drop for RoutedBed {
    fn drop(&mut self) {
        // Unpinning the link detaches the program; the namespaces go next anyway.
        for dir in (0..self.bed.backends()).map(|i| self.decap_dir(i)) {
            if dir.exists() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    eprintln!("cleanup: removing {}: {e}", dir.display());
                }
            }
        }
        drop(self.back.take());
        drop(self.router.take());
    }
}
