//! Logging and tracing set-up: JSON lines for machines, a readable format on a terminal,
//! and OpenTelemetry spans.
//!
//! Every `tracing` span is also an OpenTelemetry span (through `tracing-opentelemetry`), so
//! spans have real W3C trace and span ids whether or not anything is exported:
//!
//! * with `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are exported over OTLP/gRPC by a batch
//!   processor running on the tokio runtime (resource `service.name` = the service,
//!   `service.instance.id` = `HERALD_INSTANCE_ID`);
//! * without it, the SDK tracer provider has no exporter: ids are still generated (and end
//!   up in logs and event metadata) but nothing leaves the process.
//!
//! The propagator is W3C TraceContext. [`shutdown`] flushes the exporter on clean shutdown.
//!
//! Processes that never call [`init`] (most tests) have no OpenTelemetry layer; the request
//! middleware then falls back to generating W3C ids itself (see
//! [`crate::request_context`]).

use std::io::IsTerminal;
use std::sync::{Mutex, OnceLock};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::Settings;

/// The tracer provider installed by [`init`], kept for [`flush`] and [`shutdown`].
static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();
static INIT: Mutex<bool> = Mutex::new(false);

/// Installs the global subscriber (logs + OpenTelemetry) for `service`. Safe to call more
/// than once (later calls do nothing), which matters when tests start several apps in one
/// process. Call it inside the tokio runtime: the OTLP exporter and its batch processor
/// live there.
pub fn init(service: &'static str, settings: &Settings) {
    init_with_writer(service, settings, std::io::stderr);
}

/// [`init`] with logs written to `writer` instead of standard error (tests read them back).
/// The format is still chosen by `settings.log_format`; `auto` means JSON here unless
/// standard error is a terminal.
pub fn init_with_writer<W>(service: &'static str, settings: &Settings, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if already_initialised() {
        return;
    }
    let provider = tracer_provider(service, settings);
    install(service, settings, writer, provider);
}

/// [`init_with_writer`] with a tracer provider of the caller's: tests pass one with an
/// in-memory exporter (see `test_support::traces::init_in_memory_tracing`).
pub fn init_with_provider<W>(
    service: &'static str,
    settings: &Settings,
    writer: W,
    provider: SdkTracerProvider,
) where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    if already_initialised() {
        std::mem::forget(provider);
        return;
    }
    install(service, settings, writer, provider);
}

fn already_initialised() -> bool {
    let done = INIT.lock().unwrap_or_else(|e| e.into_inner());
    *done || tracing::dispatcher::has_been_set()
}

fn install<W>(service: &'static str, settings: &Settings, writer: W, provider: SdkTracerProvider)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let mut done = INIT.lock().unwrap_or_else(|e| e.into_inner());
    if *done || tracing::dispatcher::has_been_set() {
        std::mem::forget(provider);
        return;
    }
    *done = true;
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let tracer = provider.tracer(service);
    // No span timings, and no OpenTelemetry context attached on every entry: Herald reads
    // a span's context through `OpenTelemetrySpanExt::context`, never the current one, and
    // a statistics answer enters its span once per row the database streams, where the
    // attach and its guard were a tenth of the query service's CPU.
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_tracked_inactivity(false)
        .with_context_activation(false);

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match settings.log_format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let result = if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    // The innermost span's fields, and every enclosing span's: the request
                    // span carries `correlation_id` and `trace_id`.
                    .with_current_span(true)
                    .with_span_list(true)
                    .with_writer(writer),
            )
            .try_init()
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(writer))
            .try_init()
    };
    match result {
        Ok(()) => {
            opentelemetry::global::set_tracer_provider(provider.clone());
            let _ = PROVIDER.set(provider);
        }
        // Someone else installed a subscriber in between: keep theirs. Dropping a provider
        // with a batch processor would block on its shutdown, so it is leaked instead.
        Err(_) => std::mem::forget(provider),
    }
}

fn tracer_provider(service: &'static str, settings: &Settings) -> SdkTracerProvider {
    let resource = Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new(
            "service.instance.id",
            settings.instance_id.clone(),
        ))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let Some(endpoint) = &settings.otlp_endpoint else {
        return builder.build();
    };
    match otlp_processor(endpoint) {
        Ok(processor) => builder.with_span_processor(processor).build(),
        Err(error) => {
            // Tracing export is an aid, not a dependency: serve without it.
            eprintln!("{service}: OTLP exporter to {endpoint} not started: {error}");
            builder.build()
        }
    }
}

fn otlp_processor(
    endpoint: &str,
) -> Result<
    opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor<
        opentelemetry_sdk::runtime::Tokio,
    >,
    String,
> {
    use opentelemetry_otlp::WithExportConfig;
    if tokio::runtime::Handle::try_current().is_err() {
        return Err("not inside a tokio runtime".into());
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(
        opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor::builder(
            exporter,
            opentelemetry_sdk::runtime::Tokio,
        )
        .build(),
    )
}

/// Exports every finished span now (no-op without an exporter). The batch processor's
/// flush blocks until its task on the runtime has exported, so it runs on a blocking thread
/// while this future yields.
pub async fn flush() {
    if let Some(provider) = PROVIDER.get().cloned() {
        let outcome = tokio::task::spawn_blocking(move || provider.force_flush()).await;
        if let Ok(Err(e)) = outcome {
            tracing::warn!(error = %e, "flushing spans failed");
        }
    }
}

/// Flushes and stops the exporter; call once on clean shutdown, after the app stopped.
pub async fn shutdown() {
    if let Some(provider) = PROVIDER.get().cloned() {
        let outcome = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = outcome {
            eprintln!("shutting the tracer provider down: {e}");
        }
    }
}

/// The W3C `traceparent` of `span`'s OpenTelemetry context, when it has a valid one (it
/// does once [`init`] ran, and the span is enabled).
pub fn traceparent_of(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let otel = cx.span();
    let sc = otel.span_context();
    sc.is_valid().then(|| {
        format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        )
    })
}

/// The OpenTelemetry context a W3C `traceparent` (and optional `tracestate`) names, to
/// parent a span on (e.g. the projector continuing the command's trace from event metadata).
/// An invalid header gives an empty context.
pub fn context_from_traceparent(
    traceparent: &str,
    tracestate: Option<&str>,
) -> opentelemetry::Context {
    let mut carrier = std::collections::HashMap::new();
    carrier.insert("traceparent".to_string(), traceparent.to_string());
    if let Some(state) = tracestate {
        carrier.insert("tracestate".to_string(), state.to_string());
    }
    TraceContextPropagator::new().extract(&carrier)
}

/// Makes `span` a child of the W3C `traceparent` (if valid). Returns whether it did: false
/// when the header is invalid or no OpenTelemetry layer is installed.
pub fn set_parent_from_traceparent(span: &tracing::Span, traceparent: &str) -> bool {
    let cx = context_from_traceparent(traceparent, None);
    if !cx.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(cx).is_ok()
}
