//! Which VIP a flow is for, and which backend serves it: the connection table
//! first, the VIP's Maglev ring on a miss, on a TCP SYN, or when the pinned
//! backend can no longer take the flow.

use lb_common::{
    sizes::{RING_CHUNK, RING_EMPTY},
    Backend, BackendState, ConnValue, DropReason, Event, FlowKey, VipKey, VipValue,
};

use crate::{
    counters,
    maps::{BACKENDS, CONFIG, CONNS, RING, VIPS, VIP_ADDRS},
    parse::Flow,
};

/// The VIP a flow is addressed to: exact port first, then the VIP's port-0 wildcard.
#[inline(always)]
pub fn vip(key: &FlowKey) -> Option<VipValue> {
    let mut vip = VipKey { addr: key.dst, port_be: key.dport_be, proto: key.proto, family: key.family };
    if let Some(value) = unsafe { VIPS.get(&vip) } {
        return Some(*value);
    }
    // Most traffic that misses is not for a VIP address at all: one lookup settles it.
    if !is_vip_address(vip.address_only()) {
        return None;
    }
    vip.port_be = 0;
    unsafe { VIPS.get(&vip) }.copied()
}

#[inline(always)]
pub fn is_vip_address(key: VipKey) -> bool {
    unsafe { VIP_ADDRS.get(&key) }.is_some()
}

/// The chosen backend slot, its contents, and whether the flow is new.
pub struct Choice {
    pub index: u32,
    pub backend: Backend,
    pub new_flow: bool,
    /// False when the connection table refused to record a new flow.
    pub remembered: bool,
}

#[inline(always)]
pub fn backend(flow: &Flow, vip: &VipValue, now: u64) -> Result<Choice, DropReason> {
    if !flow.syn {
        if let Some(conn) = CONNS.get_ptr_mut(&flow.key) {
            let index = unsafe { (*conn).backend };
            if let Some(backend) = BACKENDS.get(index) {
                if backend.vip == vip.index && BackendState::keeps_flows(backend.state) {
                    unsafe { (*conn).last_seen_ns = now };
                    return Ok(Choice { index, backend: *backend, new_flow: false, remembered: true });
                }
            }
            counters::event(Event::ConnReselected);
        }
    }

    let config = CONFIG.get(0).ok_or(DropReason::Internal)?;
    let ring_size = config.ring_size;
    // checked_rem: a ring size the agent has not written yet must not become a panic path.
    let offset = flow.key.hash(config.hash_seed).checked_rem(ring_size).ok_or(DropReason::Internal)?;
    let slot = vip.index * ring_size + offset;
    let chunk = RING.get(slot / RING_CHUNK).ok_or(DropReason::Internal)?;
    let index = chunk[(slot % RING_CHUNK) as usize];
    if index == RING_EMPTY {
        return Err(DropReason::NoBackend);
    }
    let backend = *BACKENDS.get(index).ok_or(DropReason::BadBackend)?;
    if backend.vip != vip.index || !BackendState::keeps_flows(backend.state) {
        return Err(DropReason::BadBackend);
    }
    let conn = ConnValue { backend: index, _pad: 0, last_seen_ns: now };
    let remembered = CONNS.insert(&flow.key, &conn, 0).is_ok();
    if !remembered {
        counters::event(Event::ConnInsertFailed);
    }
    Ok(Choice { index, backend, new_flow: true, remembered })
}
