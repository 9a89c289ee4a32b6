//! Database pools, opened after migrations have run. (Redis is the projector's alone: it
//! opens its own connections.)

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::{ConfigError, Settings};

/// Why a service could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// A configuration variable is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Migrations failed or could not take their lock.
    #[error(transparent)]
    Migration(#[from] migrations::MigrationError),
    /// A database connection string is malformed.
    #[error("invalid database URL: {0}")]
    DatabaseUrl(#[source] sqlx::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Anything else a service needs at start-up (telemetry, a service-specific resource).
    #[error("{0}")]
    Other(String),
}

/// The shared connections of a running service.
#[derive(Clone)]
pub struct Connections {
    /// Event store pool.
    pub db: PgPool,
    /// Read-model pool (the same pool when both URLs are equal).
    pub read_db: PgPool,
}

impl Connections {
    /// Migrates the database(s), then opens the pools. `service` becomes the Postgres
    /// `application_name`, so `pg_stat_activity` shows who holds what.
    ///
    /// Pools connect lazily: once migrations have proved the database reachable, a later
    /// outage shows in `/health/ready` instead of stopping the process.
    pub async fn open(settings: &Settings, service: &str) -> Result<Self, StartupError> {
        migrate(settings, service).await?;
        let db = pool(&settings.database_url, settings, service)?;
        let read_db = if settings.read_database_url == settings.database_url {
            db.clone()
        } else {
            pool(&settings.read_database_url, settings, service)?
        };
        Ok(Self { db, read_db })
    }
}

/// Runs migrations (see [`crate::migrate`]) as `service`.
pub async fn migrate(settings: &Settings, service: &str) -> Result<(), StartupError> {
    crate::migrate::migrate(settings, service).await
}

fn pool(url: &str, settings: &Settings, service: &str) -> Result<PgPool, StartupError> {
    let options = PgConnectOptions::from_str(url)
        .map_err(StartupError::DatabaseUrl)?
        .application_name(service);
    Ok(PgPoolOptions::new()
        .max_connections(settings.db_max_connections)
        .acquire_timeout(settings.db_acquire_timeout)
        // Connections idle past this are closed, so a pool recovers cleanly after an outage.
        .idle_timeout(Duration::from_secs(60))
        .connect_lazy_with(options))
}

/// True when `e` means the database is unreachable or going away (retry later): the one
/// classification every Herald crate uses ([`event_store::fault`]).
pub use event_store::fault::is_outage;
