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

/// Measures how far the active read model trails the event store: the events each shard's
/// checkpoint does not yet cover. Cheap when the projector keeps up (the scan starts at the
/// lowest checkpoint, on the event store's cursor index).
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
    let mut tx_ids = vec![0i64; shards as usize];
    let mut positions = vec![0i64; shards as usize];
    for (shard, tx, pos) in checkpoints {
        if let Some(i) = usize::try_from(shard).ok().filter(|i| *i < tx_ids.len()) {
            tx_ids[i] = tx;
            positions[i] = pos;
        }
    }
    let floor = tx_ids.iter().copied().min().unwrap_or(0);
    let (lag_events, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(e.recorded_at)
           FROM events e
          WHERE e.tx_id >= $1::text::xid8
            AND (e.tx_id::text::bigint, e.global_position) >
                (($2::bigint[])[herald_shard(e.aggregate_id, $4) + 1],
                 ($3::bigint[])[herald_shard(e.aggregate_id, $4) + 1])",
    )
    .bind(floor.to_string())
    .bind(&tx_ids)
    .bind(&positions)
    .bind(shards as i32)
    .fetch_one(store)
    .await?;
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
