//! Moves events from the event store through Redis Streams into TimescaleDB read models.
//!
//! One process runs two background tasks beside its health endpoint (each can be turned
//! off, see `docs/configuration.md`):
//! * the [`relay`]: event store -> `{prefix}:events:{shard}` streams, one leader at a time;
//! * the [`consumer`]s: streams -> read models, one worker per live read-model version,
//!   shards shared among replicas.
//!
//! and the [`metrics`] sampler. `/health/ready` adds the `projector_lag` check; every
//! event's relay and projector spans continue the command's trace ([`trace`]). See
//! `docs/operations.md`.
//!
//! Operator commands ([`admin`]): `projector dead-letters list|retry <id>|skip <id>`,
//! `projector rebuild`, `projector retire <version>`. See `docs/delivery.md`.

pub mod admin;
pub mod consumer;
pub mod envelope;
pub mod metrics;
pub mod project;
pub mod relay;
pub mod settings;
pub mod shard;
pub mod sketch;
pub mod trace;

use std::sync::Arc;

use service_kit::health::{Needs, Readiness};
use service_kit::{App, Connections, Settings, StartupError};

pub use metrics::ProjectorMetrics;
pub use settings::ProjectorSettings;

/// The service's name: Postgres `application_name`, log field, Pushgateway job.
pub const SERVICE: &str = "projector";

/// Migrates, connects and binds; the returned [`App`] serves when run. Projector settings
/// come from the environment.
pub async fn build(settings: Settings) -> Result<App, StartupError> {
    let tuning = ProjectorSettings::from_env()?;
    build_with(settings, tuning).await
}

/// [`build`] with explicit projector settings (tests).
pub async fn build_with(
    settings: Settings,
    tuning: ProjectorSettings,
) -> Result<App, StartupError> {
    let conns = Connections::open(&settings, SERVICE).await?;
    // The projector's metrics go on the app's registry before anything can move them.
    let registry = service_kit::Metrics::new(SERVICE);
    let metrics = Arc::new(ProjectorMetrics::register(&registry, &tuning));
    let readiness =
        Readiness::of(&conns, Needs::PIPELINE, settings.health_timeout).with(metrics::lag_check(
            conns.db.clone(),
            conns.read_db.clone(),
            tuning.shards,
            tuning.ready_max_lag,
        ));
    let router = service_kit::edge::finish(readiness.router(), &registry, &settings);
    let listener = service_kit::serve::bind(settings.projector_addr).await?;
    let mut app = App::new(SERVICE, listener, router);
    // `/metrics`, HTTP metrics and the Pushgateway pusher.
    service_kit::metrics::install(&mut app, &registry, &settings);
    let sampler = metrics::Sampler {
        events_db: conns.db.clone(),
        read_db: conns.read_db.clone(),
        redis: conns.redis_client.clone(),
        prefix: settings.redis_prefix.clone(),
        settings: tuning.clone(),
        metrics: metrics.clone(),
    };
    app.spawn_background(sampler.run(app.stop_token()));
    if tuning.relay_enabled {
        let relay = relay::Relay::new(
            conns.db.clone(),
            conns.redis_client.clone(),
            settings.redis_prefix.clone(),
            tuning.clone(),
        )
        .with_metrics(metrics.clone());
        app.spawn_background(relay.run(app.stop_token()));
    }
    if tuning.projector_enabled {
        let ctx = Arc::new(context_with(&conns, &settings, tuning, metrics));
        app.spawn_background(consumer::run(ctx, app.stop_token()));
    }
    Ok(app)
}

/// The consumers' shared context, counting on metrics of its own that nothing serves
/// (operator commands, tests).
pub fn context(
    conns: &Connections,
    settings: &Settings,
    tuning: ProjectorSettings,
) -> consumer::Context {
    let metrics = ProjectorMetrics::detached(&tuning);
    context_with(conns, settings, tuning, metrics)
}

/// The consumers' shared context, counting on `metrics`.
pub fn context_with(
    conns: &Connections,
    settings: &Settings,
    tuning: ProjectorSettings,
    metrics: Arc<ProjectorMetrics>,
) -> consumer::Context {
    consumer::Context {
        events_db: conns.db.clone(),
        read_db: conns.read_db.clone(),
        redis: conns.redis_client.clone(),
        prefix: settings.redis_prefix.clone(),
        consumer: settings.instance_id.clone(),
        settings: tuning,
        metrics,
    }
}
