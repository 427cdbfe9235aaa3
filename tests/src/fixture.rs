//! A bed for `BPF_PROG_TEST_RUN` fixtures: one namespace with the balancer
//! loaded, an interface `lb0` the frames "arrive" on, and permanent neighbour
//! entries for the backends, so `bpf_fib_lookup` resolves them to known MACs.
//! `lb0` has the largest MTU a veth takes, so tunnel VIPs encapsulate even
//! jumbo frames; a test of the too-big answers lowers it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use anyhow::Result;
use lb_common::{
    types::{addr_words, PROTO_TCP, PROTO_UDP},
    Backend, BackendState, Mode, NatSource, RingSlot, VipKey, VipValue, NO_BACKEND,
};
use lb_userspace::{
    dataplane::{Dataplane, LoadSettings, TestRunOutcome},
    maglev::{self, Member, NO_MEMBER},
};

use crate::netns::Netns;

/// The balancer's own interface.
pub const LB_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0x01];
/// Where client frames come from (the upstream router).
pub const ROUTER_MAC: [u8; 6] = [0x02, 0x77, 0, 0, 0, 0xfe];
pub const LB_V4: &str = "10.77.1.1";
/// `lb0`'s MTU: a veth's largest, so even a 16,000-byte frame fits once encapsulated.
pub const LB_MTU: u32 = 65_535;
pub const LB_V6: &str = "fd77:1::1";
/// Backends the bed knows the MAC of: 0..BACKENDS.
pub const BACKENDS: u8 = 16;

pub fn backend_mac(i: u8) -> [u8; 6] {
    [0x02, 0x77, 0, 0, 1, i]
}

pub fn backend_v4(i: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 1, 10 + i))
}

pub fn backend_v6(i: u8) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0xfd77, 1, 0, 0, 0, 0, 0, 0x10 + u16::from(i)))
}

/// Which known backend a MAC belongs to.
pub fn backend_of_mac(mac: &[u8]) -> Option<u8> {
    (0..BACKENDS).find(|&i| backend_mac(i) == mac[..6])
}

/// The standard bed's VIPs (see [`FixtureBed::standard`]) and clients.
pub const VIP4: &str = "10.77.100.1:80";
pub const VIP4_UDP: &str = "10.77.100.1:53";
pub const VIP6: &str = "[fd77::100]:80";
pub const VIP6_UDP: &str = "[fd77::100]:53";
/// A VIP with port 0: every TCP port of 10.77.100.2.
pub const VIP4_ANY: &str = "10.77.100.2:0";
pub const CLIENT4: &str = "10.77.2.7:40000";
pub const CLIENT6: &str = "[fd77:2::7]:40000";
/// A router on the clients' path, which sends ICMP errors.
pub const ROUTER4: &str = "10.77.2.1";
pub const ROUTER6: &str = "fd77:2::1";

/// The actions a test run returns, as the program returns them.
pub const XDP_DROP: u32 = lb_common::Verdict::Drop.action();
pub const XDP_PASS: u32 = lb_common::Verdict::Pass.action();
pub const XDP_TX: u32 = lb_common::Verdict::Tx.action();

/// One backend of a VIP: its slot in `BACKENDS`, the known backend it is, its weight.
#[derive(Clone, Copy, Debug)]
pub struct Slot {
    pub slot: u32,
    pub addr: IpAddr,
    pub weight: u32,
}

pub struct FixtureBed {
    pub ns: Netns,
    pub dp: Dataplane,
    pub ifindex: u32,
}

impl FixtureBed {
    pub fn new(settings: LoadSettings) -> Result<Self> {
        let ns = Netns::new("fix")?;
        let mac = mac_str(LB_MAC);
        ns.ip(&["link", "add", "lb0", "address", &mac, "type", "veth", "peer", "name", "lb0p"])?;
        ns.ip(&["link", "set", "lb0", "mtu", &LB_MTU.to_string(), "up"])?;
        ns.ip(&["link", "set", "lb0p", "up"])?;
        ns.ip(&["addr", "add", &format!("{LB_V4}/24"), "dev", "lb0"])?;
        ns.ip(&["-6", "addr", "add", &format!("{LB_V6}/64"), "dev", "lb0", "nodad"])?;
        for i in 0..BACKENDS {
            let mac = mac_str(backend_mac(i));
            for addr in [backend_v4(i), backend_v6(i)] {
                let addr = addr.to_string();
                ns.ip(&["neigh", "add", &addr, "lladdr", &mac, "dev", "lb0", "nud", "permanent"])?;
            }
        }
        // bpf_fib_lookup answers FWD_DISABLED unless the box forwards.
        ns.sysctl("net.ipv4.conf.all.forwarding", "1")?;
        ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let ifindex = ns.ifindex("lb0")?;
        let dp = Dataplane::load(settings)?;
        Ok(Self { ns, dp, ifindex })
    }

    /// A bed with the five standard VIPs, a small ring (251), default sizes:
    /// VIP index i is the i-th of VIP4, VIP4_UDP, VIP6, VIP6_UDP, VIP4_ANY and
    /// has known backends 3i, 3i+1, 3i+2 in the slots of the same numbers.
    pub fn standard() -> Self {
        let mut bed = Self::new(LoadSettings { ring_size: 251, ..Default::default() }).expect("fixture bed");
        let vips = [
            (VIP4, PROTO_TCP),
            (VIP4_UDP, PROTO_UDP),
            (VIP6, PROTO_TCP),
            (VIP6_UDP, PROTO_UDP),
            (VIP4_ANY, PROTO_TCP),
        ];
        for (index, (vip, proto)) in (0u8..).zip(vips) {
            let vip: SocketAddr = vip.parse().expect("VIP address");
            let backend = if vip.is_ipv6() { backend_v6 } else { backend_v4 };
            let slots: Vec<Slot> = (3 * index..3 * index + 3)
                .map(|i| Slot { slot: u32::from(i), addr: backend(i), weight: 1 })
                .collect();
            bed.set_vip(vip, proto, u32::from(index), &slots).expect("set vip");
        }
        bed
    }

    /// Sets up a VIP with its backends (all UP) and its Maglev ring. Returns the
    /// ring as backend slots.
    pub fn set_vip(&mut self, vip: SocketAddr, proto: u8, index: u32, backends: &[Slot]) -> Result<Vec<u32>> {
        self.set_vip_in(Mode::Dsr, vip, proto, index, backends)
    }

    /// [`Self::set_vip`] for a VIP in forwarding mode `mode`.
    pub fn set_vip_in(
        &mut self,
        mode: Mode,
        vip: SocketAddr,
        proto: u8,
        index: u32,
        backends: &[Slot],
    ) -> Result<Vec<u32>> {
        self.set_backend_slots(index, backends)?;
        let ring = self.write_ring(index, backends)?;
        let key = VipKey::new(vip.ip(), vip.port(), proto);
        self.dp.set_vip(key, VipValue { index, mode: mode as u8, _pad: [0; 3] })?;
        Ok(ring)
    }

    /// [`Self::set_vip_in`] for a `nat` VIP leaving from `source`, its
    /// backends listening on `backend_port` (0: the VIP's port). Writes the
    /// source first, then the VIP, and turns the search for replies on.
    pub fn set_nat_vip(
        &mut self,
        vip: SocketAddr,
        proto: u8,
        index: u32,
        backends: &[Slot],
        source: NatSource,
        backend_port: u16,
    ) -> Result<Vec<u32>> {
        self.dp.set_nat_source(index, source)?;
        self.dp.set_nat(true)?;
        let ring = self.set_vip_in(Mode::Nat, vip, proto, index, backends)?;
        self.set_backend_slots_on(index, backends, backend_port)?;
        Ok(ring)
    }

    /// Writes `backends` of VIP `index`, all UP.
    pub fn set_backend_slots(&mut self, index: u32, backends: &[Slot]) -> Result<()> {
        self.set_backend_slots_on(index, backends, 0)
    }

    /// Writes `backends` of VIP `index`, all UP, listening on `port`.
    pub fn set_backend_slots_on(&mut self, index: u32, backends: &[Slot], port: u16) -> Result<()> {
        for b in backends {
            let (addr, family) = addr_words(b.addr);
            let backend =
                Backend { addr, port_be: port.to_be(), family, state: BackendState::Up as u8, vip: index };
            self.dp.set_backend(b.slot, backend)?;
        }
        Ok(())
    }

    /// Rebuilds VIP `index`'s ring from `backends` (weight 0 = out of the
    /// ring) as the agent does: a slot whose owner changes goes in flux.
    /// Returns the owners.
    pub fn write_ring(&mut self, index: u32, backends: &[Slot]) -> Result<Vec<u32>> {
        let members: Vec<Member> =
            backends.iter().map(|b| Member { id: SocketAddr::new(b.addr, 0), weight: b.weight }).collect();
        let size = self.dp.settings().ring_size;
        let ring: Vec<u32> = maglev::build(&members, size)
            .into_iter()
            .map(|m| if m == NO_MEMBER { NO_BACKEND } else { backends[m as usize].slot })
            .collect();
        self.dp.with_ring_mut(index, |kernel| {
            for (slot, &owner) in kernel.iter_mut().zip(&ring) {
                *slot = slot.with_owner(owner);
            }
        })?;
        Ok(ring)
    }

    /// VIP `index`'s ring slots as the kernel reads them.
    pub fn ring(&mut self, index: u32) -> Result<Vec<RingSlot>> {
        Ok(self.dp.with_ring_mut(index, |kernel| kernel.to_vec())?)
    }

    /// Settles every slot of VIP `index`'s ring, as the agent does once no flow needs a prior owner.
    pub fn settle_ring(&mut self, index: u32) -> Result<()> {
        self.dp.with_ring_mut(index, |kernel| {
            for slot in kernel.iter_mut() {
                *slot = RingSlot::settled(slot.owner());
            }
        })?;
        Ok(())
    }

    /// Runs the balancer once on `frame`, arriving on `lb0`.
    pub fn run(&self, frame: &[u8]) -> TestRunOutcome {
        self.run_many(std::slice::from_ref(&frame.to_vec())).remove(0)
    }

    /// Runs the balancer on each frame in turn (one namespace switch for all).
    pub fn run_many(&self, frames: &[Vec<u8>]) -> Vec<TestRunOutcome> {
        let (dp, ifindex) = (&self.dp, self.ifindex);
        self.ns
            .run(|| frames.iter().map(|f| dp.test_run(f, ifindex, 1).expect("BPF_PROG_TEST_RUN")).collect())
    }
}

/// A NAT source: `addr`, ports `port_min ..= port_min + port_count - 1`.
pub fn nat_source(addr: IpAddr, port_min: u16, port_count: u16) -> NatSource {
    NatSource { addr: addr_words(addr).0, port_min, port_count }
}

pub fn mac_str(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}
