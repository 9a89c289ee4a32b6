//! Continuing the command's trace across the relay and the projector.
//!
//! An event carries the W3C `traceparent` of the command that recorded it (event metadata,
//! copied into the stream entry's `traceparent` field). A batch mixes events of many traces
//! and a span has one parent, so (see `docs/operations.md`, "Traces across the pipeline"):
//!
//! * per event, `relay.publish` and `projector.apply_event` (with its `read_model.commit`)
//!   are children of the command's span: they **continue** its trace, so one trace runs
//!   from the HTTP command to the read-model commit;
//! * per batch, `projector.batch` (with the transaction's own `read_model.commit`) is a
//!   root of its own that **links** to every event's command span (OpenTelemetry span
//!   links, the pattern for fan-in), and each `projector.apply_event` links back to it.

use opentelemetry::trace::TraceContextExt;
use service_kit::telemetry::{context_from_traceparent, set_parent_from_traceparent};
use tracing::field::Empty;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use event_store::StoredEvent;

use crate::stream::Entry;

/// `relay.publish` for one event, continuing the event's trace. Records `outcome` later.
pub fn relay_publish(env: &StoredEvent, shard: u32) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "relay.publish",
        otel.kind = "producer",
        shard,
        entry = %env.cursor,
        message_id = %env.row.aggregate_id,
        sequence = env.row.sequence,
        event_type = %env.row.event_type,
        correlation_id = Empty,
        trace_id = Empty,
        outcome = Empty,
    );
    continue_trace(&span, env);
    span
}

/// The span of one projected batch: its own root, linked to every event's trace.
pub fn batch(version: i32, shard: u32, entries: &[Entry]) -> Span {
    let span = tracing::info_span!(
        "projector.batch",
        otel.kind = "consumer",
        version,
        shard,
        entries = entries.len(),
        applied = Empty,
        outcome = Empty,
    );
    if !span.is_disabled() {
        for entry in entries {
            if let Some(tp) = entry.event.traceparent() {
                let cx = context_from_traceparent(&tp, None);
                span.add_link(cx.span().span_context().clone());
            }
        }
    }
    span
}

/// `projector.apply_event` for one event of the batch `batch`: continues the event's trace
/// and links to the batch. Records `outcome` later.
pub fn apply_event(env: &StoredEvent, version: i32, shard: u32, batch: &Span) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "projector.apply_event",
        otel.kind = "consumer",
        version,
        shard,
        entry = %env.cursor,
        message_id = %env.row.aggregate_id,
        sequence = env.row.sequence,
        event_type = %env.row.event_type,
        correlation_id = Empty,
        trace_id = Empty,
        outcome = Empty,
    );
    if !span.is_disabled() {
        continue_trace(&span, env);
        let batch_cx = batch.context();
        let linked = batch_cx.span().span_context().clone();
        span.add_link(linked);
    }
    span
}

/// `read_model.commit` under `parent` (an event's span or the batch's).
pub fn commit(parent: &Span) -> Span {
    tracing::info_span!(parent: parent, "read_model.commit")
}

/// Parents `span` on the event's `traceparent` and records the ids a log search or a
/// tracing backend finds it by: `correlation_id` and `trace_id` (as on the request span).
fn continue_trace(span: &Span, env: &StoredEvent) {
    if span.is_disabled() {
        return;
    }
    let meta: serde_json::Value = serde_json::from_str(&env.row.metadata).unwrap_or_default();
    if let Some(correlation_id) = meta.get("correlation_id").and_then(|v| v.as_str()) {
        span.record("correlation_id", correlation_id);
    }
    if let Some(tp) = meta.get("traceparent").and_then(|v| v.as_str()) {
        if set_parent_from_traceparent(span, tp) {
            if let Some(trace_id) = tp.split('-').nth(1) {
                span.record("trace_id", trace_id);
            }
        }
    }
}
