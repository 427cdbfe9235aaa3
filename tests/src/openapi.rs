//! docs/openapi.json as a test oracle: loading, `$ref` resolution, the
//! operations it declares, and the agent's responses checked against their
//! schemas by the `jsonschema` crate (src/openapi/schema.rs).

mod schema;

use std::{collections::BTreeSet, path::Path};

use serde_json::Value;

use self::schema::Schemas;
use crate::http::Response;

/// The HTTP methods an OpenAPI path item may hold.
const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// A file of the repository, by its path from the root.
pub fn repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// docs/openapi.json, parsed.
pub struct Doc {
    pub root: Value,
    schemas: Schemas,
}

/// One operation of the document.
pub struct Op<'d> {
    pub method: String,
    pub path: String,
    pub op: &'d Value,
    pub item: &'d Value,
}

impl Doc {
    pub fn load() -> Self {
        let text = repo_file("docs/openapi.json");
        let root: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("docs/openapi.json: {e}"));
        Self::new(root)
    }

    /// A document given as JSON (docs/openapi.json, or a small one in a test).
    pub fn new(root: Value) -> Self {
        let schemas = Schemas::new(&root).unwrap_or_else(|e| panic!("the OpenAPI document's schemas: {e}"));
        Self { root, schemas }
    }

    /// The target of a local reference `#/a/b`.
    pub fn target(&self, reference: &str) -> Option<&Value> {
        reference.strip_prefix('#').and_then(|pointer| self.root.pointer(pointer))
    }

    /// `value`, following `$ref`s.
    pub fn resolve<'a>(&'a self, mut value: &'a Value) -> &'a Value {
        for _ in 0..32 {
            match value.get("$ref").and_then(Value::as_str) {
                Some(r) => value = self.target(r).unwrap_or_else(|| panic!("unresolved $ref {r}")),
                None => return value,
            }
        }
        panic!("$ref cycle at {value}");
    }

    pub fn schema(&self, name: &str) -> &Value {
        self.root
            .pointer(&format!("/components/schemas/{name}"))
            .unwrap_or_else(|| panic!("no schema {name} in docs/openapi.json"))
    }

    pub fn operations(&self) -> Vec<Op<'_>> {
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

    pub fn operation(&self, method: &str, path: &str) -> &Value {
        self.root["paths"]
            .get(path)
            .and_then(|item| item.get(method.to_lowercase()))
            .unwrap_or_else(|| panic!("{method} {path} is not in docs/openapi.json"))
    }

    /// Where `value` breaks `schema` (empty: it conforms), one line each.
    /// `schema` is one of this document's: its `$ref`s are resolved in it.
    pub fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        self.schemas.errors(schema, value).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Holds a response to the document: its status is one the operation
    /// documents, and its body has the documented media type and schema
    /// (none for a response without content). Returns the JSON body (or Null).
    pub fn check(&self, method: &str, path: &str, response: &Response) -> Value {
        self.conforms(method, path, response).unwrap_or_else(|why| panic!("{why}"))
    }

    /// [`Doc::check`] as a `Result`.
    pub fn conforms(&self, method: &str, path: &str, response: &Response) -> Result<Value, String> {
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
        // A JSON entry without a schema would let any body through: the document is wrong.
        let schema = entry
            .get("schema")
            .ok_or_else(|| format!("{what}: the documented {media} content has no schema"))?;
        let errors = self.errors(schema, &body);
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
pub fn refs(value: &Value, out: &mut Vec<String>) {
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
pub fn template_params(path: &str) -> BTreeSet<String> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(str::to_string)
        .collect()
}

/// The property names of an object schema.
pub fn keys(schema: &Value) -> BTreeSet<String> {
    schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
}

/// The strings of a JSON array (an `enum`, a `required` list).
pub fn strings(value: &Value) -> BTreeSet<String> {
    value.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
}
