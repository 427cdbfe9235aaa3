//! A Prometheus-style cumulative histogram of durations.

use std::time::Duration;

/// Bucket upper bounds in seconds: health checks and reconciles both live
/// between a fraction of a millisecond and a few seconds.
pub const BOUNDS: [f64; 12] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations at or below each bound (not cumulative; summed when rendered).
    buckets: [u64; BOUNDS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|&b| secs <= b) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += secs;
    }

    pub fn count(&self) -> u64 {
        self.count
    }

    pub fn sum(&self) -> f64 {
        self.sum
    }

    /// `(le, cumulative count)` pairs, `+Inf` last.
    pub fn cumulative(&self) -> Vec<(String, u64)> {
        let mut total = 0;
        let mut out: Vec<(String, u64)> = BOUNDS
            .iter()
            .zip(self.buckets)
            .map(|(b, n)| {
                total += n;
                (b.to_string(), total)
            })
            .collect();
        out.push(("+Inf".into(), self.count));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_inf_counts_everything() {
        let mut h = Histogram::default();
        for ms in [0.2, 3.0, 3.0, 70.0, 9000.0] {
            h.observe(Duration::from_secs_f64(ms / 1000.0));
        }
        let c = h.cumulative();
        assert_eq!(c[0], ("0.0005".into(), 1));
        assert_eq!(c.iter().find(|(le, _)| le == "0.005").unwrap().1, 3);
        assert_eq!(c.iter().find(|(le, _)| le == "0.1").unwrap().1, 4);
        assert_eq!(c.last().unwrap(), &("+Inf".to_string(), 5));
        assert_eq!(h.count(), 5);
        assert!((h.sum() - 9.0762).abs() < 1e-9);
    }
}
