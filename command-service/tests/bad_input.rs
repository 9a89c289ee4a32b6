//! Every client mistake gets a clear 4xx JSON error naming the problem, and writes nothing.

mod support;

use serde_json::{json, Value};
use support::{email, observation, TestApp};

struct Case {
    name: &'static str,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    key: Option<String>,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
}

fn case(
    name: &'static str,
    path: &str,
    body: Value,
    status: u16,
    code: &'static str,
    field: Option<&'static str>,
) -> Case {
    Case {
        name,
        path: path.to_string(),
        content_type: Some("application/json"),
        body: serde_json::to_vec(&body).unwrap(),
        key: None,
        status,
        code,
        field,
    }
}

fn with(mut base: Value, pointer: &str, value: Value) -> Value {
    match base.pointer_mut(pointer) {
        Some(slot) => *slot = value,
        None => {
            // A top-level field the base body does not have yet.
            base.as_object_mut()
                .unwrap()
                .insert(pointer.trim_start_matches('/').to_string(), value);
        }
    }
    base
}

fn without(mut base: Value, field: &str) -> Value {
    base.as_object_mut().unwrap().remove(field);
    base
}

#[tokio::test]
async fn bad_inputs_get_the_documented_status_and_write_nothing() {
    let t = TestApp::spawn().await;
    let mine = t.submit(&email()).await["message_id"]
        .as_str()
        .unwrap()
        .to_string();
    let other_key = t.other_tenant_key().await;
    let theirs: Value = t
        .client
        .post(t.app.url("/v1/messages"))
        .bearer_auth(&other_key)
        .json(&email())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let theirs = theirs["message_id"].as_str().unwrap().to_string();
    let observe = format!("/v1/messages/{mine}/observations");
    let before = t.event_count().await;

    let mut cases = vec![
        Case {
            body: b"{\"channel\": \"email\",".to_vec(),
            ..case(
                "malformed JSON",
                "/v1/messages",
                json!(null),
                400,
                "malformed_json",
                None,
            )
        },
        case(
            "wrong type",
            "/v1/messages",
            with(email(), "/recipient", json!(5)),
            400,
            "invalid_body",
            Some("recipient"),
        ),
        case(
            "unknown channel",
            "/v1/messages",
            with(email(), "/channel", json!("fax")),
            400,
            "invalid_body",
            Some("channel"),
        ),
        case(
            "missing field",
            "/v1/messages",
            without(email(), "recipient"),
            400,
            "invalid_body",
            None,
        ),
        case(
            "unknown field",
            "/v1/messages",
            with(email(), "/tenant_id", json!("x")),
            400,
            "invalid_body",
            None,
        ),
        case(
            "invalid recipient",
            "/v1/messages",
            with(email(), "/recipient", json!("not-an-address")),
            400,
            "invalid_recipient",
            Some("recipient"),
        ),
        case(
            "sms recipient not E.164",
            "/v1/messages",
            with(
                with(email(), "/channel", json!("sms")),
                "/recipient",
                json!("0800 123"),
            ),
            400,
            "invalid_recipient",
            Some("recipient"),
        ),
        case(
            "too many tags",
            "/v1/messages",
            with(
                email(),
                "/tags",
                json!((0..21).map(|i| format!("t{i}")).collect::<Vec<_>>()),
            ),
            400,
            "too_many_tags",
            Some("tags"),
        ),
        case(
            "negative ttl",
            "/v1/messages",
            with(email(), "/ttl_seconds", json!(-1)),
            400,
            "invalid_body",
            Some("ttl_seconds"),
        ),
        case(
            "unknown kind",
            &observe,
            observation("teleported", "k1"),
            400,
            "invalid_body",
            Some("kind"),
        ),
        case(
            "empty dedupe key",
            &observe,
            observation("delivered", ""),
            400,
            "invalid_dedupe_key",
            Some("dedupe_key"),
        ),
        case(
            "bad occurred_at",
            &observe,
            with(
                observation("delivered", "k2"),
                "/occurred_at",
                json!("yesterday"),
            ),
            400,
            "invalid_body",
            Some("occurred_at"),
        ),
        case(
            "another tenant's message",
            &format!("/v1/messages/{theirs}/observations"),
            observation("delivered", "k3"),
            404,
            "message_not_found",
            None,
        ),
        case(
            "unknown message",
            &format!("/v1/messages/{}/observations", uuid::Uuid::new_v4()),
            observation("delivered", "k4"),
            404,
            "message_not_found",
            None,
        ),
        case(
            "not a message id",
            "/v1/messages/nope/observations",
            observation("delivered", "k5"),
            404,
            "not_found",
            None,
        ),
        case(
            "cancel another tenant's message",
            &format!("/v1/messages/{theirs}/cancel"),
            json!({}),
            404,
            "message_not_found",
            None,
        ),
        case(
            "unknown route",
            "/v1/nothing",
            json!({}),
            404,
            "route_not_found",
            None,
        ),
        case(
            "empty batch",
            "/v1/batch",
            json!({"commands": []}),
            400,
            "invalid_field",
            Some("commands"),
        ),
        Case {
            content_type: Some("text/plain"),
            ..case(
                "wrong content type",
                "/v1/messages",
                email(),
                415,
                "unsupported_media_type",
                None,
            )
        },
        Case {
            content_type: None,
            ..case(
                "no content type",
                "/v1/messages",
                email(),
                415,
                "unsupported_media_type",
                None,
            )
        },
        Case {
            body: serde_json::to_vec(&with(
                email(),
                "/content/body",
                json!("x".repeat(600 * 1024)),
            ))
            .unwrap(),
            ..case(
                "oversize",
                "/v1/messages",
                json!(null),
                413,
                "payload_too_large",
                None,
            )
        },
        Case {
            key: Some(String::new()),
            ..case(
                "no API key",
                "/v1/messages",
                email(),
                401,
                "unauthorized",
                Some("Authorization"),
            )
        },
        Case {
            key: Some("hrld_0000".into()),
            ..case(
                "unknown API key",
                "/v1/messages",
                email(),
                401,
                "unauthorized",
                Some("Authorization"),
            )
        },
    ];
    cases.push(Case {
        key: Some("x".repeat(10_000)),
        ..case(
            "huge API key",
            "/v1/messages",
            email(),
            401,
            "unauthorized",
            Some("Authorization"),
        )
    });

    let mut failures = Vec::new();
    for c in cases {
        let mut request = t.client.post(t.app.url(&c.path)).body(c.body.clone());
        match c.key.as_deref() {
            None => request = request.bearer_auth(&t.key),
            Some("") => {}
            Some(k) => request = request.bearer_auth(k),
        }
        if let Some(ct) = c.content_type {
            request = request.header("content-type", ct);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let is_json = response
            .headers()
            .get("content-type")
            .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("");
        let field = body["error"]["field"].as_str();
        let message = body["error"]["message"].as_str().unwrap_or("");
        if status != c.status
            || code != c.code
            || !is_json
            || message.is_empty()
            || (c.field.is_some() && field != c.field)
        {
            failures.push(format!(
                "{}: got {status} {body}, want {} {} {:?}",
                c.name, c.status, c.code, c.field
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert_eq!(
        t.event_count().await,
        before,
        "no refused request wrote anything"
    );
}
