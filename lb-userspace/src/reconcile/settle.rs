//! Settling ring slots in flux. A slot in flux makes the kernel look its flows
//! up and record them; settled, it sends every flow to its owner without
//! either. So a slot settles only once no flow can need anything else:
//!
//! - its unrecorded flows belong to the prior owner: the slot waits until the
//!   prior owner is the owner again, or until `flow_idle_timeout` has passed
//!   since the owner last changed (a flow silent for that long is taken to
//!   be gone, as a stateful firewall would take it);
//! - its recorded flows: none may still be live (seen within the timeout,
//!   in a scan taken after the slot last changed) on a backend other than
//!   the owner.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use lb_common::RingSlot;

use super::{Maps, ReconcileError, Reconciler};

/// What a scan of the connection table found live: per (VIP index, ring
/// offset), the backend slots its recorded flows go to.
#[derive(Debug)]
pub struct LiveFlows {
    /// When the scan started: a slot that changed later is not judged by it.
    pub taken: Instant,
    pub by_slot: HashMap<(u32, u32), Vec<u32>>,
}

impl<M: Maps> Reconciler<M> {
    /// Settles the slots in flux that no flow needs any more; returns how many.
    pub fn settle(
        &mut self,
        live: &LiveFlows,
        idle_timeout: Duration,
        now: Instant,
    ) -> Result<usize, ReconcileError> {
        let mut settled = 0;
        let Self { dp, vips, .. } = self;
        for state in vips.values_mut() {
            if state.flux.is_empty() {
                continue;
            }
            let (index, flux) = (state.index, &mut state.flux);
            settled += dp.with_ring_mut(index, |ring| {
                let before = flux.len();
                flux.retain(|&offset, &mut changed| {
                    let slot = &mut ring[offset as usize];
                    let prior_done =
                        slot.prior() == slot.owner() || now.duration_since(changed) >= idle_timeout;
                    let recorded = live.by_slot.get(&(index, offset));
                    let recorded_done =
                        recorded.is_none_or(|backends| backends.iter().all(|&b| b == slot.owner()));
                    let done = slot.is_settled() || (changed <= live.taken && prior_done && recorded_done);
                    if done {
                        *slot = RingSlot::settled(slot.owner());
                    }
                    !done
                });
                before - flux.len()
            })?;
        }
        Ok(settled)
    }

    /// Whether any ring slot is in flux.
    pub fn in_flux(&self) -> usize {
        self.vips.values().map(|v| v.flux.len()).sum()
    }
}

/// Slots in flux (`flux`, offsets) whose prior owner is backend slot `gone`
/// take their owner as prior instead: they stay in flux for their recorded
/// flows, but nothing is sent to a slot that is about to be given back.
pub(super) fn forget_prior<'a>(ring: &mut [RingSlot], flux: impl Iterator<Item = &'a u32>, gone: u32) {
    for &offset in flux {
        let slot = &mut ring[offset as usize];
        if slot.prior() == gone {
            *slot = RingSlot::new(slot.owner(), slot.owner());
        }
    }
}
