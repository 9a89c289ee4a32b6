//! What every answer says about how current it is, and read-your-writes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{dead_letters, lag};

/// How current an answer is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
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

/// Measures how far read-model `version` trails the event store for `tenant` (cheap while
/// the projector keeps up, and of how far it trails: see [`lag::of_version`]), plus the
/// tenant's parked events, which no amount of waiting brings in.
pub async fn measure(
    store: &PgPool,
    read: &PgPool,
    version: i32,
    tenant: Uuid,
    shards: u32,
    consistent: Option<bool>,
) -> Result<Freshness, sqlx::Error> {
    let lag = lag::of_version(store, read, version, shards).await?;
    let (parked, oldest_parked) = dead_letters::waiting_of_tenant(read, version, tenant).await?;
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

/// Waits until read-model `version` reflects `message_id` up to `sequence` (its row has
/// reached that sequence), polling for at most `wait`. Returns whether it did. A message of
/// another tenant never becomes visible, exactly like an unknown one.
pub async fn wait_for(
    pool: &PgPool,
    version: i32,
    tenant: Uuid,
    message_id: Uuid,
    sequence: u64,
    wait: Duration,
) -> Result<bool, sqlx::Error> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut pause = Duration::from_millis(5);
    let sequence = i64::try_from(sequence).unwrap_or(i64::MAX);
    loop {
        let reached: Option<bool> = sqlx::query_scalar(
            "SELECT last_sequence >= $4 FROM messages
              WHERE version = $1 AND message_id = $2 AND tenant_id = $3",
        )
        .bind(version)
        .bind(message_id)
        .bind(tenant)
        .bind(sequence)
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
