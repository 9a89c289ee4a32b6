//! Projector consumers: Redis Streams -> read models.
//!
//! Every live read-model version gets a worker per process. A worker owns some of the shard
//! streams: ownership of `(version, shard)` is a Postgres advisory lock held on the worker's
//! dedicated connection, so exactly one consumer applies a shard at a time and applies it in
//! order (a killed process loses its locks with its connection). Workers share the shards
//! fairly: each heartbeats in `{prefix}:projector:v<version>:consumers` and holds at most
//! `ceil(shards / live workers)`.
//!
//! On taking a shard the worker ensures the consumer group `projector-v<version>` exists
//! (created at the checkpoint; a missing group means Redis lost it, so the shard is first
//! caught up from the event store), `XAUTOCLAIM`s the entries the previous owner left
//! pending, and replays its own pending entries before reading new ones.
//!
//! Each read batch of a shard is applied in one transaction ([`crate::project::apply_batch`])
//! and acknowledged after commit. Entries at or below the checkpoint are skipped. An entry
//! whose `prev` is past the checkpoint reveals lost entries: the shard is caught up from the
//! event store first. A failing batch is retried event by event; an event failing
//! `max_failures` times is parked in `dead_letters`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use sqlx::{Connection, PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use crate::envelope::{read_shard_after, value_items, value_text, Envelope};
use crate::metrics::ProjectorMetrics;
use crate::project::{apply_batch_observed, checkpoint, park, BatchError};
use crate::settings::ProjectorSettings;
use crate::shard::{group_name, stream_key, Cursor};

/// Advisory-lock namespace of shard ownership: key `(LOCK_CLASS + version, shard)`.
const LOCK_CLASS: i32 = 0x4850_0000;
/// How often ownership is rebalanced and the heartbeat refreshed.
const REBALANCE_EVERY: Duration = Duration::from_secs(1);
/// How often an idle worker compares its checkpoints with the relay's shard heads.
const HEAD_CHECK_EVERY: Duration = Duration::from_secs(2);
/// A worker whose heartbeat is older than this is considered gone.
const HEARTBEAT_TTL_MS: i64 = 4_000;

/// What every worker shares.
pub struct Context {
    /// Event store (catch-up reads).
    pub events_db: PgPool,
    /// Read-model database.
    pub read_db: PgPool,
    /// Redis client (each worker opens dedicated connections).
    pub redis: redis::Client,
    /// Key prefix.
    pub prefix: String,
    /// Consumer name (the replica id).
    pub consumer: String,
    /// Tuning.
    pub settings: ProjectorSettings,
    /// Where batches, projected events, their lag and dead letters are counted.
    pub metrics: Arc<ProjectorMetrics>,
}

/// Runs one worker per live read-model version until `stop`.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let mut workers: HashMap<i32, (CancellationToken, Vec<tokio::task::JoinHandle<()>>)> =
        HashMap::new();
    loop {
        match sqlx::query_scalar::<_, i32>(
            "SELECT version FROM read_model_versions WHERE state = 'live'",
        )
        .fetch_all(&ctx.read_db)
        .await
        {
            Ok(live) => {
                for v in &live {
                    if !workers.contains_key(v) {
                        let token = stop.child_token();
                        let handles = (0..ctx.settings.workers)
                            .map(|k| {
                                let worker = Worker::new(ctx.clone(), *v, k);
                                tokio::spawn(worker.run(token.clone()))
                            })
                            .collect();
                        workers.insert(*v, (token, handles));
                    }
                }
                let gone: Vec<i32> = workers
                    .keys()
                    .filter(|v| !live.contains(v))
                    .copied()
                    .collect();
                for v in gone {
                    if let Some((token, handles)) = workers.remove(&v) {
                        token.cancel();
                        futures::future::join_all(handles).await;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read live read-model versions"),
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
    for (_, (token, handles)) in workers {
        token.cancel();
        futures::future::join_all(handles).await;
    }
}

struct Lane {
    /// Reading this consumer's pending entries after this id, before new ones.
    replay_from: Option<String>,
}

struct Worker {
    ctx: Arc<Context>,
    version: i32,
    /// This worker's consumer name: `<instance>-w<k>`.
    consumer: String,
    group: String,
    lock_conn: Option<PgConnection>,
    read: Option<MultiplexedConnection>,
    cmd: Option<MultiplexedConnection>,
    owned: BTreeMap<u32, Lane>,
    attempts: HashMap<(u32, Cursor), u32>,
    last_rebalance: Option<Instant>,
    last_head_check: Instant,
}

impl Worker {
    fn new(ctx: Arc<Context>, version: i32, k: usize) -> Self {
        Self {
            consumer: format!("{}-w{k}", ctx.consumer),
            ctx,
            version,
            group: group_name(version),
            lock_conn: None,
            read: None,
            cmd: None,
            owned: BTreeMap::new(),
            attempts: HashMap::new(),
            last_rebalance: None,
            last_head_check: Instant::now(),
        }
    }

    fn key(&self, shard: u32) -> String {
        stream_key(&self.ctx.prefix, shard)
    }

    fn heartbeat_key(&self) -> String {
        format!("{}:projector:v{}:consumers", self.ctx.prefix, self.version)
    }

    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(version = self.version, consumer = %self.consumer, "projector worker started");
        while !stop.is_cancelled() {
            if let Err(e) = self.round(&stop).await {
                tracing::warn!(version = self.version, error = %e, "projector round failed");
                self.read = None;
                self.cmd = None;
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => {}
                }
            }
        }
        // Graceful exit: leave the heartbeat set and give the shards back.
        let (hb, me) = (self.heartbeat_key(), self.consumer.clone());
        if let Ok(cmd) = self.cmd_conn().await {
            let _: Result<Value, _> = redis::cmd("ZREM").arg(hb).arg(me).query_async(cmd).await;
        }
        if let Some(conn) = self.lock_conn.take() {
            let _ = conn.close().await;
        }
        tracing::info!(version = self.version, "projector worker stopped");
    }

    async fn cmd_conn(&mut self) -> Result<&mut MultiplexedConnection, String> {
        if self.cmd.is_none() {
            let conn = self
                .ctx
                .redis
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(Duration::from_secs(5))),
                )
                .await
                .map_err(|e| format!("redis: {e}"))?;
            self.cmd = Some(conn);
        }
        Ok(self.cmd.as_mut().expect("just set"))
    }

    async fn read_conn(&mut self) -> Result<MultiplexedConnection, String> {
        if self.read.is_none() {
            // Blocking reads need a response timeout above the block time (the crate's
            // default is 500 ms), on a connection of their own.
            let conn = self
                .ctx
                .redis
                .get_multiplexed_async_connection_with_config(
                    &AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(Duration::from_secs(2)))
                        .set_response_timeout(Some(
                            self.ctx.settings.block + Duration::from_secs(5),
                        )),
                )
                .await
                .map_err(|e| format!("redis: {e}"))?;
            self.read = Some(conn);
        }
        Ok(self.read.clone().expect("just set"))
    }

    async fn round(&mut self, stop: &CancellationToken) -> Result<(), String> {
        if self
            .last_rebalance
            .is_none_or(|t| t.elapsed() >= REBALANCE_EVERY)
        {
            self.rebalance().await?;
            self.last_rebalance = Some(Instant::now());
        }
        if self.owned.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            return Ok(());
        }
        let replaying: Vec<(u32, String)> = self
            .owned
            .iter()
            .filter_map(|(s, l)| l.replay_from.clone().map(|id| (*s, id)))
            .collect();
        let (shards, ids, block): (Vec<u32>, Vec<String>, bool) = if replaying.is_empty() {
            (
                self.owned.keys().copied().collect(),
                self.owned.keys().map(|_| ">".to_string()).collect(),
                true,
            )
        } else {
            let (s, i) = replaying.into_iter().unzip();
            (s, i, false)
        };
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.ctx.settings.batch);
        if block {
            cmd.arg("BLOCK")
                .arg(self.ctx.settings.block.as_millis() as u64);
        }
        cmd.arg("STREAMS");
        for s in &shards {
            cmd.arg(self.key(*s));
        }
        for id in &ids {
            cmd.arg(id);
        }
        let mut read = self.read_conn().await?;
        let reply: Result<Value, redis::RedisError> = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = cmd.query_async(&mut read) => r,
        };
        let reply = match reply {
            Ok(v) => v,
            Err(e) if e.code() == Some("NOGROUP") => {
                tracing::warn!(
                    version = self.version,
                    "consumer group or stream gone: recovering from the event store"
                );
                for s in shards {
                    self.ensure_group(s).await?;
                }
                return Ok(());
            }
            Err(e) => return Err(format!("XREADGROUP: {e}")),
        };
        let by_key: HashMap<String, Vec<(String, Option<Envelope>)>> = parse_read(&reply);
        if block
            && by_key.values().all(Vec::is_empty)
            && self.last_head_check.elapsed() >= HEAD_CHECK_EVERY
        {
            self.last_head_check = Instant::now();
            self.check_heads().await?;
        }
        for s in shards {
            let entries = by_key.get(&self.key(s)).cloned().unwrap_or_default();
            if let Some(lane) = self.owned.get_mut(&s) {
                if lane.replay_from.is_some() {
                    lane.replay_from = entries.last().map(|(id, _)| id.clone());
                }
            }
            if !entries.is_empty() {
                self.handle_shard(s, entries).await?;
            }
        }
        Ok(())
    }

    /// While idle: a shard whose relay head (the last event the relay published to it) is
    /// past the checkpoint lost entries that no later entry will reveal (nothing new was
    /// published after the loss): catch it up from the event store.
    async fn check_heads(&mut self) -> Result<(), String> {
        let heads: Vec<(i32, i64, i64)> = sqlx::query_as(
            "SELECT shard, tx_id, global_position FROM relay_shard_heads WHERE relay = $1",
        )
        .bind(crate::relay::RELAY_NAME)
        .fetch_all(&self.ctx.events_db)
        .await
        .map_err(|e| format!("reading relay heads: {e}"))?;
        for (shard, tx_id, gp) in heads {
            let shard = shard as u32;
            if !self.owned.contains_key(&shard) {
                continue;
            }
            let head = Cursor::new(tx_id, gp);
            let cp = checkpoint(&self.ctx.read_db, self.version, shard)
                .await
                .map_err(|e| e.to_string())?;
            if head > cp {
                tracing::info!(version = self.version, shard, %cp, %head, "idle behind the relay: catching up from the event store");
                self.catch_up(shard, Some(head)).await?;
            }
        }
        Ok(())
    }

    /// Creates the group at the checkpoint if it is missing; a missing group means Redis
    /// lost it (or this is the first start), so the shard is caught up from the event store.
    async fn ensure_group(&mut self, shard: u32) -> Result<(), String> {
        let cp = checkpoint(&self.ctx.read_db, self.version, shard)
            .await
            .map_err(|e| e.to_string())?;
        let key = self.key(shard);
        let group = self.group.clone();
        let created: Result<Value, redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&key)
            .arg(&group)
            .arg(cp.entry_id())
            .arg("MKSTREAM")
            .query_async(self.cmd_conn().await?)
            .await;
        match created {
            Ok(_) => {
                tracing::info!(version = self.version, shard, checkpoint = %cp, "consumer group created; catching up from the event store");
                self.catch_up(shard, None).await?;
            }
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(format!("XGROUP CREATE: {e}")),
        }
        if let Some(lane) = self.owned.get_mut(&shard) {
            lane.replay_from = Some("0-0".into());
        }
        Ok(())
    }

    async fn rebalance(&mut self) -> Result<(), String> {
        if self.lock_conn.is_none() {
            let opts = self.ctx.read_db.connect_options().as_ref().clone();
            let conn = PgConnection::connect_with(&opts)
                .await
                .map_err(|e| format!("lock connection: {e}"))?;
            self.lock_conn = Some(conn);
            self.owned.clear();
        }
        let alive = sqlx::query("SELECT 1")
            .execute(self.lock_conn.as_mut().expect("set"))
            .await;
        if let Err(e) = alive {
            // The locks died with the connection: this worker owns nothing any more.
            self.lock_conn = None;
            self.owned.clear();
            return Err(format!("lock connection lost: {e}"));
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let hb = self.heartbeat_key();
        let consumer = self.consumer.clone();
        let live: i64 = redis::pipe()
            .cmd("ZADD")
            .arg(&hb)
            .arg(now_ms)
            .arg(&consumer)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&hb)
            .arg("-inf")
            .arg(now_ms - HEARTBEAT_TTL_MS)
            .ignore()
            .cmd("ZCARD")
            .arg(&hb)
            .query_async::<(i64,)>(self.cmd_conn().await?)
            .await
            .map(|(n,)| n)
            .map_err(|e| format!("heartbeat: {e}"))?;
        let shards = self.ctx.settings.shards;
        let target = shards.div_ceil(live.max(1) as u32) as usize;
        while self.owned.len() > target {
            let shard = *self.owned.keys().next_back().expect("not empty");
            self.release(shard).await?;
        }
        if self.owned.len() < target {
            let start = crate::shard::shard_of(&consumer, shards);
            for i in 0..shards {
                if self.owned.len() >= target {
                    break;
                }
                let shard = (start + i) % shards;
                if self.owned.contains_key(&shard) {
                    continue;
                }
                self.try_acquire(shard).await?;
            }
        }
        Ok(())
    }

    async fn try_acquire(&mut self, shard: u32) -> Result<(), String> {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS + self.version)
            .bind(shard as i32)
            .fetch_one(self.lock_conn.as_mut().expect("set"))
            .await
            .map_err(|e| format!("shard lock: {e}"))?;
        if !got {
            return Ok(());
        }
        tracing::info!(version = self.version, shard, consumer = %self.consumer, "shard acquired");
        self.owned.insert(
            shard,
            Lane {
                replay_from: Some("0-0".into()),
            },
        );
        self.ensure_group(shard).await?;
        // Take over what the previous owner read but never acknowledged.
        let key = self.key(shard);
        let group = self.group.clone();
        let consumer = self.consumer.clone();
        let idle = self.ctx.settings.claim_min_idle.as_millis() as u64;
        let mut start = "0-0".to_string();
        for _ in 0..10_000 {
            let reply: Value = redis::cmd("XAUTOCLAIM")
                .arg(&key)
                .arg(&group)
                .arg(&consumer)
                .arg(idle)
                .arg(&start)
                .arg("COUNT")
                .arg(1000)
                .arg("JUSTID")
                .query_async(self.cmd_conn().await?)
                .await
                .map_err(|e| format!("XAUTOCLAIM: {e}"))?;
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

    async fn release(&mut self, shard: u32) -> Result<(), String> {
        self.owned.remove(&shard);
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LOCK_CLASS + self.version)
            .bind(shard as i32)
            .execute(self.lock_conn.as_mut().expect("set"))
            .await
            .map_err(|e| format!("shard unlock: {e}"))?;
        tracing::info!(version = self.version, shard, "shard released");
        Ok(())
    }

    async fn ack(&mut self, shard: u32, ids: &[String]) -> Result<(), String> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("XACK");
        cmd.arg(self.key(shard)).arg(&self.group);
        for id in ids {
            cmd.arg(id);
        }
        cmd.query_async::<Value>(self.cmd_conn().await?)
            .await
            .map_err(|e| format!("XACK: {e}"))?;
        Ok(())
    }

    fn replay(&mut self, shard: u32) {
        if let Some(lane) = self.owned.get_mut(&shard) {
            lane.replay_from = Some("0-0".into());
        }
    }

    async fn handle_shard(
        &mut self,
        shard: u32,
        entries: Vec<(String, Option<Envelope>)>,
    ) -> Result<(), String> {
        let all_ids: Vec<String> = entries.iter().map(|(id, _)| id.clone()).collect();
        let envs: Vec<(String, Envelope)> = entries
            .into_iter()
            .filter_map(|(id, e)| e.map(|e| (id, e)))
            .collect();
        let batch: Vec<Envelope> = envs.iter().map(|(_, e)| e.clone()).collect();
        loop {
            match apply_batch_observed(
                &self.ctx.read_db,
                self.version,
                shard,
                &batch,
                Some(&self.ctx.metrics),
            )
            .await
            {
                Ok(_) => {
                    for (_, e) in &envs {
                        self.attempts.remove(&(shard, e.cursor));
                    }
                    return self.ack(shard, &all_ids).await;
                }
                Err(BatchError::Gap { upto }) => {
                    tracing::warn!(version = self.version, shard, %upto, "stream lost entries; catching up from the event store");
                    if let Err(e) = self.catch_up(shard, Some(upto)).await {
                        self.replay(shard);
                        return Err(e);
                    }
                }
                Err(BatchError::Unavailable(e)) => {
                    self.replay(shard);
                    return Err(e);
                }
                Err(BatchError::Failed(e)) => {
                    tracing::warn!(version = self.version, shard, error = %e, "batch failed; retrying event by event");
                    break;
                }
            }
        }
        // One event at a time: the failing one is retried (on later rounds) and parked
        // after `max_failures`; the ones before it are applied and acknowledged.
        let mut done: Vec<String> = all_ids
            .iter()
            .filter(|id| !envs.iter().any(|(e, _)| e == *id))
            .cloned()
            .collect();
        for (id, env) in &envs {
            loop {
                match apply_batch_observed(
                    &self.ctx.read_db,
                    self.version,
                    shard,
                    std::slice::from_ref(env),
                    Some(&self.ctx.metrics),
                )
                .await
                {
                    Ok(_) => {
                        self.attempts.remove(&(shard, env.cursor));
                        done.push(id.clone());
                        break;
                    }
                    Err(BatchError::Gap { upto }) => {
                        if let Err(e) = self.catch_up(shard, Some(upto)).await {
                            self.ack(shard, &done).await?;
                            self.replay(shard);
                            return Err(e);
                        }
                    }
                    Err(BatchError::Unavailable(e)) => {
                        self.ack(shard, &done).await?;
                        self.replay(shard);
                        return Err(e);
                    }
                    Err(BatchError::Failed(e)) => {
                        let n = self.attempts.entry((shard, env.cursor)).or_insert(0);
                        *n += 1;
                        let n = *n;
                        if n >= self.ctx.settings.max_failures {
                            tracing::error!(version = self.version, shard, event = %env.cursor, error = %e, "parking poison event");
                            let parked = park(&self.ctx.read_db, self.version, shard, env, &e, n)
                                .await
                                .map_err(|e| format!("parking: {e}"))?;
                            if parked {
                                self.ctx.metrics.dead_letters_total.inc();
                            }
                            self.attempts.remove(&(shard, env.cursor));
                            done.push(id.clone());
                            break;
                        }
                        tracing::warn!(version = self.version, shard, event = %env.cursor, attempt = n, error = %e, "event failed");
                        self.ack(shard, &done).await?;
                        self.replay(shard);
                        tokio::time::sleep(Duration::from_millis(50 * u64::from(n))).await;
                        return Ok(());
                    }
                }
            }
        }
        self.ack(shard, &done).await
    }

    /// Applies the shard's events straight from the event store, from the checkpoint up to
    /// `upto` (inclusive) or, without it, up to the horizon.
    async fn catch_up(&mut self, shard: u32, upto: Option<Cursor>) -> Result<(), String> {
        let ctx = self.ctx.clone();
        let mut applied = 0usize;
        loop {
            let cp = checkpoint(&ctx.read_db, self.version, shard)
                .await
                .map_err(|e| e.to_string())?;
            if upto.is_some_and(|u| cp >= u) {
                break;
            }
            let events = read_shard_after(
                &ctx.events_db,
                shard,
                ctx.settings.shards,
                cp,
                upto,
                ctx.settings.batch as i64,
            )
            .await
            .map_err(|e| format!("catch-up read: {e}"))?;
            if events.is_empty() {
                if upto.is_some() {
                    return Err(format!(
                        "shard {shard}: the stream names events the event store does not have \
                         for this shard (is HERALD_STREAM_SHARDS the same everywhere?)"
                    ));
                }
                break;
            }
            applied += events.len();
            apply_from_store(&ctx, self.version, shard, &events).await?;
        }
        if applied > 0 {
            tracing::info!(
                version = self.version,
                shard,
                events = applied,
                "caught up from the event store"
            );
        }
        Ok(())
    }
}

/// Applies events read from the event store (catch-up, rebuild): in one transaction when
/// possible, else one by one, parking an event that fails `max_failures` times in a row.
pub async fn apply_from_store(
    ctx: &Context,
    version: i32,
    shard: u32,
    events: &[Envelope],
) -> Result<(), String> {
    let metrics = Some(ctx.metrics.as_ref());
    match apply_batch_observed(&ctx.read_db, version, shard, events, metrics).await {
        Ok(_) => return Ok(()),
        Err(BatchError::Unavailable(e)) => return Err(e),
        Err(BatchError::Gap { .. }) => unreachable!("event-store reads carry no prev"),
        Err(BatchError::Failed(e)) => {
            tracing::warn!(version, shard, error = %e, "catch-up batch failed; retrying event by event");
        }
    }
    for env in events {
        let mut n = 0;
        loop {
            match apply_batch_observed(
                &ctx.read_db,
                version,
                shard,
                std::slice::from_ref(env),
                metrics,
            )
            .await
            {
                Ok(_) => break,
                Err(BatchError::Unavailable(e)) => return Err(e),
                Err(BatchError::Gap { .. }) => unreachable!("event-store reads carry no prev"),
                Err(BatchError::Failed(e)) => {
                    n += 1;
                    if n >= ctx.settings.max_failures {
                        tracing::error!(version, shard, event = %env.cursor, error = %e, "parking poison event");
                        let parked = park(&ctx.read_db, version, shard, env, &e, n)
                            .await
                            .map_err(|e| format!("parking: {e}"))?;
                        if parked {
                            ctx.metrics.dead_letters_total.inc();
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(n))).await;
                }
            }
        }
    }
    Ok(())
}

/// The fields of a stream entry as text.
pub fn fields_of(v: &Value) -> HashMap<String, String> {
    let items = value_items(v);
    items
        .chunks(2)
        .filter_map(|kv| match kv {
            [k, v] => Some((value_text(k)?, value_text(v)?)),
            _ => None,
        })
        .collect()
}

/// An XREADGROUP reply: per stream key, its entries (`None` for an entry deleted from the
/// stream while pending, or one that does not decode).
fn parse_read(v: &Value) -> HashMap<String, Vec<(String, Option<Envelope>)>> {
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
                Some(fields) => match Envelope::from_fields(&id, &fields_of(fields)) {
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
