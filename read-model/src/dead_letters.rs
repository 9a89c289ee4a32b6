//! Events the projector could not apply (`parked`, with the error) and the later events of
//! the same message held behind them (`held`), per read-model version. The projector writes
//! them; operators (the CLI, the console) and freshness read them here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

/// One row of `dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct DeadLetter {
    /// Its id (what `retry` and `skip` take).
    pub id: i64,
    /// Read-model version.
    pub version: i32,
    /// The stream shard its message belongs to.
    pub shard: i32,
    /// The message (aggregate id).
    pub message_id: String,
    /// The event's sequence in its message.
    pub sequence: i64,
    /// `events.global_position`.
    pub global_position: i64,
    /// The event type.
    pub event_type: String,
    /// `parked`, `held`, `skipped` or `resolved`.
    pub state: String,
    /// Why it was parked (for held ones: what it waits behind).
    pub error: String,
    /// Failed attempts before it was parked.
    pub attempts: i32,
}

/// Dead letters still waiting (`parked`, `held`), or all of them with `all`, by version,
/// message and sequence.
pub async fn list(pool: &PgPool, all: bool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, version, shard, message_id, sequence, global_position, event_type, state, \
         error, attempts FROM dead_letters \
         WHERE $1 OR state IN ('parked', 'held') ORDER BY version, message_id, sequence",
    )
    .bind(all)
    .fetch_all(pool)
    .await
}

/// Events currently parked (not held) for the `live` versions.
pub async fn parked_in(pool: &PgPool, live: &[i32]) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM dead_letters WHERE state = 'parked' AND version = ANY($1)",
    )
    .bind(live)
    .fetch_one(pool)
    .await
}

/// `tenant`'s events of `version` parked or held, and the commit time of the oldest.
pub async fn waiting_of_tenant(
    pool: &PgPool,
    version: i32,
    tenant: Uuid,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as(
        "SELECT count(*), min(coalesce(recorded_at, parked_at)) FROM dead_letters \
          WHERE version = $1 AND tenant_id = $2 AND state IN ('parked', 'held')",
    )
    .bind(version)
    .bind(tenant)
    .fetch_one(pool)
    .await
}
