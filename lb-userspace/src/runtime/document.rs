//! An operation's VIP as a TOML document, checked by the config file's own
//! validator; and what spans VIPs, checked against the rest of the config.

use std::{collections::HashMap, net::IpAddr, sync::Arc};

use serde_json::Value as Json;

use super::OpError;
use crate::config::{Config, ConfigError, Problem, Vip};

pub(super) fn array_mut<'d>(table: &'d mut toml::Table, key: &str) -> &'d mut Vec<toml::Value> {
    let entry = table.entry(key.to_string()).or_insert_with(|| toml::Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = toml::Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("made an array above")
}

/// The config's global sections with just `vip` (or no VIP) as a TOML document:
/// an operation is validated on the VIP it touches, not on the whole config.
pub(super) fn mini_document(config: &Config, vip: Option<&Arc<Vip>>) -> toml::Table {
    let mini = Config {
        global: config.global.clone(),
        api: config.api.clone(),
        web: config.web.clone(),
        bgp: None,
        cluster: None,
        vips: vip.into_iter().cloned().collect(),
    };
    toml::from_str(&mini.to_toml()).expect("a resolved config round-trips")
}

/// The one VIP of a validated mini document.
pub(super) fn validated_vip(doc: &toml::Table, prefixes: &[String]) -> Result<Arc<Vip>, OpError> {
    let mut config = validate(doc, prefixes)?;
    Ok(config.vips.pop().expect("the mini document has one VIP"))
}

/// What the whole config must still satisfy when one VIP changes: unique VIPs
/// and names, no backend on another VIP's address, and room in the maps.
/// `replacing` is the VIP a backend is being added to (the request is that
/// backend); `None` when `vip` is new.
pub(super) fn check_fits(config: &Config, replacing: Option<usize>, vip: &Vip) -> Result<(), OpError> {
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
    no_backend_is_a_vip(others.clone(), replacing, vip)?;
    let global = &config.global;
    let vips = others.clone().count() + 1;
    let backends = others.map(|v| v.backends.len()).sum::<usize>() + vip.backends.len();
    let too_many = |what: &str, count: usize, max: u32, setting: &str| OpError::Invalid {
        message: format!("{count} {what} would exceed global.{setting} = {max}"),
        problems: vec![Problem::new(what, count.to_string(), format!("more than global.{setting} = {max}"))],
    };
    if vips > global.max_vips as usize {
        return Err(too_many("VIPs", vips, global.max_vips, "max_vips"));
    }
    if backends > global.max_backends as usize {
        return Err(too_many("backends", backends, global.max_backends, "max_backends"));
    }
    Ok(())
}

/// The config file's rule that no backend is on a VIP's address, between `vip`
/// and the others (the validator saw `vip` alone). Problem fields are the
/// request's: a backend added to a VIP is the whole request, and leaves the
/// VIP's address as it was, checked when the VIP came.
fn no_backend_is_a_vip<'c>(
    others: impl Iterator<Item = &'c Arc<Vip>> + Clone,
    replacing: Option<usize>,
    vip: &Vip,
) -> Result<(), OpError> {
    let refuse = |field: String, address: IpAddr, reason: String| {
        let problem = Problem::new(field, format!("{:?}", address.to_string()), reason);
        OpError::Invalid { message: problem.to_string(), problems: vec![problem] }
    };
    const WHY: &str = "a VIP address cannot be a backend, its packets would come back to the balancer";
    let owners: HashMap<IpAddr, &str> = others.clone().map(|o| (o.address, o.name.as_str())).collect();
    for (j, backend) in vip.backends.iter().enumerate() {
        if let Some(owner) = owners.get(&backend.address) {
            let field = if replacing.is_some() { "address".into() } else { format!("backend[{j}].address") };
            return Err(refuse(field, backend.address, format!("the address of VIP {owner:?}: {WHY}")));
        }
    }
    if replacing.is_none() {
        for other in others {
            if let Some(backend) = other.backends.iter().find(|b| b.address == vip.address) {
                let reason =
                    format!("the address of backend {:?} of VIP {:?}: {WHY}", backend.name, other.name);
                return Err(refuse("address".into(), vip.address, reason));
            }
        }
    }
    Ok(())
}

/// A JSON request body as a TOML table, or why it cannot be one.
pub(super) fn table_of(json: &Json, what: &str) -> Result<toml::Table, OpError> {
    fn convert(json: &Json, at: &str) -> Result<toml::Value, OpError> {
        let invalid = |reason: &str| OpError::Invalid {
            message: format!("{at}: {reason}"),
            problems: vec![Problem::new(at, json.to_string(), reason)],
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
            // A place in the document built for the check, not in anything the client sent.
            p.location = None;
            let mut rest = p.field.as_str();
            for prefix in prefixes {
                // Whole segments only: `backend[1]` is no prefix of `backend[12]`.
                let whole = |a: &&str| a.is_empty() || a.starts_with('.') || a.starts_with(" (");
                let Some(after) = rest.strip_prefix(prefix.as_str()).filter(whole) else { return p };
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
            if problems.iter().any(|p| p.repeat) {
                return OpError::Conflict(
                    problems
                        .iter()
                        .map(|p| format!("{}: {}", p.field, p.reason))
                        .collect::<Vec<_>>()
                        .join("; "),
                );
            }
            let problems = relative(problems, prefixes);
            let message = problems.iter().map(Problem::to_string).collect::<Vec<_>>().join("; ");
            OpError::Invalid { message, problems }
        }
        ConfigError::Syntax { field, error } => {
            // Unknown keys and wrong types: the path names the key; toml's
            // line numbers are of the document built for the check, so only
            // its message is kept.
            let reason = error.message().trim().to_string();
            let problems = relative(vec![Problem::new(field, "", reason.clone())], prefixes);
            OpError::Invalid { message: reason, problems }
        }
        other => OpError::Invalid { message: other.to_string(), problems: Vec::new() },
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{apply, AdminStates, Op, OpError};
    use crate::config::Config;

    const FILE: &str = "[global]\ninterface = \"eth0\"\n\
        [[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n\
        [[vip.backend]]\nname = \"b0\"\naddress = \"10.77.1.10\"\n\
        [[vip]]\nname = \"dns\"\naddress = \"10.77.100.2\"\nport = 53\nprotocol = \"udp\"\n\
        [[vip.backend]]\naddress = \"10.77.1.20\"\n";

    /// The one problem of a refused operation: its field and its reason.
    #[track_caller]
    fn refused(mut op: Op) -> (String, String) {
        match apply(&Config::from_toml(FILE).unwrap(), &AdminStates::new(), &mut op) {
            Err(OpError::Invalid { problems, .. }) if problems.len() == 1 => {
                (problems[0].field.clone(), problems[0].reason.clone())
            }
            other => panic!("{op:?}: expected one problem, got {other:?}"),
        }
    }

    #[test]
    fn keys_serde_refuses_are_named_as_the_request_names_them() {
        let add_vip = |extra: serde_json::Value| {
            let mut vip = json!({"address": "10.77.100.3", "port": 80});
            vip.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            Op::AddVip { vip }
        };
        let add_backend = |backend| Op::AddBackend { vip: "web".into(), backend };
        for (op, field, why) in [
            (add_vip(json!({"bogus": 1})), "bogus", "unknown field `bogus`"),
            (add_vip(json!({"port": "80"})), "port", "invalid type"),
            (
                add_vip(json!({"backend": [{"address": "10.77.1.30", "wieght": 2}]})),
                "backend[0].wieght",
                "unknown",
            ),
            (add_backend(json!({"address": "10.77.1.30", "wieght": 2})), "wieght", "unknown field `wieght`"),
            (add_backend(json!({"address": "10.77.1.30", "weight": "2"})), "weight", "invalid type"),
            (add_backend(json!({"weight": 2})), "body", "missing field `address`"),
        ] {
            let (named, reason) = refused(op);
            assert_eq!(named, field, "{reason}");
            assert!(reason.contains(why), "{reason:?} lacks {why:?}");
        }
    }

    #[test]
    fn no_backend_on_a_vip_address_across_vips() {
        let add = |address: &str| Op::AddBackend { vip: "web".into(), backend: json!({"address": address}) };
        let (field, reason) = refused(add("10.77.100.2"));
        assert_eq!(field, "address");
        assert!(
            reason.starts_with("the address of VIP \"dns\": a VIP address cannot be a backend"),
            "{reason}"
        );
        // Its own VIP's address: the validator's rule, named the same way.
        let (field, reason) = refused(add("10.77.100.1"));
        assert_eq!(field, "address");
        assert!(
            reason.starts_with("the address of vip[0] (web): a VIP address cannot be a backend"),
            "{reason}"
        );

        let on_b0 = Op::AddVip { vip: json!({"name": "tls", "address": "10.77.1.10", "port": 443}) };
        let (field, reason) = refused(on_b0);
        assert_eq!(field, "address");
        assert!(reason.starts_with("the address of backend \"b0\" of VIP \"web\""), "{reason}");
        let backends = json!([{"address": "10.77.1.30"}, {"address": "10.77.100.2"}]);
        let with_dns = Op::AddVip { vip: json!({"address": "10.77.100.3", "port": 80, "backend": backends}) };
        let (field, reason) = refused(with_dns);
        assert_eq!(field, "backend[1].address");
        assert!(reason.starts_with("the address of VIP \"dns\""), "{reason}");

        // Sharing a backend, or a VIP address on another port, is fine.
        let file = Config::from_toml(FILE).unwrap();
        for mut op in [add("10.77.1.20"), Op::AddVip { vip: json!({"address": "10.77.100.1", "port": 443}) }]
        {
            assert!(apply(&file, &AdminStates::new(), &mut op).is_ok(), "{op:?}");
        }
    }
}
