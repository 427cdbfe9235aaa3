//! Rings: which ones to rebuild, built on every core, then written slot by
//! slot where they changed. A slot whose owner changes goes in flux
//! ([`RingSlot::with_owner`]); `settle.rs` settles it again.

use std::collections::HashMap;

use lb_common::{RingSlot, VipKey, NO_BACKEND};

use super::{Maps, VipState};
use crate::{
    dataplane::DataplaneError,
    desired::{ring_members, DesiredVip},
    maglev::{self, Member, NO_MEMBER},
};

/// Rings built at once before they are written: a built ring is
/// ring_size × 4 bytes, a thousand of them would not be small.
const RING_BATCH: usize = 32;

/// A ring to rebuild: its VIP, the members by identity and their slots.
pub(super) struct RingJob {
    pub vip: VipKey,
    pub index: u32,
    pub members: Vec<Member>,
    pub slots: Vec<u32>,
}

/// The rings of `desired` whose members changed (or are not known), to rebuild.
/// Every member must have a slot in `vips` already.
pub(super) fn ring_jobs(vips: &HashMap<VipKey, VipState>, desired: &[DesiredVip]) -> Vec<RingJob> {
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
            Some(RingJob { vip: vip.key, index: state.index, members, slots })
        })
        .collect()
}

/// What writing a ring changed.
pub(super) struct Written {
    /// Slots whose owner changed.
    pub changed: usize,
    /// The offsets of the slots now in flux among them.
    pub in_flux: Vec<u32>,
}

/// Builds and writes the rings of `jobs`, a batch at a time; `written` hears
/// of each once it is in the kernel.
pub(super) fn rebuild<M: Maps>(
    dp: &mut M,
    jobs: &[RingJob],
    mut written: impl FnMut(&RingJob, Written),
) -> Result<(), DataplaneError> {
    let ring_size = dp.settings().ring_size;
    for batch in jobs.chunks(RING_BATCH) {
        for (job, ring) in batch.iter().zip(build_rings(batch, ring_size)) {
            written(job, write_ring(dp, job, &ring)?);
        }
    }
    Ok(())
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

/// Writes a built ring, only the slots whose owner changes.
fn write_ring<M: Maps>(dp: &mut M, job: &RingJob, built: &[u32]) -> Result<Written, DataplaneError> {
    dp.with_ring_mut(job.index, |ring| {
        let mut written = Written { changed: 0, in_flux: Vec::new() };
        for (offset, (current, &member)) in ring.iter_mut().zip(built).enumerate() {
            let want = if member == NO_MEMBER { NO_BACKEND } else { job.slots[member as usize] };
            if current.owner() != want {
                *current = current.with_owner(want);
                written.changed += 1;
                if !current.is_settled() {
                    written.in_flux.push(offset as u32);
                }
            }
        }
        written
    })
}

/// A settled, empty ring.
pub(super) fn clear(ring: &mut [RingSlot]) {
    ring.fill(RingSlot::EMPTY);
}
