//! The HTTP edge every Herald service puts around its routes: one error shape for every
//! answer that is not a success, whoever produced it.
//!
//! Handlers answer errors as [`ApiError`]s already. What is left are answers the framework
//! makes on its own: 404 for an unknown route, 405 for a wrong method, 413 from a body
//! limit, a timed-out request, a panicking handler. [`finish`] wraps a router so that:
//!
//! * unknown routes are a JSON 404 and a wrong method a JSON 405 (keeping `Allow`);
//! * URIs over [`MAX_URI_BYTES`] are 414 and header sections over [`MAX_HEADER_BYTES`] or
//!   [`MAX_HEADERS`] headers are 431, in JSON, before any handler runs;
//! * a request taking longer than the configured bound is cut off with a JSON 503
//!   `timeout` (the client may retry; nothing half-done stays: commands are atomic);
//! * a panic in a handler becomes a JSON 500 for that request alone, is counted in
//!   [`HTTP_PANICS_TOTAL`] and logged inside the request's span (with its correlation id);
//! * any other error answer that is not JSON gets the JSON shape, its code derived from the
//!   status ([`code_for`]).
//!
//! What the edge cannot reach: hyper itself refuses a request line or header section it
//! cannot buffer (a URI over 64 KiB, headers over about 400 KiB or more than 100 of them)
//! with a bare 414 or 431 and closes the connection before any Herald code runs.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use prometheus::IntCounter;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower_http::catch_panic::{CatchPanicLayer, ResponseForPanic};
use tower_http::timeout::TimeoutLayer;

use crate::http_error::ApiError;
use crate::Metrics;

/// Panics caught in HTTP handlers (each answered 500).
pub const HTTP_PANICS_TOTAL: &str = "herald_http_panics_total";
/// Longest request URI (path and query) a service reads.
pub const MAX_URI_BYTES: usize = 8 * 1024;
/// Largest header section (names and values) a service reads.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most headers one request may carry.
pub const MAX_HEADERS: usize = 64;
/// Longest plain-text framework message carried over into the JSON error's message.
const MAX_CARRIED_MESSAGE: usize = 500;

/// How long a request waits for a free slot ([`Slots`]) before it is told to come back.
pub const SLOT_WAIT: Duration = Duration::from_secs(5);

/// A bounded number of requests of one kind at a time. Beyond it a request waits up to
/// [`SLOT_WAIT`], then answers 503 `busy` with `Retry-After`: a bound on what concurrent
/// requests can hold (memory, connections) that never queues without limit.
#[derive(Clone, Debug)]
pub struct Slots {
    what: &'static str,
    semaphore: Arc<Semaphore>,
}

impl Slots {
    /// `n` slots for requests of kind `what` (named in the 503's message).
    pub fn new(what: &'static str, n: usize) -> Self {
        Self {
            what,
            semaphore: Arc::new(Semaphore::new(n.max(1))),
        }
    }

    /// A slot, held until the permit is dropped.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        match tokio::time::timeout(SLOT_WAIT, self.semaphore.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("every slot for {} is taken; retry shortly", self.what),
            )
            .with_retry_after(1)),
        }
    }

    /// Middleware holding a slot for the whole request (for `route_layer`).
    pub async fn hold(
        axum::extract::State(slots): axum::extract::State<Slots>,
        request: Request,
        next: Next,
    ) -> Response {
        match slots.acquire().await {
            Ok(_permit) => next.run(request).await,
            Err(e) => e.into_response(),
        }
    }
}

/// Wraps `router` in the edge (see the module header): fallbacks, limits, the bound on
/// requests in flight (`settings.max_in_flight`), the request timeout, panic catching and
/// error shaping, and the per-request context ([`crate::request_context::layer`])
/// outermost so every log line of a request carries its ids. Call it once, after every
/// route is merged and before [`crate::metrics::install`].
pub fn finish(router: Router, metrics: &Metrics, settings: &crate::Settings) -> Router {
    let panics = metrics.counter(
        HTTP_PANICS_TOTAL,
        "Panics caught in HTTP handlers; each was answered 500 to its own request.",
    );
    let in_flight = Slots::new("requests in flight", settings.max_in_flight);
    router
        .fallback(crate::http_error::route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(CatchPanicLayer::custom(PanicToJson { panics }))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            settings.request_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(in_flight, Slots::hold))
        .layer(axum::middleware::from_fn(limits))
        .layer(axum::middleware::from_fn(shape_errors))
        .layer(axum::middleware::from_fn(crate::request_context::layer))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not accept that method (see the Allow header)",
    )
}

/// Refuses oversized URIs and header sections with JSON errors.
async fn limits(request: Request, next: Next) -> Response {
    let uri_len = request
        .uri()
        .path_and_query()
        .map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request URI is {uri_len} bytes; at most {MAX_URI_BYTES} are read"),
        )
        .into_response();
    }
    let headers = request.headers();
    let count = headers.len();
    let bytes: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if count > MAX_HEADERS || bytes > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {count} headers of {bytes} bytes; at most {MAX_HEADERS} \
                 headers and {MAX_HEADER_BYTES} bytes are read"
            ),
        )
        .into_response();
    }
    next.run(request).await
}

/// The error code of a status, for error answers the framework made itself.
pub fn code_for(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::NOT_ACCEPTABLE => "not_acceptable",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::URI_TOO_LONG => "uri_too_long",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "too_many_requests",
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "headers_too_large",
        StatusCode::SERVICE_UNAVAILABLE => "timeout",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

/// Gives every non-JSON error answer the JSON error shape, keeping its status and headers
/// (`Allow`, `Retry-After`, ...), and carrying a short plain-text message over.
async fn shape_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match axum::body::to_bytes(body, MAX_CARRIED_MESSAGE * 4).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_string(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() || text.len() > MAX_CARRIED_MESSAGE {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let shaped = ApiError::new(status, code_for(status), message).into_response();
    let (shaped_parts, shaped_body) = shaped.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in shaped_parts.headers.iter() {
        parts.headers.insert(name, value.clone());
    }
    if status == StatusCode::SERVICE_UNAVAILABLE && !parts.headers.contains_key("retry-after") {
        parts
            .headers
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    Response::from_parts(parts, shaped_body)
}

/// Turns a caught panic into the JSON 500 of its request.
#[derive(Clone)]
struct PanicToJson {
    panics: IntCounter,
}

impl ResponseForPanic for PanicToJson {
    type ResponseBody = Body;

    fn response_for_panic(&mut self, err: Box<dyn Any + Send + 'static>) -> Response<Body> {
        let detail = err
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".to_string());
        self.panics.inc();
        // Called while the request's span is entered: the log line carries its ids.
        tracing::error!(panic = %detail, "handler panicked; answered 500");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        )
        .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;

    async fn call(router: Router, request: Request) -> (StatusCode, HeaderValue, String) {
        use tower::ServiceExt;
        let response = router.oneshot(request).await.unwrap();
        let status = response.status();
        let ct = response
            .headers()
            .get(header::CONTENT_TYPE)
            .cloned()
            .unwrap_or(HeaderValue::from_static(""));
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, String::from_utf8(body.to_vec()).unwrap())
    }

    fn app(metrics: &Metrics) -> Router {
        let mut settings = crate::Settings::from_lookup(|_| None).unwrap();
        settings.request_timeout = Duration::from_millis(100);
        settings.max_in_flight = 8;
        let router = Router::new()
            .route("/ok", get(|| async { "ok" }))
            .route(
                "/panic",
                get(|| async {
                    if true {
                        panic!("boom");
                    }
                    "never"
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route(
                "/plain",
                get(|| async { (StatusCode::BAD_REQUEST, "plain words") }),
            );
        finish(router, metrics, &settings)
    }

    fn get_req(uri: &str) -> Request {
        Request::builder().uri(uri).body(Body::empty()).unwrap()
    }

    #[tokio::test]
    async fn framework_errors_get_the_json_shape() {
        let router = app(&Metrics::new("test"));
        let (s, ct, body) = call(router.clone(), get_req("/nowhere")).await;
        assert_eq!(
            (s.as_u16(), ct.to_str().unwrap()),
            (404, "application/json")
        );
        assert!(body.contains("route_not_found"), "{body}");

        let post = Request::builder()
            .method("POST")
            .uri("/ok")
            .body(Body::empty())
            .unwrap();
        let (s, _, body) = call(router.clone(), post).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(body.contains("method_not_allowed"), "{body}");

        let (s, _, body) = call(router.clone(), get_req("/plain")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            body.contains(r#""code":"bad_request""#) && body.contains("plain words"),
            "{body}"
        );

        let (s, _, body) = call(router, get_req("/slow")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains(r#""code":"timeout""#), "{body}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_set_of_slots_answers_busy_after_the_wait() {
        let slots = Slots::new("tests", 1);
        let held = slots.acquire().await.unwrap();
        let refused = slots.acquire().await.unwrap_err();
        assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(refused.code, "busy");
        assert_eq!(refused.retry_after, Some(1));
        drop(held);
        assert!(slots.acquire().await.is_ok());
    }

    #[tokio::test]
    async fn a_panic_is_a_json_500_for_its_request_and_is_counted() {
        let m = Metrics::new("test");
        let router = app(&m);
        let (s, _, body) = call(router.clone(), get_req("/panic")).await;
        assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(body.contains(r#""code":"internal""#), "{body}");
        let (s, _, _) = call(router, get_req("/ok")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(
            m.encode()
                .contains(&format!("{HTTP_PANICS_TOTAL}{{service=\"test\"}} 1")),
            "{}",
            m.encode()
        );
    }

    #[tokio::test]
    async fn oversized_uris_and_headers_are_json_414_and_431() {
        let router = app(&Metrics::new("test"));
        let long = format!("/ok?x={}", "a".repeat(MAX_URI_BYTES));
        let (s, _, body) = call(router.clone(), get_req(&long)).await;
        assert_eq!(s, StatusCode::URI_TOO_LONG);
        assert!(body.contains("uri_too_long"), "{body}");

        let mut many = Request::builder().uri("/ok");
        for i in 0..=MAX_HEADERS {
            many = many.header(format!("x-h{i}"), "v");
        }
        let (s, _, body) = call(router.clone(), many.body(Body::empty()).unwrap()).await;
        assert_eq!(s, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert!(body.contains("headers_too_large"), "{body}");

        let big = Request::builder()
            .uri("/ok")
            .header("x-big", "b".repeat(MAX_HEADER_BYTES))
            .body(Body::empty())
            .unwrap();
        let (s, _, _) = call(router, big).await;
        assert_eq!(s, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
