//! Migrations against real databases of Herald's TimescaleDB cluster.

use std::time::Duration;

use test_support::TestDb;

const LOCK_WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn empty_database_gets_the_event_store_with_commit_safe_columns() {
    let db = TestDb::empty().await;
    let report = migrations::run(&db.url, LOCK_WAIT).await.unwrap();
    assert_eq!(report.applied.len(), migrations::embedded_versions().len());
    assert_eq!(report.applied[0], "V1__event_store");

    let pool = db.pool().await;
    let columns: Vec<(String, String, Option<String>, String)> = sqlx::query_as(
        "SELECT column_name::text, udt_name::text, column_default::text, is_identity::text
           FROM information_schema.columns
          WHERE table_name = 'events' AND table_schema = 'public'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let col = |name: &str| {
        columns
            .iter()
            .find(|c| c.0 == name)
            .unwrap_or_else(|| panic!("events has no column {name}: {columns:?}"))
    };
    let global_position = col("global_position");
    assert_eq!(global_position.1, "int8");
    assert_eq!(
        global_position.3, "YES",
        "global_position is an identity column"
    );
    let tx_id = col("tx_id");
    assert_eq!(tx_id.1, "xid8");
    assert_eq!(tx_id.2.as_deref(), Some("pg_current_xact_id()"));
    let recorded_at = col("recorded_at");
    assert_eq!(recorded_at.1, "timestamptz");
    assert_eq!(recorded_at.2.as_deref(), Some("now()"));
    for name in [
        "aggregate_type",
        "aggregate_id",
        "sequence",
        "event_type",
        "event_version",
        "payload",
        "metadata",
    ] {
        col(name);
    }

    let index_columns: Vec<String> = sqlx::query_scalar(
        "SELECT a.attname::text
           FROM pg_index i
           JOIN pg_class c ON c.oid = i.indexrelid
           JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord) ON true
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
          WHERE i.indrelid = 'events'::regclass AND c.relname = 'events_tx_cursor_idx'
          ORDER BY k.ord",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(index_columns, vec!["tx_id", "global_position"]);

    let snapshots: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'snapshots'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(snapshots, 1);

    // The defaults really fill in on an insert naming only postgres-es's columns.
    let (tx_is_current, position): (bool, i64) = sqlx::query_as(
        "WITH ins AS (
           INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, payload, metadata)
           VALUES ('Message', 'm1', 1, 'T', '1', '{}', '{}')
           RETURNING tx_id, global_position)
         SELECT tx_id = pg_current_xact_id_if_assigned(), global_position FROM ins",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(tx_is_current);
    assert!(position >= 1);
}

#[tokio::test]
async fn eight_concurrent_runners_apply_each_migration_once() {
    let db = TestDb::empty().await;
    let runs = (0..8).map(|_| {
        let url = db.url.clone();
        tokio::spawn(async move { migrations::run(&url, LOCK_WAIT).await })
    });
    let reports: Vec<_> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|joined| joined.expect("runner task").expect("runner succeeded"))
        .collect();

    let embedded = migrations::embedded_versions();
    let mut applied: Vec<String> = reports.iter().flat_map(|r| r.applied.clone()).collect();
    assert_eq!(
        applied.len(),
        embedded.len(),
        "every migration applied by exactly one runner"
    );
    applied.sort();
    applied.dedup();
    assert_eq!(applied.len(), embedded.len());

    let pool = db.pool().await;
    let history: Vec<(i32, i64)> = sqlx::query_as(&format!(
        "SELECT version, count(*) FROM {} GROUP BY version ORDER BY version",
        migrations::HISTORY_TABLE
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(history.len(), embedded.len());
    assert!(history.iter().all(|(_, n)| *n == 1), "{history:?}");

    let schema_before = schema_fingerprint(&pool).await;
    let ninth = migrations::run(&db.url, LOCK_WAIT).await.unwrap();
    assert!(
        ninth.applied.is_empty(),
        "ninth run applied {:?}",
        ninth.applied
    );
    assert_eq!(schema_fingerprint(&pool).await, schema_before);
}

#[tokio::test]
async fn lock_wait_is_bounded() {
    let db = TestDb::empty().await;
    let pool = db.pool().await;
    let mut holder = pool.acquire().await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(migrations::MIGRATION_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    // The runner waits on the lock (PostgreSQL shows its request pending), for the time it
    // was given and not much longer, then gives up with the lock named.
    let wait = Duration::from_millis(1_500);
    let url = db.url.clone();
    let started = std::time::Instant::now();
    let runner = tokio::spawn(async move { migrations::run(&url, wait).await });
    let waiting = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            if n > 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the runner queued for the migration lock");
    let err = runner.await.unwrap().unwrap_err();
    let waited = started.elapsed();
    assert!(
        matches!(err, migrations::MigrationError::LockTimeout(_)),
        "{err}"
    );
    assert!(
        waited >= wait,
        "gave up after {waited:?}, before the {wait:?} it was given"
    );
    assert!(
        waited < wait + Duration::from_secs(10),
        "waited {waited:?} for a {wait:?} bound"
    );
    let still: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(still, 0, "the runner's lock request outlived it");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(migrations::MIGRATION_LOCK_KEY)
        .execute(&mut *holder)
        .await
        .unwrap();
    drop(holder);
    assert!(!migrations::run(&db.url, LOCK_WAIT)
        .await
        .unwrap()
        .applied
        .is_empty());
}

#[tokio::test]
async fn timescaledb_is_loaded_and_hypertables_work() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let version: String =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(version.starts_with('2'), "timescaledb {version}");
    sqlx::query("CREATE TABLE probe (at timestamptz NOT NULL, v int)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("SELECT create_hypertable('probe', by_range('at', INTERVAL '1 day'))")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO probe SELECT t, 1 FROM generate_series(now() - interval '5 days', now(), interval '1 hour') t",
    )
    .execute(&pool)
    .await
    .unwrap();
    let chunks: i64 = sqlx::query_scalar("SELECT count(*) FROM show_chunks('probe')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(
        chunks >= 5,
        "rows over 5 days land in at least 5 daily chunks, got {chunks}"
    );
}

async fn schema_fingerprint(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT table_name::text || '.' || column_name::text || ':' || data_type::text
           FROM information_schema.columns WHERE table_schema = 'public'
          ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}
