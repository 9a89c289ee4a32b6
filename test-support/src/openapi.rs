//! Checking Herald's OpenAPI document against the code and against real answers: the
//! helpers every service's OpenAPI test uses, and a validator for the subset of JSON
//! Schema the document uses.

use std::collections::BTreeSet;

use serde_json::{json, Value};

/// The document, as kept in `docs/openapi.json` (the file the services embed and serve).
pub fn doc() -> Value {
    serde_json::from_str(service_kit::openapi::DOCUMENT).expect("docs/openapi.json is JSON")
}

/// Follows `$ref`s (within the document) until a schema that is not a reference.
pub fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = doc
            .pointer(r.strip_prefix('#').expect("local reference"))
            .unwrap_or_else(|| panic!("unresolved {r}"));
    }
    v
}

/// The schema `name` of `components/schemas`.
pub fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("schema {name} is documented"))
}

/// The strings of a JSON array.
pub fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is an array"))
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// The `enum` of schema `name`.
pub fn enum_of(doc: &Value, name: &str) -> BTreeSet<String> {
    strings(&schema(doc, name)["enum"])
}

/// A set of strings.
pub fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

/// The property names of schema `name`.
pub fn property_names(doc: &Value, name: &str) -> BTreeSet<String> {
    schema(doc, name)["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{name} has properties"))
        .keys()
        .cloned()
        .collect()
}

/// The names serde lists after "expected" in an unknown-field or unknown-variant error.
pub fn serde_expected(error: impl std::fmt::Display) -> BTreeSet<String> {
    let text = error.to_string();
    let rest = text
        .split_once("expected")
        .unwrap_or_else(|| panic!("{text}: serde names what it expected"))
        .1;
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The fields a deserialisable type accepts, as serde lists them for an unknown one.
pub fn fields_of<T: serde::de::DeserializeOwned>(base: Value) -> BTreeSet<String> {
    let mut probe = base;
    probe["zz_not_a_field"] = json!(1);
    match serde_json::from_value::<T>(probe) {
        Ok(_) => panic!("an unknown field is refused"),
        Err(e) => serde_expected(e),
    }
}

/// The query parameters of an operation (resolved), by name.
pub fn query_params(doc: &Value, path: &str, method: &str) -> BTreeSet<String> {
    operation(doc, path, method)["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| resolve(doc, p))
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

/// The operation `method path` of the document.
pub fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    doc["paths"]
        .get(path)
        .and_then(|p| p.get(method))
        .unwrap_or_else(|| panic!("{method} {path} is documented"))
}

/// Checks `value` against `schema` for the JSON Schema keywords the document uses (types,
/// enums, const, properties, required, additionalProperties, unevaluatedProperties over
/// allOf, items, allOf/anyOf/oneOf, if/then, minimum/maximum, lengths, formats date-time
/// and uuid). Patterns are not checked. Appends what does not match to `errors`.
pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    let mut fail = |why: String| errors.push(format!("{at}: {why}"));
    if let Some(c) = schema.get("const") {
        if c != value {
            fail(format!("{value} is not {c}"));
        }
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array) {
        if !e.contains(value) {
            fail(format!("{value} not in {e:?}"));
        }
    }
    if let Some(t) = schema.get("type") {
        let types: Vec<&str> = match t {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let is = |ty: &str| match ty {
            "null" => value.is_null(),
            "boolean" => value.is_boolean(),
            "string" => value.is_string(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            _ => false,
        };
        if !types.iter().any(|ty| is(ty)) {
            fail(format!("{value} is not of type {t}"));
            return;
        }
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
            if n < min {
                fail(format!("{n} < {min}"));
            }
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
            if n > max {
                fail(format!("{n} > {max}"));
            }
        }
    }
    if let Some(s) = value.as_str() {
        let chars = s.chars().count() as u64;
        if schema
            .get("minLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars < m)
        {
            fail(format!("{s:?} too short"));
        }
        if schema
            .get("maxLength")
            .and_then(Value::as_u64)
            .is_some_and(|m| chars > m)
        {
            fail(format!("{s:?} too long"));
        }
        match schema.get("format").and_then(Value::as_str) {
            Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                fail(format!("{s:?} is not a date-time"))
            }
            Some("uuid") if uuid::Uuid::parse_str(s).is_err() => {
                fail(format!("{s:?} is not a uuid"))
            }
            _ => {}
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if items.len() as u64 > max {
                fail(format!("more than {max} items"));
            }
        }
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(doc, item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema.get("properties").and_then(Value::as_object);
        for name in schema.get("required").map(strings).unwrap_or_default() {
            if !object.contains_key(&name) {
                errors.push(format!("{at}: missing required {name}"));
            }
        }
        for (k, v) in object {
            let path = format!("{at}.{k}");
            if let Some(s) = properties.and_then(|p| p.get(k)) {
                check(doc, s, v, &path, errors);
            } else {
                match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        errors.push(format!("{path}: not documented"));
                    }
                    Some(s @ Value::Object(_)) => check(doc, s, v, &path, errors),
                    _ => {}
                }
            }
            if let Some(names) = schema.get("propertyNames") {
                check(doc, names, &json!(k), &format!("{at} key {k}"), errors);
            }
        }
        if schema.get("unevaluatedProperties") == Some(&Value::Bool(false)) {
            let declared = declared_properties(doc, schema);
            for k in object.keys() {
                if !declared.contains(k) {
                    errors.push(format!("{at}.{k}: not documented"));
                }
            }
        }
    }
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for s in all {
            check(doc, s, value, at, errors);
        }
    }
    for (keyword, exactly_one) in [("anyOf", false), ("oneOf", true)] {
        if let Some(alternatives) = schema.get(keyword).and_then(Value::as_array) {
            let mut first_errors = None;
            let matching = alternatives
                .iter()
                .filter(|s| {
                    let mut e = Vec::new();
                    check(doc, s, value, at, &mut e);
                    if !e.is_empty() && first_errors.is_none() {
                        first_errors = Some(e.clone());
                    }
                    e.is_empty()
                })
                .count();
            if matching == 0 || (exactly_one && matching > 1) {
                errors.push(format!(
                    "{at}: {matching} of {keyword} match ({first_errors:?})"
                ));
            }
        }
    }
    if let (Some(cond), Some(then)) = (schema.get("if"), schema.get("then")) {
        let mut e = Vec::new();
        check(doc, cond, value, at, &mut e);
        if e.is_empty() {
            check(doc, then, value, at, errors);
        }
    }
}

fn declared_properties(doc: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(doc, schema);
    let mut out: BTreeSet<String> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for s in schema
        .get("allOf")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.extend(declared_properties(doc, s));
    }
    out
}

/// Asserts `body` matches the schema of the `status` answer of `method path`.
pub fn assert_documented(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let responses = &operation(doc, path, method)["responses"];
    let response = resolve(
        doc,
        responses
            .get(status.to_string())
            .unwrap_or_else(|| panic!("{method} {path} documents {status}: {body}")),
    );
    let schema = &response["content"]["application/json"]["schema"];
    let mut errors = Vec::new();
    check(doc, schema, body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "{method} {path} {status}: {errors:#?}\n{body:#}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_validator_catches_undocumented_fields_and_wrong_types() {
        let doc = doc();
        let mut errors = Vec::new();
        let answer = json!({"message_id": "0b6c5a0e-9f1d-4c7e-8a2b-3c4d5e6f7081", "status": "queued",
                            "changed": true, "sequence": 1, "consistency_token": "x.1"});
        check(
            &doc,
            &json!({"$ref": "#/components/schemas/CommandAnswer"}),
            &answer,
            "$",
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        let mut wrong = answer.clone();
        wrong["status"] = json!("happy");
        wrong["extra"] = json!(1);
        wrong["sequence"] = json!("1");
        check(
            &doc,
            &json!({"$ref": "#/components/schemas/CommandAnswer"}),
            &wrong,
            "$",
            &mut errors,
        );
        assert_eq!(errors.len(), 3, "{errors:?}");
    }
}
