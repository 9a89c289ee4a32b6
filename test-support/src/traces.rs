//! Spans in memory, for tests that follow one trace across services in one process (e.g. a
//! command and its projection): [`init_in_memory_tracing`] installs the global subscriber
//! with an SDK tracer provider whose exporter keeps finished spans in memory.
//!
//! The subscriber is global to a process: put such a test in a test binary of its own.

pub use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

use service_kit::Settings;

/// Installs tracing with an in-memory exporter (spans are exported as each ends) and
/// returns the exporter; `get_finished_spans()` reads them. Logs go to standard error.
/// Returns `None` when a subscriber was already installed in this process.
pub fn init_in_memory_tracing(
    service: &'static str,
    settings: &Settings,
) -> Option<InMemorySpanExporter> {
    if tracing::dispatcher::has_been_set() {
        return None;
    }
    let exporter = InMemorySpanExporter::default();
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    service_kit::telemetry::init_with_provider(service, settings, std::io::stderr, provider);
    Some(exporter)
}

/// The spans of trace `trace_id` (32 hex digits) among `spans`.
pub fn of_trace<'a>(spans: &'a [SpanData], trace_id: &str) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.span_context.trace_id().to_string() == trace_id)
        .collect()
}
