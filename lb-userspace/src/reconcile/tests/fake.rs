//! A data plane in memory that checks, after every write, what the kernel
//! relies on: a visible VIP's ring names only slots of that VIP that keep
//! flows, and its address is registered. A write can be made to fail.

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
};

use lb_common::{
    types::words_addr, Backend, BackendState, Mode, NatSource, RingSlot, VipKey, VipValue, NO_BACKEND,
};

use crate::{
    dataplane::{DataplaneError, LoadSettings},
    reconcile::Maps,
};

pub(super) const RING_SIZE: u32 = 13;

pub(super) struct Fake {
    pub(super) settings: LoadSettings,
    pub(super) vips: HashMap<VipKey, VipValue>,
    pub(super) addresses: HashSet<VipKey>,
    pub(super) backends: Vec<Backend>,
    /// A fresh ring map holds zeros, as the kernel's does.
    pub(super) rings: Vec<Vec<RingSlot>>,
    pub(super) vip_stats: Vec<u64>,
    pub(super) backend_stats: Vec<u64>,
    /// Every backend write, in order.
    pub(super) backend_writes: Vec<(u32, Backend)>,
    /// Backend slots whose cached next hop was forgotten, in order.
    pub(super) forgotten_hops: Vec<u32>,
    pub(super) nat_sources: Vec<NatSource>,
    pub(super) writes: usize,
    /// The write that fails, and whether it takes effect before failing.
    pub(super) fail: Option<(usize, bool)>,
    /// Whether every write checks that visible VIPs have their addresses
    /// (not while an apply mends a kernel that started without).
    pub(super) check_addresses: bool,
}

pub(super) const UNUSED: Backend = Backend { addr: [0; 4], port_be: 0, family: 0, state: 0, vip: 0 };

impl Fake {
    pub(super) fn new(max_vips: u32, max_backends: u32) -> Self {
        let settings =
            LoadSettings { max_vips, max_backends, ring_size: RING_SIZE, ..LoadSettings::default() };
        Self {
            settings,
            vips: HashMap::new(),
            addresses: HashSet::new(),
            backends: vec![UNUSED; max_backends as usize],
            rings: vec![vec![RingSlot(0); RING_SIZE as usize]; max_vips as usize],
            vip_stats: vec![0; max_vips as usize],
            backend_stats: vec![0; max_backends as usize],
            backend_writes: Vec::new(),
            forgotten_hops: Vec::new(),
            nat_sources: vec![NatSource::default(); max_vips as usize],
            writes: 0,
            fail: None,
            check_addresses: true,
        }
    }

    fn write(&mut self, effect: impl FnOnce(&mut Self)) -> Result<(), DataplaneError> {
        self.writes += 1;
        let failing = self.fail.filter(|(n, _)| *n == self.writes);
        if failing.is_none_or(|(_, half)| half) {
            effect(self);
            self.check();
        }
        match failing {
            Some(_) => Err(DataplaneError::Cpus(std::io::Error::other("injected failure"))),
            None => Ok(()),
        }
    }

    fn check(&self) {
        for (key, value) in &self.vips {
            if value.mode == Mode::Nat as u8 {
                assert!(self.settings.nat, "NAT VIP {key:?} visible while replies are not looked for");
                assert!(
                    self.nat_sources[value.index as usize].port_count > 0,
                    "NAT VIP {key:?} has no source"
                );
            }
            assert!(
                !self.check_addresses || self.addresses.contains(&key.address_only()),
                "the address of visible VIP {key:?}"
            );
            for slot in self.rings[value.index as usize].iter().map(|s| s.owner()) {
                if slot == NO_BACKEND {
                    continue;
                }
                let b = self.backends[slot as usize];
                assert!(
                    b.vip == value.index && BackendState::keeps_flows(b.state),
                    "the ring of visible VIP {} names slot {slot}, holding {b:?}",
                    value.index
                );
            }
        }
    }

    /// What the kernel serves, by identity (ids may differ between histories):
    /// each visible VIP's mode and ring, every used slot's backend, the addresses.
    pub(super) fn served(&self) -> Served {
        let addr = |b: &Backend| SocketAddr::new(words_addr(b.addr, b.family), u16::from_be(b.port_be));
        let key_of = |index: u32| self.vips.iter().find(|(_, v)| v.index == index).map(|(k, _)| *k);
        let vips = self
            .vips
            .iter()
            .map(|(key, v)| {
                let ring = self.rings[v.index as usize]
                    .iter()
                    .map(|s| (s.owner() != NO_BACKEND).then(|| addr(&self.backends[s.owner() as usize])))
                    .collect();
                (*key, (v.mode, ring))
            })
            .collect();
        let mut backends = HashMap::new();
        for b in self.backends.iter().filter(|b| b.state != BackendState::Unused as u8) {
            *backends.entry((key_of(b.vip), addr(b), b.state)).or_default() += 1;
        }
        Served { vips, backends, addresses: self.addresses.clone() }
    }
}

#[derive(Debug, PartialEq)]
pub(super) struct Served {
    pub(super) vips: HashMap<VipKey, (u8, Vec<Option<SocketAddr>>)>,
    /// How many slots hold each (VIP, backend, state).
    pub(super) backends: HashMap<(Option<VipKey>, SocketAddr, u8), usize>,
    pub(super) addresses: HashSet<VipKey>,
}

impl Maps for Fake {
    fn settings(&self) -> &LoadSettings {
        &self.settings
    }

    fn vip_entries(&self) -> Result<Vec<(VipKey, VipValue)>, DataplaneError> {
        Ok(self.vips.iter().map(|(k, v)| (*k, *v)).collect())
    }

    fn backend_entries(&self) -> Result<Vec<(u32, Backend)>, DataplaneError> {
        let used = self.backends.iter().enumerate().filter(|(_, b)| b.state != BackendState::Unused as u8);
        Ok(used.map(|(slot, b)| (slot as u32, *b)).collect())
    }

    fn vip_addresses(&self) -> Result<Vec<VipKey>, DataplaneError> {
        Ok(self.addresses.iter().copied().collect())
    }

    fn set_vip(&mut self, key: VipKey, value: VipValue) -> Result<(), DataplaneError> {
        self.write(|f| {
            f.addresses.insert(key.address_only());
            f.vips.insert(key, value);
        })
    }

    fn remove_vip(&mut self, key: &VipKey) -> Result<(), DataplaneError> {
        self.write(|f| {
            f.vips.remove(key);
        })
    }

    fn forget_address(&mut self, address: &VipKey) -> Result<(), DataplaneError> {
        self.write(|f| {
            f.addresses.remove(address);
        })
    }

    fn set_backend(&mut self, slot: u32, backend: Backend) -> Result<(), DataplaneError> {
        self.write(|f| {
            f.backends[slot as usize] = backend;
            f.backend_writes.push((slot, backend));
        })
    }

    fn with_ring_mut<T>(
        &mut self,
        vip: u32,
        f: impl FnOnce(&mut [RingSlot]) -> T,
    ) -> Result<T, DataplaneError> {
        let mut out = None;
        self.write(|fake| out = Some(f(&mut fake.rings[vip as usize])))?;
        Ok(out.expect("written"))
    }

    fn clear_vip_stats(&mut self, vip: u32) -> Result<(), DataplaneError> {
        self.write(|f| f.vip_stats[vip as usize] = 0)
    }

    fn clear_backend_stats(&mut self, slot: u32) -> Result<(), DataplaneError> {
        self.write(|f| f.backend_stats[slot as usize] = 0)
    }

    fn forget_next_hop(&mut self, slot: u32) -> Result<(), DataplaneError> {
        self.write(|f| f.forgotten_hops.push(slot))
    }

    fn set_nat_source(&mut self, vip: u32, source: NatSource) -> Result<(), DataplaneError> {
        self.write(|f| f.nat_sources[vip as usize] = source)
    }

    fn set_nat(&mut self, on: bool) -> Result<(), DataplaneError> {
        self.write(|f| f.settings.nat = on)
    }
}
