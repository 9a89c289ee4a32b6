//! One command's spans, kept in memory: the request span is a root when no `traceparent`
//! came in, every span of the command shares its trace id, and the `traceparent` stored in
//! event metadata is the request span's own context. Also exercises the in-memory tracing
//! helper other crates' trace tests use (`test_support::traces`).
//!
//! The tracing subscriber is global to a process, so this file is its own test binary.

mod support;

use support::{email, TestApp};

#[tokio::test]
async fn a_command_without_traceparent_starts_one_trace_stored_in_its_event() {
    let mut exporter = None;
    let t = TestApp::spawn_with(|s| {
        exporter = test_support::traces::init_in_memory_tracing(command_service::SERVICE, s);
    })
    .await;
    let exporter = exporter.expect("the first subscriber of this process");
    // With a key the stream is loaded (a keyless submit has no stream to load).
    let answer: serde_json::Value = t
        .post("/v1/messages")
        .header("idempotency-key", "trace-order-1")
        .json(&email())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = answer["message_id"].as_str().unwrap();
    let stored = t.stream(id).await[0].3["traceparent"]
        .as_str()
        .unwrap()
        .to_string();
    let parts: Vec<&str> = stored.split('-').collect();
    assert_eq!(parts.len(), 4, "{stored}");
    let (trace_id, span_id) = (parts[1], parts[2]);

    let spans = exporter.get_finished_spans().unwrap();
    let trace = test_support::traces::of_trace(&spans, trace_id);
    let names: Vec<&str> = trace.iter().map(|s| s.name.as_ref()).collect();
    for want in [
        "POST /v1/messages",
        "command.submit",
        "aggregate.load",
        "event_store.commit",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let request = trace
        .iter()
        .find(|s| s.name == "POST /v1/messages")
        .unwrap();
    assert_eq!(request.span_context.span_id().to_string(), span_id);
    assert_eq!(
        request.parent_span_id,
        opentelemetry::trace::SpanId::INVALID,
        "a root span: no traceparent came in"
    );
    t.app.stop().await;
}
