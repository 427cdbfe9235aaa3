//! The NAT tables (`mode = "nat"`): where each NAT VIP's flows leave from,
//! whether the kernel looks for replies at all, and the mappings the kernel
//! made, for the agent to expire. The kernel creates pairs; only the agent
//! removes them (the kernel too, for a mapping whose backend went away), by
//! the sweep (`nat_scan.rs`). Reading and removing single mappings is for
//! tests (feature `testing`).

#[cfg(feature = "testing")]
use aya::maps::MapError;
use lb_common::{maps as names, NatSource};
#[cfg(feature = "testing")]
use lb_common::{FlowKey, NatForward, NatReverse};

#[cfg(feature = "testing")]
use super::found;
use super::{error::map_err, Dataplane, LoadSettings, Result};

impl Dataplane {
    /// Sets where VIP `vip`'s new NAT mappings take their address and ports
    /// from. Write it before the VIP: a NAT VIP without ports drops new
    /// flows (`nat_no_port`). Existing mappings keep theirs.
    pub fn set_nat_source(&mut self, vip: u32, source: NatSource) -> Result<()> {
        self.check("VIP index", vip, self.settings.max_vips)?;
        self.nat_sources.set(vip, source, 0).map_err(map_err(names::NAT_SOURCES))
    }

    /// Turns the kernel's search for NAT replies on or off (`FLAG_NAT`), from
    /// the next packet on. Off, traffic to non-VIP addresses costs nothing
    /// more and replies of NAT mappings pass to the host untranslated, so it
    /// is on while any VIP is NAT. (Once none is, the client's side of every
    /// mapping has no VIP left either: those flows are over.)
    pub fn set_nat(&mut self, nat: bool) -> Result<()> {
        let settings = LoadSettings { nat, ..self.settings };
        self.config.set(0, settings.config(), 0).map_err(map_err(names::CONFIG))?;
        self.settings = settings;
        Ok(())
    }
}

#[cfg(feature = "testing")]
impl Dataplane {
    pub fn nat_source(&self, vip: u32) -> Result<NatSource> {
        self.nat_sources.get(&vip, 0).map_err(map_err(names::NAT_SOURCES))
    }

    /// Every mapping by the client's flow. One system call per entry.
    pub fn nat_entries(&self) -> Result<Vec<(FlowKey, NatForward)>> {
        self.nat_forward.iter().collect::<Result<_, _>>().map_err(map_err(names::NAT_FORWARD))
    }

    /// Every mapping by the backend's reply flow. One system call per entry.
    pub fn nat_reverse_entries(&self) -> Result<Vec<(FlowKey, NatReverse)>> {
        self.nat_reverse.iter().collect::<Result<_, _>>().map_err(map_err(names::NAT_REVERSE))
    }

    pub fn nat_forward(&self, key: &FlowKey) -> Result<Option<NatForward>> {
        found(self.nat_forward.get(key, 0), names::NAT_FORWARD)
    }

    pub fn nat_reverse(&self, key: &FlowKey) -> Result<Option<NatReverse>> {
        found(self.nat_reverse.get(key, 0), names::NAT_REVERSE)
    }

    /// Removes the mapping of the client flow `forward`: its forward entry,
    /// then the reverse entry named by it (so its port stays taken until the
    /// flow can no longer use it). False if there was none; what is already
    /// gone stays gone, so a failed call can be repeated.
    pub fn remove_nat_pair(&mut self, forward: &FlowKey) -> Result<bool> {
        let Some(value) = self.nat_forward(forward)? else { return Ok(false) };
        gone(self.nat_forward.remove(forward), names::NAT_FORWARD)?;
        self.remove_nat_reverse(&value.reverse_key(forward.proto, forward.family))?;
        Ok(true)
    }

    /// Removes one reverse entry (one whose forward entry is gone, say). False if there was none.
    pub fn remove_nat_reverse(&mut self, reverse: &FlowKey) -> Result<bool> {
        gone(self.nat_reverse.remove(reverse), names::NAT_REVERSE)
    }
}

/// A removal's outcome: true if it removed something, false if there was nothing to remove.
#[cfg(feature = "testing")]
fn gone(removed: std::result::Result<(), MapError>, name: &'static str) -> Result<bool> {
    match removed {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(map_err(name)(e)),
    }
}
