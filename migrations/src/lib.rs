//! Herald's SQL migrations and the runner every service calls before it serves.
//!
//! The SQL lives in `migrations/sql` and is embedded at compile time, so a binary always
//! carries the schema it was built for. refinery has no locking of its own: concurrent
//! runners (several replicas starting at once, or an init container racing a service) would
//! each try to create the history table and apply the same migration. [`run`] therefore holds
//! a Postgres advisory lock on a dedicated tokio-postgres connection for the whole run; the
//! lock dies with the connection, so a crashed runner never leaves it held.
//!
//! A run checks before it applies anything ([`precheck`]: the TimescaleDB extension, a
//! history this binary knows and has not changed), applies each pending migration on its
//! own so each one's duration is known and a long one logs its progress, and checks after
//! ([`schema`]: the objects the code relies on).

use std::time::Duration;

use tokio_postgres::NoTls;

mod embedded {
    refinery::embed_migrations!("sql");
}

/// Advisory-lock key serialising migration runs across every Herald process ("HERALDMG").
pub const MIGRATION_LOCK_KEY: i64 = 0x4845_5241_4c44_4d47;

/// The history table refinery keeps; services check it to report readiness.
pub const HISTORY_TABLE: &str = "refinery_schema_history";

pub mod precheck;
pub mod schema;

pub use schema::Requirement;

/// What went wrong while migrating. Every refusal of pre- and post-validation says what to
/// do about it.
#[derive(Debug, thiserror::Error)]
pub enum MigrationError {
    /// The database could not be reached or refused the connection.
    #[error("cannot connect to the database for migrations: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// Taking or releasing the advisory lock failed.
    #[error("migration lock failed: {0}")]
    Lock(#[source] tokio_postgres::Error),
    /// The lock was not granted within the configured wait.
    #[error(
        "timed out after {0:?} waiting for the migration lock: another process is migrating \
         (or stuck doing so; `pg_stat_activity` shows who holds advisory locks)"
    )]
    LockTimeout(Duration),
    /// A check query itself failed.
    #[error("checking the database failed: {0}")]
    Check(#[source] tokio_postgres::Error),
    /// The TimescaleDB extension cannot be created on this server.
    #[error(
        "the {name} extension is not available on this PostgreSQL server: install TimescaleDB \
         {min} or newer (the Apache-2 build is enough) and list it in shared_preload_libraries"
    )]
    ExtensionMissing {
        /// Extension name.
        name: String,
        /// The minimum version.
        min: String,
    },
    /// The TimescaleDB extension is older than Herald supports.
    #[error(
        "{name} {found} is older than the {min} Herald needs: install a newer TimescaleDB, \
         then run ALTER EXTENSION {name} UPDATE"
    )]
    ExtensionTooOld {
        /// Extension name.
        name: String,
        /// What the server has.
        found: String,
        /// The minimum version.
        min: String,
    },
    /// A newer release has migrated this database.
    #[error(
        "schema version {database} is newer than this binary's {binary}: a newer Herald \
         release migrated this database; run that release or a later one"
    )]
    NewerSchema {
        /// The newest version in the history.
        database: i32,
        /// The newest version this binary embeds.
        binary: i32,
    },
    /// The history holds a migration this binary lacks, below its newest one.
    #[error(
        "the database records migration {migration}, which this binary does not have: it was \
         built from a different history; run the release that wrote this database"
    )]
    UnknownApplied {
        /// `V<version>__<name>`.
        migration: String,
    },
    /// An applied migration differs from the embedded one.
    #[error(
        "migration {migration} was changed after it was applied (checksum {database} in the \
         database, {binary} in this binary): an applied migration must never change; restore \
         its original text and add a new migration instead"
    )]
    Diverged {
        /// `V<version>__<name>`.
        migration: String,
        /// The checksum the history records.
        database: String,
        /// The embedded migration's checksum.
        binary: String,
    },
    /// A migration failed; its transaction was rolled back.
    #[error("migration failed: {0}")]
    Apply(#[from] refinery::Error),
    /// After migrating, the schema lacks what Herald's code relies on.
    #[error("after migrating, the schema lacks what Herald relies on: {}", .0.join("; "))]
    Schema(Vec<String>),
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// `V<version>__<name>` of every migration applied by this run, in order.
    pub applied: Vec<String>,
    /// How long each applied migration took, in the same order.
    pub durations: Vec<Duration>,
    /// The newest migration in the history after the run (0: none).
    pub schema_version: i32,
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct RunOptions<'a> {
    /// Longest wait for another runner's lock.
    pub lock_wait: Duration,
    /// Stop after this migration (upgrade tests); `None`: apply everything.
    pub until: Option<i32>,
    /// What the schema must hold afterwards.
    pub requirements: &'a [Requirement],
    /// While one migration runs longer than this, a log line says so, every time again.
    pub progress_every: Duration,
    /// The extension the migrations need, and its minimum version.
    pub extension: (&'a str, (u32, u32, u32)),
}

impl RunOptions<'_> {
    /// Every migration, no post-validation, progress every 10 s, TimescaleDB
    /// [`precheck::MIN_TIMESCALEDB`].
    pub fn new(lock_wait: Duration) -> Self {
        Self {
            lock_wait,
            until: None,
            requirements: &[],
            progress_every: Duration::from_secs(10),
            extension: ("timescaledb", precheck::MIN_TIMESCALEDB),
        }
    }
}

/// The versions of every embedded migration, newest last. A database is current when its
/// history holds the last of these.
pub fn embedded_versions() -> Vec<i32> {
    let mut versions: Vec<i32> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| m.version())
        .collect();
    versions.sort_unstable();
    versions
}

/// Applies every pending migration to `database_url`, holding [`MIGRATION_LOCK_KEY`] on a
/// dedicated connection, and waiting at most `lock_wait` for another runner to finish.
pub async fn run(
    database_url: &str,
    lock_wait: Duration,
) -> Result<MigrationReport, MigrationError> {
    run_with(database_url, &RunOptions::new(lock_wait)).await
}

/// [`run`], stopping after migration `until` when given: how upgrade tests build the
/// previous release's schema, fill it with data, and then upgrade it.
pub async fn run_to(
    database_url: &str,
    lock_wait: Duration,
    until: Option<i32>,
) -> Result<MigrationReport, MigrationError> {
    run_with(
        database_url,
        &RunOptions {
            until,
            ..RunOptions::new(lock_wait)
        },
    )
    .await
}

/// A run: lock, pre-validation, each pending migration on its own (timed, with progress
/// logs), post-validation, unlock.
pub async fn run_with(
    database_url: &str,
    options: &RunOptions<'_>,
) -> Result<MigrationReport, MigrationError> {
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(MigrationError::Connect)?;
    let driver = tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::warn!(%error, "migration connection closed with an error");
        }
    });

    let result = locked_run(&mut client, options).await;
    // Dropping the client closes the connection, which releases the lock even if unlocking
    // failed; wait for the driver so the session is really gone before we return.
    drop(client);
    let _ = driver.await;
    result
}

async fn locked_run(
    client: &mut tokio_postgres::Client,
    options: &RunOptions<'_>,
) -> Result<MigrationReport, MigrationError> {
    let lock_wait = options.lock_wait;
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

    let outcome = migrate_locked(client, options).await;
    let unlock = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    let report = outcome?;
    unlock.map_err(MigrationError::Lock)?;
    Ok(report)
}

async fn migrate_locked(
    client: &mut tokio_postgres::Client,
    options: &RunOptions<'_>,
) -> Result<MigrationReport, MigrationError> {
    let mut embedded: Vec<(i32, String, u64)> = embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (m.version(), m.name().to_string(), m.checksum()))
        .collect();
    // Embedded in file-name order, where V10 sorts before V2: applied in version order.
    embedded.sort_by_key(|(version, _, _)| *version);
    let (name, min) = options.extension;
    precheck::extension(client, name, min).await?;
    precheck::history(client, HISTORY_TABLE, &embedded).await?;

    let current = applied_version(client).await?;
    let pending: Vec<&(i32, String, u64)> = embedded
        .iter()
        .filter(|(v, _, _)| *v > current && options.until.is_none_or(|u| *v <= u))
        .collect();
    let mut report = MigrationReport {
        applied: Vec::new(),
        durations: Vec::new(),
        schema_version: current,
    };
    for (version, name, _) in pending {
        let label = format!("V{version}__{name}");
        tracing::info!(migration = %label, "applying migration");
        let started = std::time::Instant::now();
        let mut runner =
            embedded::migrations::runner().set_target(refinery::Target::Version(*version));
        runner.set_migration_table_name(HISTORY_TABLE);
        let run = runner.run_async(client);
        tokio::pin!(run);
        let mut ticks = tokio::time::interval(options.progress_every);
        ticks.tick().await;
        let applied = loop {
            tokio::select! {
                result = &mut run => break result?,
                _ = ticks.tick() => tracing::info!(
                    migration = %label,
                    elapsed_s = started.elapsed().as_secs(),
                    "migration still running"
                ),
            }
        };
        let took = started.elapsed();
        if applied.applied_migrations().is_empty() {
            // Another runner cannot have applied it (we hold the lock): refinery skipped it.
            return Err(MigrationError::Schema(vec![format!(
                "{label} was not applied"
            )]));
        }
        tracing::info!(migration = %label, duration_ms = took.as_millis() as u64, "applied migration");
        report.applied.push(label);
        report.durations.push(took);
        report.schema_version = *version;
    }

    let problems = schema::check(client, options.requirements)
        .await
        .map_err(MigrationError::Check)?;
    if !problems.is_empty() {
        return Err(MigrationError::Schema(problems));
    }
    Ok(report)
}

/// The newest version in the history (0 when there is none).
async fn applied_version(client: &tokio_postgres::Client) -> Result<i32, MigrationError> {
    let exists: bool = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&HISTORY_TABLE])
        .await
        .map_err(MigrationError::Check)?
        .get(0);
    if !exists {
        return Ok(0);
    }
    let v: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {HISTORY_TABLE}"), &[])
        .await
        .map_err(MigrationError::Check)?
        .get(0);
    Ok(v.unwrap_or(0))
}
