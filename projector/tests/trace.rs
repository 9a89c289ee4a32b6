//! One trace from the HTTP command to the read-model commit, with spans kept in memory:
//! the command service and the projector run in this process on one database and Redis
//! prefix; one command arrives with a known `traceparent`; once it is projected, the spans
//! of that trace id include the command's (`POST /v1/messages`, `command.submit`,
//! `aggregate.load`, `event_store.commit`) and the pipeline's (`relay.publish`,
//! `projector.apply_event`, `read_model.commit`), and the projector's spans descend from
//! the command's request span. The batch span, a root of its own, links to it.
//!
//! The tracing subscriber is global to a process, so this file is its own test binary.

use std::collections::HashMap;
use std::time::Duration;

use opentelemetry::trace::SpanId;
use serde_json::json;
use service_kit::auth::ApiKeys;
use test_support::events::eventually;
use test_support::traces::{init_in_memory_tracing, of_trace, SpanData};
use test_support::Harness;
use test_support::RunningApp;
use uuid::Uuid;

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The names of `span`'s ancestors within `spans`, nearest first, and the id of the first
/// parent not among them (the remote parent the chain starts from).
fn ancestry(spans: &[&SpanData], span: &SpanData) -> (Vec<String>, SpanId) {
    let by_id: HashMap<SpanId, &SpanData> = spans
        .iter()
        .map(|s| (s.span_context.span_id(), *s))
        .collect();
    let mut names = Vec::new();
    let mut parent = span.parent_span_id;
    while let Some(p) = by_id.get(&parent) {
        names.push(p.name.to_string());
        parent = p.parent_span_id;
    }
    (names, parent)
}

#[tokio::test]
async fn one_command_projected_is_one_trace_from_the_request_to_the_read_model_commit() {
    let h = Harness::new().await;
    let exporter = init_in_memory_tracing("herald-trace-test", &h.settings)
        .expect("the first subscriber of this process");
    let projector = h.start("trace-projector", h.tuning()).await;
    let command = RunningApp::spawn(
        command_service::build(h.settings.clone())
            .await
            .expect("command service starts"),
    );
    let (_, key) = ApiKeys::new(h.pool.clone())
        .create_tenant(&format!("tenant-{}", Uuid::new_v4()))
        .await
        .unwrap();

    let trace_id = Uuid::new_v4().simple().to_string();
    let incoming_span = "00f067aa0ba902b7";
    let response = reqwest::Client::new()
        .post(command.url("/v1/messages"))
        .bearer_auth(&key)
        .header("traceparent", format!("00-{trace_id}-{incoming_span}-01"))
        .header("idempotency-key", "trace-1")
        .header("x-request-id", "trace-test-42")
        .json(&json!({
            "channel": "email",
            "recipient": "ada@example.com",
            "provider": "ses",
            "content": {"type": "inline", "subject": "Hello", "body": "Welcome aboard"},
            "tags": ["welcome"]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let answer: serde_json::Value = response.json().await.unwrap();
    let message_id = answer["message_id"].as_str().unwrap().to_string();

    // Projected, and the projector's spans for it have ended.
    let spans = eventually(Duration::from_secs(30), "the projection's spans", || {
        let exporter = exporter.clone();
        let pool = h.pool.clone();
        let message_id = message_id.clone();
        async move {
            let projected: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM message_events WHERE message_id::text = $1",
            )
            .bind(&message_id)
            .fetch_one(&pool)
            .await
            .unwrap();
            let spans = exporter.get_finished_spans().unwrap();
            // Whichever trace it landed in: the assertions below say whether it is the right one.
            let done = projected == 1
                && spans.iter().any(|s| {
                    s.name == "projector.apply_event"
                        && attr(s, "message_id").as_deref() == Some(message_id.as_str())
                });
            done.then_some(spans)
        }
    })
    .await;

    let trace = of_trace(&spans, &trace_id);
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_ref()).collect();
    for want in [
        "POST /v1/messages",
        "command.submit",
        "aggregate.load",
        "event_store.commit",
        "relay.publish",
        "projector.apply_event",
        "read_model.commit",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let one = |name: &str| {
        let found: Vec<&&SpanData> = trace.iter().filter(|s| s.name == name).collect();
        assert_eq!(found.len(), 1, "one {name} in {names:?}");
        *found[0]
    };
    let request = one("POST /v1/messages");
    assert_eq!(
        request.parent_span_id.to_string(),
        incoming_span,
        "the request continues the incoming traceparent"
    );
    let request_id = request.span_context.span_id();

    // The stored traceparent names the request span: what the pipeline continues.
    let stored: serde_json::Value =
        sqlx::query_scalar("SELECT metadata FROM events WHERE aggregate_id = $1")
            .bind(&message_id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert_eq!(
        stored["traceparent"],
        format!("00-{trace_id}-{request_id}-01")
    );

    let publish = one("relay.publish");
    assert_eq!(publish.parent_span_id, request_id);
    assert_eq!(attr(publish, "outcome").as_deref(), Some("published"));
    let apply = one("projector.apply_event");
    assert_eq!(attr(apply, "outcome").as_deref(), Some("applied"));
    // Both are found by the request's correlation id and trace id, like the request span.
    for span in [publish, apply] {
        assert_eq!(
            attr(span, "correlation_id").as_deref(),
            Some("trace-test-42")
        );
        assert_eq!(attr(span, "trace_id"), Some(trace_id.clone()));
        assert_eq!(attr(span, "message_id"), Some(message_id.clone()));
    }
    let commit = one("read_model.commit");
    assert_eq!(commit.parent_span_id, apply.span_context.span_id());
    let (chain, root_parent) = ancestry(&trace, commit);
    assert_eq!(chain, ["projector.apply_event", "POST /v1/messages"]);
    assert_eq!(root_parent.to_string(), incoming_span);
    // The read model committed after the event store did.
    let event_commit = one("event_store.commit");
    assert!(commit.end_time >= event_commit.end_time);

    // The batch that applied it is a trace of its own, linked both ways.
    let batch_link = apply
        .links
        .iter()
        .find(|l| l.span_context.trace_id().to_string() != trace_id)
        .expect("apply_event links to its batch");
    let batch = spans
        .iter()
        .find(|s| s.span_context.span_id() == batch_link.span_context.span_id())
        .expect("the batch span ended");
    assert_eq!(batch.name, "projector.batch");
    assert_eq!(attr(batch, "outcome").as_deref(), Some("committed"));
    assert!(
        batch
            .links
            .iter()
            .any(|l| l.span_context.trace_id().to_string() == trace_id
                && l.span_context.span_id() == request_id),
        "the batch links to the command's request span: {:?}",
        batch.links
    );
    let batch_commit = spans.iter().find(|s| {
        s.name == "read_model.commit" && s.parent_span_id == batch.span_context.span_id()
    });
    assert!(batch_commit.is_some(), "the batch's own commit span");

    command.stop().await;
    projector.stop().await;
}
