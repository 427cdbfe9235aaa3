//! Room in the maps: whether a desired state fits the VIP indexes and backend
//! slots the data plane was loaded with, and when it fits only once what it
//! leaves out is gone, the first of the two passes that apply it.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use lb_common::VipKey;

use super::{Maps, ReconcileError, Reconciler};
use crate::desired::DesiredVip;

impl<M: Maps> Reconciler<M> {
    /// `Full` when `desired` does not fit even once what it leaves out is gone;
    /// otherwise, when it fits only then, the pass to apply first (which frees
    /// the ids of what leaves).
    pub(super) fn first_pass(
        &self,
        desired: &[DesiredVip],
    ) -> Result<Option<Vec<DesiredVip>>, ReconcileError> {
        let (new_vips, new_slots) = self.needed(desired);
        let (leaving_vips, leaving_slots) = self.leaving(desired);
        if new_vips > self.vip_ids.available() + leaving_vips {
            return Err(ReconcileError::no_vip_index(self.vip_ids.max()));
        }
        if new_slots > self.slots.available() + leaving_slots {
            return Err(ReconcileError::no_backend_slot(self.slots.max()));
        }
        let fits_now = new_vips <= self.vip_ids.available() && new_slots <= self.slots.available();
        Ok((!fits_now).then(|| self.what_fits(desired)))
    }

    /// VIP indexes and backend slots `desired` needs and does not have yet.
    fn needed(&self, desired: &[DesiredVip]) -> (usize, usize) {
        desired.iter().fold((0, 0), |(vips, slots), vip| match self.vips.get(&vip.key) {
            Some(state) => {
                (vips, slots + vip.backends.iter().filter(|b| !state.backends.contains_key(&b.addr)).count())
            }
            None => (vips + 1, slots + vip.backends.len()),
        })
    }

    /// VIP indexes and backend slots held by what `desired` leaves out.
    fn leaving(&self, desired: &[DesiredVip]) -> (usize, usize) {
        let wanted = wanted_backends(desired);
        let (mut vips, mut slots) = (0, self.orphans.len());
        for (key, state) in &self.vips {
            match wanted.get(key) {
                Some(keep) => slots += state.backends.keys().filter(|a| !keep.contains(a)).count(),
                None => {
                    vips += 1;
                    slots += state.backends.len();
                }
            }
        }
        (vips, slots)
    }

    /// The first of two passes: `desired`, except that a VIP whose new
    /// backends (or which itself) fit only once what leaves has left stays as
    /// it is (a new one stays out), so no VIP is ever served by part of what
    /// it should have.
    fn what_fits(&self, desired: &[DesiredVip]) -> Vec<DesiredVip> {
        let (mut vips_free, mut slots_free) = (self.vip_ids.available(), self.slots.available());
        desired
            .iter()
            .filter_map(|vip| {
                let Some(state) = self.vips.get(&vip.key) else {
                    let fits = vips_free > 0 && slots_free >= vip.backends.len();
                    if fits {
                        (vips_free, slots_free) = (vips_free - 1, slots_free - vip.backends.len());
                    }
                    return fits.then(|| vip.clone());
                };
                let new = vip.backends.iter().filter(|b| !state.backends.contains_key(&b.addr)).count();
                if new <= slots_free {
                    slots_free -= new;
                    return Some(vip.clone());
                }
                let backends =
                    vip.backends.iter().filter(|b| state.backends.contains_key(&b.addr)).cloned().collect();
                Some(DesiredVip { backends, ..vip.clone() })
            })
            .collect()
    }
}

/// Each wanted VIP's backends.
pub(super) fn wanted_backends(desired: &[DesiredVip]) -> HashMap<VipKey, HashSet<SocketAddr>> {
    desired.iter().map(|v| (v.key, v.backends.iter().map(|b| b.addr).collect())).collect()
}
