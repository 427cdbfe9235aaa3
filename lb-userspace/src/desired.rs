//! What the data plane should hold right now: the config, with each backend's
//! health, its slow-start ramp and the VIP's all-down policy applied.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use lb_common::{types::addr_words, BackendState, Mode, NatSource, VipKey};

use crate::{
    config::{nat::NatSettings, Backend, CheckKind, Config, OnAllDown, Vip},
    health::BackendRef,
    runtime::{Admin, AdminStates},
};

/// One VIP as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredVip {
    pub key: VipKey,
    pub mode: Mode,
    /// `mode = "nat"`: where new mappings take their address and ports from.
    pub nat: Option<NatSource>,
    /// With no primary usable: all usable backups take flows, not just the first.
    pub allbackups: bool,
    pub backends: Vec<DesiredBackend>,
}

/// One backend as it should be.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredBackend {
    pub addr: SocketAddr,
    /// 0 drains: no new flows, established ones continue.
    pub weight: u32,
    /// Only takes new flows while no primary can.
    pub backup: bool,
    /// Health: a backend that is not up takes no new flows and loses its established ones.
    pub up: bool,
}

impl DesiredBackend {
    /// The state its kernel slot should hold.
    pub fn state(&self) -> BackendState {
        match (self.up, self.weight) {
            (false, _) => BackendState::Down,
            (true, 0) => BackendState::Draining,
            (true, _) => BackendState::Up,
        }
    }

    pub fn takes_new_flows(&self) -> bool {
        self.up && self.weight > 0
    }
}

/// Who takes new flows (HAProxy's rules): the usable primaries; when none is
/// usable, the first usable backup by identity, or all of them with `allbackups`.
pub fn ring_members(vip: &DesiredVip) -> Vec<&DesiredBackend> {
    let usable =
        |backup: bool| vip.backends.iter().filter(move |b| b.backup == backup && b.takes_new_flows());
    let primaries: Vec<&DesiredBackend> = usable(false).collect();
    if !primaries.is_empty() {
        return primaries;
    }
    let mut backups: Vec<&DesiredBackend> = usable(true).collect();
    backups.sort_by_key(|b| b.addr);
    if !vip.allbackups {
        backups.truncate(1);
    }
    backups
}

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

/// Where NAT VIP `vip`'s mappings come from: its address (or `[global]`'s of
/// its family) and the port range.
fn nat_source(vip: &Vip, nat: &NatSettings) -> Option<NatSource> {
    let (addr, _) = addr_words(vip.nat_source(nat)?);
    let ports = nat.ports;
    // The range is at most 1024..=65535: its length fits a u16.
    Some(NatSource { addr, port_min: ports.first, port_count: ports.count() as u16 })
}

/// The desired state of `config`. A backend is held out of service while it
/// waits for its first check (checked, but no `health` yet) or while its
/// address is `resolving` (its neighbour entry is new): no flows until both are
/// settled, also under `on_all_down = "keep"`.
pub fn desired(
    config: &Config,
    health: &HashMap<BackendRef, BackendHealth>,
    admin: &AdminStates,
    now: Instant,
    resolving: impl Fn(IpAddr) -> bool,
) -> Desired {
    let mut ramping = false;
    let mut kept = Vec::new();
    let vips = config
        .vips
        .iter()
        .map(|vip| {
            let key = vip.key();
            let known = |b: &Backend| health.get(&BackendRef { vip: key, addr: b.socket() });
            let held =
                |b: &Backend| resolving(b.address) || (b.check.kind != CheckKind::None && known(b).is_none());
            let mut backends: Vec<DesiredBackend> = vip
                .backends
                .iter()
                .map(|b| {
                    let known = known(b);
                    let said = admin.get(&vip.name, &b.name);
                    // Unchecked backends are always up; checked ones only once a check said so.
                    // Maintenance counts as down (flows leave), drain as weight 0 (flows stay).
                    let up = said != Admin::Maint
                        && !held(b)
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
            let none_usable = !backends.iter().any(DesiredBackend::takes_new_flows);
            let judged = |conf: &Backend| !held(conf) && admin.get(&vip.name, &conf.name) != Admin::Maint;
            if none_usable && vip.on_all_down == OnAllDown::Keep && vip.backends.iter().any(judged) {
                // Serving from backends that fail their checks beats serving nothing;
                // the operator's maintenance still stands, and so does what is not judged yet.
                for (b, conf) in backends.iter_mut().zip(&vip.backends) {
                    b.up = judged(conf);
                }
                kept.push(vip.name.clone());
            }
            let nat = nat_source(vip, &config.global.nat);
            DesiredVip { key, mode: vip.mode.into(), nat, allbackups: vip.allbackups, backends }
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

    fn vip(allbackups: bool, backends: &[(&str, bool, bool, u32)]) -> DesiredVip {
        DesiredVip {
            key: VipKey::new("10.77.100.1".parse().unwrap(), 80, 6),
            mode: Mode::Dsr,
            nat: None,
            allbackups,
            backends: backends
                .iter()
                .map(|&(addr, backup, up, weight)| DesiredBackend {
                    addr: addr.parse().unwrap(),
                    weight,
                    backup,
                    up,
                })
                .collect(),
        }
    }

    fn members(vip: &DesiredVip) -> Vec<String> {
        ring_members(vip).iter().map(|b| b.addr.to_string()).collect()
    }

    #[test]
    fn usable_primaries_take_all_new_flows() {
        let v = vip(
            false,
            &[
                ("10.0.0.1:80", false, true, 1),
                ("10.0.0.2:80", false, false, 1),
                ("10.0.0.3:80", true, true, 1),
            ],
        );
        assert_eq!(members(&v), ["10.0.0.1:80"]);
    }

    #[test]
    fn without_primaries_the_first_backup_by_identity_serves() {
        let backends = [
            ("10.0.0.1:80", false, false, 1),
            ("10.0.0.9:80", true, true, 1),
            ("10.0.0.5:80", true, true, 1),
            ("10.0.0.3:80", true, false, 1),
        ];
        assert_eq!(members(&vip(false, &backends)), ["10.0.0.5:80"]);
        assert_eq!(members(&vip(true, &backends)), ["10.0.0.5:80", "10.0.0.9:80"]);
    }

    #[test]
    fn drained_primaries_do_not_count_as_usable() {
        let v = vip(false, &[("10.0.0.1:80", false, true, 0), ("10.0.0.2:80", true, true, 1)]);
        assert_eq!(members(&v), ["10.0.0.2:80"]);
        assert_eq!(v.backends[0].state(), BackendState::Draining);
    }

    #[test]
    fn backends_not_judged_or_resolved_yet_take_no_flows_even_when_kept() {
        let config = Config::from_toml(
            "[global]\ninterface = \"lo\"\n\
             [[vip]]\nname = \"keep\"\naddress = \"10.77.100.1\"\nport = 80\non_all_down = \"keep\"\n\
             [[vip.backend]]\naddress = \"10.77.1.10\"\n\
             [[vip.backend]]\naddress = \"10.77.1.11\"\n\
             [[vip.backend]]\naddress = \"10.77.1.12\"\ncheck = \"none\"\n\
             [[vip]]\nname = \"new\"\naddress = \"10.77.100.2\"\nport = 80\non_all_down = \"keep\"\n\
             [[vip.backend]]\naddress = \"10.77.1.13\"\n\
             [[vip.backend]]\naddress = \"10.77.1.14\"\ncheck = \"none\"\n",
        )
        .unwrap();
        let down = BackendHealth { up: false, came_up: None, transitions: 0, reason: "exit 1".into() };
        let judged = BackendRef { vip: config.vips[0].key(), addr: "10.77.1.10:80".parse().unwrap() };
        let health = HashMap::from([(judged, down)]);
        let resolving: IpAddr = "10.77.1.12".parse().unwrap();
        let new: IpAddr = "10.77.1.14".parse().unwrap();
        let want =
            desired(&config, &health, &AdminStates::new(), Instant::now(), |a| a == resolving || a == new);
        let up: Vec<Vec<bool>> =
            want.vips.iter().map(|v| v.backends.iter().map(|b| b.up).collect()).collect();
        // Kept: the backend that failed its check; not the one whose first check
        // has not answered, nor the one whose neighbour is being resolved.
        assert_eq!(up, [vec![true, false, false], vec![false, false]]);
        assert_eq!(want.kept, ["keep"], "a VIP with nothing judged keeps nothing");

        let want = desired(&config, &health, &AdminStates::new(), Instant::now(), |_| false);
        assert!(want.vips[1].backends[1].up, "resolved, an unchecked backend serves");
        assert!(!want.vips[1].backends[0].up, "a checked one waits for its first check");
    }
}
