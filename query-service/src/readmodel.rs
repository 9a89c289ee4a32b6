//! What every read shares: the active read-model version, read-your-writes waits, and the
//! freshness every answer reports.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use service_kit::consistency::ConsistencyToken;
use sqlx::PgPool;
use uuid::Uuid;

/// The read-model version queries read. A rebuild switches it with one UPDATE, so a query
/// reads it once and uses it throughout: every part of one answer comes from one version.
pub async fn active_version(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM read_model_active")
        .fetch_one(pool)
        .await
}

/// Waits until the read model reflects `token` (the message's row has reached the token's
/// sequence), polling for at most `wait`. Returns whether it did. A token naming another
/// tenant's message never becomes visible, exactly like an unknown one.
pub async fn wait_for(
    pool: &PgPool,
    version: i32,
    tenant: Uuid,
    token: ConsistencyToken,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    loop {
        let reached: Option<bool> = sqlx::query_scalar(
            "SELECT last_sequence >= $4 FROM messages
              WHERE version = $1 AND message_id = $2 AND tenant_id = $3",
        )
        .bind(version)
        .bind(token.message_id)
        .bind(tenant)
        .bind(token.sequence as i64)
        .fetch_optional(pool)
        .await?;
        if reached == Some(true) {
            return Ok(true);
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// How current an answer is.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Freshness {
    /// When the answer was computed.
    pub as_of: DateTime<Utc>,
    /// Events in the event store that the read model does not reflect yet.
    pub lag_events: i64,
    /// Age of the oldest such event (0 when none).
    pub lag_seconds: f64,
    /// Whether the consistency token given was reached (`null` without a token).
    pub consistent: Option<bool>,
}

/// Lag counts stop here: past this, "at least" is all an answer needs to say.
pub const LAG_COUNT_CAP: i64 = 100_000;

/// Measures how far the active read model trails the event store, cheaply when it keeps
/// up. Two parts: events not yet published by the relay (past its cursor, below the
/// horizon), and, per shard, events published but not yet projected (between the shard's
/// checkpoint and the relay's head of that shard). A caught-up shard costs nothing; a
/// lagging one scans only its lag, on the cursor index. Counts stop at [`LAG_COUNT_CAP`].
pub async fn freshness(
    store: &PgPool,
    read: &PgPool,
    version: i32,
    shards: u32,
    consistent: Option<bool>,
) -> Result<Freshness, sqlx::Error> {
    let projection = format!("read_model_v{version}");
    let checkpoints: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position FROM projection_checkpoints WHERE projection = $1",
    )
    .bind(&projection)
    .fetch_all(read)
    .await?;
    let heads: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position FROM relay_shard_heads WHERE relay = 'relay'",
    )
    .fetch_all(store)
    .await?;
    let relayed: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoint WHERE relay = 'relay'")
            .fetch_optional(store)
            .await?;
    let checkpoint_of = |shard: i32| {
        checkpoints
            .iter()
            .find(|c| c.0 == shard)
            .map_or((0, 0), |c| (c.1, c.2))
    };

    let mut lag_events = 0i64;
    let mut oldest: Option<DateTime<Utc>> = None;
    let mut add = |n: i64, t: Option<DateTime<Utc>>| {
        lag_events = (lag_events + n).min(LAG_COUNT_CAP);
        oldest = match (oldest, t) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    };
    // Published, not yet projected.
    for (shard, head_tx, head_pos) in heads.iter().copied().filter(|h| (h.0 as u32) < shards) {
        let (cp_tx, cp_pos) = checkpoint_of(shard);
        if (cp_tx, cp_pos) >= (head_tx, head_pos) {
            continue;
        }
        let (n, t): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM (
               SELECT recorded_at FROM events
                WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
                  AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4)
                  AND herald_shard(aggregate_id, $5) = $6
                LIMIT $7) lagging",
        )
        .bind(cp_tx)
        .bind(cp_pos)
        .bind(head_tx)
        .bind(head_pos)
        .bind(shards as i32)
        .bind(shard)
        .bind(LAG_COUNT_CAP)
        .fetch_one(store)
        .await?;
        add(n, t);
    }
    // Committed, not yet published.
    let (tx, pos) = relayed.unwrap_or((0, 0));
    let (n, t): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(recorded_at) FROM (
           SELECT recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
              AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
            LIMIT $3) unpublished",
    )
    .bind(tx)
    .bind(pos)
    .bind(LAG_COUNT_CAP)
    .fetch_one(store)
    .await?;
    add(n, t);

    let now = Utc::now();
    let lag_seconds = oldest.map_or(0.0, |t| {
        ((now - t).num_milliseconds().max(0) as f64) / 1000.0
    });
    Ok(Freshness {
        as_of: now,
        lag_events,
        lag_seconds,
        consistent,
    })
}
