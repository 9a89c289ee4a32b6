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
    /// Events in the event store that the read model does not reflect yet, including this
    /// tenant's events parked as dead letters.
    pub lag_events: i64,
    /// Age of the oldest such event (0 when none).
    pub lag_seconds: f64,
    /// This tenant's events the projector could not apply and set aside (parked, or held
    /// behind a parked one): the read model lacks them until an operator retries or skips
    /// them.
    pub parked_events: i64,
    /// Whether the consistency token given was reached (`null` without a token).
    pub consistent: Option<bool>,
}

/// Measures how far read-model `version` trails the event store for `tenant`, with the
/// projector's own lag measurement (cheap while it keeps up: caught-up shards cost no
/// scan; counts stop at `projector::metrics::LAG_COUNT_CAP` per shard), plus the tenant's
/// parked events, which no amount of waiting brings in.
pub async fn freshness(
    store: &PgPool,
    read: &PgPool,
    version: i32,
    tenant: Uuid,
    shards: u32,
    consistent: Option<bool>,
) -> Result<Freshness, sqlx::Error> {
    let lag = projector::metrics::version_lag(store, read, version, shards).await?;
    let (parked, oldest_parked): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT count(*), min(coalesce(recorded_at, parked_at)) FROM dead_letters \
          WHERE version = $1 AND tenant_id = $2 AND state IN ('parked', 'held')",
    )
    .bind(version)
    .bind(tenant)
    .fetch_one(read)
    .await?;
    let now = Utc::now();
    let parked_age = oldest_parked.map_or(0.0, |t| {
        ((now - t).num_milliseconds().max(0) as f64) / 1000.0
    });
    Ok(Freshness {
        as_of: now,
        lag_events: lag.events() + parked,
        lag_seconds: lag.age(now).as_secs_f64().max(parked_age),
        parked_events: parked,
        consistent,
    })
}
