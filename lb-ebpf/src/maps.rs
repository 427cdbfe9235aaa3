//! The maps the agent creates, pins and writes (`NOTICE_LAST`, the kernel's
//! own, is in `notice.rs`). Sizes here are defaults: the agent sets the real
//! ones at load time from its config. Names are the statics' names and must
//! match `lb_common::maps`.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
};
use lb_common::{
    counters::COUNTER_SLOTS,
    sizes::{
        ring_chunks, DEFAULT_CONN_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, DEFAULT_NAT_TABLE_SIZE,
        DEFAULT_RING_SIZE, VIP_FILTER_SLOTS,
    },
    types::RingChunk,
    Backend, ConnValue, DataplaneConfig, FlowKey, NatForward, NatReverse, NatSource, NextHop, TrafficStats,
    VipKey, VipValue,
};

/// Ring size and hash seed (entry 0), written by the agent.
#[map]
pub static CONFIG: Array<DataplaneConfig> = Array::with_max_entries(1, 0);

/// Services by (address, port, protocol); port 0 matches every port.
#[map]
pub static VIPS: HashMap<VipKey, VipValue> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// How many VIP addresses hash to each slot: zero means "not a VIP address",
/// which settles most non-VIP traffic with one array read.
#[map]
pub static VIP_FILTER: Array<u32> = Array::with_max_entries(VIP_FILTER_SLOTS, 0);

/// VIP addresses alone, to decide the fate of packets that cannot be balanced
/// (fragments, truncated L4): dropped when meant for a VIP address, passed otherwise.
#[map]
pub static VIP_ADDRS: HashMap<VipKey, u32> = HashMap::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// Backend slots of all VIPs. Written by the agent only.
#[map]
pub static BACKENDS: Array<Backend> = Array::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Maglev rings, `ring_size` [`lb_common::RingSlot`]s per VIP index.
/// Mmapable: the agent writes changed slots as plain stores, no syscall per slot.
#[map]
pub static RING: Array<RingChunk> = Array::with_max_entries(
    ring_chunks(DEFAULT_MAX_VIPS as u64 * DEFAULT_RING_SIZE as u64) as u32,
    BPF_F_MMAPABLE,
);

/// Connection table: flow -> backend, for flows on ring slots in flux. LRU,
/// so a full table evicts the idlest flows.
#[map]
pub static CONNS: LruHashMap<FlowKey, ConnValue> = LruHashMap::with_max_entries(DEFAULT_CONN_TABLE_SIZE, 0);

/// Per-CPU cache of `bpf_fib_lookup` per backend slot; keeps the FIB off the per-packet path.
#[map]
pub static NEXTHOPS: PerCpuArray<NextHop> = PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Verdicts, drop reasons and events, laid out by `lb_common::counters`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Traffic per VIP index.
#[map]
pub static VIP_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// Traffic per backend slot.
#[map]
pub static BACKEND_STATS: PerCpuArray<TrafficStats> = PerCpuArray::with_max_entries(DEFAULT_MAX_BACKENDS, 0);

/// Where each NAT VIP's flows leave from, by VIP index.
#[map]
pub static NAT_SOURCES: Array<NatSource> = Array::with_max_entries(DEFAULT_MAX_VIPS, 0);

/// NAT mappings by the client's flow. A plain hash: a mapping holds a port
/// until the agent times it out, never evicted behind its back.
#[map]
pub static NAT_FORWARD: HashMap<FlowKey, NatForward> = HashMap::with_max_entries(DEFAULT_NAT_TABLE_SIZE, 0);

/// NAT mappings by the backend's reply flow.
#[map]
pub static NAT_REVERSE: HashMap<FlowKey, NatReverse> = HashMap::with_max_entries(DEFAULT_NAT_TABLE_SIZE, 0);
