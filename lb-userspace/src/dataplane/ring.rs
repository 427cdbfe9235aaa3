//! The `RING` map (`BPF_F_MMAPABLE`) mapped into the agent's memory: changing a
//! slot is a store, not a syscall, so a full ring rebuild costs a memcpy. The
//! map's entries are `RING_CHUNK`-slot arrays, so the slots lie densely, one
//! u32 after another, exactly as the kernel indexes them.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
};

use aya::maps::MapData;
use lb_common::{maps::RING, sizes::ring_chunks, types::RingChunk};

use super::DataplaneError;

pub struct RingMemory {
    base: NonNull<u32>,
    len_bytes: usize,
    ring_size: usize,
    vips: usize,
    // Keeps the map alive for as long as the mapping is used.
    _map: MapData,
}

// SAFETY: the mapping is owned by this value; `&mut self` is needed to write.
unsafe impl Send for RingMemory {}
unsafe impl Sync for RingMemory {}

impl RingMemory {
    pub(super) fn map(map: MapData, ring_size: u32, vips: u32) -> Result<Self, DataplaneError> {
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let chunks = ring_chunks(u64::from(ring_size) * u64::from(vips)) as usize;
        let len_bytes = (chunks * size_of::<RingChunk>()).div_ceil(page) * page;
        // SAFETY: a shared mapping of an mmapable array map of `entries` u32s; the kernel
        // rejects lengths beyond the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(DataplaneError::Mmap { name: RING, source: std::io::Error::last_os_error() });
        }
        let base = NonNull::new(ptr.cast::<u32>()).ok_or(DataplaneError::Mmap {
            name: RING,
            source: std::io::Error::other("mmap returned null"),
        })?;
        Ok(Self { base, len_bytes, ring_size: ring_size as usize, vips: vips as usize, _map: map })
    }

    fn range(&self, vip: u32) -> (usize, usize) {
        assert!((vip as usize) < self.vips, "VIP index {vip} beyond the ring map");
        (vip as usize * self.ring_size, self.ring_size)
    }

    pub fn vip(&self, vip: u32) -> &[u32] {
        let (start, len) = self.range(vip);
        // SAFETY: within the mapping; u32 stores by the kernel are atomic, so reads see whole slots.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(start), len) }
    }

    pub fn vip_mut(&mut self, vip: u32) -> &mut [u32] {
        let (start, len) = self.range(vip);
        // SAFETY: as above; the kernel only reads this map.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr().add(start), len) }
    }
}

impl Drop for RingMemory {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len_bytes) };
    }
}
