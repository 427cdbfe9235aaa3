//! Keys only the config file may set, unless it lets the API (`[api]
//! allow_exec = true`): `exec_command` is a command the agent runs,
//! `check_address` a place its checks connect to. Through the API either
//! would let a token holder run commands or probe the host's networks.

use serde_json::Value as Json;

use super::Op;

pub const RESTRICTED_KEYS: &[&str] = &["exec_command", "check_address"];

/// The first restricted key `op` sets, named as in the request (`backend[1].exec_command`).
pub fn restricted_key(op: &Op) -> Option<String> {
    let own = |table: &Json| RESTRICTED_KEYS.iter().find(|k| table.get(**k).is_some()).map(|k| k.to_string());
    match op {
        Op::AddBackend { backend, .. } => own(backend),
        Op::AddVip { vip } => own(vip).or_else(|| {
            let backends = vip.get("backend").and_then(Json::as_array)?;
            backends.iter().enumerate().find_map(|(i, b)| own(b).map(|key| format!("backend[{i}].{key}")))
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn exec_commands_and_check_addresses_are_found_wherever_a_request_puts_them() {
        let backend = |b: Json| Op::AddBackend { vip: "web".into(), backend: b };
        assert_eq!(restricted_key(&backend(json!({"address": "10.77.1.1", "weight": 2}))), None);
        let exec = backend(json!({"address": "10.77.1.1", "check": "exec", "exec_command": "id"}));
        assert_eq!(restricted_key(&exec).as_deref(), Some("exec_command"));
        let aimed = backend(json!({"address": "10.77.1.1", "check_address": "10.0.0.1"}));
        assert_eq!(restricted_key(&aimed).as_deref(), Some("check_address"));
        let vip = Op::AddVip { vip: json!({"address": "10.77.100.9", "port": 80, "exec_command": "id"}) };
        assert_eq!(restricted_key(&vip).as_deref(), Some("exec_command"));
        let nested = Op::AddVip {
            vip: json!({"address": "10.77.100.9", "port": 80,
                        "backend": [{"address": "10.77.1.1"}, {"address": "10.77.1.2", "exec_command": "id"}]}),
        };
        assert_eq!(restricted_key(&nested).as_deref(), Some("backend[1].exec_command"));
        let weight = Op::SetWeight { vip: "web".into(), backend: "b".into(), weight: 1 };
        assert_eq!(restricted_key(&weight), None);
    }
}
