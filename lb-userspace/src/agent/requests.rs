//! Changes asked for by the API and by SIGHUP: validated against the running
//! config, applied by the reconcile loop, remembered as runtime operations.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use super::{
    host,
    inbox::{Applied, Reloaded, Request, RequestError},
    memory, parse_child,
    state::Agent,
};
use crate::{
    api::Caller,
    config::{capture, mtu, Config, ConfigError, Problem},
    runtime,
};

/// Why the API may not set a restricted key.
const RESTRICTED: &str = "only the config file may set this ([api] allow_exec = true lets the API)";

/// A config file read for a reload, back from its parse child: the loop
/// applies it (`Agent::reloaded`) and answers whoever asked.
pub struct Loaded {
    discard_runtime: bool,
    result: Result<Config, ConfigError>,
    /// The API's caller; `None` for SIGHUP.
    reply: Option<oneshot::Sender<Result<Reloaded, RequestError>>>,
}

impl Loaded {
    pub fn asked_by_api(&self) -> bool {
        self.reply.is_some()
    }
}

impl Agent {
    /// An API request. A reload only starts here: its file is parsed while
    /// the loop goes on, and applied when it comes back as [`Loaded`].
    pub fn request(&mut self, request: Request, loads: &mpsc::Sender<Loaded>) {
        match request {
            Request::Apply { ops, caller, reply } => {
                let _ = reply.send(self.apply_ops(ops, &caller));
            }
            Request::Reload { discard_runtime, caller, reply } => {
                info!(%caller, discard_runtime, "reload asked for through the API");
                self.start_reload(discard_runtime, Some(reply), loads);
            }
        }
    }

    /// Has the config file parsed by a child process, on a blocking thread:
    /// the parse may take seconds (or hang on a bad file), and failover,
    /// API changes and the watchdog must not wait behind it.
    pub fn start_reload(
        &self,
        discard_runtime: bool,
        reply: Option<oneshot::Sender<Result<Reloaded, RequestError>>>,
        loads: &mpsc::Sender<Loaded>,
    ) {
        let path = self.config_path.clone();
        let loads = loads.clone();
        tokio::task::spawn_blocking(move || {
            let result = parse_child::load_config(&path);
            let _ = loads.blocking_send(Loaded { discard_runtime, result, reply });
        });
    }

    /// A reload's file is back: applied, or refused with the running config kept.
    pub fn reloaded(&mut self, loaded: Loaded) {
        let Loaded { discard_runtime, result, reply } = loaded;
        let answer = self.reload(discard_runtime, result);
        if let Some(reply) = reply {
            let _ = reply.send(answer);
        }
    }

    fn apply_ops(&mut self, mut ops: Vec<runtime::Op>, caller: &Caller) -> Result<Applied, RequestError> {
        if !self.file.api.allow_exec {
            if let Some(field) = ops.iter().find_map(runtime::restricted_key) {
                return Err(RequestError::Forbidden { field, reason: RESTRICTED });
            }
        }
        let (mut config, mut admin) = ((*self.config).clone(), self.admin.clone());
        for op in &mut ops {
            (config, admin) = runtime::apply(&config, &admin, op)?;
        }
        refuse_capture_by_new_vips(&self.config, &config)?;
        refuse_new_nat_problems(&self.config, &config)?;
        refuse_small_mtu_for_new_tunnels(&self.config, &config)?;
        // Whatever does not get applied must not be remembered either.
        if let Err(error) = self.switch_to(Arc::new(config), admin) {
            error!("applying an API change failed: {error:#}");
            return Err(RequestError::Dataplane { doing: "applying the change", error });
        }
        for op in &ops {
            info!(%caller, ?op, "API change applied");
        }
        runtime::record(&mut self.ops, ops);
        self.save_ops();
        self.share_ops();
        Ok(Applied { config: Arc::clone(&self.config), admin: self.admin.clone() })
    }

    /// Takes the re-read file and replays the runtime operations on it (or not).
    fn reload(
        &mut self,
        discard_runtime: bool,
        loaded: Result<Config, ConfigError>,
    ) -> Result<Reloaded, RequestError> {
        let file = loaded.map_err(|e| {
            error!("reload of {} refused, the running config stays:\n{e}", self.config_path.display());
            let problems = e.problems().to_vec();
            let message = match &e {
                ConfigError::Invalid(_) => format!("the config file is invalid: {e}"),
                _ => format!("the config file cannot be used: {e}"),
            };
            RequestError::Invalid { message, problems }
        })?;
        if let Err(e) = host::refuse_on_host(&file).and_then(|()| host::refuse_small_mtu(&file)) {
            error!("reload of {} refused, the running config stays:\n{e}", self.config_path.display());
            let problems = e.problems().to_vec();
            return Err(RequestError::Invalid {
                message: format!("the config file is invalid: {e}"),
                problems,
            });
        }
        if let Some(why) = host::needs_restart(&self.file, &file) {
            error!("reload refused: {why}; the running config stays");
            return Err(RequestError::Invalid {
                message: format!("reload refused: {why}"),
                problems: Vec::new(),
            });
        }
        memory::give_back();
        let file = Arc::new(file);
        let ops = if discard_runtime { Vec::new() } else { self.ops.clone() };
        let effective = runtime::replay(&file, &ops);
        let dropped: Vec<String> =
            effective.dropped.iter().map(|(op, why)| format!("{op:?}: {why}")).collect();
        for d in &dropped {
            warn!("runtime change no longer applies and is dropped: {d}");
        }
        // Without runtime changes, what is in force is the file itself.
        let next = if effective.ops.is_empty() { Arc::clone(&file) } else { Arc::new(effective.config) };
        if let Err(error) = self.switch_to(next, effective.admin) {
            error!("applying the reloaded config failed: {error:#}");
            return Err(RequestError::Dataplane { doing: "applying the reload", error });
        }
        self.file = file;
        self.ops = effective.ops;
        self.save_ops();
        self.share_ops();
        memory::give_back();
        let report = self.last_report.clone();
        let ms = self.last_apply.as_secs_f64() * 1000.0;
        info!(vips = self.config.vips.len(), "reloaded config applied in {ms:.1} ms: {report:?}");
        Ok(Reloaded { report, dropped })
    }

    /// In a cluster, the runtime changes are everyone's: admin states and
    /// weights shape the rings, which must be the same on every node.
    fn share_ops(&mut self) {
        if let Some(member) = self.member.as_mut() {
            member.share_runtime(runtime::encode(&self.ops));
        }
    }

    /// Runtime changes another node made (through its API) take the place of ours.
    pub fn adopt_runtime(&mut self, doc: &[u8]) {
        let mut ops = match runtime::decode(doc) {
            Ok(ops) => ops,
            Err(e) => return warn!("the cluster's runtime changes cannot be read, ours stay: {e}"),
        };
        if !self.file.api.allow_exec {
            ops.retain(|op| runtime::restricted_key(op).is_none());
        }
        let effective = runtime::replay(&self.file, &ops);
        for (op, why) in &effective.dropped {
            warn!("a runtime change from the cluster does not apply here and is dropped: {op:?}: {why}");
        }
        let next = if effective.ops.is_empty() { Arc::clone(&self.file) } else { Arc::new(effective.config) };
        if let Err(e) = self.switch_to(next, effective.admin) {
            return error!("applying the cluster's runtime changes failed: {e:#}");
        }
        info!(ops = effective.ops.len(), "runtime changes taken from the cluster");
        self.ops = effective.ops;
        self.save_ops();
    }

    fn save_ops(&self) {
        let path = &self.file.api.runtime_file;
        if let Err(e) = runtime::save(path, &self.ops) {
            let path = path.display();
            warn!("cannot save runtime changes to {path}: {e} (they are lost if the agent restarts)");
        }
    }
}

/// A VIP the API adds, or turns into a tunnel, must fit the interface's MTU
/// (see [`mtu`]); named as the request names its keys.
fn refuse_small_mtu_for_new_tunnels(before: &Config, after: &Config) -> Result<(), RequestError> {
    let interface = &after.global.interface;
    let was_tunnel = |v: &crate::config::Vip| {
        before.vips.iter().any(|b| b.key() == v.key() && b.mode == crate::config::Mode::Tunnel)
    };
    let mut new = after.vips.iter().filter(|v| !was_tunnel(v) && mtu::too_small(v, interface, 0).is_some());
    let Some(vip) = new.next() else { return Ok(()) };
    let found = host::interface_mtu(interface).map_err(|e| {
        RequestError::Internal(format!(
            "the MTU of {interface} cannot be read ({e}), which an IPv6 tunnel VIP needs"
        ))
    })?;
    for vip in std::iter::once(vip).chain(new) {
        if let Some(reason) = mtu::too_small(vip, interface, found) {
            return Err(RequestError::invalid(Problem::new("mode", "\"tunnel\"", reason)));
        }
    }
    Ok(())
}

/// A change may not bring NAT problems of its own; those the running config
/// already has (an address removed from the interface since) do not block
/// unrelated changes: a reload or a restart names them.
fn refuse_new_nat_problems(before: &Config, after: &Config) -> Result<(), RequestError> {
    let new = new_problems(&host::nat_problems(before), host::nat_problems(after));
    match new.first().map(Problem::to_string) {
        None => Ok(()),
        Some(message) => Err(RequestError::Invalid { message, problems: new }),
    }
}

/// The problems of `after` that `before` did not have. A VIP's problem is
/// the same one wherever the VIP stands in the list (`vip[3] (web).x` and
/// `vip[2] (web).x`): removing an earlier VIP must not make it new.
fn new_problems(before: &[Problem], after: Vec<Problem>) -> Vec<Problem> {
    fn unplaced(p: &Problem) -> (&str, &str, &str) {
        let field =
            p.field.strip_prefix("vip[").and_then(|rest| rest.split_once("] ")).map_or(&*p.field, |(_, f)| f);
        (field, &p.value, &p.reason)
    }
    let known: Vec<_> = before.iter().map(unplaced).collect();
    after.into_iter().filter(|p| !known.contains(&unplaced(p))).collect()
}

/// A VIP the API adds must not capture the host's own traffic (see
/// [`capture`]); named as the request names its keys.
fn refuse_capture_by_new_vips(before: &Config, after: &Config) -> Result<(), RequestError> {
    let host = host::addresses();
    let listeners = capture::listeners(after);
    let new = after.vips.iter().filter(|v| !before.vips.iter().any(|b| b.key() == v.key()));
    for vip in new {
        if let Some((key, reason)) = capture::captures(vip, &host, &listeners) {
            let value = if key == "port" { vip.port.to_string() } else { vip.address.to_string() };
            return Err(RequestError::invalid(Problem::new(key, value, reason)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_not_new_because_its_vip_moved_up() {
        let at = |i: usize, name: &str| {
            Problem::new(format!("vip[{i}] ({name}).nat_address"), "\"10.77.1.9\"", "not here")
        };
        let before = [at(1, "web"), Problem::new("global.nat_address[0]", "\"10.77.1.8\"", "not here")];
        // VIP 0 was removed: web is vip[0] now, with the problem it had.
        assert!(new_problems(&before, vec![at(0, "web")]).is_empty());
        // Another VIP with the same problem is new, as is a new reason.
        assert_eq!(new_problems(&before, vec![at(0, "web"), at(1, "db")]), [at(1, "db")]);
        let mut other = at(0, "web");
        other.reason = "another".into();
        assert_eq!(new_problems(&before, vec![other.clone()]), [other]);
    }
}
