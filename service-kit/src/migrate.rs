//! The migration run every service makes before it serves (and `<service> migrate` makes
//! alone, as an init container): migrations with their pre- and post-validation, and
//! metrics pushed to the Pushgateway under a group of their own.
//!
//! The group is job [`JOB`], instance `HERALD_INSTANCE_ID`. It is pushed once before
//! anything is applied (outcome `running`) and once at the end (`succeeded` or `failed`),
//! so a run that dies half-way leaves `running` and its start time behind: the
//! `HeraldMigrationTooLong` alert then fires on the stale group instead of the run simply
//! going missing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::{GaugeVec, Opts, Registry};

use crate::config::Settings;
use crate::connections::StartupError;
use crate::metrics::Pusher;

/// The Pushgateway job of migration runs.
pub const JOB: &str = "herald-migrate";
/// 1 for the run's current outcome (`running`, `succeeded`, `failed`), 0 for the others.
pub const MIGRATION_OUTCOME: &str = "herald_migration_outcome";
/// The newest migration in the history after the run.
pub const MIGRATION_SCHEMA_VERSION: &str = "herald_migration_schema_version";
/// When the run started (Unix seconds).
pub const MIGRATION_STARTED: &str = "herald_migration_started_timestamp_seconds";
/// When the run ended (Unix seconds); absent while it runs.
pub const MIGRATION_FINISHED: &str = "herald_migration_finished_timestamp_seconds";
/// How long each migration the run applied took.
pub const MIGRATION_DURATION: &str = "herald_migration_duration_seconds";
/// Migrations the run applied.
pub const MIGRATIONS_APPLIED: &str = "herald_migrations_applied";
/// Every metric of the group.
pub const NAMES: [&str; 6] = [
    MIGRATION_OUTCOME,
    MIGRATION_SCHEMA_VERSION,
    MIGRATION_STARTED,
    MIGRATION_FINISHED,
    MIGRATION_DURATION,
    MIGRATIONS_APPLIED,
];

const OUTCOMES: [&str; 3] = ["running", "succeeded", "failed"];

/// Everything Herald's code relies on in the schema: the event store's, the read models'
/// and authentication's declarations, checked after every run.
pub fn requirements() -> Vec<migrations::Requirement> {
    [
        event_store::schema::REQUIRED,
        read_model::schema::REQUIRED,
        crate::auth::REQUIRED,
    ]
    .concat()
}

struct RunMetrics {
    outcome: GaugeVec,
    schema_version: GaugeVec,
    started: GaugeVec,
    finished: GaugeVec,
    duration: GaugeVec,
    applied: GaugeVec,
    pusher: Option<Pusher>,
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("registered once");
    g
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl RunMetrics {
    fn new(service: &str, settings: &Settings) -> Self {
        let labels = std::collections::HashMap::from([("service".to_string(), service.into())]);
        let registry =
            Registry::new_custom(None, Some(labels)).expect("a constant service label is valid");
        let db = &["database"];
        Self {
            outcome: gauge_vec(
                &registry,
                MIGRATION_OUTCOME,
                "1 for the migration run's current outcome (running, succeeded, failed).",
                &["database", "outcome"],
            ),
            schema_version: gauge_vec(
                &registry,
                MIGRATION_SCHEMA_VERSION,
                "Newest migration in the schema history after the run.",
                db,
            ),
            started: gauge_vec(
                &registry,
                MIGRATION_STARTED,
                "When the migration run started (Unix seconds).",
                db,
            ),
            finished: gauge_vec(
                &registry,
                MIGRATION_FINISHED,
                "When the migration run ended (Unix seconds).",
                db,
            ),
            duration: gauge_vec(
                &registry,
                MIGRATION_DURATION,
                "How long each migration applied by the run took.",
                &["database", "migration"],
            ),
            applied: gauge_vec(
                &registry,
                MIGRATIONS_APPLIED,
                "Migrations the run applied.",
                db,
            ),
            pusher: settings.pushgateway_url.as_deref().map(|base| {
                Pusher::of_registry(registry.clone(), base, JOB, &settings.instance_id)
            }),
        }
    }

    fn set_outcome(&self, database: &str, outcome: &str) {
        for o in OUTCOMES {
            self.outcome
                .with_label_values(&[database, o])
                .set(f64::from(o == outcome));
        }
    }

    async fn push(&self) {
        let Some(pusher) = &self.pusher else { return };
        // The run must not depend on monitoring: a Pushgateway that is down costs a warning.
        if let Err(error) = pusher.push().await {
            tracing::warn!(%error, url = pusher.url(), "pushing migration metrics failed");
        }
    }
}

/// Migrates the event store database and, when it is another one, the read-model
/// database, pushing the run's metrics as `service`.
pub async fn migrate(settings: &Settings, service: &str) -> Result<(), StartupError> {
    let metrics = RunMetrics::new(service, settings);
    let required = requirements();
    let mut databases = vec![("events", settings.database_url.as_str())];
    if settings.read_database_url != settings.database_url {
        databases.push(("read", settings.read_database_url.as_str()));
    }
    for (database, url) in databases {
        metrics
            .started
            .with_label_values(&[database])
            .set(now_secs());
        metrics.set_outcome(database, "running");
        metrics.push().await;
        let options = migrations::RunOptions {
            requirements: &required,
            progress_every: Duration::from_secs(10),
            ..migrations::RunOptions::new(settings.migration_lock_wait)
        };
        match migrations::run_with(url, &options).await {
            Ok(report) => {
                for (name, took) in report.applied.iter().zip(&report.durations) {
                    metrics
                        .duration
                        .with_label_values(&[database, name])
                        .set(took.as_secs_f64());
                }
                metrics
                    .applied
                    .with_label_values(&[database])
                    .set(report.applied.len() as f64);
                metrics
                    .schema_version
                    .with_label_values(&[database])
                    .set(f64::from(report.schema_version));
                metrics
                    .finished
                    .with_label_values(&[database])
                    .set(now_secs());
                metrics.set_outcome(database, "succeeded");
                metrics.push().await;
                tracing::info!(
                    database,
                    applied = report.applied.len(),
                    schema_version = report.schema_version,
                    "schema is current and holds what Herald relies on"
                );
            }
            Err(e) => {
                metrics
                    .finished
                    .with_label_values(&[database])
                    .set(now_secs());
                metrics.set_outcome(database, "failed");
                metrics.push().await;
                return Err(e.into());
            }
        }
    }
    Ok(())
}
