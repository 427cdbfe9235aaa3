//! Reading the per-CPU counters: the kernel keeps one copy per CPU, the agent sums.

use aya::maps::{MapData, MapError, PerCpuArray};
use lb_common::{DropReason, Event, TrafficStats, Verdict};

/// A snapshot of the global `COUNTERS` map, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub verdicts: [u64; Verdict::ALL.len()],
    pub drops: [u64; DropReason::COUNT],
    pub events: [u64; Event::COUNT],
}

impl Counters {
    pub(super) fn read(map: &PerCpuArray<MapData, u64>) -> Result<Self, MapError> {
        let sum = |slot: u32| -> Result<u64, MapError> { Ok(map.get(&slot, 0)?.iter().sum()) };
        let mut counters = Self::default();
        for v in Verdict::ALL {
            counters.verdicts[v as usize] = sum(v.slot())?;
        }
        for r in DropReason::ALL {
            counters.drops[r as usize] = sum(r.slot())?;
        }
        for e in Event::ALL {
            counters.events[e as usize] = sum(e.slot())?;
        }
        Ok(counters)
    }

    pub fn verdict(&self, v: Verdict) -> u64 {
        self.verdicts[v as usize]
    }

    pub fn drop(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    pub fn event(&self, e: Event) -> u64 {
        self.events[e as usize]
    }

    /// What happened between `earlier` and `self`.
    #[cfg(feature = "testing")]
    pub fn since(&self, earlier: &Counters) -> Counters {
        let sub = |a: &[u64], b: &[u64], out: &mut [u64]| {
            for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                *o = a.wrapping_sub(*b);
            }
        };
        let mut d = Counters::default();
        sub(&self.verdicts, &earlier.verdicts, &mut d.verdicts);
        sub(&self.drops, &earlier.drops, &mut d.drops);
        sub(&self.events, &earlier.events, &mut d.events);
        d
    }
}

pub(super) fn sum_stats(
    map: &PerCpuArray<MapData, TrafficStats>,
    index: u32,
) -> Result<TrafficStats, MapError> {
    Ok(map.get(&index, 0)?.iter().fold(TrafficStats::default(), |acc, s| TrafficStats {
        packets: acc.packets + s.packets,
        bytes: acc.bytes + s.bytes,
        new_flows: acc.new_flows + s.new_flows,
    }))
}

/// The non-zero counters, by name: `tx=3 drop=1 no_backend=1`.
impl std::fmt::Display for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let named = Verdict::ALL
            .iter()
            .map(|v| (v.name(), self.verdict(*v)))
            .chain(DropReason::ALL.iter().map(|r| (r.name(), self.drop(*r))))
            .chain(Event::ALL.iter().map(|e| (e.name(), self.event(*e))))
            .filter(|(_, n)| *n != 0);
        let mut first = true;
        for (name, n) in named {
            write!(f, "{}{name}={n}", if first { "" } else { " " })?;
            first = false;
        }
        if first {
            write!(f, "nothing")?;
        }
        Ok(())
    }
}
