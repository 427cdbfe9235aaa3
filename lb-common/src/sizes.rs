//! Defaults and hard bounds for the data plane. Map sizes are load-time
//! settings (`EbpfLoader::set_max_entries`); these are the defaults and limits.

/// Maglev ring slots per VIP. Prime, as the Maglev permutation requires.
pub const DEFAULT_RING_SIZE: u32 = 65_537;
/// VIP slots; the ring map holds `max_vips * ring_size` entries.
pub const DEFAULT_MAX_VIPS: u32 = 64;
/// Backend slots, summed over all VIPs (each VIP's backends get their own slots).
pub const DEFAULT_MAX_BACKENDS: u32 = 4_096;
/// Connection-table (LRU) entries.
pub const DEFAULT_CONN_TABLE_SIZE: u32 = 262_144;

/// NAT table entries per direction (`NAT_FORWARD`, `NAT_REVERSE`).
pub const DEFAULT_NAT_TABLE_SIZE: u32 = 262_144;
/// Source ports the kernel tries for a new NAT mapping before it gives up
/// (`nat_no_port`): the first where this CPU's cursor stands, then its neighbours.
pub const NAT_PORT_TRIES: u32 = 8;
/// The default NAT source ports: below Linux's default
/// `ip_local_port_range` (32768–60999), which the host's own connections use.
pub const DEFAULT_NAT_PORTS: (u16, u16) = (16_384, 32_767);
/// The default of `icmp_too_big_limit`: too-big errors a CPU may send per second.
pub const DEFAULT_TOO_BIG_LIMIT: u32 = 1_000;

/// The largest ring the agent accepts; also bounds `max_vips * ring_size`.
pub const MAX_RING_SIZE: u32 = 1_048_573;
/// Upper bound on `max_vips * ring_size`: every VIP's ring lives in one array
/// map of 8-slot chunks (a slot is a u64: owner and prior owner).
pub const MAX_RING_ENTRIES: u64 = 1 << 28;

/// VLAN tags the parser skips (802.1Q / 802.1ad, so QinQ works).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers (hop-by-hop, routing, destination options) the parser walks.
pub const MAX_IPV6_EXT_HEADERS: usize = 4;

/// How long the kernel reuses a cached `bpf_fib_lookup` result for a backend
/// before asking the FIB again, so neighbour changes are picked up this fast.
pub const NEXTHOP_TTL_NS: u64 = 1_000_000_000;

/// Slots of `VIP_FILTER` (a power of two): counts of VIP addresses by hash.
pub const VIP_FILTER_SLOTS: u32 = 4096;

/// Ring slots per `RING` map entry: 8 [`crate::RingSlot`]s, one cache line.
/// Chunks rather than single slots keep the map's elements whole cache lines
/// and its entry count within u32 for the largest rings.
pub const RING_CHUNK: u32 = 8;

/// The default of `flow_record_limit`: flows one CPU may record per second.
/// Legitimate recording happens only on ring slots in flux, a fraction of
/// new flows for a while after a change; a flood beyond this is not recorded.
pub const DEFAULT_RECORD_LIMIT: u32 = 100_000;

/// `RING` map entries needed for `slots` ring slots.
pub const fn ring_chunks(slots: u64) -> u64 {
    slots.div_ceil(RING_CHUNK as u64)
}
