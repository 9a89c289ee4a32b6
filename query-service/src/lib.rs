//! Herald's read side: message reads and time-bucketed statistics over TimescaleDB.
//!
//! * [`reads`]: one message, its timeline, a filtered paginated list.
//! * [`stats`]: `GET /v1/stats/messages` — parameters, local-calendar buckets, the rollup and
//!   raw paths, and the answer.
//! * [`readmodel`]: the active read-model version, read-your-writes, freshness.

pub mod readmodel;
pub mod reads;
pub mod stats;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use service_kit::auth::{ApiKeys, HasApiKeys};
use service_kit::health::Readiness;
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
    /// Stream shard count (the relay's and projector's `HERALD_STREAM_SHARDS`).
    pub shards: u32,
}

impl HasApiKeys for AppState {
    fn api_keys(&self) -> &ApiKeys {
        &self.keys
    }
}

impl AppState {
    /// Freshness of read-model `version`.
    pub async fn freshness(
        &self,
        version: i32,
        consistent: Option<bool>,
    ) -> Result<readmodel::Freshness, ApiError> {
        readmodel::freshness(&self.store, &self.read, version, self.shards, consistent)
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

/// The query API router over `state`.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/messages", get(reads::list_messages))
        .route("/v1/messages/{id}", get(reads::get_message))
        .route("/v1/messages/{id}/events", get(reads::get_timeline))
        .route("/v1/stats/messages", get(stats::get_stats))
        .route("/v1/stats/messages:query", post(stats::post_stats))
        .with_state(state)
}

/// Migrates, connects and binds; the returned [`App`] serves when run.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let shards = projector::ProjectorSettings::from_env()?.shards;
    let conns = Connections::open(&settings, SERVICE).await?;
    let state = Arc::new(AppState {
        read: conns.read_db.clone(),
        store: conns.db.clone(),
        keys: ApiKeys::new(conns.db.clone()),
        shards,
    });
    let router = router(state)
        .merge(Readiness::standard(&conns, settings.health_timeout).router())
        .merge(service_kit::openapi::router())
        .fallback(service_kit::http_error::route_not_found)
        .layer(axum::middleware::from_fn(
            service_kit::request_context::layer,
        ));
    let listener = service_kit::serve::bind(settings.query_addr).await?;
    // Query latency is `herald_http_request_duration_seconds` by route.
    let metrics = Metrics::new(SERVICE);
    let mut app = App::new(SERVICE, listener, router);
    service_kit::metrics::install(&mut app, &metrics, &settings);
    Ok(app)
}
