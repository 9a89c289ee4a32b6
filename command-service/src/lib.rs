//! Herald's write side: accepts commands over HTTP and appends events to the event store.
//!
//! * [`api`]: request and answer bodies.
//! * [`routes`]: the HTTP handlers, including the batch endpoint.
//! * [`commands`]: each command end to end, and the mapping of errors to HTTP.
//! * [`executor`]: load, decide, commit, with optimistic-concurrency retries.
//!
//! Appending (group commit) and loading live in the `event-store` crate.

pub mod api;
pub mod commands;
pub mod executor;
pub mod metrics;
pub mod routes;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::post;
use axum::Router;
use service_kit::app::Document;
use service_kit::auth::{ApiKeys, HasApiKeys};
use service_kit::health::{Needs, Readiness};
use service_kit::{App, Connections, Metrics, Settings, StartupError};

use crate::executor::Streams;

/// The service's name: Postgres `application_name`, log field, Pushgateway job.
pub const SERVICE: &str = "command-service";

/// Body limit of single-command endpoints: the largest valid message (email body and
/// template variables at their caps) with room for JSON overhead.
pub const BODY_LIMIT: usize = 512 * 1024;
/// Body limit of the batch endpoint.
pub const BATCH_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// What every handler shares.
pub struct AppState {
    /// Message streams (event-store mode, group-commit appends).
    pub streams: Streams,
    /// API keys, for the tenant extractor.
    pub keys: ApiKeys,
    /// Command metrics, on the app's registry.
    pub metrics: crate::metrics::CommandMetrics,
    /// Every tenant's quota in this process.
    pub quotas: service_kit::quota::Quotas,
}

impl HasApiKeys for AppState {
    fn api_keys(&self) -> &ApiKeys {
        &self.keys
    }
}

/// The command API router over `state`; at most `batches` batch requests at once (each
/// holds up to 16 MiB of body while it runs). Every route is admitted against its tenant's
/// quota first ([`service_kit::quota::admit`]), before any body is read.
pub fn router(state: Arc<AppState>, batches: usize) -> Router {
    let batch_slots = service_kit::edge::Slots::new("batches", batches);
    let gate = service_kit::quota::Gate {
        keys: state.keys.clone(),
        quotas: state.quotas.clone(),
    };
    Router::new()
        .route("/v1/messages", post(routes::submit))
        .route("/v1/messages/{id}/observations", post(routes::observe))
        .route("/v1/messages/{id}/cancel", post(routes::cancel))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .merge(
            Router::new()
                .route("/v1/batch", post(routes::batch))
                .layer(DefaultBodyLimit::max(BATCH_BODY_LIMIT))
                // The slot is taken before the body is read, so waiting batches hold no body.
                .route_layer(axum::middleware::from_fn_with_state(
                    batch_slots,
                    service_kit::edge::Slots::hold,
                ))
                // Outside the shared slots: a tenant over its own count of batches is
                // refused at once instead of waiting for a slot another tenant needs.
                .route_layer(axum::middleware::from_fn(service_kit::quota::hold_batch)),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            gate,
            service_kit::quota::admit,
        ))
        .with_state(state)
}

/// Migrates, connects and binds; the returned [`App`] serves when run.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let conns = Connections::open(&settings, SERVICE).await?;
    let metrics = Metrics::new(SERVICE);
    let state = Arc::new(AppState {
        streams: Streams::new(conns.db.clone()),
        keys: ApiKeys::new(conns.db.clone()),
        metrics: crate::metrics::CommandMetrics::register(&metrics),
        quotas: service_kit::quota::Quotas::new(&metrics, &settings),
    });
    service_kit::app::assemble(
        SERVICE,
        router(state, settings.max_concurrent_batches),
        Readiness::of(&conns, Needs::COMMANDS, settings.health_timeout),
        Document::OpenApi,
        &metrics,
        &settings,
        settings.command_addr,
    )
    .await
}
