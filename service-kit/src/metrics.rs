//! Prometheus metrics: one registry per app, the HTTP metrics every service shares, the
//! `/metrics` endpoint, and the Pushgateway pusher.
//!
//! Each app owns its own [`Metrics`] (a `prometheus::Registry` that is not the process-wide
//! default), so several apps in one test process never see each other's counts. Every
//! metric carries a constant `service` label. A service creates its [`Metrics`] first,
//! registers its own metrics on it ([`Metrics::counter_vec`] and friends, or
//! [`Metrics::registry`] directly), builds its router and [`App`], then calls [`install`]:
//! that adds `/metrics`, the HTTP middleware and, when `HERALD_PUSHGATEWAY_URL` is set, the
//! pusher.
//!
//! The pusher PUTs the text exposition of the registry to
//! `{pushgateway}/metrics/job/{service}/instance/{instance_id}` every
//! `HERALD_PUSH_INTERVAL_MS` with the async `reqwest` client (the `prometheus` crate's own
//! `push` is blocking and would stall or panic the runtime), and DELETEs that group on clean
//! shutdown. Failures are logged, never fatal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio_util::sync::CancellationToken;

use crate::{App, Settings};

/// Name of the HTTP request counter.
pub const HTTP_REQUESTS_TOTAL: &str = "herald_http_requests_total";
/// Name of the HTTP latency histogram.
pub const HTTP_REQUEST_DURATION_SECONDS: &str = "herald_http_request_duration_seconds";
/// The `route` label of requests no route matched (never the raw path: unbounded).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// Bound of one push or delete request to the Pushgateway.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Latency buckets (seconds) for request and command histograms: 1 ms to 10 s.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// One app's metrics registry and the HTTP metrics on it. Cheap to clone (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

struct Inner {
    service: &'static str,
    registry: Registry,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("service", &self.inner.service)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A new registry for `service`, with the HTTP metrics registered. Every metric on it
    /// carries the constant label `service="<service>"`.
    pub fn new(service: &'static str) -> Self {
        let labels = std::collections::HashMap::from([("service".to_string(), service.into())]);
        let registry =
            Registry::new_custom(None, Some(labels)).expect("a constant service label is valid");
        let http_requests = IntCounterVec::new(
            Opts::new(
                HTTP_REQUESTS_TOTAL,
                "HTTP requests answered, by route template, method and status code.",
            ),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let http_duration = HistogramVec::new(
            HistogramOpts::new(
                HTTP_REQUEST_DURATION_SECONDS,
                "Time from receiving an HTTP request to its answer, by route template and method.",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route", "method"],
        )
        .expect("valid metric");
        registry
            .register(Box::new(http_requests.clone()))
            .expect("registered once");
        registry
            .register(Box::new(http_duration.clone()))
            .expect("registered once");
        Self {
            inner: Arc::new(Inner {
                service,
                registry,
                http_requests,
                http_duration,
            }),
        }
    }

    /// The service these metrics belong to.
    pub fn service(&self) -> &'static str {
        self.inner.service
    }

    /// The registry, for metric types the helpers below do not cover.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    fn register<M: prometheus::core::Collector + Clone + 'static>(&self, metric: M) -> M {
        // A duplicate or malformed name is a defect in the service's start-up code, found by
        // any test that builds the app.
        self.inner
            .registry
            .register(Box::new(metric.clone()))
            .unwrap_or_else(|e| panic!("registering a {} metric: {e}", self.inner.service));
        metric
    }

    /// Registers a counter without labels.
    pub fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("valid metric name"))
    }

    /// Registers a counter with `labels`.
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.register(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// Registers an integer gauge without labels.
    pub fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric name"))
    }

    /// Registers an integer gauge with `labels`.
    pub fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// Registers a float gauge without labels (e.g. an age in seconds).
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.register(Gauge::new(name, help).expect("valid metric name"))
    }

    /// Registers a float gauge with `labels`.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
        self.register(GaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// Registers a histogram without labels; `buckets` empty means [`LATENCY_BUCKETS`].
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Histogram {
        self.register(
            Histogram::with_opts(
                HistogramOpts::new(name, help).buckets(buckets_or_default(buckets)),
            )
            .expect("valid metric"),
        )
    }

    /// Registers a histogram with `labels`; `buckets` empty means [`LATENCY_BUCKETS`].
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> HistogramVec {
        self.register(
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets_or_default(buckets)),
                labels,
            )
            .expect("valid metric"),
        )
    }

    /// The registry in the Prometheus text exposition format (version 0.0.4).
    pub fn encode(&self) -> String {
        encode(&self.inner.registry)
    }

    /// A router serving `GET /metrics` for scraping.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/metrics", get(serve_metrics))
            .with_state(self.clone())
    }

    fn observe_http(&self, route: &str, method: &str, status: StatusCode, took: Duration) {
        self.inner
            .http_requests
            .with_label_values(&[route, method, status.as_str()])
            .inc();
        self.inner
            .http_duration
            .with_label_values(&[route, method])
            .observe(took.as_secs_f64());
    }
}

fn buckets_or_default(buckets: &[f64]) -> Vec<f64> {
    if buckets.is_empty() {
        LATENCY_BUCKETS.to_vec()
    } else {
        buckets.to_vec()
    }
}

async fn serve_metrics(State(metrics): State<Metrics>) -> Response {
    (
        [(header::CONTENT_TYPE, TextEncoder::new().format_type())],
        metrics.encode(),
    )
        .into_response()
}

/// HTTP middleware recording [`HTTP_REQUESTS_TOTAL`] and [`HTTP_REQUEST_DURATION_SECONDS`].
/// The route label is the matched route template (`/v1/messages/{id}/cancel`), or
/// [`UNMATCHED_ROUTE`]; the method is one of the standard ones or `other`.
pub async fn track(State(metrics): State<Metrics>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE.to_string(), |p| p.as_str().to_string());
    let method = method_label(request.method());
    let response = next.run(request).await;
    metrics.observe_http(&route, method, response.status(), started.elapsed());
    response
}

/// Methods outside the standard set would let a client mint label values.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Wires metrics into a built app: serves `/metrics`, records every request's metrics
/// (this wraps the router as it is now, so call it after every route is added), and starts
/// the Pushgateway pusher when `settings.pushgateway_url` is set. Every service's `build`
/// calls this once.
pub fn install(app: &mut App, metrics: &Metrics, settings: &Settings) {
    let m = metrics.clone();
    app.map_router(move |router| {
        router
            .merge(m.router())
            .layer(axum::middleware::from_fn_with_state(m.clone(), track))
    });
    if let Some(url) = &settings.pushgateway_url {
        let pusher = Pusher::new(
            metrics.clone(),
            url,
            metrics.service(),
            &settings.instance_id,
        );
        let stop = app.stop_token();
        let interval = settings.push_interval;
        app.spawn_background(pusher.run(interval, stop));
    } else {
        tracing::debug!(service = metrics.service(), "Pushgateway pushing is off");
    }
}

/// `registry` in the Prometheus text exposition format (version 0.0.4).
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding to a Vec only fails on metric families that cannot be rendered, which
    // registration already refuses; an empty answer is the safe fallback.
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %e, "encoding metrics failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Pushes one registry to one Pushgateway group.
#[derive(Clone)]
pub struct Pusher {
    registry: Registry,
    client: reqwest::Client,
    url: String,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher").field("url", &self.url).finish()
    }
}

impl Pusher {
    /// A pusher of `metrics` to the group `job`/`instance` of the Pushgateway at `base`.
    pub fn new(metrics: Metrics, base: &str, job: &str, instance: &str) -> Self {
        Self::of_registry(metrics.registry().clone(), base, job, instance)
    }

    /// A pusher of any registry (a short-lived job's own, like the migration run's).
    pub fn of_registry(registry: Registry, base: &str, job: &str, instance: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            registry,
            client,
            url: group_url(base, job, instance),
        }
    }

    /// The group's URL (`{base}/metrics/job/{job}/instance/{instance}`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// PUTs the whole registry, replacing the group's previous metrics.
    pub async fn push(&self) -> Result<(), PushError> {
        let body = encode(&self.registry);
        let response = self
            .client
            .put(&self.url)
            .header(header::CONTENT_TYPE, TextEncoder::new().format_type())
            .body(body)
            .send()
            .await?;
        answer(response).await
    }

    /// DELETEs the group.
    pub async fn delete(&self) -> Result<(), PushError> {
        let response = self.client.delete(&self.url).send().await?;
        answer(response).await
    }

    /// Pushes every `interval` until `stop` is cancelled, then deletes the group. A push in
    /// flight when `stop` fires completes first (bounded by [`PUSH_TIMEOUT`]), so the delete
    /// is the last word and the group does not come back.
    pub async fn run(self, interval: Duration, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            match self.push().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(url = %self.url, "pushing metrics works again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(url = %self.url, %error, "pushing metrics failed; will retry");
                }
                Err(error) => tracing::debug!(url = %self.url, %error, "pushing metrics failed"),
            }
        }
        match self.delete().await {
            Ok(()) => tracing::debug!(url = %self.url, "deleted the Pushgateway group"),
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "deleting the Pushgateway group failed")
            }
        }
    }
}

/// Why a push or delete did not reach the Pushgateway's store.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// No answer: connection refused, reset, or [`PUSH_TIMEOUT`] passed.
    #[error("Pushgateway unreachable: {0}")]
    Unreachable(#[from] reqwest::Error),
    /// An answer that refuses the group, e.g. 400 for metrics that clash with another group.
    #[error("Pushgateway answered {status}: {body}")]
    Refused {
        /// The HTTP status.
        status: reqwest::StatusCode,
        /// The Pushgateway's explanation, trimmed.
        body: String,
    },
}

async fn answer(response: reqwest::Response) -> Result<(), PushError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default().trim().to_owned();
    Err(PushError::Refused { status, body })
}

/// `{base}/metrics/job/{job}/instance/{instance}`, each value in the Pushgateway's
/// `@base64` form when it holds anything but unreserved URL characters (a `/` would
/// otherwise split the grouping key).
pub fn group_url(base: &str, job: &str, instance: &str) -> String {
    format!(
        "{}/metrics/{}/{}",
        base.trim_end_matches('/'),
        key_segment("job", job),
        key_segment("instance", instance)
    )
}

fn key_segment(label: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    if plain {
        format!("{label}/{value}")
    } else {
        // An empty value is `=` in this form, which the Pushgateway accepts.
        let encoded = base64_url(value.as_bytes());
        let encoded = if encoded.is_empty() {
            "=".to_string()
        } else {
            encoded
        };
        format!("{label}@base64/{encoded}")
    }
}

/// Base64 with the URL-safe alphabet, padded (RFC 4648 §5).
fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_urls_encode_unsafe_values() {
        assert_eq!(
            group_url("http://pg:9091/", "command-service", "host-1"),
            "http://pg:9091/metrics/job/command-service/instance/host-1"
        );
        assert_eq!(
            group_url("http://pg:9091", "projector", "a/b"),
            "http://pg:9091/metrics/job/projector/instance@base64/YS9i"
        );
        assert_eq!(base64_url(b"f"), "Zg==");
        assert_eq!(base64_url(b"fo"), "Zm8=");
        assert_eq!(base64_url(b"foo"), "Zm9v");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8=");
        assert_eq!(key_segment("instance", ""), "instance@base64/=");
    }

    #[test]
    fn registries_are_per_app_and_carry_the_service_label() {
        let a = Metrics::new("a");
        let b = Metrics::new("b");
        a.observe_http("/x", "GET", StatusCode::OK, Duration::from_millis(3));
        let text = a.encode();
        assert!(
            text.contains(
                r#"herald_http_requests_total{method="GET",route="/x",status="200",service="a"} 1"#
            ),
            "{text}"
        );
        assert!(!b.encode().contains("route=\"/x\""));
        let c = a.counter_vec("herald_test_total", "A test counter.", &["kind"]);
        c.with_label_values(&["k"]).inc_by(2);
        assert!(a
            .encode()
            .contains(r#"herald_test_total{kind="k",service="a"} 2"#),);
    }

    #[test]
    fn methods_are_a_closed_set() {
        assert_eq!(method_label(&Method::POST), "POST");
        assert_eq!(method_label(&Method::from_bytes(b"BREW").unwrap()), "other");
    }
}
