//! The only module that touches aya: loads the balancer with its load-time
//! sizes, writes VIPs, backends and ring slots, reads counters, runs the
//! program on crafted packets (`BPF_PROG_TEST_RUN`).

mod counters;
mod decap;
mod error;
mod load;
mod nat;
mod nat_scan;
mod pinned;
mod ring;
mod scan;
#[cfg(feature = "testing")]
mod test_run;

use std::{os::fd::AsFd as _, path::PathBuf};

use aya::{
    maps::{Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuValues},
    programs::Xdp,
    Ebpf, Pod,
};
use lb_common::{
    maps::{self as names, SizedBy},
    sizes::{
        ring_chunks, DEFAULT_CONN_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, DEFAULT_NAT_TABLE_SIZE,
        DEFAULT_RECORD_LIMIT, DEFAULT_RING_SIZE, DEFAULT_TOO_BIG_LIMIT,
    },
    Backend, ConnValue, DataplaneConfig, FlowKey, NatSource, NextHop, RingSlot, TrafficStats, TunnelSource,
    VipKey, VipValue,
};

use self::error::{found, map_err, Result};
#[cfg(feature = "testing")]
pub use self::test_run::{Baseline, DecapTestRun, TestRunOutcome};
pub use self::{
    counters::Counters,
    decap::{attach_decap, decap_counters, default_decap_pin_dir, detach_decap, DecapAttached},
    error::{DataplaneError, RefusedMap},
    load::{attached_ifindex, AttachMode, Opened, PinnedOptions},
    nat_scan::{NatScanner, NatSweep},
    pinned::PinnedStats,
    ring::RingMemory,
    scan::{coarse_now, ConnScanner, Scan},
};

/// The balancer object, built by `build.rs` from the `lb-ebpf` crate.
pub static BALANCER_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer"));
/// `decap`: strips tunnel packets on backends of tunnel VIPs.
pub static DECAP_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap"));

/// What is fixed when the program is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSettings {
    pub max_vips: u32,
    pub max_backends: u32,
    pub ring_size: u32,
    pub conn_table_size: u32,
    pub hash_seed: u32,
    /// Let the program's debug notices (no backend, table pressure) through to aya-log.
    pub kernel_debug: bool,
    /// Which flows are recorded; unlike the rest, changeable while running.
    pub recording: Recording,
    /// Outer source addresses of tunnel VIPs; changeable while running too.
    pub tunnel: TunnelSource,
    /// ICMP too-big errors a CPU may send per second; changeable while running.
    pub too_big_limit: u32,
    /// Entries per direction of the NAT tables.
    pub nat_table_size: u32,
    /// Whether packets to non-VIP addresses may be NAT replies (`FLAG_NAT`);
    /// changeable while running.
    pub nat: bool,
}

/// Which flows the kernel records, and how many a CPU may record per second.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Recording {
    pub every_flow: bool,
    /// 0: no limit.
    pub limit: u32,
}

impl Default for Recording {
    fn default() -> Self {
        Self { every_flow: false, limit: DEFAULT_RECORD_LIMIT }
    }
}

impl Default for LoadSettings {
    fn default() -> Self {
        Self {
            max_vips: DEFAULT_MAX_VIPS,
            max_backends: DEFAULT_MAX_BACKENDS,
            ring_size: DEFAULT_RING_SIZE,
            conn_table_size: DEFAULT_CONN_TABLE_SIZE,
            hash_seed: 0,
            kernel_debug: false,
            recording: Recording::default(),
            tunnel: TunnelSource::KATRAN,
            too_big_limit: DEFAULT_TOO_BIG_LIMIT,
            nat_table_size: DEFAULT_NAT_TABLE_SIZE,
            nat: false,
        }
    }
}

impl LoadSettings {
    pub(super) fn entries(&self, sized_by: SizedBy) -> u32 {
        match sized_by {
            SizedBy::Vips => self.max_vips,
            SizedBy::Backends => self.max_backends,
            SizedBy::ConnTable => self.conn_table_size,
            SizedBy::NatTable => self.nat_table_size,
            SizedBy::Ring => ring_chunks(u64::from(self.max_vips) * u64::from(self.ring_size)) as u32,
        }
    }
}

/// The loaded balancer and typed handles to its maps.
pub struct Dataplane {
    ebpf: Ebpf,
    settings: LoadSettings,
    config: Array<MapData, DataplaneConfig>,
    vips: HashMap<MapData, VipKey, VipValue>,
    vip_filter: Array<MapData, u32>,
    vip_addrs: HashMap<MapData, VipKey, u32>,
    backends: Array<MapData, Backend>,
    ring: RingMemory,
    conns: HashMap<MapData, FlowKey, ConnValue>,
    nexthops: PerCpuArray<MapData, NextHop>,
    counters: PerCpuArray<MapData, u64>,
    vip_stats: PerCpuArray<MapData, TrafficStats>,
    backend_stats: PerCpuArray<MapData, TrafficStats>,
    nat_sources: Array<MapData, NatSource>,
    /// Single mappings, for tests; the agent walks the tables with a [`NatScanner`].
    #[cfg(feature = "testing")]
    nat_forward: HashMap<MapData, FlowKey, lb_common::NatForward>,
    #[cfg(feature = "testing")]
    nat_reverse: HashMap<MapData, FlowKey, lb_common::NatReverse>,
    /// Where the maps are pinned; `None` for a private, unattached data plane.
    pin_dir: Option<PathBuf>,
    /// A descriptor of every map, for what the kernel says about it.
    map_fds: Vec<(&'static str, std::os::fd::OwnedFd)>,
}

/// Every backend slot in use (state other than `Unused`), with its contents.
pub(super) fn used_backends(backends: &Array<MapData, Backend>) -> Result<Vec<(u32, Backend)>> {
    let mut used = Vec::new();
    for (slot, backend) in backends.iter().enumerate() {
        let backend = backend.map_err(map_err(names::BACKENDS))?;
        if backend.state != lb_common::BackendState::Unused as u8 {
            used.push((slot as u32, backend));
        }
    }
    Ok(used)
}

/// Sets entry `index` of a per-CPU map to `value` on every CPU.
fn set_every_cpu<T: Pod>(
    map: &mut PerCpuArray<MapData, T>,
    name: &'static str,
    index: u32,
    value: T,
) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| DataplaneError::Cpus(e))?;
    let values = PerCpuValues::try_from(vec![value; cpus]).map_err(DataplaneError::Cpus)?;
    map.set(index, values, 0).map_err(map_err(name))
}

fn take<T: TryFrom<Map, Error = MapError>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T> {
    let map = ebpf.take_map(name).ok_or(DataplaneError::MissingMap(name))?;
    T::try_from(map).map_err(map_err(name))
}

impl Dataplane {
    fn from_ebpf(mut ebpf: Ebpf, settings: LoadSettings, pin_dir: Option<PathBuf>) -> Result<Self> {
        let map_fds = names::ALL
            .iter()
            .filter_map(|name| {
                let data = match ebpf.map(name)? {
                    Map::Array(d) | Map::HashMap(d) | Map::LruHashMap(d) | Map::PerCpuArray(d) => d,
                    _ => return None,
                };
                Some((*name, data.fd().as_fd().try_clone_to_owned().ok()?))
            })
            .collect();
        let ring = match ebpf.take_map(names::RING).ok_or(DataplaneError::MissingMap(names::RING))? {
            Map::Array(data) => RingMemory::new(data, settings.ring_size, settings.max_vips),
            _ => return Err(DataplaneError::WrongMapType(names::RING)),
        };
        let mut config: Array<MapData, DataplaneConfig> = take(&mut ebpf, names::CONFIG)?;
        config.set(0, settings.config(), 0).map_err(map_err(names::CONFIG))?;
        Ok(Self {
            config,
            vips: take(&mut ebpf, names::VIPS)?,
            vip_filter: take(&mut ebpf, names::VIP_FILTER)?,
            vip_addrs: take(&mut ebpf, names::VIP_ADDRS)?,
            backends: take(&mut ebpf, names::BACKENDS)?,
            conns: take(&mut ebpf, names::CONNS)?,
            nexthops: take(&mut ebpf, names::NEXTHOPS)?,
            counters: take(&mut ebpf, names::COUNTERS)?,
            vip_stats: take(&mut ebpf, names::VIP_STATS)?,
            backend_stats: take(&mut ebpf, names::BACKEND_STATS)?,
            nat_sources: take(&mut ebpf, names::NAT_SOURCES)?,
            #[cfg(feature = "testing")]
            nat_forward: take(&mut ebpf, names::NAT_FORWARD)?,
            #[cfg(feature = "testing")]
            nat_reverse: take(&mut ebpf, names::NAT_REVERSE)?,
            ring,
            ebpf,
            settings,
            pin_dir,
            map_fds,
        })
    }

    pub fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    /// Changes which flows are recorded, from the next packet on.
    pub fn set_recording(&mut self, recording: Recording) -> Result<()> {
        let settings = LoadSettings { recording, ..self.settings };
        self.config.set(0, settings.config(), 0).map_err(map_err(names::CONFIG))?;
        self.settings = settings;
        Ok(())
    }

    /// Changes the outer source addresses of tunnel VIPs, from the next packet on.
    pub fn set_tunnel_source(&mut self, tunnel: TunnelSource) -> Result<()> {
        let settings = LoadSettings { tunnel, ..self.settings };
        self.config.set(0, settings.config(), 0).map_err(map_err(names::CONFIG))?;
        self.settings = settings;
        Ok(())
    }

    /// Changes how many ICMP too-big errors a CPU may send per second, from the next packet on.
    pub fn set_too_big_limit(&mut self, too_big_limit: u32) -> Result<()> {
        let settings = LoadSettings { too_big_limit, ..self.settings };
        self.config.set(0, settings.config(), 0).map_err(map_err(names::CONFIG))?;
        self.settings = settings;
        Ok(())
    }

    /// The id of the program attached (the pinned link's) or loaded here.
    pub fn program_id(&self) -> Result<u32> {
        if let Some(dir) = &self.pin_dir {
            return load::attached_program_id(dir);
        }
        let info = self
            .program()
            .info()
            .map_err(|source| DataplaneError::Program { name: names::PROGRAM, source })?;
        Ok(info.id())
    }

    pub fn pin_dir(&self) -> Option<&std::path::Path> {
        self.pin_dir.as_deref()
    }

    fn program(&self) -> &Xdp {
        // `load` proved the program exists and is XDP.
        self.ebpf.program(names::PROGRAM).and_then(|p| <&Xdp>::try_from(p).ok()).expect("balancer program")
    }

    fn check(&self, what: &'static str, index: u32, max: u32) -> Result<()> {
        if index < max {
            Ok(())
        } else {
            Err(DataplaneError::OutOfRange { what, index, max })
        }
    }

    /// Adds or replaces a VIP, and registers its address.
    pub fn set_vip(&mut self, key: VipKey, value: VipValue) -> Result<()> {
        self.check("VIP index", value.index, self.settings.max_vips)?;
        let address = key.address_only();
        if found(self.vip_addrs.get(&address, 0), names::VIP_ADDRS)?.is_none() {
            // Counted first: a failure between the two leaves the filter counting
            // too much (an extra lookup), never too little (VIP traffic passed).
            self.count_address(&address, 1)?;
            self.vip_addrs.insert(address, 0, 0).map_err(map_err(names::VIP_ADDRS))?;
        }
        self.vips.insert(key, value, 0).map_err(map_err(names::VIPS))
    }

    /// Every VIP address registered in `VIP_ADDRS`.
    pub fn vip_addresses(&self) -> Result<Vec<VipKey>> {
        self.vip_addrs.keys().collect::<Result<_, _>>().map_err(map_err(names::VIP_ADDRS))
    }

    /// Forgets a VIP address no VIP uses any more; forgetting one that is not
    /// registered does nothing, so a failed call can be repeated.
    pub fn forget_address(&mut self, address: &VipKey) -> Result<()> {
        if found(self.vip_addrs.get(address, 0), names::VIP_ADDRS)?.is_some() {
            self.vip_addrs.remove(address).map_err(map_err(names::VIP_ADDRS))?;
            self.count_address(address, -1)?;
        }
        Ok(())
    }

    /// Counts a VIP address in (+1) or out (-1) of the kernel's address filter.
    fn count_address(&mut self, address: &VipKey, change: i32) -> Result<()> {
        let slot = lb_common::types::vip_filter_slot(&address.addr, address.family);
        let count = self.vip_filter.get(&slot, 0).map_err(map_err(names::VIP_FILTER))?;
        self.vip_filter.set(slot, count.saturating_add_signed(change), 0).map_err(map_err(names::VIP_FILTER))
    }

    /// Removes VIP `key` held at `index` (its established flows stop too); its
    /// address stays registered until [`Self::forget_address`]. Whatever of it
    /// is already gone stays gone: a removal that failed part way can be repeated.
    pub fn remove_vip(&mut self, key: &VipKey) -> Result<()> {
        if found(self.vips.get(key, 0), names::VIPS)?.is_some() {
            self.vips.remove(key).map_err(map_err(names::VIPS))?;
        }
        Ok(())
    }

    /// Writes a backend slot. A changed address, or a slot taken over by
    /// another VIP (perhaps of another mode), also forgets the cached next hop.
    pub fn set_backend(&mut self, index: u32, backend: Backend) -> Result<()> {
        self.check("backend index", index, self.settings.max_backends)?;
        let old = self.backends.get(&index, 0).map_err(map_err(names::BACKENDS))?;
        self.backends.set(index, backend, 0).map_err(map_err(names::BACKENDS))?;
        // A slot never used (no address yet) has no next hop cached to forget.
        let used = old.addr != [0; 4];
        if used && (old.addr != backend.addr || old.family != backend.family || old.vip != backend.vip) {
            self.forget_next_hop(index)?;
        }
        Ok(())
    }

    /// Every VIP in the map (what a previous agent left, when adopting).
    pub fn vip_entries(&self) -> Result<Vec<(VipKey, VipValue)>> {
        self.vips.iter().collect::<Result<_, _>>().map_err(map_err(names::VIPS))
    }

    /// Every backend slot in use (state other than `Unused`).
    pub fn backend_entries(&self) -> Result<Vec<(u32, Backend)>> {
        used_backends(&self.backends)
    }

    pub fn backend(&self, index: u32) -> Result<Backend> {
        self.backends.get(&index, 0).map_err(map_err(names::BACKENDS))
    }

    /// Drops the cached FIB result of a backend on every CPU.
    pub fn forget_next_hop(&mut self, index: u32) -> Result<()> {
        let zero = NextHop { stamp_ns: 0, ifindex: 0, dmac: [0; 6], smac: [0; 6], mtu: 0, _pad: [0; 6] };
        set_every_cpu(&mut self.nexthops, names::NEXTHOPS, index, zero)
    }

    /// Runs `f` on the ring of VIP `vip`, in the kernel's own memory: writes
    /// are plain stores, seen by the next packet.
    pub fn with_ring_mut<T>(&mut self, vip: u32, f: impl FnOnce(&mut [RingSlot]) -> T) -> Result<T> {
        self.check("VIP index", vip, self.settings.max_vips)?;
        self.ring.write(vip, f)
    }

    /// Entries in the connection table (walks it: see [`PinnedStats::connections`]).
    pub fn connections(&self) -> usize {
        count_flows(&self.conns)
    }

    /// The backend a flow is pinned to, if the connection table has it.
    /// Records `flow` as another node recorded it, unless this node already
    /// has an entry of its own (which it knows better).
    pub fn adopt_connection(&mut self, flow: &FlowKey, value: ConnValue) -> Result<bool> {
        const BPF_NOEXIST: u64 = 1;
        match self.conns.insert(flow, value, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(e) => Err(map_err(names::CONNS)(e)),
        }
    }

    pub fn connection(&self, flow: &FlowKey) -> Result<Option<ConnValue>> {
        found(self.conns.get(flow, 0), names::CONNS)
    }

    pub fn counters(&self) -> Result<Counters> {
        Counters::read(&self.counters).map_err(map_err(names::COUNTERS))
    }

    pub fn vip_stats(&self, vip: u32) -> Result<TrafficStats> {
        counters::sum_stats(&self.vip_stats, vip).map_err(map_err(names::VIP_STATS))
    }

    pub fn backend_stats(&self, backend: u32) -> Result<TrafficStats> {
        counters::sum_stats(&self.backend_stats, backend).map_err(map_err(names::BACKEND_STATS))
    }

    /// Zeroes VIP `vip`'s traffic counters, for a new VIP given a used index.
    pub fn clear_vip_stats(&mut self, vip: u32) -> Result<()> {
        self.check("VIP index", vip, self.settings.max_vips)?;
        set_every_cpu(&mut self.vip_stats, names::VIP_STATS, vip, TrafficStats::default())
    }

    /// Zeroes backend slot `backend`'s traffic counters, for a new backend given a used slot.
    pub fn clear_backend_stats(&mut self, backend: u32) -> Result<()> {
        self.check("backend index", backend, self.settings.max_backends)?;
        set_every_cpu(&mut self.backend_stats, names::BACKEND_STATS, backend, TrafficStats::default())
    }
}

/// Entries in a connection table, by walking its keys: one system call per
/// entry, so callers ration it.
pub(super) fn count_flows(conns: &HashMap<MapData, FlowKey, ConnValue>) -> usize {
    conns.keys().filter(|k| k.is_ok()).count()
}
