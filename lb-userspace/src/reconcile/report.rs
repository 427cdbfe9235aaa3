//! What one apply did to the maps: said in the log after every change, and
//! as the answer to a reload (`POST /v1/reload`, `alwayson reload`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// What one `apply` changed, counted as it was written.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// VIPs that got an index (and, once their rings were complete, a `VIPS` entry).
    pub vips_added: usize,
    /// VIPs made invisible, their rings cleared and their indices given back.
    pub vips_removed: usize,
    /// VIPs whose `VIPS` entry was rewritten: their mode changed.
    pub vips_changed: usize,
    /// Backends that got a slot.
    pub backends_added: usize,
    /// Backends marked unused and their slots given back.
    pub backends_removed: usize,
    /// Backends whose `BACKENDS` entry was rewritten (state or VIP).
    pub backends_changed: usize,
    /// Ring entries written, over every ring rebuilt.
    pub ring_slots_written: usize,
}

impl ApplyReport {
    fn counts(&self) -> [(usize, &'static str, &'static str); 7] {
        [
            (self.vips_added, "VIP", "added"),
            (self.vips_removed, "VIP", "removed"),
            (self.vips_changed, "VIP", "changed"),
            (self.backends_added, "backend", "added"),
            (self.backends_removed, "backend", "removed"),
            (self.backends_changed, "backend", "changed"),
            (self.ring_slots_written, "ring slot", "written"),
        ]
    }
}

/// The counts that are not zero, for people: "1 VIP added, 64 ring slots written".
impl fmt::Display for ApplyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = false;
        for (count, what, done) in self.counts().into_iter().filter(|(count, ..)| *count > 0) {
            let plural = if count == 1 { "" } else { "s" };
            write!(f, "{}{count} {what}{plural} {done}", if said { ", " } else { "" })?;
            said = true;
        }
        if !said {
            f.write_str("no map changed")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ApplyReport;

    #[test]
    fn says_what_changed_and_only_that() {
        assert_eq!(ApplyReport::default().to_string(), "no map changed");
        let report =
            ApplyReport { vips_added: 1, backends_added: 2, ring_slots_written: 1, ..Default::default() };
        assert_eq!(report.to_string(), "1 VIP added, 2 backends added, 1 ring slot written");
    }

    #[test]
    fn travels_as_json_and_back() {
        let report = ApplyReport { vips_changed: 1, backends_removed: 3, ..Default::default() };
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["vips_changed"], 1);
        assert_eq!(json["backends_removed"], 3);
        assert_eq!(serde_json::from_value::<ApplyReport>(json).unwrap(), report);
    }
}
