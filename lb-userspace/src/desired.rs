//! What the data plane should hold right now: the config, with each backend's
//! health, its slow-start ramp and the VIP's all-down policy applied.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use crate::{
    config::{CheckKind, Config, OnAllDown},
    health::BackendRef,
    reconcile::{DesiredBackend, DesiredVip},
    runtime::AdminStates,
    stats::Admin,
};

/// What health checking has said about one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackendHealth {
    pub up: bool,
    /// When it last came UP by a transition (slow start ramps from here).
    pub came_up: Option<Instant>,
    /// UP↔DOWN transitions so far.
    pub transitions: u64,
    /// Why it is in its state (shared with the stats, which show it).
    pub reason: std::sync::Arc<str>,
}

/// The data plane's desired state, and whether a weight is still ramping up
/// (then it must be recomputed soon).
pub struct Desired {
    pub vips: Vec<DesiredVip>,
    pub ramping: bool,
    /// VIPs with no backend up that keep serving from all of them (`on_all_down = "keep"`).
    pub kept: Vec<String>,
}

/// Ring weights are config weights in finer units, so a slow start can ramp
/// even a weight of 1 smoothly (Maglev only cares about proportions).
pub const WEIGHT_UNITS: u32 = 64;

/// A backend's weight `elapsed` into a slow start of `period`: proportional, at least 1.
pub fn ramped_weight(weight: u32, elapsed: Duration, period: Duration) -> u32 {
    if period.is_zero() || elapsed >= period || weight == 0 {
        return weight;
    }
    let share = elapsed.as_secs_f64() / period.as_secs_f64();
    ((f64::from(weight) * share).ceil() as u32).clamp(1, weight)
}

pub fn desired(
    config: &Config,
    health: &HashMap<BackendRef, BackendHealth>,
    admin: &AdminStates,
    now: Instant,
) -> Desired {
    let mut ramping = false;
    let mut kept = Vec::new();
    let vips = config
        .vips
        .iter()
        .map(|vip| {
            let key = vip.key();
            let in_maint =
                |name: &str| admin.get(&(vip.name.clone(), name.to_owned())) == Some(&Admin::Maint);
            let mut backends: Vec<DesiredBackend> = vip
                .backends
                .iter()
                .map(|b| {
                    let known = health.get(&BackendRef { vip: key, addr: b.socket() });
                    let said = admin.get(&(vip.name.clone(), b.name.clone())).copied().unwrap_or_default();
                    // Unchecked backends are always up; checked ones only once a check said so.
                    // Maintenance counts as down (flows leave), drain as weight 0 (flows stay).
                    let up = said != Admin::Maint
                        && (b.check.kind == CheckKind::None || known.is_some_and(|h| h.up));
                    let full = if said == Admin::Drain { 0 } else { b.weight * WEIGHT_UNITS };
                    let mut weight = full;
                    if let Some(since) = known.and_then(|h| h.came_up) {
                        let elapsed = now.saturating_duration_since(since);
                        weight = ramped_weight(full, elapsed, b.slowstart);
                        ramping |= up && weight < full;
                    }
                    DesiredBackend { addr: b.socket(), weight, backup: b.backup, up }
                })
                .collect();
            let none_usable = !backends.iter().any(|b| b.up && b.weight > 0);
            if none_usable && vip.on_all_down == OnAllDown::Keep {
                // Serving from backends that fail their checks beats serving nothing;
                // the operator's maintenance still stands.
                for (b, conf) in backends.iter_mut().zip(&vip.backends) {
                    b.up = !in_maint(&conf.name);
                }
                kept.push(vip.name.clone());
            }
            DesiredVip { key, mode: vip.mode.into(), allbackups: vip.allbackups, backends }
        })
        .collect();
    Desired { vips, ramping, kept }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_ramps_proportionally_from_at_least_one() {
        let p = Duration::from_secs(10);
        assert_eq!(ramped_weight(100, Duration::ZERO, p), 1);
        assert_eq!(ramped_weight(100, Duration::from_secs(1), p), 10);
        assert_eq!(ramped_weight(100, Duration::from_secs(5), p), 50);
        assert_eq!(ramped_weight(100, Duration::from_secs(10), p), 100);
        assert_eq!(ramped_weight(3, Duration::from_millis(100), p), 1);
        assert_eq!(ramped_weight(0, Duration::ZERO, p), 0, "a drained backend stays drained");
        assert_eq!(ramped_weight(7, Duration::ZERO, Duration::ZERO), 7, "no slow start");
    }
}
