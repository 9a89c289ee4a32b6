//! `docs/openapi.json` against the code, so the document cannot drift silently: every
//! endpoint is there, every `$ref` resolves, parameter and field names are exactly the ones
//! the code accepts (read from the code's own lists and serde's "expected one of" answers),
//! enums and limits are the code's, and real answers of both running services match the
//! schemas the document gives them. Both services serve the document at `/openapi.json`.

// The pipeline support re-exports helpers this file does not use.
#[allow(unused_imports)]
mod support;

use std::collections::BTreeSet;

use chrono::Utc;
use command_service::routes::BatchItem;
use domain::{Channel, MessageStatus, ObservationKind};
use query_service::reads::{ConsistencyParams, ListParams, TimelineParams};
use query_service::stats::params;
use serde_json::{json, Value};
use support::Pipeline;

const DOC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");

fn doc() -> Value {
    let text = std::fs::read_to_string(DOC_PATH).expect("docs/openapi.json exists");
    serde_json::from_str(&text).expect("docs/openapi.json is JSON")
}

/// Follows `$ref`s (within the document) until a schema that is not a reference.
fn resolve<'a>(doc: &'a Value, mut v: &'a Value) -> &'a Value {
    while let Some(r) = v.get("$ref").and_then(Value::as_str) {
        v = doc
            .pointer(r.strip_prefix('#').expect("local reference"))
            .unwrap_or_else(|| panic!("unresolved {r}"));
    }
    v
}

fn schema<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc.pointer(&format!("/components/schemas/{name}"))
        .unwrap_or_else(|| panic!("schema {name} is documented"))
}

fn strings(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{v} is an array"))
        .iter()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn enum_of(doc: &Value, name: &str) -> BTreeSet<String> {
    strings(&schema(doc, name)["enum"])
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

fn property_names(doc: &Value, name: &str) -> BTreeSet<String> {
    schema(doc, name)["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("{name} has properties"))
        .keys()
        .cloned()
        .collect()
}

/// The names serde lists after "expected" in an unknown-field or unknown-variant error.
fn serde_expected(error: impl std::fmt::Display) -> BTreeSet<String> {
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
fn fields_of<T: serde::de::DeserializeOwned>(base: Value) -> BTreeSet<String> {
    let mut probe = base;
    probe["zz_not_a_field"] = json!(1);
    match serde_json::from_value::<T>(probe) {
        Ok(_) => panic!("an unknown field is refused"),
        Err(e) => serde_expected(e),
    }
}

/// The query parameters of an operation (resolved), by name.
fn query_params(doc: &Value, path: &str, method: &str) -> BTreeSet<String> {
    operation(doc, path, method)["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .map(|p| resolve(doc, p))
        .filter(|p| p["in"] == "query")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

fn operation<'a>(doc: &'a Value, path: &str, method: &str) -> &'a Value {
    doc["paths"]
        .get(path)
        .and_then(|p| p.get(method))
        .unwrap_or_else(|| panic!("{method} {path} is documented"))
}

const COMMAND_URL: &str = "http://127.0.0.1:8080";
const QUERY_URL: &str = "http://127.0.0.1:8081";

/// Every endpoint, with the servers that serve it.
const ENDPOINTS: &[(&str, &str, &[&str])] = &[
    ("post", "/v1/messages", &[COMMAND_URL]),
    ("post", "/v1/messages/{id}/observations", &[COMMAND_URL]),
    ("post", "/v1/messages/{id}/cancel", &[COMMAND_URL]),
    ("post", "/v1/batch", &[COMMAND_URL]),
    ("get", "/v1/messages", &[QUERY_URL]),
    ("get", "/v1/messages/{id}", &[QUERY_URL]),
    ("get", "/v1/messages/{id}/events", &[QUERY_URL]),
    ("get", "/v1/stats/messages", &[QUERY_URL]),
    ("post", "/v1/stats/messages:query", &[QUERY_URL]),
    ("get", "/health/live", &[COMMAND_URL, QUERY_URL]),
    ("get", "/health/ready", &[COMMAND_URL, QUERY_URL]),
    ("get", "/metrics", &[COMMAND_URL, QUERY_URL]),
    ("get", "/openapi.json", &[COMMAND_URL, QUERY_URL]),
];

#[test]
fn the_document_is_openapi_3_1_and_covers_every_endpoint_of_both_services() {
    let doc = doc();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let servers: BTreeSet<String> = doc["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["url"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(servers, set([COMMAND_URL, QUERY_URL]));
    let scheme = &doc["components"]["securitySchemes"]["apiKey"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    assert_eq!(doc["security"], json!([{"apiKey": []}]));

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            if method != "parameters" {
                documented.insert((method.clone(), path.clone()));
            }
        }
    }
    let expected: BTreeSet<(String, String)> = ENDPOINTS
        .iter()
        .map(|(m, p, _)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(documented, expected, "exactly the served endpoints");

    for (method, path, served_by) in ENDPOINTS {
        let op = operation(&doc, path, method);
        let urls: BTreeSet<String> = op["servers"]
            .as_array()
            .unwrap_or_else(|| panic!("{method} {path} names its servers"))
            .iter()
            .map(|s| s["url"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(urls, set(served_by.iter().copied()), "{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        let open = path.starts_with("/health") || *path == "/metrics" || *path == "/openapi.json";
        if open {
            assert_eq!(op["security"], json!([]), "{path} needs no key");
        } else {
            assert!(
                op.get("security").is_none(),
                "{method} {path} needs the key"
            );
            for code in ["400", "401", "503"] {
                assert!(
                    responses.contains_key(code),
                    "{method} {path} documents {code}"
                );
            }
        }
        if *method == "post" && !open {
            for code in ["413", "415"] {
                assert!(
                    responses.contains_key(code),
                    "{method} {path} documents {code}"
                );
            }
        }
    }
    for path in ["/v1/messages/{id}/observations", "/v1/messages/{id}/cancel"] {
        let responses = &operation(&doc, path, "post")["responses"];
        for code in ["404", "409", "422"] {
            assert!(responses.get(code).is_some(), "{path} documents {code}");
        }
    }
    assert!(operation(&doc, "/v1/messages", "post")["responses"]
        .get("409")
        .is_some());
    for path in ["/v1/messages/{id}", "/v1/messages/{id}/events"] {
        assert!(operation(&doc, path, "get")["responses"]
            .get("404")
            .is_some());
    }

    // 409 concurrent_modification and 503 carry Retry-After.
    for name in ["CommandConflict", "Unavailable"] {
        let r = &doc["components"]["responses"][name];
        assert!(r["headers"].get("Retry-After").is_some(), "{name}");
    }
    // The error shape.
    assert_eq!(
        property_names(&doc, "ErrorDetail"),
        set(["code", "message", "field"])
    );
    assert_eq!(property_names(&doc, "Error"), set(["error"]));
}

#[test]
fn every_reference_resolves_within_the_document() {
    let doc = doc();
    let mut refs = Vec::new();
    fn walk(v: &Value, refs: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "$ref" {
                        refs.push(v.as_str().expect("$ref is a string").to_string());
                    } else if k == "mapping" {
                        for target in v.as_object().unwrap().values() {
                            refs.push(target.as_str().unwrap().to_string());
                        }
                    } else {
                        walk(v, refs);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, refs)),
            _ => {}
        }
    }
    walk(&doc, &mut refs);
    assert!(refs.len() > 50, "the document uses references");
    for r in &refs {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{r} is local"));
        assert!(doc.pointer(pointer).is_some(), "{r} resolves");
    }
}

#[test]
fn parameter_and_field_names_are_exactly_the_codes() {
    let doc = doc();
    // Statistics: the validator's whitelist plus the `source` override, in both forms.
    let mut known = set(params::KNOWN.iter().copied());
    known.insert("source".into());
    assert_eq!(
        query_params(&doc, "/v1/stats/messages", "get"),
        known,
        "GET /v1/stats/messages parameters"
    );
    assert_eq!(
        property_names(&doc, "StatsQueryBody"),
        known,
        "POST body fields"
    );
    assert_eq!(
        schema(&doc, "StatsQueryBody")["additionalProperties"],
        false
    );
    // The user guide documents each of them too.
    let guide =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/query-api.md"))
            .expect("docs/query-api.md exists");
    for name in &known {
        assert!(
            guide.contains(&format!("`{name}`")),
            "docs/query-api.md documents {name}"
        );
    }

    // Reads: serde's own list of the fields each parameter struct accepts.
    assert_eq!(
        query_params(&doc, "/v1/messages", "get"),
        fields_of::<ListParams>(json!({}))
    );
    assert_eq!(
        query_params(&doc, "/v1/messages/{id}", "get"),
        fields_of::<ConsistencyParams>(json!({}))
    );
    assert_eq!(
        query_params(&doc, "/v1/messages/{id}/events", "get"),
        fields_of::<TimelineParams>(json!({}))
    );

    // Command bodies.
    let submit = json!({"channel": "email", "recipient": "a@b.co", "provider": "ses",
                        "content": {"type": "inline", "body": "x"}});
    assert_eq!(
        property_names(&doc, "SubmitRequest"),
        fields_of::<command_service::api::SubmitRequest>(submit.clone())
    );
    let observation =
        json!({"kind": "delivered", "dedupe_key": "k", "occurred_at": "2026-11-21T00:00:00Z"});
    assert_eq!(
        property_names(&doc, "ObservationRequest"),
        fields_of::<command_service::api::ObservationRequest>(observation.clone())
    );
    assert_eq!(
        property_names(&doc, "CancelRequest"),
        fields_of::<command_service::api::CancelRequest>(json!({}))
    );
    assert_eq!(
        property_names(&doc, "BatchRequest"),
        fields_of::<command_service::routes::BatchRequest>(json!({"commands": []}))
    );
    for name in [
        "SubmitRequest",
        "ObservationRequest",
        "CancelRequest",
        "BatchRequest",
        "BatchSubmit",
        "BatchObserve",
        "BatchCancel",
    ] {
        assert_eq!(
            schema(&doc, name)["additionalProperties"],
            false,
            "{name} refuses unknown fields, as the code does"
        );
    }

    // Batch commands: the `op` tag and each form's fields.
    let ops = serde_expected(serde_json::from_value::<BatchItem>(json!({"op": "zz"})).unwrap_err());
    let mapping = &schema(&doc, "BatchCommand")["discriminator"]["mapping"];
    assert_eq!(
        mapping
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        ops
    );
    let id = "00000000-0000-0000-0000-000000000001";
    for (op, name, base) in [
        (
            "submit",
            "BatchSubmit",
            json!({"op": "submit", "message": submit}),
        ),
        (
            "observe",
            "BatchObserve",
            json!({"op": "observe", "message_id": id, "observation": observation}),
        ),
        (
            "cancel",
            "BatchCancel",
            json!({"op": "cancel", "message_id": id}),
        ),
    ] {
        let mut fields = fields_of::<BatchItem>(base);
        fields.insert("op".into());
        assert_eq!(property_names(&doc, name), fields, "{op}");
        assert_eq!(schema(&doc, name)["properties"]["op"]["const"], op);
    }

    // Content: the `type` tag.
    let kinds = serde_expected(
        serde_json::from_value::<domain::MessageContent>(json!({"type": "zz"})).unwrap_err(),
    );
    let mapping = &schema(&doc, "MessageContent")["discriminator"]["mapping"];
    assert_eq!(
        mapping
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        kinds
    );
}

/// The values listed after `marker` in a validation message, e.g. "expected zero, null or
/// none".
fn listed_after(message: &str, marker: &str) -> BTreeSet<String> {
    let rest = message
        .split_once(marker)
        .unwrap_or_else(|| panic!("{message:?} lists after {marker:?}"))
        .1;
    rest.replace(" or ", ", ")
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn stats_error(name: &str, value: &str) -> String {
    params::parse(&[(name.to_string(), value.to_string())], Utc::now())
        .expect_err("refused")
        .to_string()
}

#[test]
fn enums_and_limits_are_the_codes() {
    let doc = doc();
    assert_eq!(
        enum_of(&doc, "Channel"),
        set(Channel::ALL.iter().map(|c| c.as_str()))
    );
    assert_eq!(
        enum_of(&doc, "MessageStatus"),
        set(MessageStatus::ALL.iter().map(|s| s.as_str()))
    );
    assert_eq!(
        enum_of(&doc, "ObservationKind"),
        set(ObservationKind::ALL.iter().map(|k| k.as_str()))
    );
    assert_eq!(
        enum_of(&doc, "Bucket"),
        set(query_service::stats::buckets::Bucket::NAMES.split(", "))
    );
    assert_eq!(
        enum_of(&doc, "MetricName"),
        set(params::Metric::NAMES.split(", "))
    );
    assert_eq!(
        enum_of(&doc, "Fill"),
        listed_after(&stats_error("fill", "zz"), "expected")
    );
    assert_eq!(
        enum_of(&doc, "GroupByDimension"),
        listed_after(&stats_error("group_by", "zz"), "three of")
    );
    // Every documented value is accepted, alone and as the code's defaults say.
    for (name, schema_name) in [
        ("bucket", "Bucket"),
        ("metrics", "MetricName"),
        ("fill", "Fill"),
        ("group_by", "GroupByDimension"),
        ("channel", "Channel"),
        ("status", "MessageStatus"),
    ] {
        for value in enum_of(&doc, schema_name) {
            let pairs = [
                (name.to_string(), value.clone()),
                ("from".into(), "2026-01-01T00:00:00Z".into()),
                ("to".into(), "2026-01-02T00:00:00Z".into()),
            ];
            params::parse(&pairs, Utc::now())
                .unwrap_or_else(|e| panic!("{name}={value} is accepted: {e}"));
        }
    }
    let stats_get = operation(&doc, "/v1/stats/messages", "get");
    let param = |name: &str| -> &Value {
        stats_get["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p))
            .find(|p| p["name"] == name && p["in"] == "query")
            .unwrap_or_else(|| panic!("{name}"))
    };
    let defaults = params::parse(&[], Utc::now()).unwrap();
    assert_eq!(
        param("bucket")["schema"]["default"],
        defaults.bucket.as_str()
    );
    assert_eq!(param("tz")["schema"]["default"], defaults.tz.name());
    assert_eq!(param("fill")["schema"]["default"], "zero");
    assert_eq!(defaults.fill, params::Fill::Zero);
    assert_eq!(
        param("group_by")["schema"]["maxItems"],
        params::MAX_GROUP_BY
    );
    for name in ["channel", "provider", "tag", "status"] {
        assert_eq!(
            param(name)["schema"]["maxItems"],
            params::MAX_FILTER_VALUES,
            "{name}"
        );
    }
    let wait = &doc["components"]["parameters"]["WaitMs"];
    assert_eq!(wait["schema"]["maximum"], params::MAX_WAIT_MS);
    assert_eq!(wait["schema"]["default"], defaults.wait_ms);
    let limit = &operation(&doc, "/v1/messages", "get")["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"];
    assert_eq!(limit["maximum"], query_service::reads::MAX_PAGE);

    // Answer keys.
    use query_service::stats::answer;
    assert_eq!(
        strings(&schema(&doc, "StatusCounts")["required"]),
        set(answer::COUNTED_STATUSES.iter().map(|s| s.as_str()))
    );
    assert_eq!(property_names(&doc, "Engagement"), set(answer::ENGAGEMENTS));
    assert_eq!(
        strings(&schema(&doc, "StatsAnswer")["properties"]["definitions"]["required"]),
        set(answer::DEFINITIONS.iter().map(|(k, _)| *k))
    );
    assert_eq!(
        property_names(&doc, "Latency"),
        set(query_service::stats::engine::LATENCY_METRICS
            .iter()
            .map(|(_, n)| *n))
    );
    assert_eq!(
        strings(&schema(&doc, "TimelineEvent")["properties"]["event_type"]["enum"]),
        set(domain::MessageEvent::EVENT_TYPES.iter().copied())
    );
    let sources: BTreeSet<String> = [
        query_service::stats::engine::Source::Rollup,
        query_service::stats::engine::Source::Raw,
    ]
    .iter()
    .map(|s| {
        serde_json::to_value(s)
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    })
    .collect();
    assert_eq!(
        strings(&schema(&doc, "StatsAnswer")["properties"]["source"]["enum"]),
        sources
    );

    // Command limits.
    use domain::validate as v;
    let submit = &schema(&doc, "SubmitRequest")["properties"];
    assert_eq!(submit["tags"]["maxItems"], v::MAX_TAGS);
    assert_eq!(schema(&doc, "Tag")["maxLength"], v::MAX_TAG_LEN);
    assert_eq!(schema(&doc, "Provider")["maxLength"], v::MAX_PROVIDER_LEN);
    assert_eq!(submit["ttl_seconds"]["maximum"], v::MAX_TTL_SECONDS);
    assert_eq!(
        schema(&doc, "ObservationRequest")["properties"]["dedupe_key"]["maxLength"],
        v::MAX_DEDUPE_KEY_CHARS
    );
    assert_eq!(
        schema(&doc, "CancelRequest")["properties"]["reason"]["maxLength"],
        v::MAX_CANCEL_REASON_CHARS
    );
    assert_eq!(
        schema(&doc, "InlineContent")["properties"]["subject"]["maxLength"],
        v::MAX_SUBJECT_CHARS
    );
    assert_eq!(
        schema(&doc, "BatchRequest")["properties"]["commands"]["maxItems"],
        command_service::routes::MAX_BATCH_COMMANDS
    );
}

// ------------------------------------------------------------------ a small validator --

/// Checks `value` against `schema` for the JSON Schema keywords the document uses (types,
/// enums, const, properties, required, additionalProperties, unevaluatedProperties over
/// allOf, items, allOf/anyOf/oneOf, if/then, minimum/maximum, lengths, formats date-time
/// and uuid). Patterns are not checked. Appends what does not match to `errors`.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
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
fn assert_documented(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
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

// ------------------------------------------------------------- the running services --

#[tokio::test]
async fn both_services_serve_the_document_and_their_answers_match_it() {
    let doc_text = std::fs::read_to_string(DOC_PATH).unwrap();
    let doc = doc();
    let p = Pipeline::start().await;
    let command = service_kit::testing::RunningApp::spawn(
        command_service::build(p.h.settings.clone()).await.unwrap(),
    );
    for (service, url) in [
        ("query", p.query.url("/openapi.json")),
        ("command", command.url("/openapi.json")),
    ] {
        let response = p.client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{service}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json",
            "{service}"
        );
        assert_eq!(response.text().await.unwrap(), doc_text, "{service}");
    }

    let (_, key) = service_kit::auth::ApiKeys::new(p.h.pool.clone())
        .create_tenant("openapi")
        .await
        .unwrap();
    let post = |path: &str, body: Value| {
        let request = p
            .client
            .post(command.url(path))
            .bearer_auth(&key)
            .json(&body);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };

    // Commands.
    let submit = json!({"channel": "email", "recipient": "ada@example.com", "provider": "ses",
                        "content": {"type": "inline", "subject": "Hi", "body": "Hello"},
                        "tags": ["welcome", "onboarding"], "ttl_seconds": 86400});
    let (status, answer) = post("/v1/messages", submit.clone()).await;
    assert_documented(&doc, "post", "/v1/messages", status, &answer);
    assert_eq!(status, 202);
    let id = answer["message_id"].as_str().unwrap().to_string();
    let now = Utc::now();
    let at = |ms: i64| (now + chrono::Duration::milliseconds(ms)).to_rfc3339();
    let mut token = String::new();
    for (i, kind) in ["dispatched", "delivered", "opened", "clicked"]
        .iter()
        .enumerate()
    {
        let (status, answer) = post(
            &format!("/v1/messages/{id}/observations"),
            json!({"kind": kind, "dedupe_key": format!("k{i}"), "occurred_at": at(100 * (i as i64 + 1)),
                   "details": {"provider_event": i}}),
        )
        .await;
        assert_documented(
            &doc,
            "post",
            "/v1/messages/{id}/observations",
            status,
            &answer,
        );
        assert_eq!(status, 202, "{answer}");
        token = answer["consistency_token"].as_str().unwrap().to_string();
    }
    let (status, answer) = post(
        &format!("/v1/messages/{id}/cancel"),
        json!({"reason": "late"}),
    )
    .await;
    assert_eq!(status, 422);
    assert_documented(&doc, "post", "/v1/messages/{id}/cancel", status, &answer);
    let missing = uuid::Uuid::new_v4();
    let (status, answer) = post(&format!("/v1/messages/{missing}/cancel"), json!({})).await;
    assert_eq!(status, 404);
    assert_documented(&doc, "post", "/v1/messages/{id}/cancel", status, &answer);
    let (status, answer) = post("/v1/messages", json!({"channel": "fax"})).await;
    assert_eq!(status, 400);
    assert_documented(&doc, "post", "/v1/messages", status, &answer);
    let (status, answer) = post(
        "/v1/batch",
        json!({"commands": [
            {"op": "submit", "idempotency_key": "openapi-1", "message": {"channel": "sms", "recipient": "+4915112345678", "provider": "twilio", "content": {"type": "inline", "body": "code"}}},
            {"op": "cancel", "message_id": id, "reason": "dup"},
            {"op": "observe", "message_id": missing, "observation": {"kind": "opened", "dedupe_key": "o", "occurred_at": at(0)}},
            {"op": "launch"}
        ]}),
    )
    .await;
    assert_eq!(status, 200);
    assert_documented(&doc, "post", "/v1/batch", status, &answer);
    assert_eq!(answer["accepted"], 1, "{answer}");

    // Reads, waiting for the last observation.
    let get = |path: String| {
        let request = p.client.get(p.query.url(&path)).bearer_auth(&key);
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let wait = format!("consistency_token={token}&wait_ms=10000");
    let (status, body) = get(format!("/v1/messages/{id}?{wait}")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["freshness"]["consistent"], true);
    assert_documented(&doc, "get", "/v1/messages/{id}", status, &body);
    let (status, body) = get(format!("/v1/messages/{id}/events")).await;
    assert_documented(&doc, "get", "/v1/messages/{id}/events", status, &body);
    let (status, body) = get(format!("/v1/messages/{missing}/events")).await;
    assert_eq!(status, 404);
    assert_documented(&doc, "get", "/v1/messages/{id}/events", status, &body);
    let (status, body) = get("/v1/messages?limit=1&channel=email".into()).await;
    assert_documented(&doc, "get", "/v1/messages", status, &body);
    let (status, body) = get("/v1/messages?limit=0".into()).await;
    assert_eq!(status, 400);
    assert_documented(&doc, "get", "/v1/messages", status, &body);

    let from = (now - chrono::Duration::hours(1)).to_rfc3339();
    let to = (now + chrono::Duration::hours(1)).to_rfc3339();
    let range = format!("from={}&to={}", support::enc(&from), support::enc(&to));
    for query in [
        format!("{range}&{wait}"),
        format!("{range}&group_by=channel,tag&metrics=counts,rates,latency&bucket=15m&fill=null&tz=Asia%2FKathmandu"),
        format!("{range}&group_by=status&metrics=counts,rates,latency&fill=zero&source=raw"),
        format!("{range}&bucket=none&metrics=latency_submit_to_delivered,open_rate&fill=none"),
    ] {
        let (status, body) = get(format!("/v1/stats/messages?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_documented(&doc, "get", "/v1/stats/messages", status, &body);
    }
    let (status, body) = get("/v1/stats/messages?source=zz".into()).await;
    assert_eq!(status, 400);
    assert_documented(&doc, "get", "/v1/stats/messages", status, &body);
    let message = body["error"]["message"].as_str().unwrap();
    assert_eq!(
        listed_after(message, "expected"),
        enum_of(&doc, "StatsSource"),
        "source values"
    );
    let response = p
        .client
        .post(p.query.url("/v1/stats/messages:query"))
        .bearer_auth(&key)
        .json(
            &json!({"from": from, "to": to, "bucket": "day", "tz": "Europe/Berlin",
                      "group_by": ["channel"], "metrics": ["counts", "rates", "latency"],
                      "wait_ms": 10}),
        )
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_documented(&doc, "post", "/v1/stats/messages:query", status, &body);

    // Unauthenticated and operational answers.
    let (status, body) = {
        let response = p
            .client
            .get(p.query.url("/v1/stats/messages"))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 401);
    assert_documented(&doc, "get", "/v1/stats/messages", status, &body);
    for base in [&p.query, &command] {
        for path in ["/health/live", "/health/ready"] {
            let response = p.client.get(base.url(path)).send().await.unwrap();
            let status = response.status().as_u16();
            let body: Value = response.json().await.unwrap();
            assert_eq!(status, 200, "{path}: {body}");
            assert_documented(&doc, "get", path, status, &body);
        }
    }
    command.stop().await;
}
