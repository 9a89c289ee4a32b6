//! V4 (`tsl_policies`) on the Apache-2 TimescaleDB build of the local set-up: the migration
//! is applied, adds nothing, and says why; its whole TSL branch is valid SQL that reaches
//! TimescaleDB, which refuses each call here for want of the license and for nothing else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use test_support::TestDb;
use tokio_postgres::{AsyncMessage, NoTls};

const LOCK_WAIT: Duration = Duration::from_secs(60);
const V4: &str = include_str!("../sql/V4__tsl_policies.sql");
const V9: &str = include_str!("../sql/V9__rollup_levels.sql");
const HYPERTABLES: [&str; 4] = [
    "message_events",
    "message_stats_15m",
    "message_engagement_15m",
    "message_latency_15m",
];

/// Runs `sql` on a connection of its own; returns its outcome and every NOTICE it raised.
async fn execute_collecting_notices(
    url: &str,
    sql: &str,
) -> (Result<(), tokio_postgres::Error>, Vec<String>) {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notice(notice) = message {
                let _ = tx.unbounded_send(notice.message().to_string());
            }
        }
    });
    let result = client.batch_execute(sql).await;
    drop(client);
    driver.await.unwrap();
    (result, rx.collect().await)
}

#[tokio::test]
async fn on_the_apache_edition_v5_is_applied_and_adds_no_compression() {
    let db = TestDb::empty().await;
    let report = migrations::run(&db.url, LOCK_WAIT).await.unwrap();
    assert!(
        report.applied.iter().any(|m| m == "V4__tsl_policies"),
        "{:?}",
        report.applied
    );

    let pool = db.pool().await;
    let license: String = sqlx::query_scalar("SHOW timescaledb.license")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        license, "apache",
        "the local TimescaleDB is the Apache-2 build"
    );

    let jobs: Vec<String> = sqlx::query_scalar(
        "SELECT proc_name::text FROM timescaledb_information.jobs
          WHERE proc_name IN ('policy_compression', 'policy_retention')",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(jobs.is_empty(), "unexpected policies: {jobs:?}");
    let compressed: Vec<String> = sqlx::query_scalar(
        "SELECT hypertable_name::text FROM timescaledb_information.hypertables
          WHERE compression_enabled",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        compressed.is_empty(),
        "compression enabled on {compressed:?}"
    );
    let settings: i64 =
        sqlx::query_scalar("SELECT count(*) FROM timescaledb_information.compression_settings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(settings, 0);
    let hypertables: Vec<String> = sqlx::query_scalar(
        "SELECT hypertable_name::text FROM timescaledb_information.hypertables ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    for table in HYPERTABLES {
        assert!(
            hypertables.iter().any(|h| h == table),
            "{table} is a hypertable"
        );
    }

    // Running the file again (what docs/deployment.md tells operators to do after moving to
    // a TSL build) succeeds here too, and says in the log why it did nothing.
    let (result, notices) = execute_collecting_notices(&db.url, V4).await;
    result.unwrap();
    assert!(
        notices
            .iter()
            .any(|n| n.contains(r#"timescaledb.license is "apache""#) && n.contains("not added")),
        "{notices:?}"
    );
}

#[tokio::test]
async fn the_whole_tsl_branch_runs_and_only_the_license_stops_it() {
    let db = TestDb::migrated().await;
    let forced = V4.replace(
        "current_setting('timescaledb.license', true)",
        "'timescale'",
    );
    // Each TSL call of the branch, caught only for the license error (SQLSTATE 0A000,
    // feature_not_supported) and reported as a NOTICE, so the branch runs to its end: any
    // other error (a misspelt column, a wrong argument, a missing table) still fails it.
    let alter = "            EXECUTE format(
                'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
                t.hypertable, t.segment_by, t.order_by);";
    let policy = "        PERFORM add_compression_policy(t.hypertable::regclass, t.compress_after, if_not_exists => true);";
    assert!(
        forced.contains(alter) && forced.contains(policy),
        "V4 changed shape"
    );
    let caught = |stmt: &str, what: &str| {
        format!(
            "BEGIN {stmt} EXCEPTION WHEN feature_not_supported THEN \
             RAISE NOTICE 'license refused {what} on %: %', t.hypertable, SQLERRM; END;"
        )
    };
    let whole = forced
        .replace(alter, &caught(alter, "compress"))
        .replace(policy, &caught(policy, "policy"));
    assert_ne!(
        forced, V4,
        "the license check is where this test expects it"
    );
    let (result, notices) = execute_collecting_notices(&db.url, &whole).await;
    result.expect("nothing but the license stops the TSL branch");
    for table in HYPERTABLES {
        for what in ["compress", "policy"] {
            let refused = notices
                .iter()
                .find(|n| n.starts_with(&format!("license refused {what} on {table}:")));
            let refused = refused.unwrap_or_else(|| panic!("{what} on {table}: {notices:?}"));
            assert!(refused.contains("license"), "{refused}");
        }
        assert!(
            notices
                .iter()
                .any(|n| n.starts_with(&format!("compression on {table}:"))),
            "the loop reached its end for {table}: {notices:?}"
        );
    }
    assert_eq!(notices.len(), 3 * HYPERTABLES.len(), "{notices:?}");
}

#[tokio::test]
async fn the_whole_tsl_branch_of_the_rollup_levels_runs_and_only_the_license_stops_it() {
    let db = TestDb::migrated().await;
    let start = V9.find("DO $tsl$").expect("V9 has a TSL block");
    let end = V9[start..].find("$tsl$;\n").expect("the block ends") + start + "$tsl$;".len();
    let block = &V9[start..end];
    let forced = block.replace(
        "current_setting('timescaledb.license', true)",
        "'timescale'",
    );
    assert_ne!(
        forced, block,
        "the license check is where this test expects it"
    );
    let alter = "        EXECUTE format(
            'ALTER TABLE %I SET (timescaledb.compress, timescaledb.compress_segmentby = %L, timescaledb.compress_orderby = %L)',
            t.hypertable, 'version, tenant_id, channel', 'bucket DESC, provider, tag');";
    let policy = "        PERFORM add_compression_policy(t.hypertable::regclass, t.compress_after, if_not_exists => true);";
    assert!(
        forced.contains(alter) && forced.contains(policy),
        "V9 changed shape"
    );
    let caught = |stmt: &str, what: &str| {
        format!(
            "BEGIN {stmt} EXCEPTION WHEN feature_not_supported THEN \
             RAISE NOTICE 'license refused {what} on %: %', t.hypertable, SQLERRM; END;"
        )
    };
    let whole = forced
        .replace(alter, &caught(alter, "compress"))
        .replace(policy, &caught(policy, "policy"));
    let (result, notices) = execute_collecting_notices(&db.url, &whole).await;
    result.expect("nothing but the license stops the TSL branch");
    let tables = [
        "message_rollup_15m",
        "message_rollup_1h",
        "message_rollup_1d",
    ];
    for table in tables {
        for what in ["compress", "policy"] {
            assert!(
                notices.iter().any(|n| n
                    .starts_with(&format!("license refused {what} on {table}:"))
                    && n.contains("license")),
                "{what} on {table}: {notices:?}"
            );
        }
        assert!(
            notices
                .iter()
                .any(|n| n.starts_with(&format!("compression on {table}:"))),
            "{notices:?}"
        );
    }
    assert_eq!(notices.len(), 3 * tables.len(), "{notices:?}");
}

/// Log lines written through `service_kit::telemetry` (what a service's stderr would get).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_service_migrating_on_the_apache_edition_logs_why_nothing_was_compressed() {
    // The services' own logging set-up (JSON, `RUST_LOG` or `info`): tokio-postgres logs
    // every NOTICE of the migration connection, and the `log` records reach the JSON logs.
    let db = TestDb::empty().await;
    let captured = Captured::default();
    let writer = captured.clone();
    let mut settings = test_support::settings(&db.url);
    settings.log_format = service_kit::config::LogFormat::Json;
    service_kit::telemetry::init_with_writer("migrations-test", &settings, move || writer.clone());
    migrations::run(&db.url, LOCK_WAIT).await.unwrap();
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = logs
        .lines()
        .find(|l| l.contains("compression policies are TSL-only"))
        .unwrap_or_else(|| panic!("no NOTICE from V4 in the logs:\n{logs}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["level"], "INFO", "{line}");
    assert_eq!(line["target"], "tokio_postgres::connection", "{line}");
    assert!(
        line["fields"]["message"]
            .as_str()
            .unwrap()
            .starts_with("NOTICE: timescaledb.license is \"apache\""),
        "{line}"
    );
}
