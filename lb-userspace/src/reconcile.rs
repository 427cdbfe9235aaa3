//! Desired state → kernel maps. The reconciler owns the data plane: it gives
//! every VIP an index and every backend a slot (kept stable, so connection-table
//! entries stay meaningful across reloads and agent restarts), builds each VIP's
//! Maglev ring and writes only what changed, in an order that never lets the
//! kernel see a ring slot pointing at a backend that is not set up.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    net::SocketAddr,
};

use lb_common::{sizes::RING_EMPTY, types::addr_words, Backend, BackendState, Mode, VipKey, VipValue};

use crate::{
    dataplane::{Dataplane, DataplaneError},
    maglev::{self, Member},
};

/// One VIP as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredVip {
    pub key: VipKey,
    pub mode: Mode,
    /// With no primary usable: all usable backups take flows, not just the first.
    pub allbackups: bool,
    pub backends: Vec<DesiredBackend>,
}

/// One backend as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredBackend {
    pub addr: SocketAddr,
    /// 0 drains: no new flows, established ones continue.
    pub weight: u32,
    /// Only takes new flows while no primary can.
    pub backup: bool,
    /// Health: a backend that is not up takes no new flows and loses its established ones.
    pub up: bool,
}

impl DesiredBackend {
    fn state(&self) -> BackendState {
        match (self.up, self.weight) {
            (false, _) => BackendState::Down,
            (true, 0) => BackendState::Draining,
            (true, _) => BackendState::Up,
        }
    }

    fn takes_new_flows(&self) -> bool {
        self.up && self.weight > 0
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("no free {what}: the data plane was loaded with room for {max} (raise {setting} and restart with --fresh)")]
    Full { what: &'static str, max: u32, setting: &'static str },
}

/// What one `apply` changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub vips_added: usize,
    pub vips_removed: usize,
    pub backends_added: usize,
    pub backends_removed: usize,
    pub backends_changed: usize,
    pub ring_slots_written: usize,
}

impl ApplyReport {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

/// Ids handed out fresh first, then the longest-freed first, so a freed slot is
/// reused as late as possible (stale flows pointing at it have long been re-selected).
#[derive(Debug)]
struct IdPool {
    next: u32,
    max: u32,
    freed: VecDeque<u32>,
}

impl IdPool {
    /// A pool with `used` already taken (adoption): the gaps below the highest are free.
    fn with_used(max: u32, used: &HashSet<u32>) -> Self {
        let next = used.iter().max().map_or(0, |m| m + 1);
        Self { next, max, freed: (0..next).filter(|i| !used.contains(i)).collect() }
    }

    fn take(&mut self) -> Option<u32> {
        if self.next < self.max {
            self.next += 1;
            return Some(self.next - 1);
        }
        self.freed.pop_front()
    }

    fn give_back(&mut self, id: u32) {
        self.freed.push_back(id);
    }
}

#[derive(Debug)]
struct SlotState {
    slot: u32,
    /// What the kernel's `BACKENDS[slot]` holds now.
    written: Backend,
}

#[derive(Debug)]
struct VipState {
    index: u32,
    mode: u8,
    backends: BTreeMap<SocketAddr, SlotState>,
    /// Ring members of the last build, to skip rebuilding an unchanged ring.
    members: Option<Vec<Member>>,
}

pub struct Reconciler {
    dp: Dataplane,
    vips: HashMap<VipKey, VipState>,
    vip_ids: IdPool,
    slots: IdPool,
}

impl Reconciler {
    /// Takes over a data plane, adopting whatever VIPs and backend slots it
    /// already holds (a restarted agent keeps every index and slot as it was).
    pub fn adopt(dp: Dataplane) -> Result<Self, ReconcileError> {
        let settings = *dp.settings();
        let mut vips: HashMap<VipKey, VipState> = dp
            .vip_entries()?
            .into_iter()
            .map(|(key, value)| {
                let state = VipState {
                    index: value.index,
                    mode: value.mode,
                    backends: BTreeMap::new(),
                    members: None,
                };
                (key, state)
            })
            .collect();
        let by_index: HashMap<u32, VipKey> = vips.iter().map(|(k, v)| (v.index, *k)).collect();
        let mut used_slots = HashSet::new();
        for (slot, backend) in dp.backend_entries()? {
            let Some(vip) = by_index.get(&backend.vip).and_then(|key| vips.get_mut(key)) else {
                // A slot of a VIP that no longer exists: leave it out of the pool until it is cleared.
                continue;
            };
            let ip = lb_common::types::words_addr(backend.addr, backend.family);
            let addr = SocketAddr::new(ip, u16::from_be(backend.port_be));
            vip.backends.insert(addr, SlotState { slot, written: backend });
            used_slots.insert(slot);
        }
        let used_vips = vips.values().map(|v| v.index).collect();
        Ok(Self {
            vip_ids: IdPool::with_used(settings.max_vips, &used_vips),
            slots: IdPool::with_used(settings.max_backends, &used_slots),
            vips,
            dp,
        })
    }

    pub fn dataplane(&self) -> &Dataplane {
        &self.dp
    }

    pub fn into_dataplane(self) -> Dataplane {
        self.dp
    }

    /// The VIP index and backend slots given to `key`, if it is set up.
    pub fn vip_index(&self, key: &VipKey) -> Option<u32> {
        self.vips.get(key).map(|v| v.index)
    }

    pub fn backend_slot(&self, key: &VipKey, backend: SocketAddr) -> Option<u32> {
        self.vips.get(key)?.backends.get(&backend).map(|s| s.slot)
    }

    /// Whether a backend is one of its VIP's ring members (takes new flows).
    pub fn in_ring(&self, key: &VipKey, backend: SocketAddr) -> bool {
        self.vips
            .get(key)
            .and_then(|v| v.members.as_ref())
            .is_some_and(|members| members.iter().any(|m| m.id == backend))
    }

    /// The state the kernel holds for a backend (a restarted agent starts health from it).
    pub fn backend_state(&self, key: &VipKey, backend: SocketAddr) -> Option<u8> {
        self.vips.get(key)?.backends.get(&backend).map(|s| s.written.state)
    }

    /// Makes the kernel hold exactly `desired`.
    pub fn apply(&mut self, desired: &[DesiredVip]) -> Result<ApplyReport, ReconcileError> {
        let mut report = ApplyReport::default();
        let wanted: HashSet<VipKey> = desired.iter().map(|v| v.key).collect();

        // Give back what goes away first, so its ids are available (last) for what comes.
        let gone_vips: Vec<VipKey> = self.vips.keys().filter(|k| !wanted.contains(k)).copied().collect();
        let mut gone_backends: Vec<(u32, Backend)> = Vec::new();
        for vip in desired {
            if let Some(state) = self.vips.get_mut(&vip.key) {
                let keep: HashSet<SocketAddr> = vip.backends.iter().map(|b| b.addr).collect();
                let leaving: Vec<SocketAddr> =
                    state.backends.keys().filter(|a| !keep.contains(a)).copied().collect();
                for addr in leaving {
                    if let Some(s) = state.backends.remove(&addr) {
                        gone_backends.push((s.slot, s.written));
                    }
                }
            }
        }

        // 1. Index and slots for everything wanted; usable backends written before any ring names them.
        let mut later: Vec<(u32, Backend)> = Vec::new();
        for vip in desired {
            let state = match self.vips.get_mut(&vip.key) {
                Some(state) => state,
                None => {
                    let index = self.vip_ids.take().ok_or(ReconcileError::Full {
                        what: "VIP index",
                        max: self.vip_ids.max,
                        setting: "global.max_vips",
                    })?;
                    report.vips_added += 1;
                    self.vips.entry(vip.key).or_insert(VipState {
                        index,
                        mode: u8::MAX,
                        backends: BTreeMap::new(),
                        members: None,
                    })
                }
            };
            for b in &vip.backends {
                let (addr, family) = addr_words(b.addr.ip());
                let want = Backend {
                    addr,
                    port_be: b.addr.port().to_be(),
                    family,
                    state: b.state() as u8,
                    vip: state.index,
                };
                let slot = match state.backends.get(&b.addr) {
                    Some(s) if s.written == want => continue,
                    Some(s) => {
                        report.backends_changed += 1;
                        s.slot
                    }
                    None => {
                        report.backends_added += 1;
                        self.slots.take().ok_or(ReconcileError::Full {
                            what: "backend slot",
                            max: self.slots.max,
                            setting: "global.max_backends",
                        })?
                    }
                };
                state.backends.insert(b.addr, SlotState { slot, written: want });
                if BackendState::keeps_flows(want.state) {
                    self.dp.set_backend(slot, want)?;
                } else {
                    later.push((slot, want));
                }
            }
        }

        // 2. Rings whose members changed: built on every core, then only the changed slots written.
        // In batches: a built ring is ring_size × 4 bytes, a thousand of them would not be small.
        let jobs = ring_jobs(&self.vips, desired);
        for batch in jobs.chunks(RING_BATCH) {
            let built = build_rings(batch, self.dp.settings().ring_size);
            for (job, ring) in batch.iter().zip(built) {
                let state = self.vips.get_mut(&job.vip).expect("allocated above");
                report.ring_slots_written += write_ring(&mut self.dp, state.index, job, &ring)?;
                state.members = Some(job.members.clone());
            }
        }

        // 3. VIPs become visible only now that their rings are complete.
        for vip in desired {
            let state = self.vips.get_mut(&vip.key).expect("allocated above");
            if state.mode != vip.mode as u8 {
                let value = VipValue { index: state.index, mode: vip.mode as u8, _pad: [0; 3] };
                self.dp.set_vip(vip.key, value)?;
                state.mode = vip.mode as u8;
            }
        }

        // 4. Backends that take no flows any more: the rings no longer name them.
        for (slot, backend) in later {
            self.dp.set_backend(slot, backend)?;
        }

        // 5. VIPs that are gone: invisible first, then their ring and backends cleared.
        let addresses_in_use: HashSet<VipKey> = desired.iter().map(|v| v.key.address_only()).collect();
        for key in gone_vips {
            let state = self.vips.remove(&key).expect("listed from the map");
            self.dp.remove_vip(&key, !addresses_in_use.contains(&key.address_only()))?;
            self.dp.with_ring_mut(state.index, |ring| ring.fill(RING_EMPTY))?;
            for s in state.backends.into_values() {
                gone_backends.push((s.slot, s.written));
            }
            self.vip_ids.give_back(state.index);
            report.vips_removed += 1;
        }

        // 6. Backends that are gone: flows pinned to them are re-selected.
        for (slot, backend) in gone_backends {
            self.dp.set_backend(slot, Backend { state: BackendState::Unused as u8, ..backend })?;
            self.slots.give_back(slot);
            report.backends_removed += 1;
        }
        Ok(report)
    }
}

/// Who takes new flows (HAProxy's rules): the usable primaries; when none is
/// usable, the first usable backup by identity, or all of them with `allbackups`.
pub fn ring_members(vip: &DesiredVip) -> Vec<&DesiredBackend> {
    let usable =
        |backup: bool| vip.backends.iter().filter(move |b| b.backup == backup && b.takes_new_flows());
    let primaries: Vec<&DesiredBackend> = usable(false).collect();
    if !primaries.is_empty() {
        return primaries;
    }
    let mut backups: Vec<&DesiredBackend> = usable(true).collect();
    backups.sort_by_key(|b| b.addr);
    if !vip.allbackups {
        backups.truncate(1);
    }
    backups
}

/// Rings built at once before they are written.
const RING_BATCH: usize = 32;

/// A ring to rebuild: its VIP's index, the members by identity and their slots.
struct RingJob {
    vip: VipKey,
    members: Vec<Member>,
    slots: Vec<u32>,
}

/// The rings whose members changed, to rebuild.
fn ring_jobs(vips: &HashMap<VipKey, VipState>, desired: &[DesiredVip]) -> Vec<RingJob> {
    desired
        .iter()
        .filter_map(|vip| {
            let state = &vips[&vip.key];
            let chosen = ring_members(vip);
            let members: Vec<Member> =
                chosen.iter().map(|b| Member { id: b.addr, weight: b.weight }).collect();
            if state.members.as_ref() == Some(&members) {
                return None;
            }
            let slots = chosen.iter().map(|b| state.backends[&b.addr].slot).collect();
            Some(RingJob { vip: vip.key, members, slots })
        })
        .collect()
}

/// Builds the rings of `jobs` (pure work, the expensive part) on every core.
fn build_rings(jobs: &[RingJob], ring_size: u32) -> Vec<Vec<u32>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(jobs.len()).max(1);
    if threads == 1 {
        return jobs.iter().map(|j| maglev::build(&j.members, ring_size)).collect();
    }
    let per_thread = jobs.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let parts: Vec<_> = jobs
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk.iter().map(|j| maglev::build(&j.members, ring_size)).collect::<Vec<_>>()
                })
            })
            .collect();
        parts.into_iter().flat_map(|p| p.join().expect("ring builder panicked")).collect()
    })
}

/// Writes a built ring, only the slots that change; returns how many.
fn write_ring(dp: &mut Dataplane, index: u32, job: &RingJob, built: &[u32]) -> Result<usize, ReconcileError> {
    let written = dp.with_ring_mut(index, |ring| {
        let mut written = 0;
        for (current, &member) in ring.iter_mut().zip(built) {
            let want = if member == RING_EMPTY { RING_EMPTY } else { job.slots[member as usize] };
            if *current != want {
                *current = want;
                written += 1;
            }
        }
        written
    })?;
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vip(allbackups: bool, backends: &[(&str, bool, bool, u32)]) -> DesiredVip {
        DesiredVip {
            key: VipKey::new("10.77.100.1".parse().unwrap(), 80, 6),
            mode: Mode::Dsr,
            allbackups,
            backends: backends
                .iter()
                .map(|&(addr, backup, up, weight)| DesiredBackend {
                    addr: addr.parse().unwrap(),
                    weight,
                    backup,
                    up,
                })
                .collect(),
        }
    }

    fn members(vip: &DesiredVip) -> Vec<String> {
        ring_members(vip).iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn usable_primaries_take_all_new_flows() {
        let v = vip(
            false,
            &[
                ("10.0.0.1:80", false, true, 1),
                ("10.0.0.2:80", false, false, 1),
                ("10.0.0.3:80", true, true, 1),
            ],
        );
        assert_eq!(members(&v), ["10.0.0.1:80"]);
    }

    #[test]
    fn without_primaries_the_first_backup_by_identity_serves() {
        let backends = [
            ("10.0.0.1:80", false, false, 1),
            ("10.0.0.9:80", true, true, 1),
            ("10.0.0.5:80", true, true, 1),
            ("10.0.0.3:80", true, false, 1),
        ];
        assert_eq!(members(&vip(false, &backends)), ["10.0.0.5:80"]);
        assert_eq!(members(&vip(true, &backends)), ["10.0.0.5:80", "10.0.0.9:80"]);
    }

    #[test]
    fn drained_primaries_do_not_count_as_usable() {
        let v = vip(false, &[("10.0.0.1:80", false, true, 0), ("10.0.0.2:80", true, true, 1)]);
        assert_eq!(members(&v), ["10.0.0.2:80"]);
        assert_eq!(v.backends[0].state(), BackendState::Draining);
    }
}
