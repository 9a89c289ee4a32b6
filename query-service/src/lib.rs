//! Herald's read side: message reads and time-bucketed statistics over TimescaleDB.
//!
//! * [`reads`]: one message, its timeline, a filtered paginated list.
//! * [`stats`]: `GET /v1/stats/messages` — parameters, local-calendar buckets, the rollup and
//!   raw paths, and the answer.
//!
//! What the read models hold, and how fresh they are, is the `read-model` crate's.

pub mod reads;
pub mod stats;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::routing::{get, post};
use axum::Router;
use prometheus::HistogramVec;
use service_kit::app::Document;
use service_kit::auth::{ApiKeys, HasApiKeys};
use service_kit::health::{Needs, Readiness};
use service_kit::http_error::ApiError;
use service_kit::{App, Connections, Metrics, Settings, StartupError};
use sqlx::PgPool;

/// The service's name: Postgres `application_name`, log field, Pushgateway job.
pub const SERVICE: &str = "query-service";

/// What every handler shares.
pub struct AppState {
    /// Read models.
    pub read: PgPool,
    /// The event store (for freshness: what the read model has not caught up with).
    pub store: PgPool,
    /// API keys.
    pub keys: ApiKeys,
    /// Stream shard count (`HERALD_STREAM_SHARDS`): lag is measured per shard.
    pub shards: u32,
    /// [`QUERY_DURATION_SECONDS`], by endpoint.
    pub query_duration: HistogramVec,
    /// Statistics answers computed and sent at once (`HERALD_QUERY_MAX_CONCURRENT_STATS`).
    pub stats_slots: service_kit::edge::Slots,
    /// Longest time an answer's body may take to reach the client.
    pub send_deadline: std::time::Duration,
    /// Every tenant's quota in this process.
    pub quotas: service_kit::quota::Quotas,
}

/// Name of the query latency histogram (label `endpoint`: one of [`ENDPOINTS`]).
pub const QUERY_DURATION_SECONDS: &str = "herald_query_duration_seconds";

/// The `endpoint` label values: `GET /v1/messages/{id}`, `GET /v1/messages`,
/// `GET /v1/messages/{id}/events`, and both statistics routes.
pub const ENDPOINTS: [&str; 4] = ["messages_get", "messages_list", "timeline", "stats"];

/// Registers [`QUERY_DURATION_SECONDS`] on `metrics`.
pub fn query_duration(metrics: &Metrics) -> HistogramVec {
    let histogram = metrics.histogram_vec(
        QUERY_DURATION_SECONDS,
        "Time to answer a query, by endpoint, including any wait for a consistency token.",
        &["endpoint"],
        &[],
    );
    // Every endpoint's series exists from the start (rates over 0, not over nothing).
    for endpoint in ENDPOINTS {
        histogram.with_label_values(&[endpoint]);
    }
    histogram
}

impl HasApiKeys for AppState {
    fn api_keys(&self) -> &ApiKeys {
        &self.keys
    }
}

impl AppState {
    /// Runs `query` and records its duration under `endpoint`, whatever the outcome.
    pub async fn timed<T>(&self, endpoint: &'static str, query: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let out = query.await;
        self.query_duration
            .with_label_values(&[endpoint])
            .observe(started.elapsed().as_secs_f64());
        out
    }

    /// Freshness of read-model `version` for `tenant`.
    pub async fn freshness(
        &self,
        version: i32,
        tenant: service_kit::auth::Tenant,
        consistent: Option<bool>,
    ) -> Result<read_model::Freshness, ApiError> {
        read_model::freshness::measure(
            &self.store,
            &self.read,
            version,
            tenant.id,
            self.shards,
            consistent,
        )
        .await
        .map_err(db_error)
    }
}

/// Database failures: an outage is 503 (retry), anything else a defect (500).
pub fn db_error(e: sqlx::Error) -> ApiError {
    if service_kit::connections::is_outage(&e) {
        ApiError::unavailable(&e)
    } else {
        ApiError::internal(&e)
    }
}

/// The query API router over `state`. Every route is admitted against its tenant's quota
/// first ([`service_kit::quota::admit`]).
pub fn router(state: Arc<AppState>) -> Router {
    let gate = service_kit::quota::Gate {
        keys: state.keys.clone(),
        quotas: state.quotas.clone(),
    };
    Router::new()
        .route("/v1/messages", get(reads::list_messages))
        .route("/v1/messages/{id}", get(reads::get_message))
        .route("/v1/messages/{id}/events", get(reads::get_timeline))
        .route("/v1/stats/messages", get(stats::get_stats))
        .route("/v1/stats/messages:query", post(stats::post_stats))
        .route_layer(axum::middleware::from_fn_with_state(
            gate,
            service_kit::quota::admit,
        ))
        .with_state(state)
}

/// Migrates, connects and binds; the returned [`App`] serves when run.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let shards = settings.stream_shards;
    let conns = Connections::open(&settings, SERVICE).await?;
    let metrics = Metrics::new(SERVICE);
    let state = Arc::new(AppState {
        read: conns.read_db.clone(),
        store: conns.db.clone(),
        keys: ApiKeys::new(conns.db.clone()),
        shards,
        query_duration: query_duration(&metrics),
        stats_slots: service_kit::edge::Slots::new("statistics", settings.max_concurrent_stats),
        send_deadline: settings.request_timeout,
        quotas: service_kit::quota::Quotas::new(&metrics, &settings),
    });
    service_kit::app::assemble(
        SERVICE,
        router(state),
        Readiness::of(&conns, Needs::QUERIES, settings.health_timeout),
        Document::OpenApi,
        &metrics,
        &settings,
        settings.query_addr,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn queries_are_timed_by_endpoint() {
        let metrics = Metrics::new(SERVICE);
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let state = AppState {
            read: pool.clone(),
            store: pool.clone(),
            keys: ApiKeys::new(pool),
            shards: 4,
            query_duration: query_duration(&metrics),
            stats_slots: service_kit::edge::Slots::new("statistics", 1),
            send_deadline: std::time::Duration::from_secs(1),
            quotas: service_kit::quota::Quotas::new(
                &metrics,
                &service_kit::Settings::from_lookup(|_| None).unwrap(),
            ),
        };
        let answer = state
            .timed("stats", async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                7
            })
            .await;
        assert_eq!(answer, 7);
        let text = metrics.encode();
        let line = |endpoint: &str, n: u32| {
            format!(
                "{QUERY_DURATION_SECONDS}_count{{endpoint=\"{endpoint}\",service=\"{SERVICE}\"}} {n}"
            )
        };
        assert!(text.contains(&line("stats", 1)), "{text}");
        for endpoint in ["messages_get", "messages_list", "timeline"] {
            assert!(text.contains(&line(endpoint, 0)), "{text}");
        }
        // The 20 ms answer is not in the 10 ms bucket but is in the 25 ms one.
        let bucket = |le: &str| {
            format!(
                "{QUERY_DURATION_SECONDS}_bucket{{endpoint=\"stats\",service=\"{SERVICE}\",le=\"{le}\"}}"
            )
        };
        assert!(text.contains(&format!("{} 0", bucket("0.01"))), "{text}");
        assert!(text.contains(&format!("{} 1", bucket("0.025"))), "{text}");
    }

    #[test]
    fn the_query_metric_and_its_endpoints_are_documented() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/operations.md"
        ))
        .unwrap();
        let row = doc
            .lines()
            .find(|l| l.starts_with(&format!("| `{QUERY_DURATION_SECONDS}` | histogram |")))
            .expect("a row for the query histogram");
        for endpoint in ENDPOINTS {
            assert!(row.contains(&format!("`{endpoint}`")), "{endpoint}: {row}");
        }
    }
}
