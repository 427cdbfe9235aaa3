//! Which backend serves a flow: the connection table first (a hit is checked
//! against the VIP index and the backend, no lookup by VIP key); on a miss, a
//! TCP SYN, or a pinned backend that can no longer take the flow, the VIP by
//! key and its Maglev ring.

use lb_common::{
    sizes::{RING_CHUNK, RING_EMPTY},
    types::vip_filter_slot,
    Backend, BackendState, ConnValue, DropReason, Event, FlowKey, VipKey, VipValue,
};

use crate::{
    counters,
    maps::{BACKENDS, CONFIG, CONNS, RING, VIPS, VIP_ADDRS, VIP_FILTER, VIP_INDEX},
    parse::Flow,
};

/// The VIP a flow is addressed to: exact port first, then the VIP's port-0
/// wildcard. The caller has passed `maybe_vip_address`, so traffic that gets
/// this far is usually for a VIP address.
#[inline(always)]
pub fn vip(key: &FlowKey) -> Option<VipValue> {
    let mut vip = VipKey { addr: key.dst, port_be: key.dport_be, proto: key.proto, family: key.family };
    if let Some(value) = unsafe { VIPS.get(&vip) } {
        return Some(*value);
    }
    vip.port_be = 0;
    unsafe { VIPS.get(&vip) }.copied()
}

/// Whether `key` (address only, [`VipKey::of_address`]) is a VIP address.
#[inline(always)]
pub fn is_vip_address(key: &VipKey) -> bool {
    maybe_vip_address(&key.addr, key.family) && unsafe { VIP_ADDRS.get(key) }.is_some()
}

/// False: certainly not a VIP address (one array read); true: perhaps.
#[inline(always)]
pub fn maybe_vip_address(addr: &[u32; 4], family: u8) -> bool {
    VIP_FILTER.get(vip_filter_slot(addr, family)).is_some_and(|count| *count != 0)
}

/// The chosen backend slot, its contents, and whether the flow is new.
pub struct Choice {
    pub index: u32,
    pub backend: Backend,
    pub new_flow: bool,
    /// False when the connection table refused to record a new flow.
    pub remembered: bool,
}

/// What the connection table says about a flow.
pub enum Conn {
    /// Pinned to a backend that can take it: forward without looking at the VIP map.
    Hit {
        choice: Choice,
        mode: u8,
        vip: u32,
    },
    /// Known, but to be balanced again: the entry is rewritten in place.
    /// `moved`: its backend or VIP went away (false for a SYN).
    Stale {
        entry: *mut ConnValue,
        moved: bool,
    },
    Miss,
}

#[inline(always)]
pub fn connection(flow: &Flow) -> Conn {
    let Some(conn) = CONNS.get_ptr_mut(&flow.key) else { return Conn::Miss };
    if flow.syn {
        return Conn::Stale { entry: conn, moved: false };
    }
    let (index, vip) = unsafe { ((*conn).backend, (*conn).vip) };
    if let Some(slot) = VIP_INDEX.get(vip).filter(|slot| slot.serves(&flow.key)) {
        if let Some(backend) = BACKENDS.get(index) {
            if backend.vip == vip && BackendState::keeps_flows(backend.state) {
                let choice = Choice { index, backend: *backend, new_flow: false, remembered: true };
                return Conn::Hit { choice, mode: slot.mode, vip };
            }
        }
    }
    Conn::Stale { entry: conn, moved: true }
}

/// Balances a flow on its VIP's ring and records the choice (`known`: the
/// connection-table entry to overwrite, if it has one).
#[inline(always)]
pub fn balance(flow: &Flow, vip: &VipValue, known: Option<*mut ConnValue>) -> Result<Choice, DropReason> {
    let Choice { index, backend, .. } = on_ring(&flow.key, vip)?;
    let conn = ConnValue { backend: index, vip: vip.index };
    let remembered = match known {
        // In place: no new LRU node, and readers elsewhere see whole u32s.
        // The LRU may have reused this element for another flow since the lookup;
        // accepted: rare (a full table evicting it meanwhile), and at worst that one flow moves.
        Some(entry) => {
            unsafe { *entry = conn };
            true
        }
        None => CONNS.insert(&flow.key, &conn, 0).is_ok(),
    };
    if !remembered {
        counters::event(Event::ConnInsertFailed);
    }
    Ok(Choice { index, backend, new_flow: true, remembered })
}

/// The backend a flow's hash picks on its VIP's ring, not recorded anywhere.
#[inline(always)]
pub fn on_ring(key: &FlowKey, vip: &VipValue) -> Result<Choice, DropReason> {
    let config = CONFIG.get(0).ok_or(DropReason::Internal)?;
    let ring_size = config.ring_size;
    // checked_rem: a ring size the agent has not written yet must not become a panic path.
    let offset = key.hash(config.hash_seed).checked_rem(ring_size).ok_or(DropReason::Internal)?;
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
    Ok(Choice { index, backend, new_flow: false, remembered: false })
}
