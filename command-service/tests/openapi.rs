//! The command service against `docs/openapi.json`: the names of every body field and
//! form are exactly the ones the code accepts (read from serde's own "expected one of"
//! answers), its enums and limits are the code's, and its real answers match the schemas
//! the document gives them.

use std::collections::BTreeSet;

use chrono::Utc;
use command_service::routes::BatchItem;
use domain::{Channel, ObservationKind};
use serde_json::{json, Value};
use test_support::openapi::{
    assert_documented, doc, enum_of, fields_of, property_names, schema, serde_expected, set,
};

#[test]
fn command_parameter_and_field_names_are_exactly_the_codes() {
    let doc = doc();
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

#[test]
fn command_enums_and_limits_are_the_codes() {
    let doc = doc();
    assert_eq!(
        enum_of(&doc, "Channel"),
        set(Channel::ALL.iter().map(|c| c.as_str()))
    );
    assert_eq!(
        enum_of(&doc, "ObservationKind"),
        set(ObservationKind::ALL.iter().map(|k| k.as_str()))
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

// ------------------------------------------------------------- the running service --

#[tokio::test]
async fn the_command_service_serves_the_document_and_its_answers_match_it() {
    let doc = doc();
    let db = test_support::TestDb::migrated().await;
    let command = test_support::RunningApp::spawn(
        command_service::build(test_support::settings(&db.url))
            .await
            .unwrap(),
    );
    let client = reqwest::Client::new();
    let served = client
        .get(command.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status().as_u16(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(served.text().await.unwrap(), service_kit::openapi::DOCUMENT);

    let (_, key) = service_kit::auth::ApiKeys::new(db.pool().await)
        .create_tenant("openapi")
        .await
        .unwrap();
    let post = |path: &str, body: Value| {
        let request = client.post(command.url(path)).bearer_auth(&key).json(&body);
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

    for path in ["/health/live", "/health/ready"] {
        let response = client.get(command.url(path)).send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
        assert_documented(&doc, "get", path, status, &body);
    }
    assert!(
        token.ends_with(".5"),
        "the last observation is event 5: {token}"
    );
    command.stop().await;
}
