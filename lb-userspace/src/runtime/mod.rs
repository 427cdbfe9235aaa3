//! Changes made through the API, kept as an ordered list of operations on top
//! of the config file. An operation edits the resolved TOML of the VIP it
//! touches and that is validated by the same code as the file, so an API
//! change is exactly as checked as an edit of the file, at the cost of one VIP
//! however big the config. A reload replays the list on the new file;
//! operations that no longer apply are dropped (and logged).
//!
//! The list is kept compacted ([`record`], and [`replay`] compacts what it
//! keeps): it holds the net effect per VIP and backend, so its length is bound
//! by what the API changed, not by how many requests changed it. The rules,
//! and what a compacted list does differently on a changed file, are in
//! `compact.rs`.
//!
//! Operations name what they touch, and compaction matches them by name. A
//! request may leave the name of the VIP or backend it adds to its default
//! (`address:port/protocol`, `address:port`), so [`apply`] fills the resolved
//! name into the operation's JSON: the list stores what the name was when the
//! operation was made. Replaying a stored operation on a file whose VIP changed
//! port keeps the backend's name (and with it the later operations that name
//! it) instead of renaming it to the new default.

mod admin;
mod compact;
mod document;
mod restricted;
mod saved;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use self::document::{array_mut, check_fits, mini_document, table_of, validated_vip};
pub use self::{
    admin::{Admin, AdminStates},
    compact::record,
    restricted::{restricted_key, RESTRICTED_KEYS},
    saved::{decode, encode, load, save},
};
use crate::config::{Config, Problem, Vip};

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

/// The file with the operations applied.
#[derive(Clone, Debug)]
pub struct Effective {
    pub config: Config,
    pub admin: AdminStates,
    /// Operations kept (those that still apply), names filled in and compacted.
    pub ops: Vec<Op>,
    /// Operations that no longer apply, and why.
    pub dropped: Vec<(Op, OpError)>,
}

/// Replays `ops` on `file`, keeping the ones that apply (compacted: they all
/// applied in order, which is what compaction needs).
pub fn replay(file: &Config, ops: &[Op]) -> Effective {
    let mut state =
        Effective { config: file.clone(), admin: AdminStates::new(), ops: Vec::new(), dropped: Vec::new() };
    for op in ops {
        let mut named = op.clone();
        match apply(&state.config, &state.admin, &mut named) {
            Ok((config, admin)) => {
                state.config = config;
                state.admin = admin;
                record(&mut state.ops, [named]);
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

/// One operation on `config`: the new config and admin states, or why not.
/// Only the VIP the operation touches is re-validated (by the config file's
/// own validator); what spans VIPs is checked by [`check_fits`]. If it applies,
/// an add gets the resolved name of what it added written into its JSON (see
/// the module doc); a refused operation is left as it was.
pub fn apply(config: &Config, admin: &AdminStates, op: &mut Op) -> Result<(Config, AdminStates), OpError> {
    let mut admin = admin.clone();
    let mut next = config.clone();
    match op {
        Op::AddVip { vip: json } => {
            let mut doc = mini_document(config, None);
            array_mut(&mut doc, "vip").push(toml::Value::Table(table_of(json, "VIP")?));
            let vip = validated_vip(&doc, &["vip[0]".to_string()])?;
            check_fits(config, None, &vip)?;
            name_in(json, &vip.name);
            next.vips.push(vip);
        }
        Op::RemoveVip { vip } => {
            let i = vip_index(config, vip)?;
            next.vips.remove(i);
            admin.forget_vip(vip);
        }
        Op::AddBackend { vip, backend } => {
            let i = vip_index(config, vip)?;
            let mut doc = mini_document(config, Some(&config.vips[i]));
            let vip_table = array_mut(&mut doc, "vip")[0].as_table_mut().expect("VIPs are tables");
            let j = array_mut(vip_table, "backend").len();
            array_mut(vip_table, "backend").push(toml::Value::Table(table_of(backend, "backend")?));
            let changed = validated_vip(&doc, &["vip[0]".to_string(), format!("backend[{j}]")])?;
            check_fits(config, Some(i), &changed)?;
            name_in(backend, &changed.backends[j].name);
            next.vips[i] = changed;
        }
        Op::RemoveBackend { vip, backend } => {
            let i = vip_index(config, vip)?;
            let j = backend_index(&config.vips[i], backend)?;
            let mut changed = (*config.vips[i]).clone();
            changed.backends.remove(j);
            next.vips[i] = Arc::new(changed);
            admin.forget_backend(vip, backend);
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
            admin.set(vip, backend, *state);
        }
    }
    Ok((next, admin))
}

/// Writes the resolved `name` into an add's JSON (an object: it was validated).
fn name_in(json: &mut Json, name: &str) {
    if let Json::Object(fields) = json {
        fields.insert("name".into(), Json::String(name.into()));
    }
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
        let mut add = Op::AddBackend {
            vip: "web".into(),
            backend: json!({"name": "b1", "address": "10.77.1.11", "weight": 3}),
        };
        let (config, admin) = apply(&file(), &AdminStates::new(), &mut add).unwrap();
        assert_eq!(config.vips[0].backends[1].weight, 3);
        let mut weight = Op::SetWeight { vip: "web".into(), backend: "b1".into(), weight: 0 };
        let (config, admin) = apply(&config, &admin, &mut weight).unwrap();
        assert_eq!(config.vips[0].backends[1].weight, 0);
        let mut remove = Op::RemoveBackend { vip: "web".into(), backend: "b0".into() };
        let (config, _) = apply(&config, &admin, &mut remove).unwrap();
        assert_eq!(config.vips[0].backends.len(), 1);
    }

    #[test]
    fn invalid_changes_name_the_field_relative_to_the_request() {
        let mut add =
            Op::AddBackend { vip: "web".into(), backend: json!({"address": "10.77.1.11", "weight": 999}) };
        match apply(&file(), &AdminStates::new(), &mut add) {
            Err(OpError::Invalid { problems, .. }) => assert_eq!(problems[0].field, "weight", "{problems:?}"),
            other => panic!("{other:?}"),
        }
        let mut weight = Op::SetWeight { vip: "web".into(), backend: "b0".into(), weight: 999 };
        assert!(matches!(apply(&file(), &AdminStates::new(), &mut weight), Err(OpError::Invalid { .. })));
        let mut unknown = Op::AddVip { vip: json!({"address": "10.77.100.2", "port": 80, "bogus": 1}) };
        match apply(&file(), &AdminStates::new(), &mut unknown) {
            Err(OpError::Invalid { message, problems }) => {
                assert!(message.contains("bogus") && problems[0].field == "bogus", "{message} {problems:?}")
            }
            other => panic!("{other:?}"),
        }
        let mut port = Op::AddVip { vip: json!({"address": "10.77.100.2", "port": 70000}) };
        match apply(&file(), &AdminStates::new(), &mut port) {
            Err(OpError::Invalid { problems, .. }) => assert_eq!(problems[0].field, "port"),
            other => panic!("{other:?}"),
        }
        let mut null = Op::AddVip { vip: json!({"address": null}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &mut null), Err(OpError::Invalid { .. })));
    }

    #[test]
    fn duplicates_conflict_and_missing_names_are_not_found() {
        let mut twice = Op::AddVip { vip: json!({"address": "10.77.100.1", "port": 80}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &mut twice), Err(OpError::Conflict(_))));
        let mut again = Op::AddBackend { vip: "web".into(), backend: json!({"address": "10.77.1.10"}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &mut again), Err(OpError::Conflict(_))));
        let mut nowhere = Op::AddBackend { vip: "nope".into(), backend: json!({"address": "10.77.1.10"}) };
        assert!(matches!(apply(&file(), &AdminStates::new(), &mut nowhere), Err(OpError::NotFound(_))));
        let mut gone = Op::SetAdmin { vip: "web".into(), backend: "zz".into(), admin: Admin::Drain };
        assert!(matches!(apply(&file(), &AdminStates::new(), &mut gone), Err(OpError::NotFound(_))));
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
        assert_eq!(effective.admin.get("web", "b1"), Admin::Maint);
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
