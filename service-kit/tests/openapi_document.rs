//! `docs/openapi.json`, the document both services serve, as a document: OpenAPI 3.1,
//! every endpoint of both services there with the servers that serve it, every `$ref`
//! resolving. Each service's own test checks its names, limits and answers against it.

use std::collections::BTreeSet;

use serde_json::{json, Value};
use test_support::openapi::{doc, operation, property_names, set};

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
        set(["code", "message", "field", "limit"])
    );
    assert_eq!(
        property_names(&doc, "LimitHit"),
        set(["name", "value", "burst"])
    );
    // Every authenticated operation may be refused over its tenant's quota, with
    // Retry-After and the limit hit.
    let quota = &doc["components"]["responses"]["QuotaExceeded"];
    assert!(quota["headers"].get("Retry-After").is_some());
    for (path, ops) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in ops.as_object().unwrap() {
            if !["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                continue;
            }
            assert!(
                op["responses"].get("429").is_some(),
                "{method} {path} documents 429"
            );
        }
    }
    let limits: Vec<&str> = service_kit::quota::Limit::ALL
        .iter()
        .map(|l| l.as_str())
        .collect();
    let documented: Vec<&str> = doc["components"]["schemas"]["LimitHit"]["properties"]["name"]
        ["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(documented, limits);
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
