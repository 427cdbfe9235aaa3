//! The control API held to its contract. docs/api.md is the contract;
//! docs/openapi.json is its machine-readable form. Without root: the document
//! against api.md (routes, statuses, bodies), against the config file's keys
//! (lb-userspace/src/config/raw.rs), against lb-common's counter names, and
//! against the routes the agent serves (`lb_userspace::api::ROUTES`). As root,
//! the real agent on a test bed: who may connect, the bearer token, refused
//! requests that change nothing (neither the effective config nor the kernel
//! maps), valid changes that go through; every response checked against the
//! status codes and schemas the document gives for its operation.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    net::{IpAddr, SocketAddr},
    os::unix::{
        ffi::OsStrExt as _,
        fs::{FileTypeExt as _, MetadataExt as _},
    },
    path::Path,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf, WEB_LISTEN},
    bed::TestBed,
    http::{percent_encode, Client, Request, Response},
    root_or_skip,
};
use lb_common::{
    types::{words_addr, PROTO_TCP},
    BackendState, DropReason, Event, Verdict, VipKey, VipValue,
};
use serde_json::{json, Value};

const VIP: &str = "10.77.100.1";
/// The config VIP's default name, `<address>:<port>/<protocol>`.
const VIP_NAME: &str = "10.77.100.1:80/tcp";
/// A VIP that is not in the config (added through the API in some tests).
const NEW_VIP: &str = "10.77.100.2";
const NEW_VIP_NAME: &str = "10.77.100.2:80/tcp";
/// A name no VIP has.
const NO_VIP: &str = "10.77.100.9:80/tcp";
const API_TCP: &str = "127.0.0.1:9181";
const TOKEN: &str = "api-test-token-0123456789abcdef";
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];
/// The web listener's routes, as docs/api.md's introduction lists them.
const WEB_ROUTES: &[(&str, &str)] = &[("GET", "/"), ("GET", "/metrics"), ("GET", "/api/stats")];
const API_WAIT: Duration = Duration::from_secs(10);

fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------
// The document: loading, references, a small schema validator.

/// docs/openapi.json, parsed.
struct Doc {
    root: Value,
}

/// One operation of the document.
struct Op<'d> {
    method: String,
    path: String,
    op: &'d Value,
    item: &'d Value,
}

impl Doc {
    fn load() -> Self {
        let text = repo_file("docs/openapi.json");
        let root: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.json: {e}"));
        Self { root }
    }

    /// The target of a local reference `#/a/b`.
    fn target(&self, reference: &str) -> Option<&Value> {
        reference.strip_prefix('#').and_then(|pointer| self.root.pointer(pointer))
    }

    /// `value`, following `$ref`s.
    fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) => value = self.target(r).unwrap_or_else(|| panic!("unresolved $ref {r}")),
                None => return value,
            }
        }
        panic!("$ref cycle at {value}");
    }

    fn schema(&self, name: &str) -> &Value {
        self.root
            .pointer(&format!("/components/schemas/{name}"))
            .unwrap_or_else(|| panic!("no schema {name} in docs/openapi.json"))
    }

    fn operations(&self) -> Vec<Op<'_>> {
        let paths = self.root["paths"].as_object().expect("paths");
        let mut out = Vec::new();
        for (path, item) in paths {
            for (key, op) in item.as_object().expect("a path item") {
                if METHODS.contains(&key.as_str()) {
                    out.push(Op { method: key.to_uppercase(), path: path.clone(), op, item });
                }
            }
        }
        out
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        self.root["paths"]
            .get(path)
            .and_then(|item| item.get(method.to_lowercase()))
            .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.json"))
    }

    /// Where `value` breaks `schema` (empty: it conforms). The subset of
    /// OpenAPI 3.0 schemas this document uses; `pattern` and `format` are not checked.
    fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.validate(schema, value, "$", &mut errors);
        errors
    }

    fn validate(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if value.is_null() && schema["nullable"] == json!(true) {
            return;
        }
        for sub in schema["allOf"].as_array().into_iter().flatten() {
            self.validate(sub, value, at, errors);
        }
        if let Some(any) = schema["anyOf"].as_array() {
            if !any.iter().any(|s| self.errors(s, value).is_empty()) {
                errors.push(format!("{at}: matches none of anyOf: {value}"));
            }
        }
        if let Some(one) = schema["oneOf"].as_array() {
            let matching = one.iter().filter(|s| self.errors(s, value).is_empty()).count();
            if matching != 1 {
                errors.push(format!("{at}: matches {matching} of oneOf, not exactly 1: {value}"));
            }
        }
        if let Some(ty) = schema["type"].as_str() {
            let fits = match ty {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "boolean" => value.is_boolean(),
                _ => false,
            };
            if !fits {
                errors.push(format!("{at}: not of type {ty}: {value}"));
                return;
            }
        }
        if let Some(options) = schema["enum"].as_array() {
            if !options.contains(value) {
                errors.push(format!("{at}: {value} is not one of {options:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                errors.push(format!("{at}: {n} below minimum {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                errors.push(format!("{at}: {n} above maximum {}", schema["maximum"]));
            }
        }
        if let (Some(s), Some(min)) = (value.as_str(), schema["minLength"].as_u64()) {
            if (s.chars().count() as u64) < min {
                errors.push(format!("{at}: shorter than {min}: {s:?}"));
            }
        }
        if let (Some(items), Some(item_schema)) = (value.as_array(), schema.get("items")) {
            for (i, item) in items.iter().enumerate() {
                self.validate(item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
        if let Some(object) = value.as_object() {
            for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !object.contains_key(name) {
                    errors.push(format!("{at}: required key {name:?} missing"));
                }
            }
            if schema["minProperties"].as_u64().is_some_and(|min| (object.len() as u64) < min) {
                errors.push(format!("{at}: fewer than {} keys", schema["minProperties"]));
            }
            for (key, item) in object {
                let at = format!("{at}.{key}");
                match (schema["properties"].get(key), schema.get("additionalProperties")) {
                    (Some(property), _) => self.validate(property, item, &at, errors),
                    (None, Some(Value::Bool(false))) => errors.push(format!("{at}: key not in the schema")),
                    (None, Some(extra)) if extra.is_object() => self.validate(extra, item, &at, errors),
                    (None, _) => {}
                }
            }
        }
    }

    /// Holds a response to the document: its status is one the operation
    /// documents, and its body has the documented media type and schema
    /// (none for a response without content). Returns the JSON body (or Null).
    fn check(&self, method: &str, path: &str, response: &Response) -> Value {
        self.conforms(method, path, response).unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Doc::check`] as a `Result`.
    fn conforms(&self, method: &str, path: &str, response: &Response) -> Result<Value, String> {
        let op = self.operation(method, path);
        let status = response.status.to_string();
        let what = format!("{method} {path} {status}");
        let Some(documented) = op["responses"].get(&status) else {
            let known: Vec<&String> =
                op["responses"].as_object().map(|r| r.keys().collect()).unwrap_or_default();
            return Err(format!(
                "{what}: status not documented (documented: {known:?}); body: {}",
                response.text()
            ));
        };
        let documented = self.resolve(documented);
        let Some(content) = documented["content"].as_object() else {
            if !response.body.is_empty() {
                return Err(format!("{what}: a body where none is documented: {:?}", response.text()));
            }
            return Ok(Value::Null);
        };
        let media = response
            .content_type()
            .ok_or_else(|| format!("{what}: no Content-Type; body {:?}", response.text()))?;
        let entry = content
            .get(&media)
            .ok_or_else(|| format!("{what}: Content-Type {media}, documented: {:?}", content.keys()))?;
        if media != "application/json" {
            return Ok(Value::String(response.text()));
        }
        let body =
            response.json().map_err(|e| format!("{what}: body is not JSON ({e}): {:?}", response.text()))?;
        let errors = self.errors(&entry["schema"], &body);
        if !errors.is_empty() {
            return Err(format!(
                "{what}: body breaks the documented schema:\n{}\nbody: {body:#}",
                errors.join("\n")
            ));
        }
        Ok(body)
    }
}

/// Every `$ref` string inside `value`.
fn refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.push(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

/// `{name}` segments of a path template.
fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

fn keys(schema: &Value) -> BTreeSet<String> {
    schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
}

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
    assert_eq!(errors, BTreeSet::from([400, 401, 404, 405, 409, 422, 500, 503]), "api.md § Errors");
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

// ---------------------------------------------------------------------------
// The real agent (root).

fn vip_path(vip: &str) -> String {
    format!("/v1/vips/{}", percent_encode(vip))
}

fn backends_path(vip: &str) -> String {
    format!("{}/backends", vip_path(vip))
}

fn backend_path(vip: &str, backend: &str) -> String {
    format!("{}/backends/{}", vip_path(vip), percent_encode(backend))
}

/// The initial config: VIP 10.77.100.1:80/tcp on backends 0 and 1; with
/// `tcp`, the control API also on TCP with the bearer token.
fn config(bed: &TestBed, tcp: bool) -> String {
    let toml = config_toml(bed, &[VipConf::new(VIP, 80, "tcp").backends(0..2)]);
    if !tcp {
        return toml;
    }
    let with = toml.replacen("[api]\n", &format!("[api]\ntcp = \"{API_TCP}\"\ntoken = \"{TOKEN}\"\n"), 1);
    assert_ne!(with, toml, "config_toml wrote no [api] section:\n{toml}");
    with
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
fn wait_until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = f() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The unix-socket client, once the API answers.
fn api_client(agent: &Agent) -> Client {
    let api = Client::unix(agent.api_socket());
    wait_until("the control API on its unix socket", API_WAIT, || {
        api.get("/v1/stats").ok().filter(|r| r.status == 200).map(drop)
    });
    api
}

fn stats(doc: &Doc, api: &Client) -> Value {
    let response = api.get("/v1/stats").expect("GET /v1/stats");
    assert_eq!(response.status, 200, "GET /v1/stats: {}", response.text());
    doc.check("GET", "/v1/stats", &response)
}

/// `/v1/stats`' entry for a backend of a VIP.
fn backend_stats(stats: &Value, vip: &str, backend: &str) -> Option<Value> {
    let vip = stats["vips"].as_array()?.iter().find(|v| v["name"] == vip)?;
    vip["backends"].as_array()?.iter().find(|b| b["name"] == backend).cloned()
}

fn wait_state(doc: &Doc, api: &Client, backend: &str, state: &str) -> Value {
    wait_until(&format!("{backend} in state {state}"), Duration::from_secs(10), || {
        backend_stats(&stats(doc, api), VIP_NAME, backend).filter(|b| b["state"] == state)
    })
}

/// Waits until every backend of the config VIP is up: health settled, so the
/// maps only change when a request changes them.
fn wait_all_up(doc: &Doc, api: &Client, n: usize) {
    wait_until(&format!("{n} backends up"), Duration::from_secs(15), || {
        let stats = stats(doc, api);
        let vip = stats["vips"].as_array()?.iter().find(|v| v["name"] == VIP_NAME)?.clone();
        let backends = vip["backends"].as_array()?;
        let up = backends.iter().filter(|b| b["state"] == "up" && b["in_ring"] == json!(true)).count();
        (backends.len() == n && up == n).then_some(())
    });
}

/// What the kernel holds: the two VIPs' entries and every backend slot in use.
#[derive(Debug, PartialEq)]
struct Kernel {
    vips: Vec<(&'static str, Option<VipValue>)>,
    backends: Vec<(u32, lb_common::Backend)>,
}

fn kernel(agent: &Agent) -> Kernel {
    let stats = agent.stats().expect("pinned maps");
    let key = |addr: &str| VipKey::new(addr.parse().expect("VIP"), 80, PROTO_TCP);
    Kernel {
        vips: [VIP, NEW_VIP].into_iter().map(|a| (a, stats.vip(&key(a)).expect("VIPS"))).collect(),
        backends: stats.backends().expect("BACKENDS"),
    }
}

/// The kernel's slot for backend `addr`, if any.
fn kernel_backend(agent: &Agent, addr: &str) -> Option<lb_common::Backend> {
    let addr: IpAddr = addr.parse().expect("address");
    kernel(agent).backends.into_iter().map(|(_, b)| b).find(|b| words_addr(b.addr, b.family) == addr)
}

/// The effective config and the kernel maps, to compare before and after a request.
#[derive(Debug, PartialEq)]
struct Snapshot {
    vips: String,
    kernel: Kernel,
}

fn snapshot(api: &Client, agent: &Agent) -> Snapshot {
    let response = api.get("/v1/vips").expect("GET /v1/vips");
    assert_eq!(response.status, 200, "GET /v1/vips: {}", response.text());
    Snapshot { vips: response.text(), kernel: kernel(agent) }
}

/// Whether an error body's `problems` name `field`: the field's path ends in
/// it (`port`, `backend[0].weight`), or, for an unknown key, its value is it.
fn names_field(body: &Value, field: &str) -> bool {
    let segments = |s: &str| -> Vec<String> {
        s.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map(str::to_string).collect()
    };
    body["problems"].as_array().into_iter().flatten().any(|p| {
        let named = p["field"].as_str().is_some_and(|f| segments(f).iter().any(|s| s == field));
        let value = p["value"].as_str().is_some_and(|v| v.trim_matches('"') == field);
        named || value
    })
}

#[test]
fn api_socket_is_for_root_only() {
    root_or_skip!("api_socket_is_for_root_only");
    let doc = Doc::load();
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let agent = Agent::start(&bed, &config(&bed, false), &[]).expect("agent");
    let api = api_client(&agent);

    let socket = agent.api_socket();
    let meta = std::fs::metadata(&socket).expect("the socket");
    assert!(meta.file_type().is_socket(), "{} is not a socket", socket.display());
    assert_eq!(meta.mode() & 0o7777, 0o600, "mode of {}", socket.display());
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "owner of {}", socket.display());

    match connect_as_nobody(&socket) {
        Err(errno) => assert_eq!(
            errno,
            libc::EACCES,
            "nobody's connect failed, but not with permission denied: {}",
            std::io::Error::from_raw_os_error(errno)
        ),
        Ok(()) => panic!("user nobody connected to the control API socket"),
    }
    // Root (this process) gets the stats.
    let response = api.get("/v1/stats").expect("GET /v1/stats");
    assert_eq!(response.status, 200);
    doc.check("GET", "/v1/stats", &response);
}

/// In a forked child that becomes user nobody: can it connect to the unix
/// socket at `path`? `Err(errno)` of the failed connect. The child first
/// checks that it can see the path at all, so a refusal is the socket's own
/// permissions, not an unsearchable directory on the way.
fn connect_as_nobody(path: &Path) -> Result<(), i32> {
    let (uid, gid) = nobody();
    let bytes = path.as_os_str().as_bytes();
    let c_path = CString::new(bytes).expect("no NUL in the path");
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    assert!(bytes.len() < addr.sun_path.len(), "socket path too long for sockaddr_un");
    for (dst, src) in addr.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    const NOT_VISIBLE: i32 = 201;
    // SAFETY: the child only makes system calls (no allocation, no locks) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = unsafe {
            let errno = || *libc::__errno_location();
            if libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(gid) != 0 || libc::setuid(uid) != 0 {
                200
            } else {
                let mut st: libc::stat = std::mem::zeroed();
                if libc::stat(c_path.as_ptr(), &mut st) != 0 {
                    NOT_VISIBLE
                } else {
                    let fd = libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0);
                    if fd < 0 {
                        202
                    } else if libc::connect(
                        fd,
                        (&addr as *const libc::sockaddr_un).cast(),
                        std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
                    ) == 0
                    {
                        0
                    } else {
                        errno()
                    }
                }
            }
        };
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let waited = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "the nobody child did not exit normally: {status}");
    match libc::WEXITSTATUS(status) {
        0 => Ok(()),
        200 => panic!("could not become nobody ({uid}:{gid})"),
        NOT_VISIBLE => panic!(
            "nobody cannot even see {} (a directory on the way is not searchable): the test proves nothing",
            path.display()
        ),
        202 => panic!("nobody could not create a unix socket"),
        errno => Err(errno),
    }
}

/// Uid and gid of user nobody (65534 if the passwd database has none).
fn nobody() -> (libc::uid_t, libc::gid_t) {
    let name = CString::new("nobody").expect("a C string");
    // SAFETY: getpwnam returns null or a pointer to static storage, read at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        (65534, 65534)
    } else {
        unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
    }
}

#[test]
fn tcp_listener_needs_the_bearer_token() {
    root_or_skip!("tcp_listener_needs_the_bearer_token");
    let doc = Doc::load();
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let agent = Agent::start(&bed, &config(&bed, true), &[]).expect("agent");
    let api = api_client(&agent);
    let addr: SocketAddr = API_TCP.parse().expect("address");
    let tcp = Client::tcp_in(bed.lb_ns(), addr);
    wait_until("the TCP listener", API_WAIT, || tcp.get("/v1/stats").ok().map(drop));
    let before = snapshot(&api, &agent);

    let refused: [(&str, Client); 6] = [
        ("no token", tcp.clone()),
        ("a wrong token", tcp.clone().bearer("wrong-token-0123456789abcdef")),
        ("the token cut short", tcp.clone().bearer(&TOKEN[..TOKEN.len() - 1])),
        ("the token and more", tcp.clone().bearer(&format!("{TOKEN}x"))),
        ("the token as Basic credentials", tcp.clone().header("Authorization", &format!("Basic {TOKEN}"))),
        ("the token without a scheme", tcp.clone().header("Authorization", TOKEN)),
    ];
    for (what, client) in &refused {
        let response = client.get("/v1/stats").expect("GET /v1/stats over TCP");
        assert_eq!(response.status, 401, "{what}: {}", response.text());
        doc.check("GET", "/v1/stats", &response);
        // A write is refused before its body is even looked at, and changes nothing.
        let body = format!(r#"{{"address": "{NEW_VIP}", "port": 80}}"#);
        let response = client.post("/v1/vips", &body).expect("POST /v1/vips over TCP");
        assert_eq!(response.status, 401, "{what}, POST /v1/vips: {}", response.text());
        doc.check("POST", "/v1/vips", &response);
        let response = client.post("/v1/vips", r#"{"address": "#).expect("POST /v1/vips over TCP");
        assert_eq!(response.status, 401, "{what}, malformed POST /v1/vips: {}", response.text());
        let response = client.patch(&backend_path(VIP_NAME, "backend0"), r#"{"weight": 0}"#).expect("PATCH");
        assert_eq!(response.status, 401, "{what}, PATCH: {}", response.text());
        let response = client.delete(&vip_path(VIP_NAME)).expect("DELETE");
        assert_eq!(response.status, 401, "{what}, DELETE: {}", response.text());
        assert_eq!(snapshot(&api, &agent), before, "{what}: a refused request changed something");
    }

    let authorized = tcp.clone().bearer(TOKEN);
    let response = authorized.get("/v1/stats").expect("GET /v1/stats over TCP");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("GET", "/v1/stats", &response);
    let response = authorized.get("/v1/vips").expect("GET /v1/vips over TCP");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("GET", "/v1/vips", &response);
    assert_eq!(response.text(), before.vips, "the same effective config on both listeners");
    // The unix socket takes no token.
    let response = api.get("/v1/stats").expect("GET /v1/stats");
    assert_eq!(response.status, 200, "{}", response.text());
}

#[test]
fn web_listener_serves_dashboard_metrics_and_stats_and_nothing_else() {
    root_or_skip!("web_listener_serves_dashboard_metrics_and_stats_and_nothing_else");
    let doc = Doc::load();
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let agent = Agent::start(&bed, &config(&bed, false), &[]).expect("agent");
    let api = api_client(&agent);
    let web = Client::tcp_in(bed.lb_ns(), WEB_LISTEN.parse().expect("address"));
    wait_until("the web listener", API_WAIT, || web.get("/api/stats").ok().map(drop));
    wait_all_up(&doc, &api, 2);

    let response = web.get("/api/stats").expect("GET /api/stats");
    assert_eq!(response.status, 200, "{}", response.text());
    let stats = doc.check("GET", "/api/stats", &response);
    assert!(backend_stats(&stats, VIP_NAME, "backend0").is_some(), "{stats:#}");
    let response = web.get("/metrics").expect("GET /metrics");
    assert_eq!(response.status, 200, "{}", response.text());
    let metrics = doc.check("GET", "/metrics", &response);
    for name in ["alwayson_verdicts_total", "alwayson_backend_up", "alwayson_conn_table_capacity"] {
        assert!(metrics.as_str().is_some_and(|m| m.contains(name)), "/metrics has no {name}:\n{metrics}");
    }
    let response = web.get("/").expect("GET /");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("GET", "/", &response);

    // Read-only: the control API is not there, and trying changes nothing.
    let before = snapshot(&api, &agent);
    let body = format!(r#"{{"address": "{NEW_VIP}", "port": 80}}"#);
    for request in [
        Request::new("GET", "/v1/vips"),
        Request::new("GET", "/v1/stats"),
        Request::new("POST", "/v1/vips").json(&body),
        Request::new("PATCH", &backend_path(VIP_NAME, "backend0")).json(r#"{"weight": 0}"#),
        Request::new("DELETE", &vip_path(VIP_NAME)),
        Request::new("POST", "/v1/reload"),
    ] {
        let response = web.send(&request).expect("a request to the web listener");
        assert_eq!(
            response.status,
            404,
            "web listener, {} {}: {}",
            request.method,
            request.path,
            response.text()
        );
    }
    assert_eq!(snapshot(&api, &agent), before);
}

/// A request the agent must refuse: what to send, the operation it is
/// (template path), the status, and the field `problems` must name.
struct Refused {
    method: &'static str,
    path: String,
    template: &'static str,
    body: Option<String>,
    status: u16,
    field: Option<&'static str>,
}

fn refused(
    method: &'static str,
    path: String,
    template: &'static str,
    body: Option<&str>,
    status: u16,
    field: Option<&'static str>,
) -> Refused {
    Refused { method, path, template, body: body.map(str::to_string), status, field }
}

fn send(api: &Client, method: &str, path: &str, body: Option<&str>) -> Response {
    let request = Request::new(method, path);
    let request = match body {
        Some(body) => request.json(body),
        None => request,
    };
    api.send(&request).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The response refuses `case` as the contract says: the status, an Error
/// body the operation documents, a message, and `problems` naming the field.
fn check_refusal(doc: &Doc, case: &Refused, response: &Response) -> Result<(), String> {
    if response.status != case.status {
        return Err(format!("status {}, not {}: {}", response.status, case.status, response.text()));
    }
    let body = doc.conforms(case.method, case.template, response)?;
    if body["error"].as_str().is_none_or(str::is_empty) {
        return Err(format!("no error message: {body}"));
    }
    match case.field {
        Some(field) if !names_field(&body, field) => Err(format!("problems do not name {field:?}: {body}")),
        _ => Ok(()),
    }
}

#[test]
fn refused_requests_change_nothing() {
    root_or_skip!("refused_requests_change_nothing");
    let doc = Doc::load();
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let agent = Agent::start(&bed, &config(&bed, false), &[]).expect("agent");
    let api = api_client(&agent);
    wait_all_up(&doc, &api, 2);

    const VIPS: &str = "/v1/vips";
    const VIP_T: &str = "/v1/vips/{vip}";
    const BACKENDS_T: &str = "/v1/vips/{vip}/backends";
    const BACKEND_T: &str = "/v1/vips/{vip}/backends/{backend}";
    let vips = || VIPS.to_string();
    let backends = || backends_path(VIP_NAME);
    let backend0 = || backend_path(VIP_NAME, "backend0");
    let new_vip = |extra: &str| format!(r#"{{"address": "{NEW_VIP}", "port": 80{extra}}}"#);
    let cases = [
        // 400: not JSON, or not an object.
        refused("POST", vips(), VIPS, Some(r#"{"address": "#), 400, None),
        refused("POST", vips(), VIPS, Some("[1, 2]"), 400, None),
        refused("POST", backends(), BACKENDS_T, Some(r#"{"address": "#), 400, None),
        refused("PATCH", backend0(), BACKEND_T, Some("not json"), 400, None),
        refused("PATCH", backend0(), BACKEND_T, Some("[0]"), 400, None),
        // 422: unknown keys and bad values, the field named.
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "bogus": 1"#)), 422, Some("bogus")),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&format!(r#"{{"address": "{NEW_VIP}", "port": 70000}}"#)),
            422,
            Some("port"),
        ),
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "protocol": "sctp""#)), 422, Some("protocol")),
        refused("POST", vips(), VIPS, Some(&new_vip(r#", "inter": "5 parsecs""#)), 422, Some("inter")),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&new_vip(r#", "backend": [{"address": "10.77.1.12", "weight": 999}]"#)),
            422,
            Some("weight"),
        ),
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"address": "10.77.1.12", "weight": 999}"#),
            422,
            Some("weight"),
        ),
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"address": "10.77.1.12", "bogus": 1}"#),
            422,
            Some("bogus"),
        ),
        // admin is set by PATCH, it is not a config key.
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"address": "10.77.1.12", "admin": "drain"}"#),
            422,
            Some("admin"),
        ),
        // DSR keeps the IP header: a backend of the other family cannot serve the VIP.
        refused("POST", backends(), BACKENDS_T, Some(r#"{"address": "fd77::1:12"}"#), 422, Some("address")),
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"weight": 999}"#), 422, Some("weight")),
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"weight": -1}"#), 422, Some("weight")),
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"admin": "sleep"}"#), 422, Some("admin")),
        // Nothing of a refused request is applied, not even its valid part.
        refused("PATCH", backend0(), BACKEND_T, Some(r#"{"weight": 0, "bogus": true}"#), 422, Some("bogus")),
        refused(
            "PATCH",
            backend0(),
            BACKEND_T,
            Some(r#"{"weight": 0, "admin": "sleep"}"#),
            422,
            Some("admin"),
        ),
        refused("POST", "/v1/reload".into(), "/v1/reload", Some(r#"{"bogus": true}"#), 422, Some("bogus")),
        // 404: no such VIP or backend.
        refused("POST", backends_path(NO_VIP), BACKENDS_T, Some(r#"{"address": "10.77.1.12"}"#), 404, None),
        refused("GET", vip_path(NO_VIP), VIP_T, None, 404, None),
        refused("DELETE", vip_path(NO_VIP), VIP_T, None, 404, None),
        refused("PATCH", backend_path(VIP_NAME, "nosuch"), BACKEND_T, Some(r#"{"weight": 1}"#), 404, None),
        refused("PATCH", backend_path(NO_VIP, "backend0"), BACKEND_T, Some(r#"{"weight": 1}"#), 404, None),
        refused("DELETE", backend_path(VIP_NAME, "nosuch"), BACKEND_T, None, 404, None),
        // 409: already there, by address or by name.
        refused("POST", vips(), VIPS, Some(&format!(r#"{{"address": "{VIP}", "port": 80}}"#)), 409, None),
        refused(
            "POST",
            vips(),
            VIPS,
            Some(&format!(r#"{{"address": "{VIP}", "port": 80, "protocol": "tcp", "name": "again"}}"#)),
            409,
            None,
        ),
        refused("POST", vips(), VIPS, Some(&new_vip(&format!(r#", "name": "{VIP_NAME}""#))), 409, None),
        refused("POST", backends(), BACKENDS_T, Some(r#"{"address": "10.77.1.10"}"#), 409, None),
        refused(
            "POST",
            backends(),
            BACKENDS_T,
            Some(r#"{"name": "backend0", "address": "10.77.1.12"}"#),
            409,
            None,
        ),
    ];

    // Every case is tried; the failures are reported together.
    let before = snapshot(&api, &agent);
    let mut failures = Vec::new();
    for case in &cases {
        let what = format!("{} {} {}", case.method, case.path, case.body.as_deref().unwrap_or(""));
        let response = send(&api, case.method, &case.path, case.body.as_deref());
        if let Err(why) = check_refusal(&doc, case, &response) {
            failures.push(format!("{what}: {why}"));
        }
        let after = snapshot(&api, &agent);
        if after != before {
            failures
                .push(format!("{what}: refused ({}) but changed something:\n{after:#?}", response.status));
        }
    }
    // No such route: 404; a route without this method: 405; both with the error body.
    for (method, path, body, status) in [
        ("GET", "/v1/nope", None, 404),
        ("GET", "/v2/vips", None, 404),
        ("PUT", "/v1/vips", Some("{}"), 405),
        ("POST", "/v1/stats", Some("{}"), 405),
    ] {
        let response = send(&api, method, path, body);
        let body = response.json().unwrap_or(Value::Null);
        let errors = doc.errors(doc.schema("Error"), &body);
        if response.status != status || !errors.is_empty() {
            failures.push(format!(
                "{method} {path}: {status} and an Error body per api.md; got {} {:?} {errors:?}",
                response.status,
                response.text()
            ));
        }
        if snapshot(&api, &agent) != before {
            failures.push(format!("{method} {path}: changed something"));
        }
    }
    // A reload of a file that fails validation is refused the same way, and keeps what runs.
    let file = bed.temp_dir().join("alwayson.toml");
    let good = std::fs::read_to_string(&file).expect("the agent's config");
    let bad = good.replacen("weight = 1", "weight = 999", 1);
    assert_ne!(bad, good, "no weight line to break:\n{good}");
    std::fs::write(&file, &bad).expect("writing the bad config");
    let response = api.send(&Request::new("POST", "/v1/reload")).expect("POST /v1/reload");
    std::fs::write(&file, &good).expect("restoring the config");
    let reload = refused("POST", "/v1/reload".into(), "/v1/reload", None, 422, Some("weight"));
    if let Err(why) = check_refusal(&doc, &reload, &response) {
        failures.push(format!("POST /v1/reload of an invalid file: {why}"));
    }
    if snapshot(&api, &agent) != before {
        failures.push("POST /v1/reload of an invalid file: changed something".into());
    }

    // A VIP added once is there; the second time it is a conflict.
    let response = send(&api, "POST", VIPS, Some(&new_vip("")));
    assert_eq!(response.status, 201, "{}", response.text());
    doc.check("POST", VIPS, &response);
    let after_first = snapshot(&api, &agent);
    assert_ne!(after_first, before);
    let twice = refused("POST", vips(), VIPS, Some(&new_vip("")), 409, None);
    let response = send(&api, twice.method, &twice.path, twice.body.as_deref());
    if let Err(why) = check_refusal(&doc, &twice, &response) {
        failures.push(format!("the same VIP added twice: {why}"));
    }
    if snapshot(&api, &agent) != after_first {
        failures.push("the refused second add of a VIP changed something".into());
    }

    assert!(
        failures.is_empty(),
        "{} of {} refusals wrong:\n{}",
        failures.len(),
        cases.len() + 6,
        failures.join("\n")
    );
}

#[test]
fn valid_changes_go_through() {
    root_or_skip!("valid_changes_go_through");
    let doc = Doc::load();
    // Backend 2 is a real server, not in the config: the API adds it.
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let agent = Agent::start(&bed, &config(&bed, false), &[]).expect("agent");
    let api = api_client(&agent);
    wait_all_up(&doc, &api, 2);
    let added = bed.backend_v4(2).to_string();
    let slots = kernel(&agent).backends.len();

    // Add.
    let body = format!(r#"{{"name": "backend2", "address": "{added}"}}"#);
    let response = api.post(&backends_path(VIP_NAME), &body).expect("POST backend");
    assert_eq!(response.status, 201, "{}", response.text());
    let backend = doc.check("POST", "/v1/vips/{vip}/backends", &response);
    assert_eq!((&backend["name"], &backend["address"]), (&json!("backend2"), &json!(added)), "{backend:#}");
    assert_eq!(
        (&backend["port"], &backend["weight"]),
        (&json!(80), &json!(1)),
        "defaults filled in: {backend:#}"
    );
    assert!(kernel_backend(&agent, &added).is_some(), "201, but the kernel has no slot for {added}");
    assert_eq!(kernel(&agent).backends.len(), slots + 1);
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert!(vip_backend(&vip, "backend2").is_some(), "GET shows no backend2: {vip:#}");
    let all = api.get("/v1/vips").expect("GET /v1/vips");
    let all = doc.check("GET", "/v1/vips", &all);
    assert!(all.as_array().is_some_and(|v| v.contains(&vip)), "/v1/vips and /v1/vips/{{vip}} disagree");
    let up = wait_state(&doc, &api, "backend2", "up");
    assert_eq!(up["in_ring"], json!(true), "{up:#}");
    assert_eq!(kernel_backend(&agent, &added).map(|b| b.state), Some(BackendState::Up as u8));

    // Weight 0: drain (no new flows, established ones stay).
    let patched = patch(&doc, &api, "backend2", r#"{"weight": 0}"#);
    assert_eq!(patched["weight"], json!(0), "{patched:#}");
    let drain = wait_state(&doc, &api, "backend2", "drain");
    assert_eq!((&drain["weight"], &drain["in_ring"]), (&json!(0), &json!(false)), "{drain:#}");
    assert_eq!(kernel_backend(&agent, &added).map(|b| b.state), Some(BackendState::Draining as u8));
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert_eq!(
        vip_backend(&vip, "backend2").map(|b| b["weight"].clone()),
        Some(json!(0)),
        "runtime change in GET"
    );

    // Admin maint: out of service, like DOWN; ready and weight 1: back.
    let patched = patch(&doc, &api, "backend2", r#"{"weight": 1, "admin": "maint"}"#);
    assert_eq!(patched["weight"], json!(1), "{patched:#}");
    let maint = wait_state(&doc, &api, "backend2", "maint");
    assert_eq!((&maint["admin"], &maint["in_ring"]), (&json!("maint"), &json!(false)), "{maint:#}");
    assert_eq!(kernel_backend(&agent, &added).map(|b| b.state), Some(BackendState::Down as u8));
    patch(&doc, &api, "backend2", r#"{"admin": "drain"}"#);
    let drain = wait_state(&doc, &api, "backend2", "drain");
    assert_eq!((&drain["admin"], &drain["weight"]), (&json!("drain"), &json!(1)), "{drain:#}");
    patch(&doc, &api, "backend2", r#"{"admin": "ready"}"#);
    let up = wait_state(&doc, &api, "backend2", "up");
    assert_eq!((&up["admin"], &up["in_ring"]), (&json!("ready"), &json!(true)), "{up:#}");

    // A reload replays the runtime changes on the file.
    let response = api.send(&Request::new("POST", "/v1/reload")).expect("POST /v1/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("POST", "/v1/reload", &response);
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert!(vip_backend(&vip, "backend2").is_some(), "the reload lost the runtime change: {vip:#}");

    // Delete.
    let response = api.delete(&backend_path(VIP_NAME, "backend2")).expect("DELETE backend");
    assert_eq!(response.status, 204, "{}", response.text());
    doc.check("DELETE", "/v1/vips/{vip}/backends/{backend}", &response);
    let vip = get_vip(&doc, &api, VIP_NAME).expect("the VIP");
    assert!(vip_backend(&vip, "backend2").is_none(), "deleted, but GET shows it: {vip:#}");
    // /v1/stats is sampled (interval_seconds): it shows the change by the next sample.
    wait_until("backend2 gone from /v1/stats", Duration::from_secs(5), || {
        backend_stats(&stats(&doc, &api), VIP_NAME, "backend2").is_none().then_some(())
    });
    assert!(kernel_backend(&agent, &added).is_none(), "deleted, but the kernel still has {added}");
    let response = api.delete(&backend_path(VIP_NAME, "backend2")).expect("DELETE backend");
    assert_eq!(response.status, 404, "deleted twice: {}", response.text());

    // A VIP: added with a backend, in the kernel; discarded by a reload that drops runtime changes.
    let key = VipKey::new(NEW_VIP.parse().expect("VIP"), 80, PROTO_TCP);
    let body = format!(
        r#"{{"address": "{NEW_VIP}", "port": 80, "backend": [{{"address": "{}"}}]}}"#,
        bed.backend_v4(0)
    );
    let response = api.post("/v1/vips", &body).expect("POST VIP");
    assert_eq!(response.status, 201, "{}", response.text());
    let vip = doc.check("POST", "/v1/vips", &response);
    assert_eq!(vip["name"], json!(NEW_VIP_NAME), "the default name: {vip:#}");
    assert!(get_vip(&doc, &api, NEW_VIP_NAME).is_some());
    assert!(agent.stats().expect("maps").vip(&key).expect("VIPS").is_some(), "201, but not in the kernel");
    let runtime = bed.temp_dir().join("runtime.json");
    assert!(runtime_file_mentions(&runtime, NEW_VIP), "{} does not hold the change", runtime.display());
    let response = api.post("/v1/reload", r#"{"discard_runtime": true}"#).expect("POST /v1/reload");
    assert_eq!(response.status, 200, "{}", response.text());
    doc.check("POST", "/v1/reload", &response);
    assert!(get_vip(&doc, &api, NEW_VIP_NAME).is_none(), "discard_runtime kept the added VIP");
    assert!(agent.stats().expect("maps").vip(&key).expect("VIPS").is_none(), "discarded, but in the kernel");
    assert!(!runtime_file_mentions(&runtime, NEW_VIP), "discarded, but {} still holds it", runtime.display());

    // Add again and delete the VIP itself.
    let response = api.post("/v1/vips", &body).expect("POST VIP");
    assert_eq!(response.status, 201, "{}", response.text());
    let response = api.delete(&vip_path(NEW_VIP_NAME)).expect("DELETE VIP");
    assert_eq!(response.status, 204, "{}", response.text());
    doc.check("DELETE", "/v1/vips/{vip}", &response);
    assert!(get_vip(&doc, &api, NEW_VIP_NAME).is_none(), "deleted, but GET shows it");
    assert!(agent.stats().expect("maps").vip(&key).expect("VIPS").is_none(), "deleted, but in the kernel");
}

fn patch(doc: &Doc, api: &Client, backend: &str, body: &str) -> Value {
    let response = api.patch(&backend_path(VIP_NAME, backend), body).expect("PATCH");
    assert_eq!(response.status, 200, "PATCH {body}: {}", response.text());
    doc.check("PATCH", "/v1/vips/{vip}/backends/{backend}", &response)
}

/// GET /v1/vips/{vip}: `None` on 404.
fn get_vip(doc: &Doc, api: &Client, name: &str) -> Option<Value> {
    let response = api.get(&vip_path(name)).expect("GET VIP");
    let body = doc.check("GET", "/v1/vips/{vip}", &response);
    match response.status {
        200 => Some(body),
        404 => None,
        status => panic!("GET {name}: {status}"),
    }
}

fn vip_backend(vip: &Value, name: &str) -> Option<Value> {
    vip["backend"].as_array()?.iter().find(|b| b["name"] == name).cloned()
}

/// Whether the runtime-changes file exists and mentions `needle` (a missing file mentions nothing).
fn runtime_file_mentions(path: &Path, needle: &str) -> bool {
    std::fs::read_to_string(path).is_ok_and(|text| text.contains(needle))
}
