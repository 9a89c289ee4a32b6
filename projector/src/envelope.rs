//! An event as the relay reads it from the event store and publishes it: the envelope, its
//! cursor, and (on the stream) the cursor of the previous event of the same shard.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use redis::Value;
use sqlx::PgPool;

use crate::shard::Cursor;

/// One event of the event store, with its cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    /// Position in commit-safe order (also the stream entry id).
    pub cursor: Cursor,
    /// On a stream entry: the cursor of the previous event the relay published to the same
    /// shard ([`Cursor::ZERO`] for the first). `None` for events read from the event store.
    pub prev: Option<Cursor>,
    /// `events.aggregate_type` (`Message`).
    pub aggregate_type: String,
    /// `events.aggregate_id` (the message id).
    pub aggregate_id: String,
    /// Sequence within the aggregate, from 1.
    pub sequence: i64,
    /// The variant name.
    pub event_type: String,
    /// The payload version.
    pub event_version: String,
    /// JSON text of the payload.
    pub payload: String,
    /// JSON text of the metadata (correlation_id, causation_id, traceparent, ...).
    pub metadata: String,
    /// When the event store recorded it.
    pub recorded_at: DateTime<Utc>,
}

/// Columns every event-store read selects, in [`Envelope::from_row`] order.
pub const COLUMNS: &str = "tx_id::text::bigint AS tx_id, global_position, aggregate_type, \
     aggregate_id, sequence, event_type, event_version, payload::text AS payload, \
     metadata::text AS metadata, recorded_at";

/// Below the xmin horizon: every transaction with a smaller id has finished, so nothing can
/// commit behind a cursor that only moves over such rows (DESIGN section 4).
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

impl Envelope {
    fn from_row(r: Row) -> Self {
        Self {
            cursor: Cursor::new(r.0, r.1),
            prev: None,
            aggregate_type: r.2,
            aggregate_id: r.3,
            sequence: r.4,
            event_type: r.5,
            event_version: r.6,
            payload: r.7,
            metadata: r.8,
            recorded_at: r.9,
        }
    }

    /// The tenant that recorded it (from the metadata, which Herald writes as a flat map
    /// of strings: it decodes even when the payload does not).
    pub fn tenant_id(&self) -> Option<uuid::Uuid> {
        serde_json::from_str::<serde_json::Value>(&self.metadata)
            .ok()
            .and_then(|m| {
                m.get("tenant_id")
                    .and_then(|t| t.as_str())
                    .map(String::from)
            })
            .and_then(|t| t.parse().ok())
    }

    /// The W3C `traceparent` of the command that recorded it (from the metadata).
    pub fn traceparent(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.metadata)
            .ok()
            .and_then(|m| {
                m.get("traceparent")
                    .and_then(|t| t.as_str())
                    .map(String::from)
            })
    }

    /// The fields of its stream entry.
    pub fn to_fields(&self, prev: Cursor) -> Vec<(&'static str, String)> {
        let traceparent = self.traceparent().unwrap_or_default();
        vec![
            ("event_type", self.event_type.clone()),
            ("event_version", self.event_version.clone()),
            ("payload", self.payload.clone()),
            ("metadata", self.metadata.clone()),
            ("traceparent", traceparent),
            ("aggregate_type", self.aggregate_type.clone()),
            ("aggregate_id", self.aggregate_id.clone()),
            ("sequence", self.sequence.to_string()),
            ("tx_id", self.cursor.tx_id.to_string()),
            ("global_position", self.cursor.global_position.to_string()),
            ("recorded_at", self.recorded_at.to_rfc3339()),
            ("prev", prev.entry_id()),
        ]
    }

    /// Rebuilds an envelope from a stream entry's id and fields.
    pub fn from_fields(id: &str, fields: &HashMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| format!("entry {id} has no field {k}"))
        };
        let cursor: Cursor = id.parse().map_err(|e| format!("{e}"))?;
        let prev = match fields.get("prev") {
            Some(p) => Some(p.parse::<Cursor>().map_err(|e| format!("{e}"))?),
            None => None,
        };
        Ok(Self {
            cursor,
            prev,
            aggregate_type: get("aggregate_type")?,
            aggregate_id: get("aggregate_id")?,
            sequence: get("sequence")?
                .parse()
                .map_err(|_| format!("entry {id}: bad sequence"))?,
            event_type: get("event_type")?,
            event_version: get("event_version")?,
            payload: get("payload")?,
            metadata: get("metadata")?,
            recorded_at: DateTime::parse_from_rfc3339(&get("recorded_at")?)
                .map_err(|_| format!("entry {id}: bad recorded_at"))?
                .with_timezone(&Utc),
        })
    }
}

/// Up to `limit` events after `after`, below the horizon, in cursor order.
pub async fn read_after(
    pool: &PgPool,
    after: Cursor,
    limit: i64,
) -> Result<Vec<Envelope>, sqlx::Error> {
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
    Ok(rows.into_iter().map(Envelope::from_row).collect())
}

/// Up to `limit` events of `shard` (of `shards`) after `after` and at most `upto` (when
/// given), below the horizon, in cursor order.
pub async fn read_shard_after(
    pool: &PgPool,
    shard: u32,
    shards: u32,
    after: Cursor,
    upto: Option<Cursor>,
    limit: i64,
) -> Result<Vec<Envelope>, sqlx::Error> {
    let upto = upto.unwrap_or(Cursor::new(i64::MAX, i64::MAX));
    let sql = format!(
        "SELECT {COLUMNS} FROM events \
         WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2) \
           AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4) \
           AND herald_shard(aggregate_id, $5) = $6 AND {BELOW_HORIZON} \
         ORDER BY events.tx_id, events.global_position LIMIT $7"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(after.tx_id)
        .bind(after.global_position)
        .bind(upto.tx_id)
        .bind(upto.global_position)
        .bind(shards as i32)
        .bind(shard as i32)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Envelope::from_row).collect())
}

/// The events at the given global positions (for dead-letter retries), in cursor order.
pub async fn read_positions(
    pool: &PgPool,
    positions: &[i64],
) -> Result<Vec<Envelope>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events WHERE global_position = ANY($1) \
         ORDER BY events.tx_id, events.global_position"
    );
    let rows: Vec<Row> = sqlx::query_as(&sql).bind(positions).fetch_all(pool).await?;
    Ok(rows.into_iter().map(Envelope::from_row).collect())
}

/// Renders a Redis bulk/simple string as text.
pub fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The elements of a Redis array (or the flattened pairs of a RESP3 map).
pub fn value_items(v: &Value) -> Vec<Value> {
    match v {
        Value::Array(items) | Value::Set(items) => items.clone(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [k.clone(), v.clone()])
            .collect(),
        _ => Vec::new(),
    }
}

/// A flat `[k1, v1, k2, v2, ...]` reply (or a RESP3 map) as a map.
pub fn value_map(v: &Value) -> HashMap<String, Value> {
    let items = value_items(v);
    items
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => value_text(k).map(|k| (k, v.clone())),
            _ => None,
        })
        .collect()
}
