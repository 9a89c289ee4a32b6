//! The relay: tails the event store in commit-safe order and publishes every event to its
//! shard stream, exactly once per entry id.
//!
//! * One leader at a time: `pg_try_advisory_lock` on a dedicated connection; other relays
//!   stand by and retry. The lock dies with the connection, so a killed leader is replaced
//!   within one retry interval. Even two relays at once cannot duplicate an entry: ids come
//!   from the cursor, and Redis refuses an id that is not above the stream's top.
//! * Reads `(tx_id, global_position) > cursor AND tx_id < pg_snapshot_xmin(...)`, so a
//!   transaction that commits late is never skipped ([`event_store::stored`]).
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

use event_store::stored::read_after;
use event_store::Cursor;
use read_model::relay_position::{self, RelayPosition};
use read_model::shard::shard_of;
use redis::aio::MultiplexedConnection;
use redis::Value;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::metrics::ProjectorMetrics;
use crate::settings::ProjectorSettings;
use crate::stream::{self, group_name, stream_key, Entry};

/// Advisory-lock key of the relay leader ("HERALDRL").
pub const RELAY_LOCK_KEY: i64 = 0x4845_5241_4c44_524c;

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
    /// Trimming rounds completed (every stream trimmed to what its live groups need).
    pub trims: u64,
}

/// Everything the relay needs.
#[derive(Clone)]
pub struct Relay {
    pool: PgPool,
    read_db: PgPool,
    redis: redis::Client,
    prefix: String,
    settings: ProjectorSettings,
    status: Arc<watch::Sender<RelayStatus>>,
    metrics: Option<Arc<ProjectorMetrics>>,
}

impl Relay {
    /// A relay over `pool` (the event store) publishing to `redis` under `prefix`; the
    /// live read-model versions, whose consumer groups bound trimming, are in `read_db`.
    pub fn new(
        pool: PgPool,
        read_db: PgPool,
        redis: redis::Client,
        prefix: String,
        settings: ProjectorSettings,
    ) -> Self {
        Self {
            pool,
            read_db,
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

    async fn lead(&self, stop: &CancellationToken) -> Result<()> {
        let opts = self.pool.connect_options().as_ref().clone();
        let mut lock_conn = PgConnection::connect_with(&opts).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK_KEY)
            .fetch_one(&mut lock_conn)
            .await?;
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
    ) -> Result<()> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen("herald_events").await?;
        let mut redis = stream::connect(&self.redis, Duration::from_secs(10)).await?;
        let mut position =
            relay_position::load(&self.pool, &self.read_db, self.settings.shards).await?;
        self.status.send_modify(|s| s.cursor = position.cursor);
        let mut last_check = Instant::now();
        let mut last_trim = Instant::now();
        loop {
            if stop.is_cancelled() {
                return Ok(());
            }
            let n = self.publish_once(&mut redis, &mut position).await?;
            if last_check.elapsed() > Duration::from_secs(1) {
                // Still holding the lock? A dead lock connection means another relay may lead.
                sqlx::query("SELECT 1").execute(&mut *lock_conn).await?;
                last_check = Instant::now();
            }
            if last_trim.elapsed() > self.settings.trim_interval {
                match self.trim(&mut redis).await {
                    Ok(()) => self.status.send_modify(|s| s.trims += 1),
                    Err(e) => tracing::warn!(error = %e, "trimming streams failed"),
                }
                last_trim = Instant::now();
            }
            if n as i64 >= self.settings.relay_batch {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                r = listener.recv() => { r?; }
                _ = tokio::time::sleep(self.settings.relay_poll) => {}
            }
        }
    }

    /// Publishes the next batch below the horizon; returns how many events it covered.
    async fn publish_once(
        &self,
        redis: &mut MultiplexedConnection,
        position: &mut RelayPosition,
    ) -> Result<usize> {
        let events = read_after(&self.pool, position.cursor, self.settings.relay_batch).await?;
        if events.is_empty() {
            return Ok(0);
        }
        let mut next = position.clone();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        // One `relay.publish` span per event, in the event's (the command's) trace; each
        // lasts the pipelined round trip and records whether the entry was new.
        let mut spans = Vec::with_capacity(events.len());
        for env in &events {
            let shard = shard_of(&env.row.aggregate_id, self.settings.shards);
            spans.push(crate::trace::relay_publish(env, shard));
            let prev = next.heads.get(&shard).copied().unwrap_or(Cursor::ZERO);
            let mut cmd = redis::cmd("XADD");
            cmd.arg(stream_key(&self.prefix, shard))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.settings.stream_maxlen)
                .arg(env.cursor.entry_id());
            for (k, v) in Entry::fields(env, prev) {
                cmd.arg(k).arg(v);
            }
            pipe.add_command(cmd);
            next.publish(shard, env.cursor);
        }
        let results: Vec<redis::RedisResult<Value>> = pipe.query_async(redis).await?;
        let (mut published, mut refused) = (0u64, 0u64);
        for ((env, r), span) in events.iter().zip(results).zip(&spans) {
            match r {
                Ok(_) => {
                    published += 1;
                    span.record("outcome", "published");
                }
                // The id is not above the stream's top: this event is already there.
                Err(e) if e.to_string().contains("equal or smaller") => {
                    refused += 1;
                    span.record("outcome", "already_present");
                }
                Err(e) => {
                    span.record("outcome", "failed");
                    tracing::warn!(event = %env.cursor, error = %e, "XADD failed");
                    return Err(e.into());
                }
            }
        }
        drop(spans);
        if let Some(m) = &self.metrics {
            m.relay_published.inc_by(published);
        }
        next.cursor = events.last().expect("not empty").cursor;
        relay_position::store(&self.pool, &next).await?;
        let last = next.cursor;
        *position = next;
        self.status.send_modify(|s| {
            s.cursor = last;
            s.published += published;
            s.refused += refused;
        });
        Ok(events.len())
    }

    /// Trims every shard stream to what live consumer groups still need.
    async fn trim(&self, redis: &mut MultiplexedConnection) -> Result<()> {
        let live = read_model::versions::live(&self.read_db).await?;
        for shard in 0..self.settings.shards {
            let key = stream_key(&self.prefix, shard);
            if let Some(min) = trim_point(redis, &key, &live).await? {
                stream::trim_below(redis, &key, min).await?;
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
) -> Result<Option<Cursor>> {
    let found: BTreeMap<String, (i64, Cursor)> = stream::groups(redis, key)
        .await?
        .into_iter()
        .map(|(name, pending, last)| (name, (pending, last)))
        .collect();
    let mut min: Option<Cursor> = None;
    for v in live_versions {
        let Some((pending, last)) = found.get(&group_name(*v)).copied() else {
            return Ok(None);
        };
        let need = if pending > 0 {
            stream::oldest_pending(redis, key, &group_name(*v))
                .await?
                .unwrap_or(Cursor::ZERO)
        } else {
            last
        };
        min = Some(min.map_or(need, |m| m.min(need)));
    }
    Ok(min.filter(|m| *m > Cursor::ZERO))
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("prefix", &self.prefix)
            .finish()
    }
}
