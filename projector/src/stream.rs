//! The Redis Streams wire: how an event travels as a stream entry, how the projector talks
//! to Redis, and the one way it opens connections.
//!
//! * Each shard is the stream `{prefix}:events:{shard}`; entry ids are event cursors
//!   (`<tx_id>-<global_position>`), so a repeated publish of an event is refused by Redis.
//! * An entry carries the stored event's columns plus `prev`, the cursor of the previous
//!   event published to the same shard: a consumer whose checkpoint is behind `prev` knows
//!   the stream lost entries.
//! * Every read-model version has the consumer group `projector-v<version>`.
//!
//! Blocking reads (`XREADGROUP BLOCK`) get a connection of their own with a response
//! timeout above the block time: the crate's 500 ms default would cut every wait short,
//! and on a shared connection one blocked read would stall every other command.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_store::{Cursor, EventRow, StoredEvent};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use crate::error::{Error, Result};

/// The stream key of `shard`: `{prefix}:events:{shard}`.
pub fn stream_key(prefix: &str, shard: u32) -> String {
    format!("{prefix}:events:{shard}")
}

/// The consumer group of a read-model version: `projector-v<version>`.
pub fn group_name(version: i32) -> String {
    format!("projector-v{version}")
}

/// A connection for commands that answer at once (response timeout `timeout`).
pub async fn connect(client: &redis::Client, timeout: Duration) -> Result<MultiplexedConnection> {
    Ok(client
        .get_multiplexed_async_connection_with_config(
            &AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(timeout)),
        )
        .await?)
}

/// A connection of its own for blocking reads of up to `block`.
pub async fn connect_blocking(
    client: &redis::Client,
    block: Duration,
) -> Result<MultiplexedConnection> {
    connect(client, block + Duration::from_secs(5)).await
}

/// A stream entry: a stored event, and on entries read from a stream the cursor of the
/// event published before it to the same shard ([`Cursor::ZERO`] for the first). Events
/// read straight from the event store have no `prev`.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The event.
    pub event: StoredEvent,
    /// Its predecessor in the shard, when read from a stream.
    pub prev: Option<Cursor>,
}

impl From<StoredEvent> for Entry {
    fn from(event: StoredEvent) -> Self {
        Self { event, prev: None }
    }
}

impl Entry {
    /// The fields of the entry that publishes `event` after `prev`.
    pub fn fields(event: &StoredEvent, prev: Cursor) -> Vec<(&'static str, String)> {
        vec![
            ("event_type", event.row.event_type.clone()),
            ("event_version", event.row.event_version.clone()),
            ("payload", event.row.payload.clone()),
            ("metadata", event.row.metadata.clone()),
            ("traceparent", event.traceparent().unwrap_or_default()),
            ("aggregate_type", event.aggregate_type.clone()),
            ("aggregate_id", event.row.aggregate_id.clone()),
            ("sequence", event.row.sequence.to_string()),
            ("tx_id", event.cursor.tx_id.to_string()),
            ("global_position", event.cursor.global_position.to_string()),
            ("recorded_at", event.recorded_at.to_rfc3339()),
            ("prev", prev.entry_id()),
        ]
    }

    /// Rebuilds an entry from its id and fields.
    pub fn from_fields(id: &str, fields: &HashMap<String, String>) -> Result<Self> {
        let bad = |reason: String| Error::Entry {
            id: id.to_string(),
            reason,
        };
        let get = |k: &str| {
            fields
                .get(k)
                .cloned()
                .ok_or_else(|| bad(format!("no field {k}")))
        };
        let cursor: Cursor = id.parse().map_err(|e| bad(format!("{e}")))?;
        let prev = match fields.get("prev") {
            Some(p) => Some(p.parse::<Cursor>().map_err(|e| bad(format!("{e}")))?),
            None => None,
        };
        let recorded_at = DateTime::parse_from_rfc3339(&get("recorded_at")?)
            .map_err(|_| bad("bad recorded_at".into()))?
            .with_timezone(&Utc);
        Ok(Self {
            event: StoredEvent {
                cursor,
                aggregate_type: get("aggregate_type")?,
                row: EventRow {
                    aggregate_id: get("aggregate_id")?,
                    sequence: get("sequence")?
                        .parse()
                        .map_err(|_| bad("bad sequence".into()))?,
                    event_type: get("event_type")?,
                    event_version: get("event_version")?,
                    payload: get("payload")?,
                    metadata: get("metadata")?,
                },
                recorded_at,
            },
            prev,
        })
    }
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
    value_items(v)
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => value_text(k).map(|k| (k, v.clone())),
            _ => None,
        })
        .collect()
}

/// The fields of a stream entry as text.
pub fn fields_of(v: &Value) -> HashMap<String, String> {
    value_items(v)
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((value_text(k)?, value_text(v)?)),
            _ => None,
        })
        .collect()
}

/// One entry of an `XREADGROUP` reply: its id, and the entry (`None` for an entry deleted
/// from the stream while pending, or one that does not decode: the event store fills those
/// in).
pub type ReadEntry = (String, Option<Entry>);

/// An `XREADGROUP` reply: per stream key, its entries in id order.
pub fn parse_read(v: &Value) -> HashMap<String, Vec<ReadEntry>> {
    let mut out = HashMap::new();
    let streams: Vec<(Value, Value)> = match v {
        Value::Map(pairs) => pairs.clone(),
        other => value_items(other)
            .into_iter()
            .filter_map(|s| {
                let parts = value_items(&s);
                Some((parts.first()?.clone(), parts.get(1)?.clone()))
            })
            .collect(),
    };
    for (key, entries) in streams {
        let Some(key) = value_text(&key) else {
            continue;
        };
        let mut list = Vec::new();
        for entry in value_items(&entries) {
            let parts = value_items(&entry);
            let Some(id) = parts.first().and_then(value_text) else {
                continue;
            };
            let env = match parts.get(1) {
                Some(Value::Nil) | None => None,
                Some(fields) => match Entry::from_fields(&id, &fields_of(fields)) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        tracing::error!(entry = %id, error = %e, "undecodable stream entry; the event store will fill it in");
                        None
                    }
                },
            };
            list.push((id, env));
        }
        out.insert(key, list);
    }
    out
}

/// Whether a Redis error says the consumer group (or its stream) does not exist.
pub fn is_no_group(e: &redis::RedisError) -> bool {
    e.code() == Some("NOGROUP")
}

/// Creates `group` on `key` at `at` (and the stream if missing). `Ok(false)` when the group
/// already existed.
pub async fn create_group(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    at: Cursor,
) -> Result<bool> {
    let created: std::result::Result<Value, redis::RedisError> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(group)
        .arg(at.entry_id())
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(_) => Ok(true),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Removes `group` from `key` (nothing when either is missing).
pub async fn destroy_group(conn: &mut MultiplexedConnection, key: &str, group: &str) {
    let _: std::result::Result<Value, _> = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(key)
        .arg(group)
        .query_async(conn)
        .await;
}

/// Acknowledges `ids` of `group` on `key`.
pub async fn ack(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    ids: &[String],
) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("XACK");
    cmd.arg(key).arg(group);
    for id in ids {
        cmd.arg(id);
    }
    cmd.query_async::<Value>(conn).await?;
    Ok(())
}

/// Moves every entry of `group` on `key` pending for another consumer (idle at least
/// `min_idle`) to `consumer`, so it is replayed from this consumer's pending list.
pub async fn claim_all(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
    consumer: &str,
    min_idle: Duration,
) -> Result<()> {
    let mut start = "0-0".to_string();
    // Bounded: each round moves up to 1,000 entries; a stream holds at most its MAXLEN.
    for _ in 0..10_000 {
        let reply: Value = redis::cmd("XAUTOCLAIM")
            .arg(key)
            .arg(group)
            .arg(consumer)
            .arg(min_idle.as_millis() as u64)
            .arg(&start)
            .arg("COUNT")
            .arg(1000)
            .arg("JUSTID")
            .query_async(conn)
            .await?;
        let next = value_items(&reply)
            .first()
            .and_then(value_text)
            .unwrap_or_else(|| "0-0".into());
        if next == "0-0" {
            break;
        }
        start = next;
    }
    Ok(())
}

/// Per consumer group of `key`: its name, pending count and last delivered id (empty
/// when the stream does not exist).
pub async fn groups(
    conn: &mut MultiplexedConnection,
    key: &str,
) -> Result<Vec<(String, i64, Cursor)>> {
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(conn)
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    Ok(value_items(&groups)
        .iter()
        .filter_map(|g| {
            let m = value_map(g);
            let name = m.get("name").and_then(value_text)?;
            let pending = m
                .get("pending")
                .and_then(value_text)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let last = m
                .get("last-delivered-id")
                .and_then(value_text)
                .and_then(|l| l.parse().ok())
                .unwrap_or(Cursor::ZERO);
            Some((name, pending, last))
        })
        .collect())
}

/// The lowest id pending in `group` of `key` (`None` when nothing is pending).
pub async fn oldest_pending(
    conn: &mut MultiplexedConnection,
    key: &str,
    group: &str,
) -> Result<Option<Cursor>> {
    let summary: Value = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .query_async(conn)
        .await?;
    Ok(value_items(&summary)
        .get(1)
        .and_then(value_text)
        .and_then(|s| s.parse().ok()))
}

/// Drops the entries of `key` below `min`.
pub async fn trim_below(conn: &mut MultiplexedConnection, key: &str, min: Cursor) -> Result<()> {
    let _: Value = redis::cmd("XTRIM")
        .arg(key)
        .arg("MINID")
        .arg(min.entry_id())
        .query_async(conn)
        .await?;
    Ok(())
}

/// Reads a whole stream (tests and tools): every entry, in id order.
pub async fn read_all(conn: &mut MultiplexedConnection, key: &str) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let v: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        let items = value_items(&v);
        if items.is_empty() {
            return Ok(out);
        }
        let mut last = String::new();
        for entry in &items {
            let parts = value_items(entry);
            let id = parts.first().and_then(value_text).unwrap_or_default();
            let fields = parts.get(1).map(fields_of).unwrap_or_default();
            out.push(Entry::from_fields(&id, &fields)?);
            last = id;
        }
        start = format!("({last}");
    }
}

/// A readiness check: Redis answers PING.
pub fn readiness_check(client: redis::Client) -> service_kit::health::Check {
    service_kit::health::Check::new("redis", move || {
        let client = client.clone();
        async move {
            let mut conn = connect(&client, Duration::from_secs(2))
                .await
                .map_err(|e| e.to_string())?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
    })
}
