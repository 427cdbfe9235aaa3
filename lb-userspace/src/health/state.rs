//! The rise/fall state machine, as HAProxy defines it: an UP backend goes DOWN
//! after `fall` consecutive failed checks, a DOWN one comes UP after `rise`
//! consecutive successes. A result in the current direction resets the streak.

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tracker {
    up: bool,
    /// Consecutive results against the current state.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Tracker {
    pub fn new(up: bool, rise: u32, fall: u32) -> Self {
        Self { up, streak: 0, rise: rise.max(1), fall: fall.max(1) }
    }

    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Records one check; returns the new state when this check changed it.
    pub fn record(&mut self, ok: bool) -> Option<bool> {
        if ok == self.up {
            self.streak = 0;
            return None;
        }
        self.streak += 1;
        let needed = if self.up { self.fall } else { self.rise };
        if self.streak < needed {
            return None;
        }
        self.up = ok;
        self.streak = 0;
        Some(ok)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(t: &mut Tracker, results: &str) -> Vec<Option<bool>> {
        results.chars().map(|c| t.record(c == '+')).collect()
    }

    #[test]
    fn up_goes_down_after_fall_consecutive_failures() {
        let mut t = Tracker::new(true, 2, 3);
        assert_eq!(feed(&mut t, "--+--"), vec![None; 5], "a success in between resets the count");
        assert_eq!(t.record(false), Some(false));
        assert!(!t.is_up());
    }

    #[test]
    fn down_comes_up_after_rise_consecutive_successes() {
        let mut t = Tracker::new(false, 2, 3);
        assert_eq!(feed(&mut t, "+-+"), vec![None; 3]);
        assert_eq!(t.record(true), Some(true));
        assert!(t.is_up());
        assert_eq!(t.record(true), None, "no transition while staying up");
    }

    #[test]
    fn rise_and_fall_of_one_flip_on_every_change() {
        let mut t = Tracker::new(true, 1, 1);
        assert_eq!(feed(&mut t, "-+-"), vec![Some(false), Some(true), Some(false)]);
    }

    #[test]
    fn zero_counts_behave_as_one() {
        let mut t = Tracker::new(true, 0, 0);
        assert_eq!(t.record(false), Some(false));
    }
}
