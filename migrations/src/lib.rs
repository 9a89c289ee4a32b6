//! Herald's SQL migrations and the runner every service calls before it serves.
//!
//! The SQL lives in `migrations/sql` and is embedded at compile time, so a binary always
//! carries the schema it was built for. refinery has no locking of its own: concurrent
//! runners (several replicas starting at once, or an init container racing a service) would
//! each try to create the history table and apply the same migration. [`run`] therefore holds
//! a Postgres advisory lock on a dedicated tokio-postgres connection for the whole run; the
//! lock dies with the connection, so a crashed runner never leaves it held.

use std::time::Duration;

use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory-lock key serialising migration runs across every Herald process ("HERALDMG").
pub const MIGRATION_LOCK_KEY: i64 = 0x4845_5241_4c44_4d47;

/// The history table refinery keeps; services check it to report readiness.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

/// What went wrong while migrating.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to the database for migrations: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// Taking or releasing the advisory lock failed.
    #[error("migration lock failed: {0}")]
    Lock(#[source] tokio_postgres::Error),
    /// The lock was not granted within the configured wait.
    #[error("timed out after {0:?} waiting for the migration lock")]
    LockTimeout(Duration),
    /// A migration failed; its transaction was rolled back.
    #[error("migration failed: {0}")]
    Apply(#[from] refinery::Error),
}

/// The outcome of one run: which migrations this run applied (empty when the schema was
/// already current).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// `V<version>__<name>` of every migration applied by this run, in order.
    pub applied: Vec<String>,
}

/// The versions of every embedded migration, newest last. A database is current when its
/// history holds the last of these.
pub fn embedded_versions() -> Vec<i32> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .collect()
}

/// Applies every pending migration to `database_url`, holding [`MIGRATION_LOCK_KEY`] on a
/// dedicated connection, and waiting at most `lock_wait` for another runner to finish.
pub async fn run(
    database_url: &str,
    lock_wait: Duration,
) -> Result<MigrationReport, MigrationError> {
    run_to(database_url, lock_wait, None).await
}

/// [`run`], stopping after migration `until` when given: how upgrade tests build the
/// previous release's schema, fill it with data, and then upgrade it.
pub async fn run_to(
    database_url: &str,
    lock_wait: Duration,
    until: Option<i32>,
) -> Result<MigrationReport, MigrationError> {
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(MigrationError::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection closed with an error");
        }
    });

    let result = locked_run(&mut client, lock_wait, until).await;
    // Dropping the client closes the connection, which releases the lock even if unlocking
    // failed; wait for the driver so the session is really gone before we return.
    drop(client);
    let _ = driver.await;
    result
}

async fn locked_run(
    client: &mut tokio_postgres::Client,
    lock_wait: Duration,
    until: Option<i32>,
) -> Result<MigrationReport, MigrationError> {
    // lock_timeout turns an unbounded wait into an error the caller can report.
    client
        .batch_execute(&format!(
            "SET lock_timeout = '{}ms'",
            lock_wait.as_millis().max(1)
        ))
        .await
        .map_err(MigrationError::Lock)?;
    match client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
    {
        Ok(_) => {}
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE) => {
            return Err(MigrationError::LockTimeout(lock_wait));
        }
        Err(e) => return Err(MigrationError::Lock(e)),
    }
    client
        .batch_execute("SET lock_timeout = 0")
        .await
        .map_err(MigrationError::Lock)?;

    let target = match until {
        Some(v) => refinery::Target::Version(v),
        None => refinery::Target::Latest,
    };
    let mut runner = embedded::migrations::runner().set_target(target);
    let outcome = runner
        .set_migration_table_name(HISTORY_TABLE)
        .run_async(client)
        .await;

    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = outcome?;
    unlock.map_err(MigrationError::Lock)?;

    let applied: Vec<String> = report
        .applied_migrations()
        .iter()
        .map(|m| format!("V{}__{}", m.version(), m.name()))
        .collect();
    for name in &applied {
        tracing::info!(migration = %name, "applied migration");
    }
    Ok(MigrationReport { applied })
}
