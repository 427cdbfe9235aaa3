//! Names of the program and of the maps the agent creates, pins and writes:
//! it finds them by these names, so they are spelled once, here.

/// The XDP program.
pub const PROGRAM: &str = "balancer";

/// The decapsulating XDP program, for backends of tunnel VIPs (object `decap`).
pub const DECAP_PROGRAM: &str = "decap";
/// `PerCpuArray<u64>` of the decap program, by `counters::DecapCounter`.
pub const DECAP_COUNTERS: &str = "DECAP_COUNTERS";

/// `HashMap<VipKey, VipValue>`: the services.
pub const VIPS: &str = "VIPS";
/// `Array<u32>` of `VIP_FILTER_SLOTS`: how many VIP addresses hash to each slot
/// (`types::vip_filter_slot`). A zero settles "not for a VIP" without a hash-map lookup.
pub const VIP_FILTER: &str = "VIP_FILTER";
/// `HashMap<VipKey, u32>` keyed by address only (port 0, proto 0): decides
/// whether a packet that cannot be balanced (a fragment, a truncated TCP/UDP
/// header) was meant for a VIP address, and so is dropped rather than passed.
pub const VIP_ADDRS: &str = "VIP_ADDRS";
/// `Array<Backend>`: every backend slot of every VIP.
pub const BACKENDS: &str = "BACKENDS";
/// `Array<RingChunk>` holding `max_vips * ring_size` [`crate::RingSlot`]s: the Maglev rings.
pub const RING: &str = "RING";
/// `LruHashMap<FlowKey, ConnValue>`: the connection table (flows on ring slots in flux).
pub const CONNS: &str = "CONNS";
/// `PerCpuArray<NextHop>` per backend: cached `bpf_fib_lookup` results.
pub const NEXTHOPS: &str = "NEXTHOPS";
/// `PerCpuArray<u64>`: verdicts, drop reasons and events (see `counters`).
pub const COUNTERS: &str = "COUNTERS";
/// `PerCpuArray<TrafficStats>` per VIP index.
pub const VIP_STATS: &str = "VIP_STATS";
/// `PerCpuArray<TrafficStats>` per backend index.
pub const BACKEND_STATS: &str = "BACKEND_STATS";

/// `Array<NatSource>` per VIP index: where a NAT VIP's flows leave from.
pub const NAT_SOURCES: &str = "NAT_SOURCES";
/// `HashMap<FlowKey, NatForward>`: NAT mappings by the client's flow.
pub const NAT_FORWARD: &str = "NAT_FORWARD";
/// `HashMap<FlowKey, NatReverse>`: NAT mappings by the backend's reply flow.
pub const NAT_REVERSE: &str = "NAT_REVERSE";

/// `Array<DataplaneConfig>` of one entry: ring size and hash seed for the kernel,
/// and the sizes the maps were created with, so a restarted agent knows what it adopts.
pub const CONFIG: &str = "CONFIG";

/// Every map, as pinned under the agent's pin directory.
pub const ALL: [&str; 14] = [
    CONFIG,
    VIPS,
    VIP_FILTER,
    VIP_ADDRS,
    BACKENDS,
    RING,
    CONNS,
    NEXTHOPS,
    COUNTERS,
    VIP_STATS,
    BACKEND_STATS,
    NAT_SOURCES,
    NAT_FORWARD,
    NAT_REVERSE,
];

/// Every map whose size the agent sets at load time, with what sizes it.
pub const SIZED_MAPS: [(&str, SizedBy); 11] = [
    (VIPS, SizedBy::Vips),
    (VIP_ADDRS, SizedBy::Vips),
    (VIP_STATS, SizedBy::Vips),
    (BACKENDS, SizedBy::Backends),
    (NEXTHOPS, SizedBy::Backends),
    (BACKEND_STATS, SizedBy::Backends),
    (CONNS, SizedBy::ConnTable),
    (RING, SizedBy::Ring),
    (NAT_SOURCES, SizedBy::Vips),
    (NAT_FORWARD, SizedBy::NatTable),
    (NAT_REVERSE, SizedBy::NatTable),
];

/// Which load-time size a map follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizedBy {
    Vips,
    Backends,
    ConnTable,
    /// `nat_table_size` entries per direction.
    NatTable,
    /// `max_vips * ring_size` slots, in `RING_CHUNK`s.
    Ring,
}
