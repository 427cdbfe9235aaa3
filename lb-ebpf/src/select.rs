//! Which backend serves a flow. The VIP by key, then the flow's slot on the
//! VIP's Maglev ring ([`RingSlot`]):
//!
//! - a *settled* slot: its owner, whatever the packet. Nothing is looked up or
//!   recorded: every flow on the slot belongs to the owner, recorded or not.
//! - a slot *in flux* (its owner changed since it last settled): the connection
//!   table. A recorded flow keeps its backend while that can take it (UP or
//!   DRAINING, of this VIP), a SYN included, so a spoofed SYN cannot move a
//!   live flow. Otherwise a SYN (a new flow) takes the owner, and any other
//!   packet the prior owner (a flow older than the change) if that can still
//!   take it, else the owner. The choice is recorded.
//!
//! With `FLAG_RECORD_EVERY_FLOW` every slot is treated as in flux without a
//! prior owner: every flow is recorded, a miss takes the owner.

use lb_common::{
    sizes::RING_CHUNK,
    types::{coarse_seconds, vip_filter_slot, FLAG_RECORD_EVERY_FLOW},
    Backend, BackendState, ConnValue, DataplaneConfig, DropReason, Event, FlowKey, RingSlot, VipKey,
    VipValue, NO_BACKEND,
};

use crate::{
    counters,
    maps::{BACKENDS, CONFIG, CONNS, RING, VIPS, VIP_ADDRS, VIP_FILTER},
    parse::Flow,
    record,
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
    /// A SYN, or a flow recorded (or re-selected) by this packet.
    pub new_flow: bool,
    /// False when the connection table refused to record the flow.
    pub remembered: bool,
}

/// Picks the backend of `flow` on VIP `vip`. `record`: false for a packet
/// that is about a flow but not of it (an ICMP error), which is sent where
/// the flow goes and changes nothing.
#[inline(always)]
pub fn backend(flow: &Flow, vip: &VipValue, record: bool, now: u64) -> Result<Choice, DropReason> {
    let config = CONFIG.get(0).ok_or(DropReason::Internal)?;
    let slot = ring_slot(&flow.key, vip, config)?;
    let every_flow = config.flags & FLAG_RECORD_EVERY_FLOW != 0;
    if slot.is_settled() && !every_flow {
        let (index, backend) = owner(slot, vip)?;
        return Ok(Choice { index, backend, new_flow: flow.syn, remembered: true });
    }

    let seen = coarse_seconds(now);
    let entry = CONNS.get_ptr_mut(&flow.key);
    if let Some(entry) = entry {
        let ConnValue { backend: index, vip: of, seen: last, .. } = unsafe { *entry };
        if let Some(backend) = usable(index, vip.index).filter(|_| of == vip.index) {
            // Written once a second at most: a shared cache line stays clean.
            if record && last != seen {
                unsafe { (*entry).seen = seen };
            }
            return Ok(Choice { index, backend, new_flow: false, remembered: true });
        }
        counters::event(Event::ConnReselected);
    }
    let prior = if entry.is_none() && !flow.syn && !every_flow {
        usable(slot.prior(), vip.index).map(|backend| (slot.prior(), backend))
    } else {
        None
    };
    let (index, backend) = match prior {
        Some(prior) => {
            counters::event(Event::ConnPriorOwner);
            prior
        }
        None => owner(slot, vip)?,
    };
    if !record {
        return Ok(Choice { index, backend, new_flow: false, remembered: true });
    }
    let value = ConnValue { backend: index, vip: vip.index, seen, _pad: 0 };
    let remembered = match entry {
        // In place: no new LRU node, and readers elsewhere see whole u32s.
        // The LRU may have reused this element for another flow since the lookup;
        // accepted: rare (a full table evicting it meanwhile), and at worst that one flow moves.
        Some(entry) => {
            unsafe { *entry = value };
            true
        }
        None => record::insert(&flow.key, &value, config, seen),
    };
    Ok(Choice { index, backend, new_flow: true, remembered })
}

/// The owner of the flow's ring slot: where a flow goes that something else
/// pins once chosen (NAT: its mapping), so the connection table and prior
/// owners play no part.
#[inline(always)]
pub fn ring_owner(key: &FlowKey, vip: &VipValue) -> Result<(u32, Backend), DropReason> {
    let config = CONFIG.get(0).ok_or(DropReason::Internal)?;
    owner(ring_slot(key, vip, config)?, vip)
}

/// The flow's slot on its VIP's ring.
#[inline(always)]
fn ring_slot(key: &FlowKey, vip: &VipValue, config: &DataplaneConfig) -> Result<RingSlot, DropReason> {
    let ring_size = config.ring_size;
    // checked_rem: a ring size the agent has not written yet must not become a panic path.
    let offset = key.hash(config.hash_seed).checked_rem(ring_size).ok_or(DropReason::Internal)?;
    let slot = vip.index * ring_size + offset;
    let chunk = RING.get(slot / RING_CHUNK).ok_or(DropReason::Internal)?;
    Ok(RingSlot(chunk[(slot % RING_CHUNK) as usize]))
}

/// The slot's owner, which must be able to take the flow.
#[inline(always)]
fn owner(slot: RingSlot, vip: &VipValue) -> Result<(u32, Backend), DropReason> {
    let index = slot.owner();
    if index == NO_BACKEND {
        return Err(DropReason::NoBackend);
    }
    let backend = usable(index, vip.index).ok_or(DropReason::BadBackend)?;
    Ok((index, backend))
}

/// Backend slot `index`, if it belongs to VIP `vip` and keeps flows (UP or DRAINING).
#[inline(always)]
pub fn usable(index: u32, vip: u32) -> Option<Backend> {
    let backend = BACKENDS.get(index)?;
    (backend.vip == vip && BackendState::keeps_flows(backend.state)).then_some(*backend)
}
