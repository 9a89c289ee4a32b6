//! The relay: tails the event store in commit-safe order and publishes every event to its
//! shard stream, exactly once per entry id.
//!
//! * One leader at a time: `pg_try_advisory_lock` on a dedicated connection; other relays
//!   stand by and retry. The lock dies with the connection, so a killed leader is replaced
//!   within one retry interval. Even two relays at once cannot duplicate an entry: ids come
//!   from the cursor, and Redis refuses an id that is not above the stream's top.
//! * Reads `(tx_id, global_position) > cursor AND tx_id < pg_snapshot_xmin(...)`, so a
//!   transaction that commits late is never skipped (DESIGN section 4).
//! * `XADD {prefix}:events:{shard} MAXLEN ~ <cap> <tx_id>-<global_position> ...`; a refused
//!   XADD ("equal or smaller") means the entry is already there and counts as published.
//! * The cursor (and per shard the last published cursor, which the next entry carries as
//!   `prev`) is stored in Postgres after the XADDs.
//! * Woken by `LISTEN herald_events` (a statement trigger on `events`), polling as fallback.
//! * Trims each stream with `XTRIM MINID` to the oldest entry any live consumer group still
//!   needs (its oldest pending entry, else its last delivered one); `MAXLEN ~` on every XADD
//!   is only a safety cap (a consumer beyond it catches up from the event store).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::envelope::{read_after, value_items, value_map, value_text, Envelope};
use crate::metrics::ProjectorMetrics;
use crate::settings::ProjectorSettings;
use crate::shard::{group_name, shard_of, stream_key, Cursor};

/// Advisory-lock key of the relay leader ("HERALDRL").
pub const RELAY_LOCK_KEY: i64 = 0x4845_5241_4c44_524c;

/// The relay's name in `relay_checkpoint`.
pub const RELAY_NAME: &str = "relay";

/// What the relay has done so far (for metrics and tests).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayStatus {
    /// Whether this process currently leads.
    pub leader: bool,
    /// The last cursor published.
    pub cursor: Cursor,
    /// Entries written by this process.
    pub published: u64,
    /// XADDs refused as already present.
    pub refused: u64,
}

/// Everything the relay needs.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    redis: redis::Client,
    prefix: String,
    settings: ProjectorSettings,
    status: Arc<watch::Sender<RelayStatus>>,
    metrics: Option<Arc<ProjectorMetrics>>,
}

impl Relay {
    /// A relay over `pool` (the event store) publishing to `redis` under `prefix`.
    pub fn new(
        pool: PgPool,
        redis: redis::Client,
        prefix: String,
        settings: ProjectorSettings,
    ) -> Self {
        Self {
            pool,
            redis,
            prefix,
            settings,
            status: Arc::new(watch::channel(RelayStatus::default()).0),
            metrics: None,
        }
    }

    /// Counts published events and reports leadership on `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<ProjectorMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn set_leader(&self, leader: bool) {
        self.status.send_modify(|s| s.leader = leader);
        if let Some(m) = &self.metrics {
            m.relay_leader.set(i64::from(leader));
        }
    }

    /// Follows the relay's progress.
    pub fn status(&self) -> watch::Receiver<RelayStatus> {
        self.status.subscribe()
    }

    /// Runs until `stop`: stands by until it wins the leader lock, then relays.
    pub async fn run(self, stop: CancellationToken) {
        while !stop.is_cancelled() {
            match self.lead(&stop).await {
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "relay round failed; retrying"),
            }
            self.set_leader(false);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
    }

    async fn lead(&self, stop: &CancellationToken) -> Result<(), String> {
        let opts = self.pool.connect_options().as_ref().clone();
        let mut lock_conn = PgConnection::connect_with(&opts)
            .await
            .map_err(|e| format!("relay lock connection: {e}"))?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut lock_conn)
            .await
            .map_err(|e| format!("relay lock: {e}"))?;
        if !got {
            let _ = lock_conn.close().await;
            return Ok(());
        }
        tracing::info!("relay leading");
        self.set_leader(true);
        let result = self.relay_loop(stop, &mut lock_conn).await;
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(RELAY_LOCK_KEY)
            .execute(&mut lock_conn)
            .await;
        let _ = lock_conn.close().await;
        result
    }

    async fn relay_loop(
        &self,
        stop: &CancellationToken,
        lock_conn: &mut PgConnection,
    ) -> Result<(), String> {
        let mut listener = PgListener::connect_with(&self.pool)
            .await
            .map_err(|e| format!("listen: {e}"))?;
        listener
            .listen("herald_events")
            .await
            .map_err(|e| format!("listen: {e}"))?;
        let mut redis = self
            .redis
            .get_multiplexed_async_connection_with_config(
                &AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let (mut cursor, mut heads) = load_state(&self.pool).await?;
        self.status.send_modify(|s| s.cursor = cursor);
        let mut last_check = Instant::now();
        let mut last_trim = Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let n = self
                .publish_once(&mut redis, &mut cursor, &mut heads)
                .await?;
            if last_check.elapsed() > Duration::from_secs(1) {
                // Still holding the lock? A dead lock connection means another relay may lead.
                sqlx::query("SELECT 1")
                    .execute(&mut *lock_conn)
                    .await
                    .map_err(|e| format!("relay lock connection lost: {e}"))?;
                last_check = Instant::now();
            }
            if last_trim.elapsed() > self.settings.trim_interval {
                if let Err(e) = self.trim(&mut redis).await {
                    tracing::warn!(error = %e, "trimming streams failed");
                }
                last_trim = Instant::now();
            }
            if n as i64 >= self.settings.relay_batch {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.recv() => {
                    if let Err(e) = r {
                        return Err(format!("notification connection lost: {e}"));
                    }
                }
                _ = tokio::time::sleep(self.settings.relay_poll) => {}
            }
        }
    }

    /// Publishes the next batch below the horizon; returns how many events it covered.
    async fn publish_once(
        &self,
        redis: &mut MultiplexedConnection,
        cursor: &mut Cursor,
        heads: &mut BTreeMap<u32, Cursor>,
    ) -> Result<usize, String> {
        let events = read_after(&self.pool, *cursor, self.settings.relay_batch)
            .await
            .map_err(|e| format!("reading events: {e}"))?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut new_heads = heads.clone();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        // One `relay.publish` span per event, in the event's (the command's) trace; each
        // lasts the pipelined round trip and records whether the entry was new.
        let mut spans = Vec::with_capacity(events.len());
        for env in &events {
            let shard = shard_of(&env.aggregate_id, self.settings.shards);
            spans.push(crate::trace::relay_publish(env, shard));
            let prev = new_heads.get(&shard).copied().unwrap_or(Cursor::ZERO);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream_key(&self.prefix, shard))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.settings.stream_maxlen)
                .arg(env.cursor.entry_id());
            for (k, v) in env.to_fields(prev) {
                cmd.arg(k).arg(v);
            }
            pipe.add_command(cmd);
            new_heads.insert(shard, env.cursor);
        }
        let results: Vec<redis::RedisResult<Value>> = pipe
            .query_async(redis)
            .await
            .map_err(|e| format!("XADD: {e}"))?;
        let (mut published, mut refused) = (0u64, 0u64);
        for ((env, r), span) in events.iter().zip(&results).zip(&spans) {
            match r {
                Ok(_) => {
                    published += 1;
                    span.record("outcome", "published");
                }
                Err(e) if e.to_string().contains("equal or smaller") => {
                    refused += 1;
                    span.record("outcome", "already_present");
                }
                Err(e) => {
                    span.record("outcome", "failed");
                    return Err(format!("XADD {}: {e}", env.cursor));
                }
            }
        }
        drop(spans);
        if let Some(m) = &self.metrics {
            m.relay_published.inc_by(published);
        }
        let last = events.last().expect("not empty").cursor;
        store_state(&self.pool, last, &new_heads).await?;
        *cursor = last;
        *heads = new_heads;
        self.status.send_modify(|s| {
            s.cursor = last;
            s.published += published;
            s.refused += refused;
        });
        Ok(events.len())
    }

    /// Trims every shard stream to what live consumer groups still need.
    async fn trim(&self, redis: &mut MultiplexedConnection) -> Result<(), String> {
        let live: Vec<i32> =
            sqlx::query_scalar("SELECT version FROM read_model_versions WHERE state = 'live'")
                .fetch_all(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
        for shard in 0..self.settings.shards {
            let key = stream_key(&self.prefix, shard);
            if let Some(min) = trim_point(redis, &key, &live).await? {
                let _: Value = redis::cmd("XTRIM")
                    .arg(&key)
                    .arg("MINID")
                    .arg(min.entry_id())
                    .query_async(redis)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }
}

/// The lowest entry id any live group of `key` still needs; `None` when a live group is
/// missing (its projector has not started: keep everything) or the stream does not exist.
pub async fn trim_point(
    redis: &mut MultiplexedConnection,
    key: &str,
    live_versions: &[i32],
) -> Result<Option<Cursor>, String> {
    let groups: Value = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(key)
        .query_async(redis)
        .await
    {
        Ok(v) => v,
        Err(e) if e.to_string().contains("no such key") => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let mut found: BTreeMap<String, (i64, Cursor)> = BTreeMap::new();
    for g in value_items(&groups) {
        let m = value_map(&g);
        let name = m.get("name").and_then(value_text).unwrap_or_default();
        let pending = m
            .get("pending")
            .and_then(value_text)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0i64);
        let last = m
            .get("last-delivered-id")
            .and_then(value_text)
            .and_then(|l| l.parse().ok())
            .unwrap_or(Cursor::ZERO);
        found.insert(name, (pending, last));
    }
    let mut min: Option<Cursor> = None;
    for v in live_versions {
        let Some((pending, last)) = found.get(&group_name(*v)).copied() else {
            return Ok(None);
        };
        let need = if pending > 0 {
            let summary: Value = redis::cmd("XPENDING")
                .arg(key)
                .arg(group_name(*v))
                .query_async(redis)
                .await
                .map_err(|e| e.to_string())?;
            value_items(&summary)
                .get(1)
                .and_then(value_text)
                .and_then(|s| s.parse().ok())
                .unwrap_or(Cursor::ZERO)
        } else {
            last
        };
        min = Some(min.map_or(need, |m| m.min(need)));
    }
    Ok(min.filter(|m| *m > Cursor::ZERO))
}

async fn load_state(pool: &PgPool) -> Result<(Cursor, BTreeMap<u32, Cursor>), String> {
    let cursor: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoint WHERE relay = $1")
            .bind(RELAY_NAME)
            .fetch_optional(pool)
            .await
            .map_err(|e| e.to_string())?;
    let heads: Vec<(i32, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position FROM relay_shard_heads WHERE relay = $1",
    )
    .bind(RELAY_NAME)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    Ok((
        cursor.map_or(Cursor::ZERO, |(a, b)| Cursor::new(a, b)),
        heads
            .into_iter()
            .map(|(s, a, b)| (s as u32, Cursor::new(a, b)))
            .collect(),
    ))
}

async fn store_state(
    pool: &PgPool,
    cursor: Cursor,
    heads: &BTreeMap<u32, Cursor>,
) -> Result<(), String> {
    let run = async {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO relay_checkpoint (relay, tx_id, global_position) VALUES ($1, $2, $3) \
             ON CONFLICT (relay) DO UPDATE SET tx_id = EXCLUDED.tx_id, \
             global_position = EXCLUDED.global_position, updated_at = now() \
             WHERE (relay_checkpoint.tx_id, relay_checkpoint.global_position) \
                 < (EXCLUDED.tx_id, EXCLUDED.global_position)",
        )
        .bind(RELAY_NAME)
        .bind(cursor.tx_id)
        .bind(cursor.global_position)
        .execute(&mut *tx)
        .await?;
        let shards: Vec<i32> = heads.keys().map(|s| *s as i32).collect();
        let txs: Vec<i64> = heads.values().map(|c| c.tx_id).collect();
        let gps: Vec<i64> = heads.values().map(|c| c.global_position).collect();
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
    };
    run.await
        .map_err(|e: sqlx::Error| format!("storing relay cursor: {e}"))
}

/// Age of the xmin horizon: how long the oldest transaction still holding it back has been
/// open (zero when none). A growing value means the relay is stalled by a long transaction.
pub async fn horizon_age(pool: &PgPool) -> Result<Duration, sqlx::Error> {
    let secs: Option<f64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM now() - min(xact_start))::float8 FROM pg_stat_activity \
         WHERE backend_xid IS NOT NULL",
    )
    .fetch_one(pool)
    .await?;
    Ok(Duration::from_secs_f64(secs.unwrap_or(0.0).max(0.0)))
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// Reads a whole stream (tests and tools): every entry as an envelope, in id order.
pub async fn read_stream(
    redis: &mut MultiplexedConnection,
    key: &str,
) -> Result<Vec<Envelope>, String> {
    let mut out = Vec::new();
    let mut start = "-".to_string();
    loop {
        let v: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .query_async(redis)
            .await
            .map_err(|e| e.to_string())?;
        let items = value_items(&v);
        if items.is_empty() {
            return Ok(out);
        }
        let mut last = String::new();
        for entry in &items {
            let parts = value_items(entry);
            let id = parts.first().and_then(value_text).unwrap_or_default();
            let fields = parts
                .get(1)
                .map(crate::consumer::fields_of)
                .unwrap_or_default();
            out.push(Envelope::from_fields(&id, &fields)?);
            last = id;
        }
        start = format!("({last}");
    }
}
