//! Rings: which ones to rebuild, built on every core, then written slot by
//! slot where they changed.

use std::collections::HashMap;

use lb_common::{sizes::RING_EMPTY, VipKey};

use super::{Maps, VipState};
use crate::{
    dataplane::DataplaneError,
    desired::{ring_members, DesiredVip},
    maglev::{self, Member},
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

/// Builds and writes the rings of `jobs`, a batch at a time; `written` hears
/// of each once it is in the kernel, with how many of its slots changed.
pub(super) fn rebuild<M: Maps>(
    dp: &mut M,
    jobs: &[RingJob],
    mut written: impl FnMut(&RingJob, usize),
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

/// Writes a built ring, only the slots that change; returns how many.
fn write_ring<M: Maps>(dp: &mut M, job: &RingJob, built: &[u32]) -> Result<usize, DataplaneError> {
    dp.with_ring_mut(job.index, |ring| {
        let mut written = 0;
        for (current, &member) in ring.iter_mut().zip(built) {
            let want = if member == RING_EMPTY { RING_EMPTY } else { job.slots[member as usize] };
            if *current != want {
                *current = want;
                written += 1;
            }
        }
        written
    })
}
