//! Changes made through the API, kept as an ordered list of operations on top
//! of the config file. An operation edits the resolved TOML of the VIP it
//! touches and that is validated by the same code as the file, so an API
//! change is exactly as checked as an edit of the file, at the cost of one VIP
//! however big the config. A reload replays the list on the new file;
//! operations that no longer apply are dropped (and logged).

use std::{collections::HashMap, path::Path, sync::Arc};

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use crate::{
    config::{Config, ConfigError, Problem, Vip},
    stats::Admin,
};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    AddVip { vip: Json },
    RemoveVip { vip: String },
    AddBackend { vip: String, backend: Json },
    RemoveBackend { vip: String, backend: String },
    SetWeight { vip: String, backend: String, weight: i64 },
    SetAdmin { vip: String, backend: String, admin: Admin },
}

#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum OpError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    /// The change would make an invalid config; `problems` name fields relative to the request.
    #[error("{message}")]
    Invalid { message: String, problems: Vec<Problem> },
}

/// Admin states by (VIP name, backend name); `Ready` is not stored.
pub type AdminStates = HashMap<(String, String), Admin>;

/// The file with the operations applied.
#[derive(Clone, Debug)]
pub struct Effective {
    pub config: Config,
    pub admin: AdminStates,
    /// Operations kept (those that still apply).
    pub ops: Vec<Op>,
    /// Operations that no longer apply, and why.
    pub dropped: Vec<(Op, OpError)>,
}

/// Replays `ops` on `file`, keeping the ones that apply.
pub fn replay(file: &Config, ops: &[Op]) -> Effective {
    let mut state =
        Effective { config: file.clone(), admin: AdminStates::new(), ops: Vec::new(), dropped: Vec::new() };
    for op in ops {
        match apply(&state.config, &state.admin, op) {
            Ok((config, admin)) => {
                state.config = config;
                state.admin = admin;
                state.ops.push(op.clone());
            }
            Err(e) => state.dropped.push((op.clone(), e)),
        }
    }
    state
}

fn vip_index(config: &Config, name: &str) -> Result<usize, OpError> {
    config
        .vips
        .iter()
        .position(|v| *v.name == *name)
        .ok_or_else(|| OpError::NotFound(format!("no VIP named {name:?}")))
}

fn backend_index(vip: &Vip, name: &str) -> Result<usize, OpError> {
    vip.backends
        .iter()
        .position(|b| *b.name == *name)
        .ok_or_else(|| OpError::NotFound(format!("no backend named {name:?} in this VIP")))
}

fn array_mut<'d>(table: &'d mut toml::Table, key: &str) -> &'d mut Vec<toml::Value> {
    let entry = table.entry(key.to_string()).or_insert_with(|| toml::Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = toml::Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("made an array above")
}

/// The config's global sections with just `vip` (or no VIP) as a TOML document:
/// an operation is validated on the VIP it touches, not on the whole config.
fn mini_document(config: &Config, vip: Option<&Arc<Vip>>) -> toml::Table {
    let mini = Config {
        global: config.global.clone(),
        api: config.api.clone(),
        web: config.web.clone(),
        vips: vip.into_iter().cloned().collect(),
    };
    toml::from_str(&mini.to_toml()).expect("a resolved config round-trips")
}

/// The one VIP of a validated mini document.
fn validated_vip(doc: &toml::Table, prefixes: &[String]) -> Result<Arc<Vip>, OpError> {
    let mut config = validate(doc, prefixes)?;
    Ok(config.vips.pop().expect("the mini document has one VIP"))
}

/// What the whole config must still satisfy when one VIP changes: unique VIPs
/// and names, and room in the maps.
fn check_fits(config: &Config, replacing: Option<usize>, vip: &Vip) -> Result<(), OpError> {
    let others = config.vips.iter().enumerate().filter(|(i, _)| Some(*i) != replacing).map(|(_, v)| v);
    for other in others.clone() {
        if other.key() == vip.key() {
            return Err(OpError::Conflict(format!(
                "VIP {} already serves {}/{}",
                other.name,
                vip.socket(),
                vip.protocol
            )));
        }
        if other.name == vip.name {
            return Err(OpError::Conflict(format!("a VIP named {:?} already exists", vip.name)));
        }
    }
    let global = &config.global;
    let vips = others.clone().count() + 1;
    let backends = others.map(|v| v.backends.len()).sum::<usize>() + vip.backends.len();
    let too_many = |what: &str, count: usize, max: u32, setting: &str| OpError::Invalid {
        message: format!("{count} {what} would exceed global.{setting} = {max}"),
        problems: vec![Problem {
            field: what.into(),
            value: count.to_string(),
            reason: format!("more than global.{setting} = {max}"),
            location: None,
        }],
    };
    if vips > global.max_vips as usize {
        return Err(too_many("VIPs", vips, global.max_vips, "max_vips"));
    }
    if backends > global.max_backends as usize {
        return Err(too_many("backends", backends, global.max_backends, "max_backends"));
    }
    Ok(())
}

/// A JSON request body as a TOML table, or why it cannot be one.
fn table_of(json: &Json, what: &str) -> Result<toml::Table, OpError> {
    fn convert(json: &Json, at: &str) -> Result<toml::Value, OpError> {
        let invalid = |reason: &str| OpError::Invalid {
            message: format!("{at}: {reason}"),
            problems: vec![Problem {
                field: at.to_string(),
                value: json.to_string(),
                reason: reason.into(),
                location: None,
            }],
        };
        Ok(match json {
            Json::Null => return Err(invalid("null is not a value: leave the key out")),
            Json::Bool(b) => toml::Value::Boolean(*b),
            Json::Number(n) => match n.as_i64() {
                Some(i) => toml::Value::Integer(i),
                None => toml::Value::Float(n.as_f64().ok_or_else(|| invalid("number out of range"))?),
            },
            Json::String(s) => toml::Value::String(s.clone()),
            Json::Array(items) => toml::Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| convert(v, &format!("{at}[{i}]")))
                    .collect::<Result<_, _>>()?,
            ),
            Json::Object(map) => toml::Value::Table(
                map.iter()
                    .map(|(k, v)| {
                        Ok((
                            k.clone(),
                            convert(v, &if at.is_empty() { k.clone() } else { format!("{at}.{k}") })?,
                        ))
                    })
                    .collect::<Result<_, OpError>>()?,
            ),
        })
    }
    match convert(json, "")? {
        toml::Value::Table(t) => Ok(t),
        _ => Err(OpError::Invalid {
            message: format!("the body must be a JSON object describing a {what}"),
            problems: Vec::new(),
        }),
    }
}

/// Problem fields as the request sees them: `vip[3] (web).backend[0].weight` → `backend[0].weight`.
fn relative(problems: Vec<Problem>, prefixes: &[String]) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|mut p| {
            let mut rest = p.field.as_str();
            for prefix in prefixes {
                let Some(after) = rest.strip_prefix(prefix.as_str()) else { return p };
                let after = match after.strip_prefix(" (") {
                    Some(named) => named.split_once(')').map_or(after, |(_, r)| r),
                    None => after,
                };
                rest = after.strip_prefix('.').unwrap_or(after);
            }
            p.field = if rest.is_empty() { "body".into() } else { rest.to_string() };
            p
        })
        .collect()
}

/// Validates an edited document; `prefixes` locate the edited part for problem fields.
fn validate(doc: &toml::Table, prefixes: &[String]) -> Result<Config, OpError> {
    let text = toml::to_string(doc)
        .map_err(|e| OpError::Invalid { message: e.to_string(), problems: Vec::new() })?;
    Config::from_toml(&text).map_err(|e| match e {
        ConfigError::Invalid(problems) => {
            if problems
                .iter()
                .any(|p| p.reason.starts_with("duplicate") || p.reason.starts_with("listed twice"))
            {
                return OpError::Conflict(
                    problems
                        .iter()
                        .map(|p| format!("{}: {}", p.field, p.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            let problems = relative(problems, prefixes);
            let message = problems
                .iter()
                .map(|p| format!("{} = {}: {}", p.field, p.value, p.reason))
                .collect::<Vec<_>>()
                .join("; ");
            OpError::Invalid { message, problems }
        }
        other => {
            // Unknown keys and wrong types: toml names the key; the line numbers are of our document.
            let message = other.to_string();
            let key = message.split('`').nth(1).unwrap_or("body").to_string();
            OpError::Invalid {
                message: message.lines().last().unwrap_or_default().trim().to_string(),
                problems: vec![Problem {
                    field: key,
                    value: String::new(),
                    reason: message.lines().last().unwrap_or_default().trim().into(),
                    location: None,
                }],
            }
        }
    })
}

/// One operation on `config`: the new config and admin states, or why not.
/// Only the VIP the operation touches is re-validated (by the config file's
/// own validator); what spans VIPs is checked by [`check_fits`].
pub fn apply(config: &Config, admin: &AdminStates, op: &Op) -> Result<(Config, AdminStates), OpError> {
    let mut admin = admin.clone();
    let mut next = config.clone();
    match op {
        Op::AddVip { vip } => {
            let mut doc = mini_document(config, None);
            array_mut(&mut doc, "vip").push(toml::Value::Table(table_of(vip, "VIP")?));
            let vip = validated_vip(&doc, &["vip[0]".to_string()])?;
            check_fits(config, None, &vip)?;
            next.vips.push(vip);
        }
        Op::RemoveVip { vip } => {
            let i = vip_index(config, vip)?;
            next.vips.remove(i);
            admin.retain(|(v, _), _| v != vip);
        }
        Op::AddBackend { vip, backend } => {
            let i = vip_index(config, vip)?;
            let mut doc = mini_document(config, Some(&config.vips[i]));
            let vip_table = array_mut(&mut doc, "vip")[0].as_table_mut().expect("VIPs are tables");
            let j = array_mut(vip_table, "backend").len();
            array_mut(vip_table, "backend").push(toml::Value::Table(table_of(backend, "backend")?));
            let changed = validated_vip(&doc, &["vip[0]".to_string(), format!("backend[{j}]")])?;
            check_fits(config, Some(i), &changed)?;
            next.vips[i] = changed;
        }
        Op::RemoveBackend { vip, backend } => {
            let i = vip_index(config, vip)?;
            let j = backend_index(&config.vips[i], backend)?;
            let mut changed = (*config.vips[i]).clone();
            changed.backends.remove(j);
            next.vips[i] = Arc::new(changed);
            admin.remove(&(vip.clone(), backend.clone()));
        }
        Op::SetWeight { vip, backend, weight } => {
            let i = vip_index(config, vip)?;
            let j = backend_index(&config.vips[i], backend)?;
            let mut doc = mini_document(config, Some(&config.vips[i]));
            let vip_table = array_mut(&mut doc, "vip")[0].as_table_mut().expect("VIPs are tables");
            let b = array_mut(vip_table, "backend")[j].as_table_mut().expect("backends are tables");
            b.insert("weight".into(), toml::Value::Integer(*weight));
            next.vips[i] = validated_vip(&doc, &["vip[0]".to_string(), format!("backend[{j}]")])?;
        }
        Op::SetAdmin { vip, backend, admin: state } => {
            let i = vip_index(config, vip)?;
            backend_index(&config.vips[i], backend)?;
            if *state == Admin::Ready {
                admin.remove(&(vip.clone(), backend.clone()));
            } else {
                admin.insert((vip.clone(), backend.clone()), *state);
            }
        }
    }
    Ok((next, admin))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    ops: Vec<Op>,
}

/// The operations saved by a previous agent (none if the file is missing).
pub fn load(path: &Path) -> std::io::Result<Vec<Op>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Saved>(&bytes)
            .map(|s| s.ops)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Saves the operations (atomically: a crash leaves the old or the new list).
pub fn save(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(&Saved { ops: ops.to_vec() }).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FILE: &str =
        "[global]\ninterface = \"eth0\"\n[[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n\
                        [[vip.backend]]\nname = \"b0\"\naddress = \"10.77.1.10\"\n";

    fn file() -> Config {
        Config::from_toml(FILE).unwrap()
    }

    #[test]
    fn backends_are_added_changed_and_removed() {
        let add = Op::AddBackend {
            vip: "web".into(),
            backend: json!({"name": "b1", "address": "10.77.1.11", "weight": 3}),
        };
        let (config, admin) = apply(&file(), &AdminStates::new(), &add).unwrap();
        assert_eq!(config.vips[0].backends[1].weight, 3);
        let weight = Op::SetWeight { vip: "web".into(), backend: "b1".into(), weight: 0 };
        let (config, admin) = apply(&config, &admin, &weight).unwrap();
        assert_eq!(config.vips[0].backends[1].weight, 0);
        let remove = Op::RemoveBackend { vip: "web".into(), backend: "b0".into() };
        let (config, _) = apply(&config, &admin, &remove).unwrap();
        assert_eq!(config.vips[0].backends.len(), 1);
    }

    #[test]
    fn invalid_changes_name_the_field_relative_to_the_request() {
        let add =
            Op::AddBackend { vip: "web".into(), backend: json!({"address": "10.77.1.11", "weight": 999}) };
        match apply(&file(), &AdminStates::new(), &add) {
            Err(OpError::Invalid { problems, .. }) => assert_eq!(problems[0].field, "weight", "{problems:?}"),
            other => panic!("{other:?}"),
        }
        let weight = Op::SetWeight { vip: "web".into(), backend: "b0".into(), weight: 999 };
        assert!(matches!(apply(&file(), &AdminStates::new(), &weight), Err(OpError::Invalid { .. })));
        let unknown = Op::AddVip { vip: json!({"address": "10.77.100.2", "port": 80, "bogus": 1}) };
        match apply(&file(), &AdminStates::new(), &unknown) {
            Err(OpError::Invalid { message, problems }) => {
                assert!(message.contains("bogus") && problems[0].field == "bogus", "{message} {problems:?}")
            }
            other => panic!("{other:?}"),
        }
        let port = Op::AddVip { vip: json!({"address": "10.77.100.2", "port": 70000}) };
        match apply(&file(), &AdminStates::new(), &port) {
            Err(OpError::Invalid { problems, .. }) => assert_eq!(problems[0].field, "port"),
            other => panic!("{other:?}"),
        }
        let null = Op::AddVip { vip: json!({"address": null}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &null), Err(OpError::Invalid { .. })));
    }

    #[test]
    fn duplicates_conflict_and_missing_names_are_not_found() {
        let twice = Op::AddVip { vip: json!({"address": "10.77.100.1", "port": 80}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &twice), Err(OpError::Conflict(_))));
        let again = Op::AddBackend { vip: "web".into(), backend: json!({"address": "10.77.1.10"}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &again), Err(OpError::Conflict(_))));
        let nowhere = Op::AddBackend { vip: "nope".into(), backend: json!({"address": "10.77.1.10"}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &nowhere), Err(OpError::NotFound(_))));
        let gone = Op::SetAdmin { vip: "web".into(), backend: "zz".into(), admin: Admin::Drain };
        assert!(matches!(apply(&file(), &AdminStates::new(), &gone), Err(OpError::NotFound(_))));
    }

    #[test]
    fn replay_keeps_what_applies_and_drops_the_rest() {
        let ops = vec![
            Op::AddBackend { vip: "web".into(), backend: json!({"name": "b1", "address": "10.77.1.11"}) },
            Op::SetAdmin { vip: "web".into(), backend: "b1".into(), admin: Admin::Maint },
            Op::RemoveBackend { vip: "web".into(), backend: "b7".into() },
        ];
        let effective = replay(&file(), &ops);
        assert_eq!(effective.config.vips[0].backends.len(), 2);
        assert_eq!(effective.admin.get(&("web".into(), "b1".into())), Some(&Admin::Maint));
        assert_eq!(effective.ops, ops[..2]);
        assert_eq!(effective.dropped.len(), 1);
    }

    #[test]
    fn saved_operations_load_back() {
        let dir = std::env::temp_dir().join(format!("alwayson-runtime-{}", std::process::id()));
        let path = dir.join("rt.json");
        let ops = vec![Op::SetWeight { vip: "web".into(), backend: "b0".into(), weight: 2 }];
        save(&path, &ops).unwrap();
        assert_eq!(load(&path).unwrap(), ops);
        assert_eq!(load(&dir.join("missing.json")).unwrap(), Vec::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
