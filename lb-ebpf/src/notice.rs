//! Kernel-side events an operator should hear about, sent to the agent's log
//! through aya-log at debug level: at most one per kind per second per CPU, and
//! only from paths that are already off the fast path (a drop, a failed insert).
//! The level is fixed at load time; below debug the macros cost one compare.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, macros::map, maps::PerCpuArray, programs::XdpContext};
use aya_log_ebpf::debug;

const NO_BACKEND: u32 = 0;
const CONN_TABLE: u32 = 1;
const KINDS: u32 = 2;
const EVERY_NS: u64 = 1_000_000_000;

/// When each kind of notice was last sent, per CPU.
#[map]
static NOTICE_LAST: PerCpuArray<u64> = PerCpuArray::with_max_entries(KINDS, 0);

#[inline(always)]
fn due(kind: u32) -> bool {
    let Some(last) = NOTICE_LAST.get_ptr_mut(kind) else { return false };
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    unsafe {
        if *last != 0 && now.wrapping_sub(*last) < EVERY_NS {
            return false;
        }
        *last = now;
    }
    true
}

pub fn no_backend(ctx: &XdpContext, vip: u32) {
    if due(NO_BACKEND) {
        debug!(ctx, "VIP index {} has no usable backend: its new flows are dropped", vip);
    }
}

pub fn conn_table_full(ctx: &XdpContext) {
    if due(CONN_TABLE) {
        debug!(ctx, "connection table refused an insert: flows are forwarded but not remembered");
    }
}
