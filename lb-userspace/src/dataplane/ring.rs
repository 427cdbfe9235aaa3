//! The `RING` map (`BPF_F_MMAPABLE`), written through memory mappings: changing
//! a slot is a store, not a syscall, so a full ring rebuild costs a memcpy.
//! The map's entries are `RING_CHUNK`-slot arrays, so the slots lie densely, one
//! [`RingSlot`] after another, exactly as the kernel indexes them.
//!
//! Only the pages of the ring being written are mapped, and only while
//! they are: with a thousand VIPs the rings take hundreds of megabytes, which
//! must stay the kernel's memory, not become the agent's resident set.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;
use lb_common::{maps::RING, RingSlot};

use super::DataplaneError;

pub struct RingMemory {
    map: MapData,
    ring_size: usize,
    vips: usize,
    page: usize,
}

/// One VIP's ring, mapped for as long as this lives.
struct Window {
    base: NonNull<u8>,
    len: usize,
    /// Where the ring starts within the mapping.
    skip: usize,
    slots: usize,
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `RingMemory::window` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl RingMemory {
    pub(super) fn new(map: MapData, ring_size: u32, vips: u32) -> Self {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        Self { map, ring_size: ring_size as usize, vips: vips as usize, page }
    }

    fn window(&self, vip: u32) -> Result<Window, DataplaneError> {
        assert!((vip as usize) < self.vips, "VIP index {vip} beyond the ring map");
        let bytes = std::mem::size_of::<RingSlot>();
        let start = vip as usize * self.ring_size * bytes;
        let end = start + self.ring_size * bytes;
        let offset = start / self.page * self.page;
        let len = end.div_ceil(self.page) * self.page - offset;
        // SAFETY: a shared mapping of pages of an mmapable array map; the kernel
        // refuses ranges beyond the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                self.map.fd().as_fd().as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap { name: RING, source: std::io::Error::last_os_error() });
        }
        let base = NonNull::new(ptr.cast::<u8>()).ok_or(DataplaneError::Mmap {
            name: RING,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Window { base, len, skip: start - offset, slots: self.ring_size })
    }

    /// Runs `f` on VIP `vip`'s ring, to change it (the kernel only reads this map).
    pub fn write<T>(&mut self, vip: u32, f: impl FnOnce(&mut [RingSlot]) -> T) -> Result<T, DataplaneError> {
        let w = self.window(vip)?;
        // SAFETY: within the mapping, 8-byte aligned (pages and slot offsets are);
        // aligned u64 stores are atomic, so the kernel reads whole slots; `&mut self`
        // keeps other writers of this process out.
        let ring = unsafe {
            std::slice::from_raw_parts_mut(w.base.as_ptr().add(w.skip).cast::<RingSlot>(), w.slots)
        };
        Ok(f(ring))
    }
}
