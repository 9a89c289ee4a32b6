//! The oracle compares every column of the read-model tables: a column added by a later
//! migration fails here until the oracle computes it too (or says why it cannot).

use std::collections::BTreeSet;

use oracle::diff::{EVENT_COLUMNS, MESSAGE_COLUMNS, NOT_COMPARED};
use test_support::TestDb;

async fn columns(pool: &sqlx::PgPool, table: &str) -> BTreeSet<String> {
    sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = $1",
    )
    .bind(table)
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect()
}

fn listed(list: &str, extra: &[&str]) -> BTreeSet<String> {
    list.split(',')
        .map(|c| c.trim().to_string())
        .chain(extra.iter().map(|c| c.to_string()))
        .collect()
}

#[tokio::test]
async fn every_column_of_every_read_model_table_is_compared() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    assert_eq!(
        columns(&pool, "message_events").await,
        listed(EVENT_COLUMNS, &NOT_COMPARED)
    );
    assert_eq!(
        columns(&pool, "messages").await,
        listed(MESSAGE_COLUMNS, &NOT_COMPARED)
    );
    // The rollups of every level: every column is read by `verify::compare_rollups`.
    for level in read_model::rollup::Level::ALL {
        assert_eq!(
            columns(&pool, level.table()).await,
            listed(read_model::rollup::COLUMNS, &["version"]),
            "{}",
            level.table()
        );
    }
    assert_eq!(
        columns(&pool, "projection_checkpoints").await,
        listed(
            "projection, shard, tx_id, global_position, events",
            &["updated_at"]
        )
    );
}
