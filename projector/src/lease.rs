//! Shard leasing: which consumer applies which shard of a read-model version.
//!
//! Ownership of `(version, shard)` is a Postgres advisory lock held on the consumer's
//! dedicated connection, so exactly one consumer applies a shard at a time, in order, and
//! a killed process loses its shards with its connection. Consumers share the shards
//! fairly: each heartbeats in the sorted set `{prefix}:projector:v<version>:consumers`
//! (score: the time of its last beat) and holds at most `ceil(shards / live consumers)`.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use sqlx::{Connection, PgConnection, PgPool};

use crate::error::Result;

/// Advisory-lock namespace of shard ownership: key `(LOCK_CLASS + version, shard)`.
const LOCK_CLASS: i32 = 0x4850_0000;
/// A consumer whose heartbeat is older than this is considered gone.
const HEARTBEAT_TTL: Duration = Duration::from_secs(4);

/// One consumer's shards of one read-model version.
pub struct Lease {
    read_db: PgPool,
    version: i32,
    consumer: String,
    heartbeats: String,
    shards: u32,
    lock_conn: Option<PgConnection>,
    owned: BTreeSet<u32>,
}

impl Lease {
    /// `consumer`'s lease on the shards of `version` (of `shards`), locks taken on
    /// connections to `read_db`, heartbeats under `prefix`.
    pub fn new(read_db: PgPool, prefix: &str, version: i32, consumer: &str, shards: u32) -> Self {
        Self {
            read_db,
            version,
            consumer: consumer.to_string(),
            heartbeats: format!("{prefix}:projector:v{version}:consumers"),
            shards,
            lock_conn: None,
            owned: BTreeSet::new(),
        }
    }

    /// The shards held now.
    pub fn owned(&self) -> &BTreeSet<u32> {
        &self.owned
    }

    /// Beats, then gives back shards above the fair share and tries to take more up to
    /// it. Returns the shards newly taken (the caller must set each up before reading it).
    /// When the lock connection is lost, every shard is lost with it: the error says so and
    /// the lease starts over empty.
    pub async fn rebalance(&mut self, redis: &mut MultiplexedConnection) -> Result<Vec<u32>> {
        if self.lock_conn.is_none() {
            let opts = self.read_db.connect_options().as_ref().clone();
            self.lock_conn = Some(PgConnection::connect_with(&opts).await?);
            self.owned.clear();
        }
        if let Err(e) = sqlx::query("SELECT 1")
            .execute(self.lock_conn.as_mut().expect("set"))
            .await
        {
            self.lock_conn = None;
            self.owned.clear();
            return Err(e.into());
        }
        let live = self.beat(redis).await?;
        let target = self.shards.div_ceil(live.max(1) as u32) as usize;
        while self.owned.len() > target {
            let shard = *self.owned.iter().next_back().expect("not empty");
            self.release(shard).await?;
        }
        let mut taken = Vec::new();
        if self.owned.len() < target {
            // Start where this consumer's name hashes to, so consumers try different
            // shards first instead of all contending for shard 0.
            let start = read_model::shard::shard_of(&self.consumer, self.shards);
            for i in 0..self.shards {
                if self.owned.len() >= target {
                    break;
                }
                let shard = (start + i) % self.shards;
                if !self.owned.contains(&shard) && self.try_acquire(shard).await? {
                    taken.push(shard);
                }
            }
        }
        Ok(taken)
    }

    /// Records this consumer's heartbeat, forgets stale ones, and counts the live.
    async fn beat(&self, redis: &mut MultiplexedConnection) -> Result<i64> {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let (live,): (i64,) = redis::pipe()
            .cmd("ZADD")
            .arg(&self.heartbeats)
            .arg(now_ms)
            .arg(&self.consumer)
            .ignore()
            .cmd("ZREMRANGEBYSCORE")
            .arg(&self.heartbeats)
            .arg("-inf")
            .arg(now_ms - HEARTBEAT_TTL.as_millis() as i64)
            .ignore()
            .cmd("ZCARD")
            .arg(&self.heartbeats)
            .query_async(redis)
            .await?;
        Ok(live)
    }

    async fn try_acquire(&mut self, shard: u32) -> Result<bool> {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, $2)")
            .bind(LOCK_CLASS + self.version)
            .bind(shard as i32)
            .fetch_one(self.lock_conn.as_mut().expect("set"))
            .await?;
        if got {
            tracing::info!(version = self.version, shard, consumer = %self.consumer, "shard acquired");
            self.owned.insert(shard);
        }
        Ok(got)
    }

    async fn release(&mut self, shard: u32) -> Result<()> {
        self.owned.remove(&shard);
        sqlx::query("SELECT pg_advisory_unlock($1, $2)")
            .bind(LOCK_CLASS + self.version)
            .bind(shard as i32)
            .execute(self.lock_conn.as_mut().expect("set"))
            .await?;
        tracing::info!(version = self.version, shard, "shard released");
        Ok(())
    }

    /// Forgets every shard (after losing the lock connection, or to start over).
    pub fn lost(&mut self) {
        self.lock_conn = None;
        self.owned.clear();
    }

    /// Graceful exit: leave the heartbeat set and give the shards back (closing the lock
    /// connection releases them).
    pub async fn leave(mut self, redis: Option<&mut MultiplexedConnection>) {
        if let Some(redis) = redis {
            let _: std::result::Result<Value, _> = redis::cmd("ZREM")
                .arg(&self.heartbeats)
                .arg(&self.consumer)
                .query_async(redis)
                .await;
        }
        if let Some(conn) = self.lock_conn.take() {
            let _ = conn.close().await;
        }
    }
}
