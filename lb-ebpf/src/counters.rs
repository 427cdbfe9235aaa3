//! Per-CPU counting. A slot missing from the map is ignored: counting must never
//! change a verdict.

use lb_common::{DropReason, Event, TrafficStats, Verdict};

use crate::maps::{BACKEND_STATS, COUNTERS, VIP_STATS};

#[inline(always)]
fn bump(slot: u32) {
    if let Some(count) = COUNTERS.get_ptr_mut(slot) {
        unsafe { *count += 1 };
    }
}

#[inline(always)]
pub fn verdict(verdict: Verdict) {
    bump(verdict.slot());
}

#[inline(always)]
pub fn drop(reason: DropReason) {
    bump(reason.slot());
}

#[inline(always)]
pub fn event(event: Event) {
    bump(event.slot());
}

/// One forwarded packet of `bytes` for a VIP and a backend.
#[inline(always)]
pub fn traffic(vip: u32, backend: u32, bytes: u64, new_flow: bool) {
    let add = |stats: Option<*mut TrafficStats>| {
        if let Some(stats) = stats {
            unsafe {
                (*stats).packets += 1;
                (*stats).bytes += bytes;
                (*stats).new_flows += u64::from(new_flow);
            }
        }
    };
    add(VIP_STATS.get_ptr_mut(vip));
    add(BACKEND_STATS.get_ptr_mut(backend));
}
