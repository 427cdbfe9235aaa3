//! Kernel-side events an operator should hear about, sent to the agent's log
//! through aya-log at debug level: at most one per kind per second per CPU, and
//! only from paths that are already off the fast path (a drop, a failed insert).
//! The level is fixed at load time and checked first: below debug a notice
//! costs one read of that global, no map access.

use aya_ebpf::{macros::map, maps::PerCpuArray, programs::XdpContext};
use aya_log_ebpf::{
    debug,
    macro_support::{level_enabled, Level},
};

const NO_BACKEND: u32 = 0;
const CONN_TABLE: u32 = 1;
const KINDS: u32 = 2;
const EVERY_NS: u64 = 1_000_000_000;

/// When each kind of notice was last sent, per CPU.
#[map]
static NOTICE_LAST: PerCpuArray<u64> = PerCpuArray::with_max_entries(KINDS, 0);

/// Whether to send a notice of `kind` now (`bpf_ktime_get_coarse_ns`).
#[inline(always)]
fn due(kind: u32, now: u64) -> bool {
    // The check `debug!` makes itself (aya-log-ebpf is pinned to one version),
    // made before the rate limit so that logging off costs no map write.
    if !level_enabled(Level::Debug) {
        return false;
    }
    let Some(last) = NOTICE_LAST.get_ptr_mut(kind) else { return false };
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < EVERY_NS {
            return false;
        }
        *last = now;
    }
    true
}

pub fn no_backend(ctx: &XdpContext, vip: u32, now: u64) {
    if due(NO_BACKEND, now) {
        debug!(ctx, "VIP index {} has no usable backend: its new flows are dropped", vip);
    }
}

pub fn conn_table_full(ctx: &XdpContext, now: u64) {
    if due(CONN_TABLE, now) {
        debug!(ctx, "connection table refused an insert: flows are forwarded but not remembered");
    }
}
