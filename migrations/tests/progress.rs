//! A migration that takes long says so in the logs while it runs (one test per file: it
//! owns the process's log subscriber).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use migrations::RunOptions;
use sqlx::Connection;
use test_support::TestDb;

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
async fn a_long_migration_logs_its_progress_and_its_duration() {
    let db = TestDb::empty().await;
    let newest = *migrations::embedded_versions().last().unwrap();
    migrations::run_to(&db.url, Duration::from_secs(60), Some(newest - 1))
        .await
        .unwrap();
    let captured = Captured::default();
    let writer = captured.clone();
    let mut settings = test_support::settings(&db.url);
    settings.log_format = service_kit::config::LogFormat::Json;
    service_kit::telemetry::init_with_writer("migrations-test", &settings, move || writer.clone());

    // The newest migration waits behind a lock on every table it could touch, standing in
    // for a long backfill.
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query(
        "LOCK TABLE read_model_versions, messages, message_events, events, message_rollup_15m, \
         message_rollup_1h, message_rollup_1d, relay_shard_heads, tenants IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut blocker)
    .await
    .unwrap();
    let url = db.url.clone();
    let run = tokio::spawn(async move {
        let options = RunOptions {
            progress_every: Duration::from_millis(300),
            ..RunOptions::new(Duration::from_secs(60))
        };
        migrations::run_with(&url, &options).await
    });
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!run.is_finished(), "the migration was not held up");
    sqlx::query("COMMIT").execute(&mut blocker).await.unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.applied.len(), 1);
    assert!(
        report.durations[0] >= Duration::from_millis(1_000),
        "{report:?}"
    );
    assert_eq!(report.schema_version, newest);

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let migration = &report.applied[0];
    let progress = lines
        .iter()
        .filter(|l| {
            l["fields"]["message"] == "migration still running"
                && l["fields"]["migration"] == migration.as_str()
        })
        .count();
    assert!(progress >= 3, "{progress} progress lines:\n{logs}");
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "applied migration"
                && l["fields"]["migration"] == migration.as_str()
                && l["fields"]["duration_ms"].as_u64().unwrap_or(0) >= 1_000),
        "{logs}"
    );
}
