//! Reading the event store in commit-safe order: what the relay publishes, what a shard
//! catches up from, what a rebuild replays.
//!
//! Identity values are handed out at insert and become visible at commit, so a reader
//! tailing `global_position > checkpoint` would skip an event whose transaction commits
//! late. Every read here takes only rows whose transaction is below the snapshot's xmin
//! horizon ([`BELOW_HORIZON`]), where every transaction has finished, ordered by the
//! [`Cursor`]: nothing can appear behind a cursor that only moves over such rows.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use std::time::Duration;

use crate::cursor::Cursor;
use crate::row::EventRow;

/// One event as stored: the row the appender wrote, and what the database added to it.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    /// Position in commit-safe order (also the stream entry id).
    pub cursor: Cursor,
    /// `events.aggregate_type` (`Message`).
    pub aggregate_type: String,
    /// The row as written. Its metadata is a flat map of strings Herald writes itself
    /// (correlation_id, causation_id, traceparent, tenant_id, received_at).
    pub row: EventRow,
    /// When the event store recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// Columns every read selects, in [`StoredEvent::from_row`] order.
pub const COLUMNS: &str = "tx_id::text::bigint AS tx_id, global_position, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
     metadata::text AS metadata, recorded_at";

/// The stored shard key of an event row (migration V13): the first 4 bytes of
/// SHA-256(aggregate_id), written at insert; rows older than the column are hashed here.
/// An event's shard is this value modulo the shard count.
pub const SHARD_KEY: &str = "coalesce(shard_key, herald_shard_key(aggregate_id))";

/// Below the xmin horizon: every transaction with a smaller id has finished, so nothing can
/// commit behind a cursor that only moves over such rows.
pub const BELOW_HORIZON: &str = "tx_id < pg_snapshot_xmin(pg_current_snapshot())";

type Row = (
    i64,
    i64,
    String,
    String,
    i64,
    String,
    String,
    String,
    String,
    DateTime<Utc>,
);

impl StoredEvent {
    fn from_row(r: Row) -> Self {
        Self {
            cursor: Cursor::new(r.0, r.1),
            aggregate_type: r.2,
            row: EventRow {
                aggregate_id: r.3,
                sequence: r.4,
                event_type: r.5,
                event_version: r.6,
                payload: r.7,
                metadata: r.8,
            },
            recorded_at: r.9,
        }
    }

    fn metadata_field(&self, name: &str) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.row.metadata)
            .ok()
            .and_then(|m| m.get(name).and_then(|t| t.as_str()).map(String::from))
    }

    /// The tenant that recorded it (from the metadata, which decodes even when the payload
    /// does not).
    pub fn tenant_id(&self) -> Option<uuid::Uuid> {
        self.metadata_field("tenant_id")
            .and_then(|t| t.parse().ok())
    }

    /// The W3C `traceparent` of the command that recorded it.
    pub fn traceparent(&self) -> Option<String> {
        self.metadata_field("traceparent")
    }
}

/// Up to `limit` events after `after`, below the horizon, in cursor order.
pub async fn read_after(
    pool: &PgPool,
    after: Cursor,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) AND {BELOW_HORIZON} \
         ORDER BY events.tx_id, events.global_position LIMIT $3"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.tx_id)
        .bind(after.global_position)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from_row).collect())
}

/// Up to `limit` events of `shard` (of `shards`) after `after` and at most `upto` (when
/// given), below the horizon, in cursor order. The shard is read off each row's stored
/// key ([`SHARD_KEY`]: no hashing, except rows older than the key); the range runs on the
/// cursor index and passes over the other shards' rows in it, so it reads about `shards`
/// rows per event it returns.
pub async fn read_shard_after(
    pool: &PgPool,
    shard: u32,
    shards: u32,
    after: Cursor,
    upto: Option<Cursor>,
    limit: i64,
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let upto = upto.unwrap_or(Cursor::new(i64::MAX, i64::MAX));
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
           AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4) \
           AND {SHARD_KEY} % $5 = $6 AND {BELOW_HORIZON} \
         ORDER BY events.tx_id, events.global_position LIMIT $7"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.tx_id)
        .bind(after.global_position)
        .bind(upto.tx_id)
        .bind(upto.global_position)
        .bind(i64::from(shards))
        .bind(i64::from(shard))
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from_row).collect())
}

/// The events of `shard` (of `shards`) in `(after, upto]`: how many, counting at most
/// `cap`, and the oldest one's commit time. Committed events whatever the horizon: a lag
/// counts what has not been applied yet, a relay what it has published.
pub async fn tally_shard(
    pool: &PgPool,
    shard: u32,
    shards: u32,
    after: Cursor,
    upto: Cursor,
    cap: i64,
) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT count(*), min(recorded_at) FROM (
           SELECT recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
              AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4)
              AND {SHARD_KEY} % $5 = $6
            ORDER BY tx_id, global_position
            LIMIT $7) shard_range"
    ))
    .bind(after.tx_id)
    .bind(after.global_position)
    .bind(upto.tx_id)
    .bind(upto.global_position)
    .bind(i64::from(shards))
    .bind(i64::from(shard))
    .bind(cap)
    .fetch_one(pool)
    .await
}

/// The events at the given global positions (for dead-letter retries), in cursor order.
pub async fn read_positions(
    pool: &PgPool,
    positions: &[i64],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE global_position = ANY($1) \
         ORDER BY events.tx_id, events.global_position"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql).bind(positions).fetch_all(pool).await?;
    Ok(rows.into_iter().map(StoredEvent::from_row).collect())
}

/// Every event of the given streams of `aggregate_type`, in (aggregate_id, sequence) order.
/// Not limited to the horizon: a reader comparing against what was applied decides itself
/// which events count. Takes any executor, so it can run inside a snapshot transaction.
pub async fn read_streams<'c, E: sqlx::PgExecutor<'c>>(
    executor: E,
    aggregate_type: &str,
    aggregate_ids: &[String],
) -> Result<Vec<StoredEvent>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE aggregate_type = $1 AND aggregate_id = ANY($2) \
         ORDER BY aggregate_id, sequence"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(aggregate_type)
        .bind(aggregate_ids)
        .fetch_all(executor)
        .await?;
    Ok(rows.into_iter().map(StoredEvent::from_row).collect())
}

/// Age of the transaction horizon: how long the oldest transaction still holding it back
/// has been open (zero when none). A growing value means readers are stalled by a long
/// transaction.
pub async fn horizon_age(pool: &PgPool) -> Result<Duration, sqlx::Error> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(xact_start))::float8 FROM pg_stat_activity \
         WHERE backend_xid IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(Duration::from_secs_f64(secs.unwrap_or(0.0).max(0.0)))
}
