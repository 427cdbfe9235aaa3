//! Map keys and values. Rules: `#[repr(C)]`, explicit `_pad`, integers only
//! (no bool/enum/Option), a size assertion each. Addresses are `[u32; 4]`
//! whose bytes lie in network order (IPv4 uses word 0, the rest are zero);
//! fields ending in `_be` hold network-order integers.

use core::net::IpAddr;

use crate::hash::hash_words;

pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

/// An address as the maps store it, and its family.
#[inline]
pub fn addr_words(addr: IpAddr) -> ([u32; 4], u8) {
    match addr {
        IpAddr::V4(a) => ([u32::from_ne_bytes(a.octets()), 0, 0, 0], FAMILY_V4),
        IpAddr::V6(a) => {
            let o = a.octets();
            let w = |i: usize| u32::from_ne_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
            ([w(0), w(4), w(8), w(12)], FAMILY_V6)
        }
    }
}

/// The inverse of [`addr_words`].
pub fn words_addr(words: [u32; 4], family: u8) -> IpAddr {
    if family == FAMILY_V4 {
        IpAddr::from(words[0].to_ne_bytes())
    } else {
        let mut o = [0u8; 16];
        for (i, w) in words.iter().enumerate() {
            o[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::from(o)
    }
}

/// The `VIP_FILTER` slot of a destination address: the address words folded
/// and multiplied (Fibonacci hashing). It runs on every packet, so it is one
/// multiply; collisions only cost a hash-map lookup.
#[inline(always)]
pub fn vip_filter_slot(addr: &[u32; 4], family: u8) -> u32 {
    let folded = addr[0] ^ addr[1] ^ addr[2] ^ addr[3] ^ u32::from(family);
    folded.wrapping_mul(0x9e37_79b1) >> (32 - crate::sizes::VIP_FILTER_SLOTS.trailing_zeros())
}

/// A service: destination address, port (0 = every port) and protocol.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u32; 4],
    pub port_be: u16,
    pub proto: u8,
    pub family: u8,
}

impl VipKey {
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        let (addr, family) = addr_words(addr);
        Self { addr, port_be: port.to_be(), proto, family }
    }

    /// The key of `VIP_ADDRS` for an address: port and protocol 0.
    #[inline(always)]
    pub const fn of_address(addr: [u32; 4], family: u8) -> Self {
        Self { addr, port_be: 0, proto: 0, family }
    }

    /// This key's `VIP_ADDRS` key: the address alone.
    #[inline(always)]
    pub const fn address_only(&self) -> Self {
        Self::of_address(self.addr, self.family)
    }
}

/// Forwarding modes, as stored in [`VipValue::mode`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// L2 direct server return: rewrite MACs, backends hold the VIP on `lo`.
    Dsr = 0,
    /// IPIP / IP6IP6 encapsulation, still DSR.
    Tunnel = 1,
    /// Destination rewrite, reversed on the way back.
    Nat = 2,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VipValue {
    /// Index into `VIP_STATS` and the VIP's ring (`RING[index * ring_size ..]`).
    pub index: u32,
    /// A [`Mode`] as u8.
    pub mode: u8,
    pub _pad: [u8; 3],
}

/// Backend slot states, as stored in [`Backend::state`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackendState {
    /// The slot is free; flows pinned to it are re-selected.
    Unused = 0,
    /// Takes new flows (when in the ring) and keeps established ones.
    Up = 1,
    /// Out of the ring; established flows keep going to it.
    Draining = 2,
    /// Failed or administratively removed: established flows are re-selected.
    Down = 3,
}

impl BackendState {
    /// Whether a flow already pinned to a backend in this state stays there.
    #[inline(always)]
    pub const fn keeps_flows(state: u8) -> bool {
        state == Self::Up as u8 || state == Self::Draining as u8
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u32; 4],
    pub port_be: u16,
    pub family: u8,
    /// A [`BackendState`] as u8.
    pub state: u8,
    /// The VIP index this slot belongs to; a flow only sticks to a backend of its own VIP.
    pub vip: u32,
}

/// The connection-table key: a flow's 5-tuple as seen on the wire.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub src: [u32; 4],
    pub dst: [u32; 4],
    pub sport_be: u16,
    pub dport_be: u16,
    pub proto: u8,
    pub family: u8,
    pub _pad: [u8; 2],
}

impl FlowKey {
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, proto: u8) -> Self {
        let (src, family) = addr_words(src);
        let (dst, _) = addr_words(dst);
        Self { src, dst, sport_be: sport.to_be(), dport_be: dport.to_be(), proto, family, _pad: [0; 2] }
    }

    /// The flow hash: what the kernel indexes a VIP's ring with (`hash % ring_size`).
    #[inline(always)]
    pub fn hash(&self, seed: u32) -> u32 {
        let ports = self.sport_be as u32 | (self.dport_be as u32) << 16;
        let proto = self.proto as u32;
        if self.family == FAMILY_V4 {
            hash_words(seed, &[self.src[0], self.dst[0], ports, proto])
        } else {
            let (s, d) = (self.src, self.dst);
            hash_words(seed, &[s[0], s[1], s[2], s[3], d[0], d[1], d[2], d[3], ports, proto])
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnValue {
    pub backend: u32,
    /// The VIP index the flow was balanced for: an entry of another VIP's is not a hit.
    pub vip: u32,
    /// When the flow was last seen, in [`coarse_seconds`]: the agent forgets
    /// entries idle for longer than `flow_idle_timeout`.
    pub seen: u32,
    pub _pad: u32,
}

/// Monotonic time in units of 2^30 ns (about 1.07 s): what the kernel can
/// compute from `bpf_ktime_get_coarse_ns` with a shift, and the agent from
/// `CLOCK_MONOTONIC_COARSE` the same way.
#[inline(always)]
pub const fn coarse_seconds(ns: u64) -> u32 {
    (ns >> 30) as u32
}

/// A ring slot's `prior` when the slot is settled, and a ring slot's owner
/// when the VIP's ring is empty.
pub const NO_BACKEND: u32 = u32::MAX;

/// One slot of a VIP's Maglev ring, as the kernel reads it: one u64, so a
/// change is never seen half made. Both halves are stored plus one, so the
/// zeros of a fresh map read as [`RingSlot::EMPTY`].
///
/// - `owner`: the backend slot that takes the ring slot's new flows
///   ([`NO_BACKEND`]: none, the ring is empty).
/// - `prior`: [`NO_BACKEND`] while the slot is *settled*: every flow hashing
///   to it, recorded or not, belongs to `owner`, so nothing needs recording.
///   Otherwise the slot is *in flux* and `prior` is the backend its unrecorded
///   flows belong to: the owner when it last was settled, kept through any
///   number of changes until the agent settles it again. Flows on a slot in
///   flux are looked up and recorded.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingSlot(pub u64);

impl RingSlot {
    pub const EMPTY: Self = Self::settled(NO_BACKEND);

    #[inline(always)]
    pub const fn new(owner: u32, prior: u32) -> Self {
        Self(owner.wrapping_add(1) as u64 | (prior.wrapping_add(1) as u64) << 32)
    }

    #[inline(always)]
    pub const fn settled(owner: u32) -> Self {
        Self::new(owner, NO_BACKEND)
    }

    #[inline(always)]
    pub const fn owner(self) -> u32 {
        (self.0 as u32).wrapping_sub(1)
    }

    #[inline(always)]
    pub const fn prior(self) -> u32 {
        ((self.0 >> 32) as u32).wrapping_sub(1)
    }

    #[inline(always)]
    pub const fn is_settled(self) -> bool {
        self.prior() == NO_BACKEND
    }

    /// This slot once its owner becomes `owner`: a settled slot whose owner
    /// changes goes in flux with the old owner as prior (unless it had none,
    /// so had no flows); a slot in flux keeps its prior, because its
    /// unrecorded flows still belong to it however often the owner changes.
    #[inline]
    pub const fn with_owner(self, owner: u32) -> Self {
        if owner == self.owner() {
            self
        } else if self.is_settled() && self.owner() != NO_BACKEND {
            Self::new(owner, self.owner())
        } else {
            Self::new(owner, self.prior())
        }
    }
}

/// A cached `bpf_fib_lookup` result for one backend (per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NextHop {
    /// When the FIB was asked; 0 = never (the agent zeroes it when a slot changes).
    pub stamp_ns: u64,
    /// 0 with a stamp: the FIB answered with a gateway, the backend is not on link.
    pub ifindex: u32,
    pub dmac: [u8; 6],
    pub smac: [u8; 6],
    /// The route's MTU towards the backend (`mtu_result`), for tunnel VIPs'
    /// too-big answers; 0: unknown, or past 65,535 (`lo`), never too big.
    pub mtu: u16,
    pub _pad: [u8; 6],
}

/// One `RING` map entry: `RING_CHUNK` consecutive ring slots ([`RingSlot`]s).
pub type RingChunk = [u64; crate::sizes::RING_CHUNK as usize];

/// Bumped whenever a map's key or value layout changes: pinned maps of another
/// layout cannot be adopted.
pub const LAYOUT_VERSION: u32 = 9;

/// The single entry of the `CONFIG` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// Slots per VIP ring; 0 until the agent writes it.
    pub ring_size: u32,
    /// Seed of the flow hash; every LB node of a cluster must use the same.
    pub hash_seed: u32,
    pub max_vips: u32,
    pub max_backends: u32,
    pub conn_table_size: u32,
    /// `LAYOUT_VERSION` of the agent that created the maps.
    pub layout: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Flows a CPU may record per second (0: no limit). Past it, flows are
    /// forwarded but not recorded, so a flood cannot churn the table.
    pub record_limit: u32,
    /// Outer source addresses of `mode = "tunnel"`.
    pub tunnel: crate::TunnelSource,
    /// ICMP too-big errors a CPU may send per second (tunnel VIPs whose
    /// encapsulated packets exceed the egress MTU); 0: none at all.
    pub too_big_limit: u32,
    /// `NAT_*` table entries per direction, as created.
    pub nat_table_size: u32,
}

/// `DataplaneConfig::flags`: record every flow on its first packet and send a
/// miss to the ring's owner (no prior owners), as Katran does. Off: record
/// only flows on slots in flux.
pub const FLAG_RECORD_EVERY_FLOW: u32 = 1;

/// `DataplaneConfig::flags`: some VIP is `mode = "nat"`, so packets to
/// other addresses may be NAT replies (one `NAT_REVERSE` lookup each).
/// Off, non-VIP traffic never pays for NAT.
pub const FLAG_NAT: u32 = 2;

/// Per-VIP and per-backend traffic (per CPU; the agent sums).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrafficStats {
    pub packets: u64,
    pub bytes: u64,
    pub new_flows: u64,
}

const _: () = {
    use core::mem::size_of;
    assert!(size_of::<VipKey>() == 20);
    assert!(size_of::<VipValue>() == 8);
    assert!(size_of::<Backend>() == 24);
    assert!(size_of::<FlowKey>() == 40);
    assert!(size_of::<ConnValue>() == 16);
    assert!(size_of::<RingSlot>() == 8);
    assert!(RingSlot(0).owner() == NO_BACKEND && RingSlot(0).is_settled());
    assert!(size_of::<NextHop>() == 32);
    assert!(size_of::<TrafficStats>() == 24);
    assert!(size_of::<DataplaneConfig>() == 72);
};

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type here is repr(C), integers only, without implicit padding
    // (the size assertions above pin the layouts).
    unsafe impl aya::Pod for super::VipKey {}
    unsafe impl aya::Pod for super::VipValue {}
    unsafe impl aya::Pod for super::Backend {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::ConnValue {}
    unsafe impl aya::Pod for super::NextHop {}
    unsafe impl aya::Pod for super::TrafficStats {}
    unsafe impl aya::Pod for super::DataplaneConfig {}
}
