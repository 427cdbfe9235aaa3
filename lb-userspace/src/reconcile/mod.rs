//! Desired state → kernel maps. The reconciler owns the data plane: it gives
//! every VIP an index and every backend a slot (kept stable, so connection-table
//! entries stay meaningful across reloads and agent restarts), builds each VIP's
//! Maglev ring and writes only what changed, in an order that never lets the
//! kernel see a ring slot pointing at a backend that is not set up:
//!
//! 1. backends that keep flows, before any ring names them;
//! 2. rings whose members changed;
//! 3. VIPs, once their rings are complete;
//! 4. backends that stop keeping flows, now that no ring names them;
//! 5. what goes away: a VIP made invisible, then its ring cleared; backends
//!    marked unused. Only then are their ids given back, and addresses no VIP
//!    has any more forgotten.
//!
//! Ring slots whose owner changed are in flux (see `lb_common::RingSlot`); the
//! reconciler remembers since when, and `settle` settles them once no flow
//! can still need their prior owner.
//!
//! An id given back is reused by a later pass only: a config that fits only
//! once what it leaves out has left (replacing a backend at `max_backends`)
//! is applied in two passes: first everything but the VIPs that gain what does
//! not fit yet. What the reconciler records as written was written: after a
//! failed write, the next apply writes it again.

mod capacity;
mod ids;
mod maps;
mod report;
mod rings;
mod settle;
#[cfg(test)]
mod tests;

use std::{
    collections::{hash_map::Entry, BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    time::Instant,
};

use lb_common::{
    types::{addr_words, words_addr},
    Backend, BackendState, NatSource, VipKey, VipValue,
};

use self::{capacity::wanted_backends, ids::IdPool};
pub use self::{maps::Maps, report::ApplyReport, settle::LiveFlows};
use crate::{
    dataplane::{Dataplane, DataplaneError},
    desired::DesiredVip,
    maglev::Member,
};

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("no free {what}: the data plane was loaded with room for {max} (raise {setting} and restart with --fresh)")]
    Full { what: &'static str, max: u32, setting: &'static str },
}

impl ReconcileError {
    fn no_vip_index(max: u32) -> Self {
        Self::Full { what: "VIP index", max, setting: "global.max_vips" }
    }

    fn no_backend_slot(max: u32) -> Self {
        Self::Full { what: "backend slot", max, setting: "global.max_backends" }
    }
}

#[derive(Debug)]
struct SlotState {
    slot: u32,
    /// What the kernel's `BACKENDS[slot]` holds; `None` when that is not known
    /// (a write failed), so the next apply writes it again.
    written: Option<Backend>,
    /// Whether its VIP's ring, as last written, names it.
    in_ring: bool,
}

#[derive(Debug)]
struct VipState {
    index: u32,
    /// What the kernel's `VIPS` entry holds; `None` before it is written or when not known.
    written: Option<VipValue>,
    /// What the kernel's `NAT_SOURCES` entry holds for a NAT VIP, as written.
    nat_written: Option<NatSource>,
    backends: BTreeMap<SocketAddr, SlotState>,
    /// Ring members as last written; `None` rebuilds the ring.
    members: Option<Vec<Member>>,
    /// Ring offsets in flux, with when their owner last changed.
    flux: HashMap<u32, Instant>,
}

pub struct Reconciler<M = Dataplane> {
    dp: M,
    vips: HashMap<VipKey, VipState>,
    vip_ids: IdPool,
    slots: IdPool,
    /// Slots a previous agent left to VIPs that no longer exist: out of the
    /// pool until the next apply has marked them unused.
    orphans: Vec<(u32, Backend)>,
    /// VIP addresses the kernel may have registered (`VIP_ADDRS`): every one it
    /// has, and perhaps one whose registration failed (forgetting is harmless).
    addresses: HashSet<VipKey>,
}

impl<M: Maps> Reconciler<M> {
    /// Takes over a data plane, adopting whatever VIPs and backend slots it
    /// already holds (a restarted agent keeps every index and slot as it was).
    pub fn adopt(mut dp: M) -> Result<Self, ReconcileError> {
        let settings = *dp.settings();
        let mut vips: HashMap<VipKey, VipState> = dp
            .vip_entries()?
            .into_iter()
            .map(|(key, value)| {
                let state = VipState {
                    index: value.index,
                    written: Some(value),
                    // Written again by the first apply: the same, or what the config says now.
                    nat_written: None,
                    backends: BTreeMap::new(),
                    members: None,
                    flux: HashMap::new(),
                };
                (key, state)
            })
            .collect();
        // When they changed died with the previous agent: from now, then.
        let now = Instant::now();
        for state in vips.values_mut() {
            state.flux = dp.with_ring_mut(state.index, |ring| {
                let flux = ring.iter().enumerate().filter(|(_, s)| !s.is_settled());
                flux.map(|(offset, _)| (offset as u32, now)).collect()
            })?;
        }
        let by_index: HashMap<u32, VipKey> = vips.iter().map(|(k, v)| (v.index, *k)).collect();
        let mut used_slots = HashSet::new();
        let mut orphans = Vec::new();
        for (slot, backend) in dp.backend_entries()? {
            used_slots.insert(slot);
            let Some(vip) = by_index.get(&backend.vip).and_then(|key| vips.get_mut(key)) else {
                orphans.push((slot, backend));
                continue;
            };
            let addr =
                SocketAddr::new(words_addr(backend.addr, backend.family), u16::from_be(backend.port_be));
            let adopted = SlotState { slot, written: Some(backend), in_ring: false };
            if let Some(twin) = vip.backends.insert(addr, adopted) {
                // The same backend twice in one VIP: one slot too many.
                orphans.push((twin.slot, twin.written.unwrap_or(backend)));
            }
        }
        let used_vips = vips.values().map(|v| v.index).collect();
        let addresses = dp.vip_addresses()?.into_iter().collect();
        Ok(Self {
            addresses,
            vip_ids: IdPool::with_used(settings.max_vips, &used_vips),
            slots: IdPool::with_used(settings.max_backends, &used_slots),
            vips,
            dp,
            orphans,
        })
    }

    pub fn dataplane(&self) -> &M {
        &self.dp
    }

    /// For what the reconciler does not manage (the recording policy).
    pub fn dataplane_mut(&mut self) -> &mut M {
        &mut self.dp
    }

    pub fn into_dataplane(self) -> M {
        self.dp
    }

    /// The VIP index given to `key`, once the VIP is in the kernel.
    pub fn vip_index(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).filter(|v| v.written.is_some()).map(|v| v.index)
    }

    /// The backend slot given to `backend` of VIP `key`.
    pub fn backend_slot(&self, key: &VipKey, backend: SocketAddr) -> Option<u32> {
        self.vips.get(key)?.backends.get(&backend).map(|s| s.slot)
    }

    /// Whether a backend is one of its VIP's ring members (takes new flows).
    pub fn in_ring(&self, key: &VipKey, backend: SocketAddr) -> bool {
        self.vips.get(key).and_then(|v| v.backends.get(&backend)).is_some_and(|s| s.in_ring)
    }

    /// The state the kernel holds for a backend (a restarted agent starts health from it).
    pub fn backend_state(&self, key: &VipKey, backend: SocketAddr) -> Option<u8> {
        self.vips.get(key)?.backends.get(&backend)?.written.map(|w| w.state)
    }

    /// Makes the kernel hold exactly `desired`. `Full` (nothing written) when
    /// it does not fit even once what it leaves out is gone.
    pub fn apply(&mut self, desired: &[DesiredVip]) -> Result<ApplyReport, ReconcileError> {
        let first = self.first_pass(desired)?;
        let kept: HashSet<VipKey> = desired.iter().map(|v| v.key.address_only()).collect();
        let mut report = ApplyReport::default();
        // Replies are looked for before a NAT VIP can make a mapping, and no
        // longer once none can.
        let nat = desired.iter().any(|v| v.nat.is_some());
        if nat && !self.dp.settings().nat {
            self.dp.set_nat(true)?;
        }
        if let Some(fits) = first {
            self.apply_pass(&fits, &kept, &mut report)?;
        }
        self.apply_pass(desired, &kept, &mut report)?;
        if !nat && self.dp.settings().nat {
            self.dp.set_nat(false)?;
        }
        Ok(report)
    }

    /// One pass of the five steps. `kept`: the VIP addresses in use once the
    /// whole apply is done (a first pass keeps them for the second).
    fn apply_pass(
        &mut self,
        desired: &[DesiredVip],
        kept: &HashSet<VipKey>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        // 1. Index and slots for everything wanted; backends that keep flows written before any ring names them.
        let mut later = Vec::new();
        for vip in desired {
            self.write_backends(vip, &mut later, report)?;
        }

        // 2. Rings whose members changed: built on every core, then only the changed slots written.
        let jobs = rings::ring_jobs(&self.vips, desired);
        let Self { dp, vips, addresses, .. } = self;
        for job in &jobs {
            vips.get_mut(&job.vip).expect("jobs are of known VIPs").members = None;
        }
        let now = Instant::now();
        rings::rebuild(dp, &jobs, |job, written| {
            report.ring_slots_written += written.changed;
            let state = vips.get_mut(&job.vip).expect("jobs are of known VIPs");
            state.flux.extend(written.in_flux.into_iter().map(|offset| (offset, now)));
            let members: HashSet<SocketAddr> = job.members.iter().map(|m| m.id).collect();
            for (addr, s) in &mut state.backends {
                s.in_ring = members.contains(addr);
            }
            state.members = Some(job.members.clone());
        })?;

        // 3. VIPs become visible only now that their rings are complete (with
        //    their address: also one a failed write or a previous agent left out).
        for vip in desired {
            let state = vips.get_mut(&vip.key).expect("indexed in step 1");
            if let Some(source) = vip.nat.filter(|s| state.nat_written != Some(*s)) {
                state.nat_written = None;
                dp.set_nat_source(state.index, source)?;
                state.nat_written = Some(source);
            }
            let want = VipValue { index: state.index, mode: vip.mode as u8, _pad: [0; 3] };
            let address = vip.key.address_only();
            if state.written != Some(want) || !addresses.contains(&address) {
                let mode_was = state.written.map(|w| w.mode);
                report.vips_changed += usize::from(state.written.is_some_and(|w| w != want));
                state.written = None;
                // Before the write: one that fails part way may have registered it.
                addresses.insert(address);
                dp.set_vip(vip.key, want)?;
                state.written = Some(want);
                // A tunnel's cached next hop may be a gateway, which DSR must
                // never use; forgotten after the write, so none is cached anew
                // under the old mode.
                if mode_was.is_some_and(|mode| mode != want.mode) {
                    for s in state.backends.values() {
                        dp.forget_next_hop(s.slot)?;
                    }
                }
            }
        }

        // 4. Backends that take no flows any more: the rings no longer name them.
        for (key, addr, want) in later {
            let s = vips.get_mut(&key).and_then(|v| v.backends.get_mut(&addr)).expect("listed in step 1");
            write_backend(dp, s, want)?;
        }

        // 5. What is left out.
        self.remove_leaving(desired, kept, report)
    }

    /// Step 1 for one VIP: an index if it is new, a slot for each new backend,
    /// and every backend written that can be now; the others go to `later`.
    fn write_backends(
        &mut self,
        vip: &DesiredVip,
        later: &mut Vec<(VipKey, SocketAddr, Backend)>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let Self { dp, vips, vip_ids, slots, .. } = self;
        let state = match vips.entry(vip.key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => {
                let index = take_id(vip_ids, ReconcileError::no_vip_index, |i| dp.clear_vip_stats(i))?;
                report.vips_added += 1;
                e.insert(VipState {
                    index,
                    written: None,
                    nat_written: None,
                    backends: BTreeMap::new(),
                    members: None,
                    flux: HashMap::new(),
                })
            }
        };
        for b in &vip.backends {
            let want = kernel_backend(b.addr, state.index, b.state());
            match state.backends.get_mut(&b.addr) {
                Some(s) if s.written == Some(want) => {}
                Some(s) => {
                    report.backends_changed += usize::from(s.written.is_some());
                    if BackendState::keeps_flows(want.state) {
                        write_backend(dp, s, want)?;
                    } else {
                        later.push((vip.key, b.addr, want));
                    }
                }
                None => {
                    let slot =
                        take_id(slots, ReconcileError::no_backend_slot, |s| dp.clear_backend_stats(s))?;
                    report.backends_added += 1;
                    let s = state.backends.entry(b.addr).or_insert(SlotState {
                        slot,
                        written: None,
                        in_ring: false,
                    });
                    // No ring names a slot just taken: whatever its state, it is written now.
                    write_backend(dp, s, want)?;
                }
            }
        }
        Ok(())
    }

    /// Step 5: a VIP left out becomes invisible, then its ring is cleared and
    /// its backends marked unused; a backend left out of a VIP that stays is
    /// marked unused (step 2 rebuilt that VIP's ring without it). Each id is
    /// given back once what held it is written. Last, the addresses that no
    /// VIP has any more, and that `kept` does not keep, are forgotten.
    fn remove_leaving(
        &mut self,
        desired: &[DesiredVip],
        kept: &HashSet<VipKey>,
        report: &mut ApplyReport,
    ) -> Result<(), ReconcileError> {
        let wanted = wanted_backends(desired);
        let gone: Vec<VipKey> = self.vips.keys().filter(|k| !wanted.contains_key(k)).copied().collect();
        let Self { dp, vips, vip_ids, slots, orphans, addresses } = self;
        for key in gone {
            let state = vips.get_mut(&key).expect("listed from the map");
            let index = state.index;
            state.written = None;
            dp.remove_vip(&key)?;
            state.members = None;
            dp.with_ring_mut(state.index, rings::clear)?;
            state.flux.clear();
            let all: Vec<SocketAddr> = state.backends.keys().copied().collect();
            release(dp, slots, state, &all, report)?;
            vips.remove(&key);
            vip_ids.give_back(index);
            report.vips_removed += 1;
        }
        for (key, state) in vips.iter_mut() {
            let keep = &wanted[key];
            // Step 1 gave every wanted backend a slot: any more are leaving.
            if state.backends.len() > keep.len() {
                let leaving: Vec<SocketAddr> =
                    state.backends.keys().filter(|a| !keep.contains(a)).copied().collect();
                release(dp, slots, state, &leaving, report)?;
            }
        }
        while let Some(&(slot, backend)) = orphans.last() {
            dp.set_backend(slot, Backend { state: BackendState::Unused as u8, ..backend })?;
            orphans.pop();
            slots.give_back(slot);
            report.backends_removed += 1;
        }
        let in_use: HashSet<VipKey> =
            vips.keys().map(|k| k.address_only()).chain(kept.iter().copied()).collect();
        let stale: Vec<VipKey> = addresses.iter().filter(|a| !in_use.contains(a)).copied().collect();
        for address in stale {
            dp.forget_address(&address)?;
            addresses.remove(&address);
        }
        Ok(())
    }
}

/// A backend's `BACKENDS` entry.
fn kernel_backend(addr: SocketAddr, vip: u32, state: BackendState) -> Backend {
    let (words, family) = addr_words(addr.ip());
    Backend { addr: words, port_be: addr.port().to_be(), family, state: state as u8, vip }
}

/// An id for something new, its counters zeroed (they still hold those of
/// whatever had it before).
fn take_id(
    pool: &mut IdPool,
    full: fn(u32) -> ReconcileError,
    clear_stats: impl FnOnce(u32) -> Result<(), DataplaneError>,
) -> Result<u32, ReconcileError> {
    let id = pool.take().ok_or_else(|| full(pool.max()))?;
    if let Err(e) = clear_stats(id) {
        pool.give_back(id);
        return Err(e.into());
    }
    Ok(id)
}

/// Writes a backend slot; until the write has succeeded, its contents are not known.
fn write_backend<M: Maps>(dp: &mut M, s: &mut SlotState, want: Backend) -> Result<(), DataplaneError> {
    s.written = None;
    dp.set_backend(s.slot, want)?;
    s.written = Some(want);
    Ok(())
}

/// Marks backends `addrs` of a VIP unused, then gives their slots back. A
/// ring slot in flux whose prior owner leaves takes its owner as prior: the
/// flows of a backend that is gone are not kept, and its slot id may serve
/// another backend next.
fn release<M: Maps>(
    dp: &mut M,
    slots: &mut IdPool,
    vip: &mut VipState,
    addrs: &[SocketAddr],
    report: &mut ApplyReport,
) -> Result<(), DataplaneError> {
    for addr in addrs {
        let s = vip.backends.get_mut(addr).expect("a backend of this VIP");
        write_backend(dp, s, kernel_backend(*addr, vip.index, BackendState::Unused))?;
        let (slot, flux) = (s.slot, &vip.flux);
        dp.with_ring_mut(vip.index, |ring| settle::forget_prior(ring, flux.keys(), slot))?;
        slots.give_back(s.slot);
        vip.backends.remove(addr);
        report.backends_removed += 1;
    }
    Ok(())
}
