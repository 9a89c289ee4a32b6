//! Projector consumers: Redis Streams -> read models.
//!
//! Every live read-model version gets `HERALD_PROJECTOR_WORKERS` workers per process. A
//! worker leases some of the shard streams ([`crate::lease`]) and reads them through the
//! version's consumer group. On taking a shard it makes sure the group exists (created at
//! the checkpoint; a missing group means Redis lost it, so the shard is first caught up
//! from the event store), takes over what the previous owner read but never acknowledged
//! (`XAUTOCLAIM`), and replays its own pending entries before reading new ones.
//!
//! Each read run of a shard goes through [`crate::apply`] and is acknowledged after it
//! commits. An entry whose `prev` is past the checkpoint reveals lost entries: the shard
//! is caught up from the event store first. While idle, a worker compares its checkpoints
//! with the relay's shard heads, which finds a loss no later entry would reveal.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::Value;
use tokio_util::sync::CancellationToken;

use crate::apply::{apply, Stop};
use crate::catch_up::catch_up;
use crate::error::Result;
use crate::lease::Lease;
use crate::stream::{self, group_name, stream_key, Entry, ReadEntry};
use crate::Context;

/// How often ownership is rebalanced and the heartbeat refreshed.
const REBALANCE_EVERY: Duration = Duration::from_secs(1);
/// How often an idle worker compares its checkpoints with the relay's shard heads.
const HEAD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Runs the workers of every live read-model version until `stop`, starting and stopping
/// them as versions go live and retire.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let mut workers: HashMap<i32, (CancellationToken, Vec<tokio::task::JoinHandle<()>>)> =
        HashMap::new();
    loop {
        match read_model::versions::live(&ctx.read_db).await {
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

/// One consumer of one read-model version.
struct Worker {
    ctx: Arc<Context>,
    version: i32,
    /// This worker's consumer name: `<instance>-w<k>`.
    consumer: String,
    group: String,
    lease: Lease,
    /// Blocking reads, on a connection of their own.
    read: Option<MultiplexedConnection>,
    /// Everything else.
    cmd: Option<MultiplexedConnection>,
    /// Per owned shard: `Some(id)` while replaying its pending entries after `id`.
    replay_from: BTreeMap<u32, Option<String>>,
    last_rebalance: Option<Instant>,
    last_head_check: Instant,
}

impl Worker {
    fn new(ctx: Arc<Context>, version: i32, k: usize) -> Self {
        let consumer = format!("{}-w{k}", ctx.consumer);
        Self {
            lease: Lease::new(
                ctx.read_db.clone(),
                &ctx.prefix,
                version,
                &consumer,
                ctx.settings.shards,
            ),
            consumer,
            ctx,
            version,
            group: group_name(version),
            read: None,
            cmd: None,
            replay_from: BTreeMap::new(),
            last_rebalance: None,
            last_head_check: Instant::now(),
        }
    }

    fn key(&self, shard: u32) -> String {
        stream_key(&self.ctx.prefix, shard)
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
        let mut cmd = self.cmd_conn().await.ok().cloned();
        self.lease.leave(cmd.as_mut()).await;
        tracing::info!(version = self.version, "projector worker stopped");
    }

    async fn cmd_conn(&mut self) -> Result<&mut MultiplexedConnection> {
        if self.cmd.is_none() {
            self.cmd = Some(stream::connect(&self.ctx.redis, Duration::from_secs(5)).await?);
        }
        Ok(self.cmd.as_mut().expect("just set"))
    }

    async fn read_conn(&mut self) -> Result<MultiplexedConnection> {
        if self.read.is_none() {
            self.read =
                Some(stream::connect_blocking(&self.ctx.redis, self.ctx.settings.block).await?);
        }
        Ok(self.read.clone().expect("just set"))
    }

    async fn rebalance(&mut self) -> Result<()> {
        let mut cmd = self.cmd_conn().await?.clone();
        let taken = match self.lease.rebalance(&mut cmd).await {
            Ok(taken) => taken,
            Err(e) => {
                self.replay_from.clear();
                return Err(e);
            }
        };
        self.replay_from
            .retain(|shard, _| self.lease.owned().contains(shard));
        for shard in taken {
            self.replay_from.insert(shard, Some("0-0".into()));
            self.ensure_group(shard).await?;
            // Take over what the previous owner read but never acknowledged.
            let (key, group, consumer) =
                (self.key(shard), self.group.clone(), self.consumer.clone());
            let min_idle = self.ctx.settings.claim_min_idle;
            stream::claim_all(self.cmd_conn().await?, &key, &group, &consumer, min_idle).await?;
        }
        Ok(())
    }

    async fn round(&mut self, stop: &CancellationToken) -> Result<()> {
        if self
            .last_rebalance
            .is_none_or(|t| t.elapsed() >= REBALANCE_EVERY)
        {
            self.rebalance().await?;
            self.last_rebalance = Some(Instant::now());
        }
        if self.replay_from.is_empty() {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
            return Ok(());
        }
        let replaying: Vec<(u32, String)> = self
            .replay_from
            .iter()
            .filter_map(|(s, from)| from.clone().map(|id| (*s, id)))
            .collect();
        // Pending entries first (no blocking); new ones only when nothing is pending.
        let (shards, ids, block): (Vec<u32>, Vec<String>, bool) = if replaying.is_empty() {
            (
                self.replay_from.keys().copied().collect(),
                self.replay_from.keys().map(|_| ">".to_string()).collect(),
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
        let reply: std::result::Result<Value, redis::RedisError> = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            r = cmd.query_async(&mut read) => r,
        };
        let reply = match reply {
            Ok(v) => v,
            Err(e) if stream::is_no_group(&e) => {
                tracing::warn!(
                    version = self.version,
                    "consumer group or stream gone: recovering from the event store"
                );
                for s in shards {
                    self.ensure_group(s).await?;
                }
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let by_key = stream::parse_read(&reply);
        if block
            && by_key.values().all(Vec::is_empty)
            && self.last_head_check.elapsed() >= HEAD_CHECK_EVERY
        {
            self.last_head_check = Instant::now();
            self.check_heads().await?;
        }
        for s in shards {
            let entries = by_key.get(&self.key(s)).cloned().unwrap_or_default();
            if let Some(from) = self.replay_from.get_mut(&s) {
                if from.is_some() {
                    *from = entries.last().map(|(id, _)| id.clone());
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
    async fn check_heads(&mut self) -> Result<()> {
        let heads = read_model::relay_position::heads(&self.ctx.events_db).await?;
        for h in heads {
            let (shard, head) = (h.shard, h.cursor);
            if !self.lease.owned().contains(&shard) {
                continue;
            }
            let cp = read_model::checkpoint::get(&self.ctx.read_db, self.version, shard).await?;
            if head > cp {
                tracing::info!(version = self.version, shard, %cp, %head, "idle behind the relay: catching up from the event store");
                catch_up(&self.ctx, self.version, shard, Some(head)).await?;
            }
        }
        Ok(())
    }

    /// Creates the group at the checkpoint if it is missing; a missing group means Redis
    /// lost it (or this is the first start), so the shard is caught up from the event store.
    async fn ensure_group(&mut self, shard: u32) -> Result<()> {
        let cp = read_model::checkpoint::get(&self.ctx.read_db, self.version, shard).await?;
        let (key, group) = (self.key(shard), self.group.clone());
        if stream::create_group(self.cmd_conn().await?, &key, &group, cp).await? {
            tracing::info!(version = self.version, shard, checkpoint = %cp, "consumer group created; catching up from the event store");
            catch_up(&self.ctx, self.version, shard, None).await?;
        }
        if let Some(from) = self.replay_from.get_mut(&shard) {
            *from = Some("0-0".into());
        }
        Ok(())
    }

    async fn ack(&mut self, shard: u32, ids: &[String]) -> Result<()> {
        let (key, group) = (self.key(shard), self.group.clone());
        stream::ack(self.cmd_conn().await?, &key, &group, ids).await
    }

    /// Replays the shard's pending entries on the next round (after a failure left some
    /// of them unacknowledged).
    fn replay(&mut self, shard: u32) {
        if let Some(from) = self.replay_from.get_mut(&shard) {
            *from = Some("0-0".into());
        }
    }

    async fn handle_shard(&mut self, shard: u32, read: Vec<ReadEntry>) -> Result<()> {
        // Entries Redis no longer holds (or that do not decode) are acknowledged at once:
        // the event store fills them in, found by the next entry's `prev` or the idle
        // head check.
        let (ids, mut entries): (Vec<String>, Vec<Entry>) = read
            .iter()
            .filter_map(|(id, e)| e.clone().map(|e| (id.clone(), e)))
            .unzip();
        let missing: Vec<String> = read
            .iter()
            .filter(|(_, e)| e.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        self.ack(shard, &missing).await?;
        let mut done = 0usize;
        loop {
            match apply(&self.ctx, self.version, shard, &entries).await {
                Ok(()) => return self.ack(shard, &ids[done..]).await,
                Err(Stop::Gap { settled, upto }) => {
                    self.ack(shard, &ids[done..done + settled]).await?;
                    done += settled;
                    entries.drain(..settled);
                    tracing::warn!(version = self.version, shard, %upto, "stream lost entries; catching up from the event store");
                    if let Err(e) = catch_up(&self.ctx, self.version, shard, Some(upto)).await {
                        self.replay(shard);
                        return Err(e);
                    }
                }
                Err(Stop::Halt { settled, error }) => {
                    self.ack(shard, &ids[done..done + settled]).await?;
                    self.replay(shard);
                    return Err(error);
                }
            }
        }
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("version", &self.version)
            .field("consumer", &self.consumer)
            .finish_non_exhaustive()
    }
}
