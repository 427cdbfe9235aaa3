//! OpenAPI 3.0 schemas checked by the `jsonschema` crate. The whole document
//! is registered under one URI, so that a schema's `#/components/...`
//! references resolve in it and nothing is ever fetched.
//!
//! 3.0's schemas are a dialect of JSON Schema draft 4/5 (a `$ref` replaces
//! its siblings; `exclusiveMinimum` is a boolean), so they are read as draft
//! 4, with one keyword of 3.0's own, `nullable`, rewritten into draft 4:
//! `{"anyOf": [{"type": "null"}, the rest]}`. Extra keywords (`example`,
//! `readOnly`) are annotations and check nothing.

use jsonschema::{Draft, Registry};
use serde_json::{json, Map, Value};

/// Where the document is registered; its local references are made absolute
/// against it, in it and in every schema checked.
const DOC_URI: &str = "urn:openapi";

/// The document's schemas, ready to check values against.
pub(super) struct Schemas {
    registry: Registry<'static>,
}

impl Schemas {
    pub(super) fn new(doc: &Value) -> Result<Self, String> {
        let resource = Draft::Draft4.create_resource(as_json_schema(doc));
        let registry = Registry::new()
            .draft(Draft::Draft4)
            .add(DOC_URI, resource)
            .and_then(|builder| builder.prepare())
            .map_err(|e| format!("registering the document: {e}"))?;
        Ok(Self { registry })
    }

    /// Where `value` breaks `schema` (a schema of the document), one line
    /// each; an error if the schema itself does not compile.
    pub(super) fn errors(&self, schema: &Value, value: &Value) -> Result<Vec<String>, String> {
        let schema = as_json_schema(schema);
        let validator = jsonschema::options()
            .with_draft(Draft::Draft4)
            .with_registry(&self.registry)
            .build(&schema)
            .map_err(|e| format!("schema {schema} does not compile: {e}"))?;
        Ok(validator
            .iter_errors(value)
            .map(|e| {
                let at = e.instance_path().to_string();
                format!("{}: {e}", if at.is_empty() { "(the whole value)" } else { &at })
            })
            .collect())
    }
}

/// `value` (the document or a schema in it) as draft 4: `nullable`
/// rewritten and local `$ref`s made absolute. Examples and defaults are
/// values, not schemas, and stay as they are.
fn as_json_schema(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            let mut nullable = false;
            for (key, item) in map {
                match (key.as_str(), item) {
                    ("nullable", Value::Bool(b)) => nullable = *b,
                    ("$ref", Value::String(r)) if r.starts_with('#') => {
                        out.insert(key.clone(), Value::String(format!("{DOC_URI}{r}")));
                    }
                    ("example" | "examples" | "default" | "enum", _) => {
                        out.insert(key.clone(), item.clone());
                    }
                    _ => {
                        out.insert(key.clone(), as_json_schema(item));
                    }
                }
            }
            if nullable {
                json!({"anyOf": [{"type": "null"}, Value::Object(out)]})
            } else {
                Value::Object(out)
            }
        }
        Value::Array(items) => Value::Array(items.iter().map(as_json_schema).collect()),
        _ => value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::Doc;
    use crate::http::Response;

    /// A document in the shape of docs/openapi.json: a reference, a nullable
    /// reference, closed objects, a required key, bounds.
    fn doc() -> Doc {
        Doc::new(json!({
            "openapi": "3.0.3",
            "paths": {
                "/v1/things/{name}": {
                    "get": {"responses": {
                        "200": {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                        "404": {"$ref": "#/components/responses/NotFound"}
                    }}
                }
            },
            "components": {
                "responses": {
                    "NotFound": {"description": "none", "content": {"application/json": {"schema": {
                        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}
                    }}}}
                },
                "schemas": {
                    "Thing": {
                        "type": "object",
                        "required": ["name", "weight"],
                        "additionalProperties": false,
                        "properties": {
                            "name": {"type": "string", "minLength": 1},
                            "weight": {"type": "integer", "minimum": 0, "maximum": 256},
                            "state": {"type": "string", "nullable": true, "enum": ["up", "down"]},
                            "where": {"nullable": true, "allOf": [{"$ref": "#/components/schemas/Where"}]},
                            "parts": {"type": "array", "items": {"$ref": "#/components/schemas/Where"}}
                        },
                        "example": {"name": "x", "nullable": "only an example", "$ref": "#/nowhere"}
                    },
                    "Where": {
                        "type": "object",
                        "required": ["line"],
                        "additionalProperties": false,
                        "properties": {"line": {"type": "integer", "minimum": 1}}
                    }
                }
            }
        }))
    }

    #[test]
    fn a_conforming_value_passes() {
        let doc = doc();
        let thing = doc.schema("Thing");
        let good = [
            json!({"name": "a", "weight": 0}),
            json!({"name": "a", "weight": 256, "state": null, "where": null, "parts": []}),
            json!({"name": "a", "weight": 1, "state": "up", "where": {"line": 3}, "parts": [{"line": 1}]}),
        ];
        for value in good {
            assert_eq!(doc.errors(thing, &value), Vec::<String>::new(), "{value}");
        }
    }

    #[test]
    fn each_violation_is_reported() {
        let doc = doc();
        let thing = doc.schema("Thing");
        let bad = [
            (json!({"name": "a", "weight": "1"}), "/weight"),
            (json!({"name": "a", "weight": 1.5}), "/weight"),
            (json!({"name": "a", "weight": 257}), "/weight"),
            (json!({"name": "a"}), "weight"),
            (json!({"name": "", "weight": 1}), "/name"),
            (json!({"name": "a", "weight": 1, "colour": "red"}), "colour"),
            (json!({"name": "a", "weight": 1, "state": "sideways"}), "/state"),
            (json!({"name": "a", "weight": 1, "where": {"line": 0}}), "/where"),
            (json!({"name": "a", "weight": 1, "parts": [{"line": 1}, {"column": 2}]}), "/parts/1"),
            (json!(["a"]), "object"),
            (json!(null), "object"),
        ];
        for (value, what) in bad {
            let errors = doc.errors(thing, &value);
            assert!(
                errors.iter().any(|e| e.contains(what)),
                "{value}: expected an error about {what}, got {errors:?}"
            );
        }
    }

    fn response(status: u16, body: &str) -> Response {
        Response {
            status,
            reason: String::new(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn responses_are_checked_by_status_and_schema() {
        let doc = doc();
        let path = "/v1/things/{name}";
        let ok = doc.conforms("GET", path, &response(200, r#"{"name": "a", "weight": 2}"#));
        assert_eq!(ok.unwrap()["weight"], 2);
        assert!(doc.conforms("GET", path, &response(404, r#"{"error": "no such thing"}"#)).is_ok());
        let broken = doc.conforms("GET", path, &response(200, r#"{"name": "a", "weight": -1}"#)).unwrap_err();
        assert!(broken.contains("breaks the documented schema") && broken.contains("/weight"), "{broken}");
        assert!(doc.conforms("GET", path, &response(404, r#"{"message": "x"}"#)).is_err());
        let undocumented = doc.conforms("GET", path, &response(500, "{}")).unwrap_err();
        assert!(undocumented.contains("not documented"), "{undocumented}");
        assert!(doc.conforms("GET", path, &response(200, "not json")).is_err());
    }

    /// Every schema of docs/openapi.json compiles, and refuses what is not
    /// even its type.
    #[test]
    fn every_schema_of_the_document_compiles() {
        let doc = Doc::load();
        let schemas = doc.root["components"]["schemas"].as_object().expect("components.schemas");
        for (name, schema) in schemas {
            let wrong = if schema["type"] == "object" { json!("a string") } else { json!({"an": "object"}) };
            assert!(!doc.errors(schema, &wrong).is_empty(), "{name} takes {wrong}");
        }
    }
}
