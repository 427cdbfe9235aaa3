//! Expiring NAT mappings, on a thread of its own (one system call per
//! entry). The kernel makes a mapping's two entries and marks what it sees;
//! only this removes them, so a mapping's port is free again exactly when
//! its time is up. A mapping lives while either direction is seen within the
//! timeout its protocol and flags call for (the caller's rule: the config's
//! `nat_*_timeout` keys).

use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use lb_common::{
    maps::{NAT_FORWARD, NAT_REVERSE},
    FlowKey, NatForward, NatReverse,
};

use super::{
    error::map_err,
    scan::{coarse, coarse_now},
    Dataplane, Result,
};

/// A reverse entry without its forward one is removed only once it is this
/// old (coarse seconds): the kernel writes the reverse entry first, so a
/// young orphan may be a mapping being made.
const ORPHAN_GRACE: u32 = 3;

/// Its own handles on the NAT tables: a sweep runs beside the loop.
pub struct NatScanner {
    forward: BpfHashMap<MapData, FlowKey, NatForward>,
    reverse: BpfHashMap<MapData, FlowKey, NatReverse>,
}

/// What one sweep saw and did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatSweep {
    /// Mappings (forward entries) when the sweep began.
    pub mappings: usize,
    /// Mappings removed as timed out.
    pub expired: usize,
    /// Entries removed that had lost their other half.
    pub orphans: usize,
}

impl Dataplane {
    pub fn nat_scanner(&self) -> Result<NatScanner> {
        Ok(NatScanner { forward: self.hash_handle(NAT_FORWARD)?, reverse: self.hash_handle(NAT_REVERSE)? })
    }

    fn hash_handle<V: aya::Pod>(&self, name: &'static str) -> Result<BpfHashMap<MapData, FlowKey, V>> {
        BpfHashMap::try_from(Map::HashMap(self.map_handle(name)?)).map_err(map_err(name))
    }
}

/// Whether a mapping last seen at `seen` (the later of its two directions)
/// and allowed `timeout` of silence is over at `now`.
fn expired(timeout: Duration, seen: u32, now: u32) -> bool {
    now.wrapping_sub(seen) > coarse(timeout)
}

/// The later of two coarse times, across wrapping.
fn later(a: u32, b: u32) -> u32 {
    if b.wrapping_sub(a) as i32 > 0 {
        b
    } else {
        a
    }
}

impl NatScanner {
    /// When a mapping was last seen in either direction, and what both
    /// directions have seen; `None` without its reverse half.
    fn last_seen(&self, forward: &NatForward, reverse_key: &FlowKey) -> Option<(u32, u32)> {
        let reverse = self.reverse.get(reverse_key, 0).ok()?;
        Some((later(forward.seen, reverse.seen), forward.flags | reverse.flags))
    }

    /// Removes the mappings silent for longer than `timeout(protocol, flags)`
    /// (`flags`: both directions' `NAT_SEEN_*`), and orphaned halves.
    pub fn sweep(&mut self, timeout: impl Fn(u8, u32) -> Duration) -> NatSweep {
        let now = coarse_now();
        let mut sweep = NatSweep::default();
        let mut gone: Vec<(FlowKey, FlowKey)> = Vec::new();
        let mut stale: Vec<(FlowKey, FlowKey)> = Vec::new();
        for entry in self.forward.iter() {
            // Removed between key and lookup (by the kernel: its backend went away).
            let Ok((key, forward)) = entry else { continue };
            sweep.mappings += 1;
            let reverse_key = forward.reverse_key(key.proto, key.family);
            match self.last_seen(&forward, &reverse_key) {
                None => {
                    sweep.orphans += 1;
                    gone.push((key, reverse_key));
                }
                Some((seen, flags)) if expired(timeout(key.proto, flags), seen, now) => {
                    stale.push((key, reverse_key));
                }
                Some(_) => {}
            }
        }
        let mut orphans = Vec::new();
        for entry in self.reverse.iter() {
            let Ok((key, reverse)) = entry else { continue };
            let forward_key = reverse.forward_key(key.proto, key.family);
            if self.forward.get(&forward_key, 0).is_err() && now.wrapping_sub(reverse.seen) > ORPHAN_GRACE {
                orphans.push(key);
            }
        }
        // Judged again just before removal: the walks of a big table take
        // seconds, and a mapping seen since lives on (its port stays taken).
        let now = coarse_now();
        for (key, reverse_key) in stale {
            let again = self.forward.get(&key, 0).ok().and_then(|f| self.last_seen(&f, &reverse_key));
            if again.is_none_or(|(seen, flags)| expired(timeout(key.proto, flags), seen, now)) {
                sweep.expired += 1;
                gone.push((key, reverse_key));
            }
        }
        // Removed after the walks: removing the key a walk stands on restarts it.
        for (forward, reverse) in &gone {
            let _ = self.forward.remove(forward);
            let _ = self.reverse.remove(reverse);
        }
        for key in &orphans {
            sweep.orphans += usize::from(self.reverse.remove(key).is_ok());
        }
        sweep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mapping_expires_only_after_its_whole_timeout_across_wrapping() {
        let s = Duration::from_secs;
        // 5 s is 4.66 coarse seconds: 5 of them rounded up, expired beyond.
        assert!(!expired(s(5), 100, 105));
        assert!(expired(s(5), 100, 106));
        assert!(!expired(s(900), 100, 106));
        assert!(expired(s(10), 100, 200));
        assert!(!expired(s(900), u32::MAX - 2, 5), "across wrapping");
        assert_eq!(later(u32::MAX, 3), 3);
        assert_eq!(later(7, 3), 7);
    }
}
