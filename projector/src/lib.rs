//! Moves events from the event store through Redis Streams into TimescaleDB read models.
//!
//! One process runs two background tasks beside its health endpoint (each can be turned
//! off, see `docs/configuration.md`):
//! * the [`relay`]: event store -> `{prefix}:events:{shard}` streams, one leader at a time;
//! * the [`consumer`]s: streams -> read models, workers per live read-model version,
//!   shards shared among replicas ([`lease`]);
//!
//! and the [`metrics`] sampler. The parts, by job:
//! * [`stream`]: the Redis wire (entries, groups, acknowledgements, one connection set-up);
//! * [`apply`]: the one policy every path applies events by (whole batch, then one by one,
//!   then park), over [`batch`] (one transaction), [`write`] (the rows) and [`counters`]
//!   (the rollups);
//! * [`catch_up`]: a shard straight from the event store, when Redis lost entries;
//! * [`admin`]: the operator commands `projector dead-letters list|retry <id>|skip <id>`,
//!   `projector rebuild`, `projector retire <version>` (see `docs/delivery.md`).
//!
//! What the read models are (tables, sketch, checkpoints, lag) is the `read-model`
//! crate's; what the event store is, the `event-store` crate's. `/health/ready` checks
//! both databases, Redis and the lag bound; every event's relay and projector spans
//! continue the command's trace ([`trace`]).

pub mod admin;
pub mod apply;
pub mod batch;
pub mod catch_up;
pub mod consumer;
pub mod counters;
pub mod error;
pub mod generations;
pub mod lease;
pub mod metrics;
pub mod relay;
pub mod settings;
pub mod stream;
pub mod trace;
pub mod write;

use std::sync::Arc;

use service_kit::app::Document;
use service_kit::health::{Needs, Readiness};
use service_kit::{App, Connections, Settings, StartupError};
use sqlx::PgPool;

pub use error::{Error, Result};
pub use metrics::ProjectorMetrics;
pub use settings::ProjectorSettings;

/// The service's name: Postgres `application_name`, log field, Pushgateway job.
pub const SERVICE: &str = "projector";

/// What every consumer, catch-up and rebuild shares.
pub struct Context {
    /// Event store (catch-up reads).
    pub events_db: PgPool,
    /// Read-model database.
    pub read_db: PgPool,
    /// Redis client (each worker opens dedicated connections).
    pub redis: redis::Client,
    /// Key prefix.
    pub prefix: String,
    /// Consumer name (the replica id).
    pub consumer: String,
    /// Batch sizes, block times, failure limits and what this process runs.
    pub settings: ProjectorSettings,
    /// Where batches, projected events, their lag and dead letters are counted.
    pub metrics: Arc<ProjectorMetrics>,
}

/// Migrates, connects and binds; the returned [`App`] serves when run. Projector settings
/// come from the environment.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let tuning = ProjectorSettings::from_env(&settings)?;
    build_with(settings, tuning).await
}

/// [`build`] with explicit projector settings (tests).
pub async fn build_with(
    settings: Settings,
    tuning: ProjectorSettings,
) -> Result<App, StartupError> {
    let conns = Connections::open(&settings, SERVICE).await?;
    let redis = redis_client(&settings).map_err(|e| StartupError::Other(e.to_string()))?;
    // The projector's metrics go on the app's registry before anything can move them.
    let registry = service_kit::Metrics::new(SERVICE);
    let metrics = Arc::new(ProjectorMetrics::register(&registry, &tuning));
    let readiness = Readiness::of(&conns, Needs::PIPELINE, settings.health_timeout)
        .with(stream::readiness_check(redis.clone()))
        .with(metrics::lag_check(
            conns.db.clone(),
            conns.read_db.clone(),
            tuning.shards,
            tuning.ready_max_lag,
        ));
    let mut app = service_kit::app::assemble(
        SERVICE,
        axum::Router::new(),
        readiness,
        Document::None,
        &registry,
        &settings,
        settings.projector_addr,
    )
    .await?;
    let sampler = metrics::Sampler {
        events_db: conns.db.clone(),
        read_db: conns.read_db.clone(),
        redis: redis.clone(),
        prefix: settings.redis_prefix.clone(),
        settings: tuning.clone(),
        metrics: metrics.clone(),
    };
    app.spawn_background(sampler.run(app.stop_token()));
    if tuning.relay_enabled {
        let relay = relay::Relay::new(
            conns.db.clone(),
            conns.read_db.clone(),
            redis.clone(),
            settings.redis_prefix.clone(),
            tuning.clone(),
        )
        .with_metrics(metrics.clone());
        app.spawn_background(relay.run(app.stop_token()));
    }
    if tuning.projector_enabled {
        let ctx = Arc::new(context_with(&conns, redis, &settings, tuning, metrics));
        app.spawn_background(generations::run(ctx.clone(), app.stop_token()));
        app.spawn_background(consumer::run(ctx, app.stop_token()));
    }
    Ok(app)
}

/// The Redis client of `settings` (connections are opened by [`stream::connect`]).
pub fn redis_client(settings: &Settings) -> Result<redis::Client> {
    Ok(redis::Client::open(settings.redis_url.as_str())?)
}

/// The shared context, counting on metrics of its own that nothing serves (operator
/// commands, tests).
pub fn context(
    conns: &Connections,
    settings: &Settings,
    tuning: ProjectorSettings,
) -> Result<Context> {
    let metrics = ProjectorMetrics::detached(&tuning);
    Ok(context_with(
        conns,
        redis_client(settings)?,
        settings,
        tuning,
        metrics,
    ))
}

/// The shared context, counting on `metrics`.
pub fn context_with(
    conns: &Connections,
    redis: redis::Client,
    settings: &Settings,
    tuning: ProjectorSettings,
    metrics: Arc<ProjectorMetrics>,
) -> Context {
    Context {
        events_db: conns.db.clone(),
        read_db: conns.read_db.clone(),
        redis,
        prefix: settings.redis_prefix.clone(),
        consumer: settings.instance_id.clone(),
        settings: tuning,
        metrics,
    }
}
