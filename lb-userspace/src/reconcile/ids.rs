//! VIP indexes and backend slots: handed out fresh first, then the
//! longest-freed first, so a freed id is reused as late as possible (stale
//! flows pointing at it have long been re-selected).

use std::collections::{HashSet, VecDeque};

#[derive(Debug)]
pub(super) struct IdPool {
    next: u32,
    max: u32,
    freed: VecDeque<u32>,
}

impl IdPool {
    /// A pool of `0..max` with `used` already taken (adoption): the gaps below
    /// the highest are free.
    pub(super) fn with_used(max: u32, used: &HashSet<u32>) -> Self {
        let next = used.iter().max().map_or(0, |m| m + 1);
        Self { next, max, freed: (0..next).filter(|i| !used.contains(i)).collect() }
    }

    pub(super) fn max(&self) -> u32 {
        self.max
    }

    /// How many ids `take` can still hand out.
    pub(super) fn available(&self) -> usize {
        self.max.saturating_sub(self.next) as usize + self.freed.len()
    }

    pub(super) fn take(&mut self) -> Option<u32> {
        if self.next < self.max {
            self.next += 1;
            return Some(self.next - 1);
        }
        self.freed.pop_front()
    }

    pub(super) fn give_back(&mut self, id: u32) {
        self.freed.push_back(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_ids_first_then_the_longest_freed() {
        let mut pool = IdPool::with_used(3, &HashSet::new());
        assert_eq!((pool.take(), pool.take()), (Some(0), Some(1)));
        pool.give_back(1);
        pool.give_back(0);
        assert_eq!(pool.available(), 3);
        assert_eq!((pool.take(), pool.take(), pool.take(), pool.take()), (Some(2), Some(1), Some(0), None));
        assert_eq!(pool.available(), 0);
    }

    #[test]
    fn adopted_gaps_are_free() {
        let mut pool = IdPool::with_used(5, &HashSet::from([1, 3]));
        assert_eq!(pool.available(), 3);
        let taken: Vec<_> = std::iter::from_fn(|| pool.take()).collect();
        assert_eq!(taken, [4, 0, 2]);
    }
}
