//! How far the relay has published: its cursor (the last event published) and, per shard,
//! the last event published to that shard. Each stream entry names its predecessor in the
//! shard, so a consumer can tell when Redis lost entries; the heads also let a lag
//! measurement skip shards that are caught up.

use std::collections::BTreeMap;

use event_store::Cursor;
use sqlx::PgPool;

/// The relay's name in `relay_checkpoint` and `relay_shard_heads`.
pub const RELAY_NAME: &str = "relay";

/// The relay's stored progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPosition {
    /// The last event published.
    pub cursor: Cursor,
    /// Per shard, the last event published to it.
    pub heads: BTreeMap<u32, Cursor>,
}

/// The relay's cursor (zero before its first publish).
pub async fn cursor(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let cursor: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoint WHERE relay = $1")
            .bind(RELAY_NAME)
            .fetch_optional(pool)
            .await?;
    Ok(cursor.map_or(Cursor::ZERO, |(a, b)| Cursor::new(a, b)))
}

/// The last event published to each shard, as `(shard, tx_id, global_position)` rows.
pub async fn head_rows(pool: &PgPool) -> Result<Vec<(i32, i64, i64)>, sqlx::Error> {
    sqlx::query_as("SELECT shard, tx_id, global_position FROM relay_shard_heads WHERE relay = $1")
        .bind(RELAY_NAME)
        .fetch_all(pool)
        .await
}

/// The stored progress.
pub async fn load(pool: &PgPool) -> Result<RelayPosition, sqlx::Error> {
    Ok(RelayPosition {
        cursor: cursor(pool).await?,
        heads: head_rows(pool)
            .await?
            .into_iter()
            .map(|(s, a, b)| (s as u32, Cursor::new(a, b)))
            .collect(),
    })
}

/// Stores `position` in one transaction. Positions only move forward: a stale relay
/// (one that lost its leadership without knowing) can never move them back.
pub async fn store(pool: &PgPool, position: &RelayPosition) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO relay_checkpoint (relay, tx_id, global_position) VALUES ($1, $2, $3) \
         ON CONFLICT (relay) DO UPDATE SET tx_id = EXCLUDED.tx_id, \
         global_position = EXCLUDED.global_position, updated_at = now() \
         WHERE (relay_checkpoint.tx_id, relay_checkpoint.global_position) \
             < (EXCLUDED.tx_id, EXCLUDED.global_position)",
    )
    .bind(RELAY_NAME)
    .bind(position.cursor.tx_id)
    .bind(position.cursor.global_position)
    .execute(&mut *tx)
    .await?;
    let shards: Vec<i32> = position.heads.keys().map(|s| *s as i32).collect();
    let txs: Vec<i64> = position.heads.values().map(|c| c.tx_id).collect();
    let gps: Vec<i64> = position.heads.values().map(|c| c.global_position).collect();
    sqlx::query(
        "INSERT INTO relay_shard_heads (relay, shard, tx_id, global_position) \
         SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::bigint[]) \
         ON CONFLICT (relay, shard) DO UPDATE SET \
         tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position \
         WHERE (relay_shard_heads.tx_id, relay_shard_heads.global_position) \
             < (EXCLUDED.tx_id, EXCLUDED.global_position)",
    )
    .bind(RELAY_NAME)
    .bind(&shards)
    .bind(&txs)
    .bind(&gps)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}
