//! Pre-validation refuses to apply anything to a database it should not touch, saying
//! why; post-validation fails a run whose result lacks what Herald's code relies on.

use std::time::Duration;

use migrations::{MigrationError, RunOptions};
use test_support::TestDb;

const WAIT: Duration = Duration::from_secs(60);

async fn tables(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_missing_or_old_extension_is_refused_before_anything_is_applied() {
    let db = TestDb::empty().await;
    let pool = db.pool().await;
    let missing = RunOptions {
        extension: ("timescaledb_that_is_not_there", (2, 13, 0)),
        ..RunOptions::new(WAIT)
    };
    let err = migrations::run_with(&db.url, &missing).await.unwrap_err();
    assert!(
        matches!(err, MigrationError::ExtensionMissing { .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("timescaledb_that_is_not_there extension is not available")
            && text.contains("install TimescaleDB 2.13.0 or newer"),
        "{text}"
    );

    let too_new_a_minimum = RunOptions {
        extension: ("timescaledb", (99, 0, 0)),
        ..RunOptions::new(WAIT)
    };
    let err = migrations::run_with(&db.url, &too_new_a_minimum)
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, MigrationError::ExtensionTooOld { .. }),
        "{text}"
    );
    assert!(
        text.contains("is older than the 99.0.0 Herald needs")
            && text.contains("(available)")
            && text.contains("ALTER EXTENSION timescaledb UPDATE"),
        "{text}"
    );
    assert_eq!(tables(&pool).await, 0, "nothing was applied");

    // Once the extension is installed, the installed version is the one judged.
    migrations::run(&db.url, WAIT).await.unwrap();
    let err = migrations::run_with(&db.url, &too_new_a_minimum)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("(installed)"), "{err}");
}

#[tokio::test]
async fn a_schema_from_a_newer_release_is_refused_naming_both_versions() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let newest = *migrations::embedded_versions().last().unwrap();
    sqlx::query(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) \
         VALUES ($1, 'from_the_future', now()::text, '1')",
    )
    .bind(newest + 90)
    .execute(&pool)
    .await
    .unwrap();
    let err = migrations::run(&db.url, WAIT).await.unwrap_err();
    assert!(matches!(err, MigrationError::NewerSchema { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "schema version {} is newer than this binary's {newest}",
            newest + 90
        )),
        "{err}"
    );
}

#[tokio::test]
async fn an_applied_migration_that_changed_is_refused_by_name() {
    let db = TestDb::empty().await;
    migrations::run_to(&db.url, WAIT, Some(3)).await.unwrap();
    let pool = db.pool().await;
    sqlx::query("UPDATE refinery_schema_history SET checksum = '42' WHERE version = 3")
        .execute(&pool)
        .await
        .unwrap();
    let before = tables(&pool).await;
    let err = migrations::run(&db.url, WAIT).await.unwrap_err();
    assert!(matches!(err, MigrationError::Diverged { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("migration V3__read_models was changed after it was applied")
            && text.contains("checksum 42 in the database"),
        "{text}"
    );
    assert_eq!(tables(&pool).await, before, "V4 and later were not applied");
    let newest: i32 = sqlx::query_scalar("SELECT max(version) FROM refinery_schema_history")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(newest, 3);
}

#[tokio::test]
async fn post_validation_names_a_dropped_index_and_a_service_refuses_to_start() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let required = service_kit::migrate::requirements();
    let options = RunOptions {
        requirements: &required,
        ..RunOptions::new(WAIT)
    };
    migrations::run_with(&db.url, &options)
        .await
        .expect("a fresh schema holds everything");

    sqlx::query("DROP INDEX events_tx_cursor_idx")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE messages DROP COLUMN delivered_at CASCADE")
        .execute(&pool)
        .await
        .unwrap();
    let err = migrations::run_with(&db.url, &options).await.unwrap_err();
    let MigrationError::Schema(problems) = &err else {
        panic!("{err}")
    };
    assert!(
        problems.contains(&"index events_tx_cursor_idx on events is missing".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"table messages lacks columns delivered_at".to_string()),
        "{problems:?}"
    );
    // A service migrating on start stops with the same names, before it serves.
    let settings = test_support::settings(&db.url);
    let err = service_kit::connections::migrate(&settings, "test")
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("index events_tx_cursor_idx on events is missing"),
        "{err}"
    );
}
