//! `/health/live` and `/health/ready`.
//!
//! Liveness only says the process serves HTTP. Readiness runs every check concurrently, each
//! under a bound, and answers 200 only when all pass; otherwise 503 with the failing checks
//! named, so an operator (or a probe's log) sees which dependency is down without guessing.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use sqlx::PgPool;

/// The future a readiness check returns: `Err` carries a short reason.
pub type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// One named readiness check.
#[derive(Clone)]
pub struct Check {
    name: &'static str,
    run: Arc<dyn Fn() -> CheckFuture + Send + Sync>,
}

impl Check {
    /// A check called `name` that runs `run` each time readiness is asked.
    pub fn new<F, Fut>(name: &'static str, run: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        Self {
            name,
            run: Arc::new(move || Box::pin(run())),
        }
    }

    /// The database answers a trivial query.
    pub fn database(name: &'static str, pool: PgPool) -> Self {
        Self::new(name, move || {
            let pool = pool.clone();
            async move {
                sqlx::query("SELECT 1")
                    .execute(&pool)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            }
        })
    }

    /// The schema history holds the newest migration this binary embeds: a process built
    /// for a newer schema must not serve an older database.
    pub fn migrations(pool: PgPool) -> Self {
        Self::migrations_named("migrations", pool)
    }

    /// [`Check::migrations`] under another name (for a second database).
    pub fn migrations_named(name: &'static str, pool: PgPool) -> Self {
        Self::new(name, move || {
            let pool = pool.clone();
            async move {
                let want = migrations::embedded_versions()
                    .into_iter()
                    .max()
                    .unwrap_or(0);
                let sql = format!(
                    "SELECT coalesce(max(version), 0) FROM {}",
                    migrations::HISTORY_TABLE
                );
                let have: i32 = sqlx::query_scalar(&sql)
                    .fetch_one(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
                if have >= want {
                    Ok(())
                } else {
                    Err(format!("schema at version {have}, this build needs {want}"))
                }
            }
        })
    }
}

/// The checks `/health/ready` runs, and their bound.
#[derive(Clone)]
pub struct Readiness {
    checks: Vec<Check>,
    timeout: Duration,
}

/// The body of `/health/ready`.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ReadinessReport {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Each check: `ok`, or the reason it failed.
    pub checks: BTreeMap<String, String>,
    /// The names of the failed checks.
    pub failed: Vec<String>,
}

impl Readiness {
    /// Readiness over `checks`, each bounded by `timeout`.
    pub fn new(checks: Vec<Check>, timeout: Duration) -> Self {
        Self { checks, timeout }
    }

    /// Runs every check concurrently and reports.
    pub async fn report(&self) -> ReadinessReport {
        let runs = self.checks.iter().map(|check| {
            let fut = (check.run)();
            let timeout = self.timeout;
            async move {
                let outcome = match tokio::time::timeout(timeout, fut).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(reason)) => Err(reason),
                    Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
                };
                (check.name, outcome)
            }
        });
        let results = futures::future::join_all(runs).await;
        let mut checks = BTreeMap::new();
        let mut failed = Vec::new();
        for (name, outcome) in results {
            match outcome {
                Ok(()) => {
                    checks.insert(name.to_string(), "ok".to_string());
                }
                Err(reason) => {
                    checks.insert(name.to_string(), reason);
                    failed.push(name.to_string());
                }
            }
        }
        let status = if failed.is_empty() {
            "ready"
        } else {
            "not_ready"
        };
        ReadinessReport {
            status: status.to_string(),
            checks,
            failed,
        }
    }

    /// The router serving both endpoints.
    pub fn router(self) -> Router {
        Router::new()
            .route("/health/live", get(live))
            .route("/health/ready", get(ready))
            .with_state(Arc::new(self))
    }
}

async fn live() -> impl IntoResponse {
    Json(serde_json::json!({"status": "live"}))
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    let report = readiness.report().await;
    let code = if report.failed.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report)).into_response()
}

/// Which databases a service needs in order to serve: its readiness checks exactly these,
/// so an orchestrator never takes a replica out for a dependency it does not use. (Redis,
/// which only the projector uses, is the projector's own check.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    /// The read-model database (when it is not the event store's).
    pub read_models: bool,
}

impl Needs {
    /// The command service: the event store and its schema.
    pub const COMMANDS: Needs = Needs { read_models: false };
    /// The query service: the read models, and the event store (freshness is measured
    /// against it), with their schema.
    pub const QUERIES: Needs = Needs { read_models: true };
    /// The projector: both databases (it adds Redis and its lag bound).
    pub const PIPELINE: Needs = Needs { read_models: true };
}

impl Readiness {
    /// The checks for a service that `needs` these: `database` (the event store),
    /// `read_database` (when a different database holds the read models), and
    /// `migrations` (each database's schema is at least what this binary embeds).
    pub fn of(conns: &crate::Connections, needs: Needs, timeout: Duration) -> Self {
        let mut checks = vec![Check::database("database", conns.db.clone())];
        let separate = !same_pool(&conns.db, &conns.read_db);
        if needs.read_models && separate {
            checks.push(Check::database("read_database", conns.read_db.clone()));
        }
        checks.push(Check::migrations(conns.db.clone()));
        if needs.read_models && separate {
            checks.push(Check::migrations_named(
                "read_migrations",
                conns.read_db.clone(),
            ));
        }
        Self::new(checks, timeout)
    }

    /// Adds a service-specific check.
    pub fn with(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }
}

fn same_pool(a: &PgPool, b: &PgPool) -> bool {
    // Pools are Arc handles: the same pool when both URLs were equal at start-up.
    std::ptr::eq(a.connect_options().as_ref(), b.connect_options().as_ref())
}
