//! Per-request identity: the correlation id (`X-Request-Id`, taken from the client or
//! generated, and echoed on the answer) and the W3C `traceparent` the request belongs to.
//! Both travel into event metadata, so a message can be followed from the HTTP call to the
//! read model.

use axum::extract::{FromRequestParts, MatchedPath, Request};
use axum::http::request::Parts;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

/// Header carrying the correlation id.
pub const REQUEST_ID: &str = "x-request-id";

/// Identity of the request being served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestContext {
    /// Correlation id: the client's `X-Request-Id` when usable, else a new UUID.
    pub correlation_id: String,
    /// W3C trace context of this request (`00-<trace>-<span>-<flags>`).
    pub traceparent: String,
}

/// Middleware: opens the request's span, settles its [`RequestContext`] (stored as an
/// extension) and echoes `X-Request-Id` on the answer.
///
/// The span is a child of the incoming W3C `traceparent` (extracted with the TraceContext
/// propagator) and the stored `traceparent` is the span's own OpenTelemetry context, so what
/// lands in event metadata names the real span of the command. The span records
/// `correlation_id` and `trace_id`, which JSON logs carry for every line inside it. Without
/// an OpenTelemetry layer (a process that never ran [`crate::telemetry::init`]), the ids are
/// generated here instead: a child of a valid incoming `traceparent`, else a new root.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let correlation_id = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| usable_request_id(v))
        .map(str::to_string)
        .unwrap_or_else(|| Uuid::new_v4().to_string());
    let incoming = request
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(crate::metrics::UNMATCHED_ROUTE, |p| p.as_str())
        .to_string();
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        method = %method,
        route = %route,
        correlation_id = %correlation_id,
        trace_id = tracing::field::Empty,
    );
    let parent = TraceContextPropagator::new().extract(&Headers(request.headers()));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let traceparent = crate::telemetry::traceparent_of(&span).unwrap_or_else(|| {
        incoming
            .as_deref()
            .and_then(child_of)
            .unwrap_or_else(new_traceparent)
    });
    if let Some(trace_id) = traceparent.split('-').nth(1) {
        span.record("trace_id", trace_id);
    }
    let context = RequestContext {
        correlation_id: correlation_id.clone(),
        traceparent,
    };
    request.extensions_mut().insert(context);
    let mut response = next.run(request).instrument(span).await;
    if let Ok(value) = HeaderValue::from_str(&correlation_id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    response
}

/// Reads propagation headers straight from the request.
struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestContext {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<RequestContext>()
            .cloned()
            .unwrap_or_else(|| RequestContext {
                correlation_id: Uuid::new_v4().to_string(),
                traceparent: new_traceparent(),
            }))
    }
}

/// Client ids end up in logs and metadata: keep them short and printable.
fn usable_request_id(v: &str) -> bool {
    !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic())
}

/// A new root trace context.
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", new_span_id())
}

fn new_span_id() -> String {
    let bits = Uuid::new_v4().as_u128() as u64;
    format!("{:016x}", bits.max(1))
}

/// A child context of a valid incoming `traceparent` (same trace, new span), or `None`
/// when the header is not a valid version-00 trace context.
pub fn child_of(parent: &str) -> Option<String> {
    let parts: Vec<&str> = parent.trim().split('-').collect();
    let [version, trace, span, flags] = parts.as_slice() else {
        return None;
    };
    let hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    let valid = *version == "00"
        && hex(trace, 32)
        && hex(span, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && span.bytes().any(|b| b != b'0');
    valid.then(|| format!("00-{trace}-{}-{flags}", new_span_id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_children_keep_the_trace() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let child = child_of(parent).unwrap();
        assert!(child.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(child.ends_with("-01"));
        assert_ne!(child, parent);
        assert!(
            child_of(&child).is_some(),
            "a generated child is itself valid"
        );
        assert!(child_of(&new_traceparent()).is_some());
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-abc-def-01",
        ] {
            assert_eq!(child_of(bad), None, "{bad}");
        }
    }

    #[test]
    fn request_ids_are_bounded_and_printable() {
        assert!(usable_request_id("req-123"));
        assert!(!usable_request_id(""));
        assert!(!usable_request_id("has space"));
        assert!(!usable_request_id(&"x".repeat(129)));
    }
}
