//! Recording flows in the connection table, within a per-CPU budget of
//! `record_limit` inserts per second. Past it a flow is forwarded unrecorded:
//! a flood of new 5-tuples then cannot evict the table's live flows, and
//! costs no LRU insert (the most expensive step a packet can take here).

use aya_ebpf::{macros::map, maps::PerCpuArray};
use lb_common::{ConnValue, DataplaneConfig, Event, FlowKey};

use crate::{counters, maps::CONNS};

/// Per CPU: the second (`coarse_seconds`) the budget is counted in, and the
/// flows recorded in it. The kernel's own; the agent never reads it.
#[map]
static RECORD_BUDGET: PerCpuArray<[u32; 2]> = PerCpuArray::with_max_entries(1, 0);

/// Records `key` → `value` unless this CPU's budget for second `now` is spent.
/// False only when the table refused the insert (the caller's notice).
#[inline(always)]
pub fn insert(key: &FlowKey, value: &ConnValue, config: &DataplaneConfig, now: u32) -> bool {
    if config.record_limit != 0 {
        let Some(budget) = RECORD_BUDGET.get_ptr_mut(0) else { return true };
        let budget = unsafe { &mut *budget };
        if budget[0] != now {
            *budget = [now, 0];
        }
        if budget[1] >= config.record_limit {
            counters::event(Event::ConnRecordLimited);
            return true;
        }
        budget[1] += 1;
    }
    if CONNS.insert(key, value, 0).is_err() {
        counters::event(Event::ConnInsertFailed);
        return false;
    }
    counters::event(Event::ConnRecorded);
    true
}
