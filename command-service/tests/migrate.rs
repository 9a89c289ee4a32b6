//! `command-service migrate` (what an init container runs) pushes the run's metrics to the
//! Pushgateway under job `herald-migrate`; a run that dies half-way leaves its group
//! behind, stale, saying it is still running.

use std::process::{Command, Stdio};
use std::time::Duration;

use sqlx::Connection;
use test_support::events::eventually;
use test_support::prom_text::{self, Exposition};
use test_support::pushgateway::Pushgateway;
use test_support::TestDb;

fn migrate(db: &TestDb, gateway: &Pushgateway, instance: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_command-service"));
    c.arg("migrate")
        .env("HERALD_DATABASE_URL", &db.url)
        .env("HERALD_READ_DATABASE_URL", "")
        .env("HERALD_PUSHGATEWAY_URL", &gateway.url)
        .env("HERALD_INSTANCE_ID", instance)
        .env("HERALD_LOG_FORMAT", "json")
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

async fn scrape(gateway: &Pushgateway) -> Exposition {
    let text = gateway.metrics_text().await;
    prom_text::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migrate_run_pushes_its_metrics_and_a_crashed_one_stays_running() {
    let gateway = Pushgateway::start().await;
    let all = migrations::embedded_versions();
    let newest = *all.last().unwrap();

    // A complete run on an empty database.
    let db = TestDb::empty().await;
    let status = migrate(&db, &gateway, "init-1").status().unwrap();
    assert!(status.success());
    let s = scrape(&gateway).await;
    let group = [("job", "herald-migrate"), ("instance", "init-1")];
    let with = |extra: &[(&'static str, &'static str)]| -> Vec<(&'static str, &'static str)> {
        group.iter().chain(extra).copied().collect()
    };
    assert_eq!(
        s.sum(
            "herald_migration_outcome",
            &with(&[("outcome", "succeeded")])
        ),
        1.0
    );
    assert_eq!(
        s.sum("herald_migration_outcome", &with(&[("outcome", "running")])),
        0.0
    );
    assert_eq!(
        s.sum(
            "herald_migration_schema_version",
            &with(&[("database", "events")])
        ),
        f64::from(newest)
    );
    assert_eq!(
        s.sum("herald_migrations_applied", &with(&[])),
        all.len() as f64
    );
    let labels = with(&[]);
    let durations: Vec<_> = s
        .matching("herald_migration_duration_seconds", &labels)
        .collect();
    assert_eq!(durations.len(), all.len(), "one duration per migration");
    assert!(durations.iter().all(|d| d.value >= 0.0 && d.value < 60.0));
    assert!(durations
        .iter()
        .any(|d| d.labels.get("migration").map(String::as_str) == Some("V3__read_models")));
    let started = s.sum("herald_migration_started_timestamp_seconds", &with(&[]));
    let finished = s.sum("herald_migration_finished_timestamp_seconds", &with(&[]));
    assert!(
        started > 1.7e9 && finished >= started,
        "{started} {finished}"
    );
    assert!(s.matching("herald_migration_outcome", &with(&[])).all(|m| m
        .labels
        .get("service")
        .map(String::as_str)
        == Some("command-service")));

    // A run that dies while a migration waits: its group stays, saying `running`.
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, Duration::from_secs(60), Some(newest - 1))
        .await
        .unwrap();
    let mut blocker = sqlx::PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::query(
        "LOCK TABLE read_model_versions, messages, message_events, events IN ACCESS EXCLUSIVE MODE",
    )
    .execute(&mut blocker)
    .await
    .unwrap();
    let mut child = migrate(&db, &gateway, "init-2").spawn().unwrap();
    let crashed = [("job", "herald-migrate"), ("instance", "init-2")];
    let running: Vec<(&str, &str)> = crashed
        .iter()
        .copied()
        .chain([("outcome", "running")])
        .collect();
    eventually(
        Duration::from_secs(30),
        "the run to push `running`",
        || async {
            (scrape(&gateway)
                .await
                .sum("herald_migration_outcome", &running)
                == 1.0)
                .then_some(())
        },
    )
    .await;
    child.kill().unwrap(); // SIGKILL: no last push
    child.wait().unwrap();
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    let s = scrape(&gateway).await;
    assert_eq!(s.sum("herald_migration_outcome", &running), 1.0);
    assert!(
        s.matching("herald_migration_finished_timestamp_seconds", &crashed)
            .next()
            .is_none(),
        "a run that never ended has no end time"
    );
    assert!(s.sum("herald_migration_started_timestamp_seconds", &crashed) > 1.7e9);
    // The first group is untouched by the second run.
    assert_eq!(
        s.sum(
            "herald_migration_outcome",
            &with(&[("outcome", "succeeded")])
        ),
        1.0
    );
}
