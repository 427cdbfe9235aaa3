//! The control API's documents held to each other and to the code, without
//! root. docs/api.md is the contract; docs/openapi.json is its
//! machine-readable form. The document is checked against api.md (routes,
//! statuses, bodies), against the config file's keys
//! (lb-userspace/src/config/raw.rs), against lb-common's counter names, and
//! against the routes the agent serves (`lb_userspace::api::ROUTES`).
//! `api.rs` holds the real agent to the same document.

use std::collections::{BTreeMap, BTreeSet};

use alwayson_tests::openapi::{keys, refs, repo_file, strings, template_params, Doc, Op};
use lb_common::{DropReason, Event, Verdict};
use serde_json::{json, Value};

/// The web listener's routes, as docs/api.md's introduction lists them.
const WEB_ROUTES: &[(&str, &str)] = &[("GET", "/"), ("GET", "/metrics"), ("GET", "/api/stats")];

// ---------------------------------------------------------------------------
// docs/api.md, read as data.

/// A row of api.md's § Resources table.
#[derive(Debug)]
struct Row {
    method: String,
    path: String,
    body: String,
    success: String,
}

fn api_md() -> String {
    repo_file("docs/api.md")
}

fn cells(line: &str) -> Vec<String> {
    // `\|` is a pipe inside a cell.
    let line = line.replace("\\|", "\u{1}");
    line.split('|').map(|c| c.trim().replace('\u{1}', "|")).collect()
}

fn resource_rows(md: &str) -> Vec<Row> {
    md.lines()
        .filter(|l| l.starts_with('|'))
        .map(cells)
        .filter(|c| c.len() == 6 && ["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&c[1].as_str()))
        .map(|c| Row {
            method: c[1].clone(),
            path: c[2].trim_matches('`').to_string(),
            body: c[3].clone(),
            success: c[4].clone(),
        })
        .collect()
}

/// The statuses of api.md's § Errors table.
fn error_statuses(md: &str) -> BTreeSet<u16> {
    let section = md.split("\n## Errors").nth(1).expect("api.md has a § Errors");
    let section = section.split("\n## ").next().unwrap_or_default();
    section.lines().filter(|l| l.starts_with('|')).filter_map(|l| cells(l).get(1)?.parse().ok()).collect()
}

/// The first `code` span of a table cell.
fn code_span(cell: &str) -> Option<&str> {
    let start = cell.find('`')? + 1;
    let len = cell[start..].find('`')?;
    Some(&cell[start..start + len])
}

/// The keys of a JSON sketch like `{"weight": 0..=256, "admin": "ready"|"drain"}`.
fn sketch_keys(sketch: &str) -> BTreeSet<String> {
    let parts: Vec<&str> = sketch.split('"').collect();
    (1..parts.len())
        .step_by(2)
        .filter(|&i| parts.get(i + 1).is_some_and(|next| next.trim_start().starts_with(':')))
        .map(|i| parts[i].to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// Tests without root: the document.

#[test]
fn openapi_document_parses_and_every_reference_resolves() {
    let doc = Doc::load();
    let version = doc.root["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.0."), "OpenAPI 3.0 expected, not {version}");
    for key in ["info", "servers", "paths", "components"] {
        assert!(doc.root.get(key).is_some(), "no {key}");
    }

    let mut all = Vec::new();
    refs(&doc.root, &mut all);
    assert!(!all.is_empty());
    for r in &all {
        assert!(r.starts_with("#/"), "only local references: {r}");
        assert!(doc.target(r).is_some(), "$ref {r} points nowhere");
    }
    // Nothing defined and never used.
    for kind in ["schemas", "responses", "parameters"] {
        for name in doc.root["components"][kind].as_object().expect(kind).keys() {
            let r = format!("#/components/{kind}/{name}");
            assert!(all.contains(&r), "{r} is never referenced");
        }
    }

    let schemes = doc.root["components"]["securitySchemes"].as_object().expect("securitySchemes");
    let mut requirements: Vec<&Value> = doc.root["security"].as_array().into_iter().flatten().collect();
    let mut ids = BTreeSet::new();
    for Op { method, path, op, item } in doc.operations() {
        let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path}: no operationId"));
        assert!(ids.insert(id.to_string()), "operationId {id} twice");
        let responses =
            op["responses"].as_object().unwrap_or_else(|| panic!("{method} {path}: no responses"));
        assert!(!responses.is_empty(), "{method} {path}: no responses");
        for (status, response) in responses {
            assert!(status.parse::<u16>().is_ok(), "{method} {path}: status {status:?}");
            assert!(
                doc.resolve(response)["description"].is_string(),
                "{method} {path} {status}: no description"
            );
        }
        // Every `{name}` of the path is a declared path parameter, and the other way round.
        let declared: BTreeSet<String> = item["parameters"]
            .as_array()
            .into_iter()
            .chain(op["parameters"].as_array())
            .flatten()
            .map(|p| doc.resolve(p))
            .filter(|p| p["in"] == "path")
            .inspect(|p| {
                assert_eq!(p["required"], json!(true), "{method} {path}: path parameters are required")
            })
            .map(|p| p["name"].as_str().expect("parameter name").to_string())
            .collect();
        assert_eq!(declared, template_params(&path), "{method} {path}: path parameters");
        requirements.extend(op["security"].as_array().into_iter().flatten());
    }
    for requirement in requirements {
        for scheme in requirement.as_object().expect("a security requirement").keys() {
            assert!(schemes.contains_key(scheme), "security scheme {scheme} is not defined");
        }
    }
    assert_eq!(doc.resolve(&schemes["bearerToken"])["scheme"], "bearer");
}

#[test]
fn openapi_operations_are_exactly_the_routes_the_agent_serves() {
    let doc = Doc::load();
    let served: Vec<(String, String)> =
        lb_userspace::api::ROUTES.iter().map(|(m, p)| (m.to_uppercase(), p.to_string())).collect();
    let served_set: BTreeSet<(String, String)> = served.iter().cloned().collect();
    assert_eq!(served.len(), served_set.len(), "a route listed twice in ROUTES: {served:?}");
    let documented: BTreeSet<(String, String)> =
        doc.operations().into_iter().map(|o| (o.method, o.path)).collect();
    let undocumented: Vec<_> = served_set.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served_set).collect();
    assert!(undocumented.is_empty(), "served but not in docs/openapi.json: {undocumented:?}");
    assert!(
        unserved.is_empty(),
        "in docs/openapi.json but not served (lb_userspace::api::ROUTES): {unserved:?}"
    );
}

#[test]
fn openapi_statuses_and_bodies_follow_api_md() {
    let doc = Doc::load();
    let md = api_md();
    let rows = resource_rows(&md);
    assert!(rows.len() >= 9, "api.md's resource table: {rows:?}");
    let errors = error_statuses(&md);
    assert_eq!(errors, BTreeSet::from([400, 401, 403, 404, 405, 409, 422, 500, 503]), "api.md § Errors");
    let successes: BTreeSet<u16> = rows.iter().map(success_status).collect();
    let allowed: BTreeSet<u16> = successes.union(&errors).copied().collect();

    // The control API is exactly the table; the web listener exactly its three routes.
    let table: BTreeSet<(String, String)> = rows.iter().map(|r| (r.method.clone(), r.path.clone())).collect();
    let web: BTreeSet<(String, String)> =
        WEB_ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    for (_, path) in &web {
        assert!(md.contains(&format!("`{path}`")), "api.md does not name the web route {path}");
    }
    let documented: BTreeSet<(String, String)> =
        doc.operations().into_iter().map(|o| (o.method, o.path)).collect();
    let expected: BTreeSet<(String, String)> = table.union(&web).cloned().collect();
    assert_eq!(documented, expected, "docs/openapi.json's operations vs api.md");

    for Op { method, path, op, item } in doc.operations() {
        let statuses: BTreeSet<u16> = op["responses"]
            .as_object()
            .expect("responses")
            .keys()
            .map(|s| s.parse().expect("status"))
            .collect();
        let stray: Vec<&u16> = statuses.difference(&allowed).collect();
        assert!(stray.is_empty(), "{method} {path}: statuses {stray:?} are not api.md's ({allowed:?})");
        for status in statuses.iter().filter(|s| **s >= 400) {
            let response = doc.resolve(&op["responses"][status.to_string()]);
            let schema = &response["content"]["application/json"]["schema"];
            assert_eq!(
                schema["$ref"], "#/components/schemas/Error",
                "{method} {path} {status}: not an Error"
            );
        }
        if web.contains(&(method.clone(), path.clone())) {
            assert_eq!(op["security"], json!([]), "{method} {path}: the web listener takes no token");
            assert!(item["servers"].is_array(), "{method} {path}: served by the web listener, say so");
            assert!(!statuses.contains(&401), "{method} {path}: no 401 on the web listener");
            continue;
        }
        let row = rows.iter().find(|r| r.method == method && r.path == path).expect("in the table");
        // Success: the table's status, and only it.
        let success = success_status(row);
        let documented_successes: Vec<&u16> = statuses.iter().filter(|s| **s < 400).collect();
        assert_eq!(documented_successes, vec![&success], "{method} {path}: success status per api.md");
        assert!(
            statuses.contains(&401),
            "{method} {path}: every control route answers 401 on TCP without the token"
        );
        assert!(op.get("security").is_none(), "{method} {path}: control routes use the document's security");
        check_success_schema(&doc, row, doc.resolve(&op["responses"][success.to_string()]));
        check_request_body(&doc, row, op);
    }
    // The control API: the unix socket needs no token, TCP the bearer token.
    assert_eq!(doc.root["security"], json!([{}, {"bearerToken": []}]));
}

fn success_status(row: &Row) -> u16 {
    row.success
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("api.md: success cell of {} {}: {:?}", row.method, row.path, row.success))
}

/// The success response's schema is the table's: `Stats`, `[Vip]`, `{"report": …}`, or none.
fn check_success_schema(doc: &Doc, row: &Row, response: &Value) {
    let what = format!("{} {}", row.method, row.path);
    let schema = &response["content"]["application/json"]["schema"];
    match code_span(&row.success) {
        None => assert!(response.get("content").is_none(), "{what}: no body per api.md"),
        Some(sketch) if sketch.starts_with('{') => {
            let schema = doc.resolve(schema);
            assert_eq!(strings(&schema["required"]), sketch_keys(sketch), "{what}: success body keys");
        }
        Some(list) if list.starts_with('[') => {
            assert_eq!(schema["type"], "array", "{what}");
            assert_eq!(
                schema["items"]["$ref"],
                format!("#/components/schemas/{}", list.trim_matches(['[', ']']))
            );
        }
        Some(name) => assert_eq!(schema["$ref"], format!("#/components/schemas/{name}"), "{what}"),
    }
}

/// The request body is the table's, JSON, refusing unknown keys.
fn check_request_body(doc: &Doc, row: &Row, op: &Value) {
    let what = format!("{} {}", row.method, row.path);
    let Some(sketch) = code_span(&row.body) else {
        assert!(row.body == "–" || row.body == "-", "{what}: body cell {:?}", row.body);
        assert!(op.get("requestBody").is_none(), "{what}: api.md gives no body");
        return;
    };
    let body = doc.resolve(&op["requestBody"]);
    let optional = row.body.contains("(optional)");
    assert_eq!(body["required"], json!(!optional), "{what}: requestBody.required");
    let content = body["content"].as_object().expect("requestBody content");
    assert_eq!(content.keys().collect::<Vec<_>>(), vec!["application/json"], "{what}: JSON only");
    let reference = &content["application/json"]["schema"];
    let schema = doc.resolve(reference);
    assert_eq!(schema["type"], "object", "{what}");
    assert_eq!(schema["additionalProperties"], json!(false), "{what}: unknown keys are refused");
    if sketch.starts_with('{') {
        assert_eq!(keys(schema), sketch_keys(sketch), "{what}: body keys");
    } else {
        assert_eq!(reference["$ref"], format!("#/components/schemas/{sketch}"), "{what}");
    }
}

/// `pub` fields of struct `name` in raw.rs, and whether each is required
/// (not an `Option`, no `#[serde(default)]`).
fn raw_fields(src: &str, name: &str) -> BTreeMap<String, bool> {
    let start = src.find(&format!("struct {name} {{")).unwrap_or_else(|| panic!("raw.rs has no {name}"));
    let body = &src[start..];
    let body = &body[..body.find("\n}").expect("end of struct")];
    let mut defaulted = false;
    let mut fields = BTreeMap::new();
    for line in body.lines().skip(1).map(str::trim) {
        if line.starts_with("#[serde(default") {
            defaulted = true;
        } else if let Some((field, ty)) = line.strip_prefix("pub ").and_then(|l| l.split_once(':')) {
            fields.insert(field.trim().to_string(), !defaulted && !ty.trim().starts_with("Option<"));
            defaulted = false;
        }
    }
    fields
}

/// A schema without its descriptions, to compare shapes.
fn shape(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            map.iter().filter(|(k, _)| *k != "description").map(|(k, v)| (k.clone(), shape(v))).collect()
        }
        Value::Array(items) => items.iter().map(shape).collect(),
        other => other.clone(),
    }
}

#[test]
fn openapi_request_bodies_use_exactly_the_config_keys() {
    let doc = Doc::load();
    let raw = repo_file("lb-userspace/src/config/raw.rs");
    for (schema_name, raw_name) in [("Vip", "RawVip"), ("Backend", "RawBackend")] {
        let schema = doc.schema(schema_name);
        let fields = raw_fields(&raw, raw_name);
        assert!(fields.len() > 10, "{raw_name}: {fields:?}");
        let writable: BTreeSet<String> = schema["properties"]
            .as_object()
            .expect("properties")
            .iter()
            .filter(|(_, p)| p["readOnly"] != json!(true))
            .map(|(k, _)| k.clone())
            .collect();
        let config: BTreeSet<String> = fields.keys().cloned().collect();
        assert_eq!(writable, config, "{schema_name}'s keys vs the config's [[{raw_name}]] keys");
        let required: BTreeSet<String> = fields.iter().filter(|(_, r)| **r).map(|(k, _)| k.clone()).collect();
        assert_eq!(strings(&schema["required"]), required, "{schema_name}: required keys");
        assert_eq!(schema["additionalProperties"], json!(false), "{schema_name}: unknown keys are refused");
    }
    // The check keys mean the same on a VIP (defaults) and a backend (overrides).
    let (vip, backend) = (keys(doc.schema("Vip")), keys(doc.schema("Backend")));
    for key in vip.intersection(&backend).filter(|k| !["name", "address", "port"].contains(&k.as_str())) {
        assert_eq!(
            shape(&doc.schema("Vip")["properties"][key]),
            shape(&doc.schema("Backend")["properties"][key]),
            "check key {key}"
        );
    }
    // A VIP's backends are Backends.
    assert_eq!(doc.schema("Vip")["properties"]["backend"]["items"]["$ref"], "#/components/schemas/Backend");
    // The PATCH and reload bodies, their values as api.md gives them.
    let patch = doc.schema("PatchBackend");
    assert_eq!(patch["properties"]["weight"]["minimum"], 0);
    assert_eq!(patch["properties"]["weight"]["maximum"], 256);
    assert_eq!(patch["properties"]["admin"]["enum"], json!(["ready", "drain", "maint"]));
    assert_eq!(patch["minProperties"], 1, "either or both");
    assert_eq!(doc.schema("Reload")["properties"]["discard_runtime"]["type"], "boolean");
    for key in ["type", "minimum", "maximum"] {
        assert_eq!(
            doc.schema("Backend")["properties"]["weight"][key],
            patch["properties"]["weight"][key],
            "weight {key}"
        );
    }

    // Bodies the contract accepts and refuses, as the document sees them.
    let ok = [
        ("Vip", json!({"address": "10.77.100.2", "port": 80})),
        (
            "Vip",
            json!({"name": "web", "address": "10.77.100.2", "port": 80, "protocol": "udp", "inter": "1.5s",
                       "timeout": 200, "backend": [{"address": "10.77.1.10", "weight": 0, "check": "none"}]}),
        ),
        ("PatchBackend", json!({"weight": 0})),
        ("PatchBackend", json!({"admin": "maint", "weight": 256})),
        ("Reload", json!({})),
        ("Reload", json!({"discard_runtime": true})),
    ];
    for (name, body) in ok {
        let errors = doc.errors(doc.schema(name), &body);
        assert!(errors.is_empty(), "{name} {body}: {errors:?}");
    }
    let refused = [
        ("Vip", json!({"address": "10.77.100.2", "port": 80, "bogus": 1})),
        ("Vip", json!({"address": "10.77.100.2", "port": 70000})),
        ("Vip", json!({"address": "10.77.100.2"})),
        ("Backend", json!({"address": "10.77.1.12", "weight": 999})),
        ("Backend", json!({"address": "10.77.1.12", "backup": "yes"})),
        ("PatchBackend", json!({})),
        ("PatchBackend", json!({"weight": 999})),
        ("PatchBackend", json!({"admin": "sleep"})),
        ("Reload", json!({"discard_runtime": true, "force": true})),
    ];
    for (name, body) in refused {
        assert!(!doc.errors(doc.schema(name), &body).is_empty(), "{name} should refuse {body}");
    }
}

#[test]
fn openapi_stats_match_lb_common_and_the_example_in_api_md() {
    let doc = Doc::load();
    let names = |schema: &str| -> BTreeSet<String> { strings(&doc.schema(schema)["required"]) };
    let set =
        |it: &mut dyn Iterator<Item = &'static str>| -> BTreeSet<String> { it.map(str::to_string).collect() };
    assert_eq!(names("Verdicts"), set(&mut Verdict::ALL.iter().map(|v| v.name())));
    assert_eq!(names("Drops"), set(&mut DropReason::ALL.iter().map(|d| d.name())));
    assert_eq!(names("Events"), set(&mut Event::ALL.iter().map(|e| e.name())));
    for schema in ["Verdicts", "Drops", "Events"] {
        assert_eq!(keys(doc.schema(schema)), names(schema), "{schema}: properties = required");
    }

    // api.md's example, its "...": 0 elisions filled in.
    let md = api_md();
    let section = md.split("\n## Stats").nth(1).expect("api.md § Stats");
    let example = section.split("```json").nth(1).and_then(|s| s.split("```").next()).expect("a json block");
    let mut example: Value = serde_json::from_str(example).expect("api.md's stats example is JSON");
    for (key, names) in [
        ("drops", DropReason::ALL.iter().map(|d| d.name()).collect::<Vec<_>>()),
        ("events", Event::ALL.iter().map(|e| e.name()).collect()),
    ] {
        let listed = example[key].as_object_mut().expect(key);
        listed.remove("...");
        for name in names {
            listed.entry(name).or_insert(json!(0));
        }
    }
    let errors = doc.errors(doc.schema("Stats"), &example);
    assert!(errors.is_empty(), "api.md's example breaks the Stats schema: {errors:#?}");
}
