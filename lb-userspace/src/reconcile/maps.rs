//! What the reconciler needs of a data plane: the maps it reads when adopting
//! and writes when applying. [`Dataplane`] is the real one; the tests use a
//! fake that checks the kernel's invariants after every write.

use lb_common::{Backend, NatSource, RingSlot, VipKey, VipValue};

use crate::dataplane::{Dataplane, DataplaneError, LoadSettings};

pub trait Maps {
    fn settings(&self) -> &LoadSettings;
    fn vip_entries(&self) -> Result<Vec<(VipKey, VipValue)>, DataplaneError>;
    fn backend_entries(&self) -> Result<Vec<(u32, Backend)>, DataplaneError>;
    fn vip_addresses(&self) -> Result<Vec<VipKey>, DataplaneError>;
    /// Also registers the VIP's address.
    fn set_vip(&mut self, key: VipKey, value: VipValue) -> Result<(), DataplaneError>;
    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError>;
    fn forget_address(&mut self, address: &VipKey) -> Result<(), DataplaneError>;
    fn set_backend(&mut self, slot: u32, backend: Backend) -> Result<(), DataplaneError>;
    fn with_ring_mut<T>(
        &mut self,
        vip: u32,
        f: impl FnOnce(&mut [RingSlot]) -> T,
    ) -> Result<T, DataplaneError>;
    fn clear_vip_stats(&mut self, vip: u32) -> Result<(), DataplaneError>;
    fn clear_backend_stats(&mut self, slot: u32) -> Result<(), DataplaneError>;
    /// Drops a backend's cached next hop (every CPU's).
    fn forget_next_hop(&mut self, slot: u32) -> Result<(), DataplaneError>;
    /// Where NAT VIP `vip`'s new mappings come from.
    fn set_nat_source(&mut self, vip: u32, source: NatSource) -> Result<(), DataplaneError>;
    /// Whether the kernel looks for NAT replies (`settings().nat` says now).
    fn set_nat(&mut self, on: bool) -> Result<(), DataplaneError>;
}

impl Maps for Dataplane {
    fn settings(&self) -> &LoadSettings {
        Dataplane::settings(self)
    }

    fn vip_entries(&self) -> Result<Vec<(VipKey, VipValue)>, DataplaneError> {
        Dataplane::vip_entries(self)
    }

    fn backend_entries(&self) -> Result<Vec<(u32, Backend)>, DataplaneError> {
        Dataplane::backend_entries(self)
    }

    fn vip_addresses(&self) -> Result<Vec<VipKey>, DataplaneError> {
        Dataplane::vip_addresses(self)
    }

    fn set_vip(&mut self, key: VipKey, value: VipValue) -> Result<(), DataplaneError> {
        Dataplane::set_vip(self, key, value)
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        Dataplane::remove_vip(self, key)
    }

    fn forget_address(&mut self, address: &VipKey) -> Result<(), DataplaneError> {
        Dataplane::forget_address(self, address)
    }

    fn set_backend(&mut self, slot: u32, backend: Backend) -> Result<(), DataplaneError> {
        Dataplane::set_backend(self, slot, backend)
    }

    fn with_ring_mut<T>(
        &mut self,
        vip: u32,
        f: impl FnOnce(&mut [RingSlot]) -> T,
    ) -> Result<T, DataplaneError> {
        Dataplane::with_ring_mut(self, vip, f)
    }

    fn clear_vip_stats(&mut self, vip: u32) -> Result<(), DataplaneError> {
        Dataplane::clear_vip_stats(self, vip)
    }

    fn clear_backend_stats(&mut self, slot: u32) -> Result<(), DataplaneError> {
        Dataplane::clear_backend_stats(self, slot)
    }

    fn forget_next_hop(&mut self, slot: u32) -> Result<(), DataplaneError> {
        Dataplane::forget_next_hop(self, slot)
    }

    fn set_nat_source(&mut self, vip: u32, source: NatSource) -> Result<(), DataplaneError> {
        Dataplane::set_nat_source(self, vip, source)
    }

    fn set_nat(&mut self, on: bool) -> Result<(), DataplaneError> {
        Dataplane::set_nat(self, on)
    }
}
