//! One batch of one shard applied to one read-model version, in one transaction: the rows
//! (idempotently), the counters (only for rows actually inserted), and the
//! `(version, shard)` checkpoint, together. Events at or below the checkpoint are skipped,
//! so a redelivered entry changes nothing; the events of a message waiting behind one of
//! its dead letters are held with it, in order.

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use event_store::Cursor;
use sqlx::{PgConnection, PgPool};
use tracing::Instrument;

use crate::counters::Rollups;
use crate::error::Error;
use crate::metrics::ProjectorMetrics;
use crate::stream::Entry;
use crate::write::{decode, write_events, write_rows};

/// Advisory-lock key guarding dead letters: batches take it shared, `dead-letters retry`
/// and `skip` exclusive, so a message is never drained while a batch parks behind it.
pub const DEAD_LETTER_LOCK_KEY: i64 = 0x4845_5241_4c44_444c; // "HERALDDL"

/// Why a batch was not applied. Nothing of it was.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The stream lost entries: the first new entry's predecessor is past the checkpoint.
    /// Catch up from the event store up to `upto` (inclusive), then retry.
    #[error("stream gap: entries up to {upto} are missing")]
    Gap {
        /// The last missing cursor.
        upto: Cursor,
    },
    /// Anything else; its [`Error::fault`] says whether the events are to blame.
    #[error(transparent)]
    Failed(#[from] Error),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        BatchError::Failed(Error::Database(e))
    }
}

/// What a committed batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Applied {
    /// Events newly inserted into `message_events`.
    pub inserted: u64,
    /// Events at or below the checkpoint (already applied), skipped.
    pub skipped: u64,
    /// Events held behind a dead letter of their message.
    pub held: u64,
    /// The checkpoint after the batch.
    pub checkpoint: Cursor,
}

/// Applies `entries` of `shard` (in cursor order) to `version` in one transaction, traced
/// (a `projector.batch` span linked to every event's trace, and per event a
/// `projector.apply_event` continuing it; see [`crate::trace`]) and, with `metrics`,
/// measured at the commit: batch size, events projected, and per event the time from its
/// commit in the event store to the read-model commit.
pub async fn apply(
    pool: &PgPool,
    version: i32,
    shard: u32,
    entries: &[Entry],
    metrics: Option<&ProjectorMetrics>,
) -> Result<Applied, BatchError> {
    let batch = crate::trace::batch(version, shard, entries);
    let result = apply_traced(pool, version, shard, entries, metrics, &batch)
        .instrument(batch.clone())
        .await;
    match &result {
        Ok(a) => {
            batch.record("outcome", "committed");
            batch.record("applied", a.inserted);
        }
        Err(BatchError::Gap { .. }) => {
            batch.record("outcome", "gap");
        }
        Err(_) => {
            batch.record("outcome", "failed");
        }
    }
    result
}

async fn apply_traced(
    pool: &PgPool,
    version: i32,
    shard: u32,
    entries: &[Entry],
    metrics: Option<&ProjectorMetrics>,
    batch: &tracing::Span,
) -> Result<Applied, BatchError> {
    let mut tx = pool.begin().await?;
    let cp = read_model::checkpoint::lock(&mut tx, version, shard).await?;
    if retired(&mut tx, version).await? {
        tx.rollback().await?;
        return Ok(Applied {
            skipped: entries.len() as u64,
            checkpoint: cp,
            ..Applied::default()
        });
    }
    let fresh: Vec<&Entry> = entries.iter().filter(|e| e.event.cursor > cp).collect();
    let skipped = (entries.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        tx.rollback().await?;
        return Ok(Applied {
            skipped,
            checkpoint: cp,
            ..Applied::default()
        });
    }
    let mut before = cp;
    for e in &fresh {
        if let Some(prev) = e.prev {
            if prev > before {
                return Err(BatchError::Gap { upto: prev });
            }
        }
        before = e.event.cursor;
    }
    // One span per event, in the command's trace; closed (with an outcome) when this
    // function returns, so each spans the event's whole read-model transaction.
    let mut spans: Vec<EventSpan> = fresh
        .iter()
        .map(|e| EventSpan::new(crate::trace::apply_event(&e.event, version, shard, batch)))
        .collect();

    // Takes the dead-letter lock shared (the first branch, always evaluated, yields '')
    // and finds the messages waiting behind a dead letter, in one round trip.
    let ids: Vec<String> = fresh
        .iter()
        .map(|e| e.event.row.aggregate_id.clone())
        .collect();
    let held: HashSet<String> = sqlx::query_scalar(
        "SELECT pg_advisory_xact_lock_shared($3)::text UNION ALL \
         SELECT DISTINCT message_id FROM dead_letters \
         WHERE version = $1 AND state IN ('parked', 'held') AND message_id = ANY($2)",
    )
    .bind(version)
    .bind(&ids)
    .bind(DEAD_LETTER_LOCK_KEY)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .filter(|m: &String| !m.is_empty())
    .collect();

    let mut decoded = Vec::with_capacity(fresh.len());
    let mut held_count = 0;
    let mut applied_at = Vec::with_capacity(fresh.len());
    for (entry, span) in fresh.iter().zip(spans.iter_mut()) {
        let env = &entry.event;
        if held.contains(&env.row.aggregate_id) {
            hold(&mut tx, version, shard, entry).await?;
            held_count += 1;
            span.outcome = "held";
            continue;
        }
        applied_at.push(env.recorded_at);
        match decode(env) {
            Ok(Some(d)) => decoded.push(d),
            Ok(None) => {}
            Err(e) => {
                span.outcome = "undecodable";
                return Err(BatchError::Failed(e));
            }
        }
    }
    let inserted = write_events(&mut tx, version, &decoded).await?;
    let last = fresh.last().expect("not empty").event.cursor;
    read_model::checkpoint::advance(&mut tx, version, shard, last, fresh.len() as i64).await?;
    {
        // The commit, once in the batch's trace and once under each event's span.
        let _per_event: Vec<tracing::Span> = spans
            .iter()
            .map(|s| crate::trace::commit(&s.span))
            .collect();
        tx.commit().instrument(crate::trace::commit(batch)).await?;
    }
    for s in &mut spans {
        if s.outcome == "failed" {
            s.outcome = "applied";
        }
    }
    if let Some(m) = metrics {
        let committed = Utc::now();
        m.batch_size.observe(fresh.len() as f64);
        m.events_projected.inc_by(applied_at.len() as u64);
        for t in applied_at {
            let lag = (committed - t).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
            m.lag_seconds.observe(lag);
        }
    }
    Ok(Applied {
        inserted,
        skipped,
        held: held_count,
        checkpoint: last,
    })
}

/// One transaction of a rebuild's first pass, spanning many reads of the event store: each
/// read's runs (one per shard, in cursor order) are written as they come, while what they
/// add to the rollups is summed in memory and written once, at [`Window::commit`], with
/// every shard's checkpoint. A rollup row that events of the whole window fall into (a day
/// of a group) is written once per window instead of once per read; in a store whose
/// events arrive out of time order, every read touches nearly every row.
///
/// Nobody else writes a version being built, so the window locks every shard's checkpoint
/// at the start (in shard order, like a batch) and holds the dead-letter lock shared until
/// it ends.
pub struct Window<'c> {
    tx: sqlx::Transaction<'c, sqlx::Postgres>,
    version: i32,
    /// Each shard's checkpoint when the window opened.
    checkpoints: Vec<Cursor>,
    /// Per shard: the last event applied and how many were, in this window.
    applied: BTreeMap<u32, (Cursor, i64)>,
    rollups: Rollups,
    opened: std::time::Instant,
}

impl Window<'static> {
    /// Opens a window on `version`'s `shards` shards.
    pub async fn open(pool: &PgPool, version: i32, shards: u32) -> Result<Self, sqlx::Error> {
        Self::open_in(pool.begin().await?, version, shards).await
    }

    /// Opens a window on `version`'s `shards` shards in a transaction already begun.
    pub async fn open_in(
        mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
        version: i32,
        shards: u32,
    ) -> Result<Self, sqlx::Error> {
        let mut checkpoints = Vec::with_capacity(shards as usize);
        for shard in 0..shards {
            checkpoints.push(read_model::checkpoint::lock(&mut tx, version, shard).await?);
        }
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(DEAD_LETTER_LOCK_KEY)
            .execute(&mut *tx)
            .await?;
        Ok(Self {
            tx,
            version,
            checkpoints,
            applied: BTreeMap::new(),
            rollups: Rollups::default(),
            opened: std::time::Instant::now(),
        })
    }
}

impl Window<'_> {
    /// Events applied in this window.
    pub fn events(&self) -> u64 {
        self.applied.values().map(|(_, n)| *n as u64).sum()
    }

    /// How long the window has been open.
    pub fn age(&self) -> std::time::Duration {
        self.opened.elapsed()
    }

    /// Sketch bins held in memory for the rollups.
    pub fn bins(&self) -> usize {
        self.rollups.bins()
    }

    /// Applies one read's `runs` (events at or below a shard's checkpoint are skipped).
    /// `Ok(false)`, with nothing of the read applied, when the read must go shard by shard
    /// ([`crate::apply::apply`], which holds, retries and parks): an event is held behind a
    /// dead letter, or undecodable, or the database refused the rows. The window stays
    /// usable: the read's writes are undone to a savepoint. A failure that is not the
    /// events' fault (the connection) is an error, and the whole window is lost.
    pub async fn apply(&mut self, runs: &[(u32, Vec<Entry>)]) -> Result<bool, Error> {
        let version = self.version;
        let fresh: Vec<(u32, Vec<&Entry>)> = runs
            .iter()
            .map(|(shard, entries)| {
                let cp = self
                    .checkpoints
                    .get(*shard as usize)
                    .copied()
                    .unwrap_or(Cursor::ZERO);
                (
                    *shard,
                    entries
                        .iter()
                        .filter(|e| e.event.cursor > cp)
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, run)| !run.is_empty())
            .collect();
        if fresh.is_empty() {
            return Ok(true);
        }
        let ids: Vec<&str> = fresh
            .iter()
            .flat_map(|(_, run)| run.iter().map(|e| e.event.row.aggregate_id.as_str()))
            .collect();
        let held: Option<String> = sqlx::query_scalar(
            "SELECT message_id FROM dead_letters \
             WHERE version = $1 AND state IN ('parked', 'held') AND message_id = ANY($2) LIMIT 1",
        )
        .bind(version)
        .bind(&ids)
        .fetch_optional(&mut *self.tx)
        .await?;
        if held.is_some() {
            return Ok(false);
        }
        let mut decoded = Vec::with_capacity(ids.len());
        for (_, run) in &fresh {
            for entry in run {
                match decode(&entry.event) {
                    Ok(Some(d)) => decoded.push(d),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(version, %error, "a read of the rebuild goes shard by shard");
                        return Ok(false);
                    }
                }
            }
        }
        let mut savepoint = sqlx::Acquire::begin(&mut self.tx).await?;
        // The rollups are added to last, after every statement succeeded: a read that
        // fails adds nothing to them.
        match write_rows(&mut savepoint, version, &decoded, &mut self.rollups).await {
            Ok(_) => savepoint.commit().await?,
            Err(error) if error.fault().is_retryable() => return Err(error),
            Err(error) => {
                savepoint.rollback().await?;
                tracing::warn!(version, %error, "a read of the rebuild goes shard by shard");
                return Ok(false);
            }
        }
        for (shard, run) in &fresh {
            let last = run.last().expect("not empty").event.cursor;
            let slot = self.applied.entry(*shard).or_insert((last, 0));
            *slot = (last, slot.1 + run.len() as i64);
        }
        Ok(true)
    }

    /// Writes the window's rollups and checkpoints and commits.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        self.write_out().await?;
        self.tx.commit().await
    }

    /// Writes the window's rollups and checkpoints as [`Window::commit`] does, then undoes
    /// the whole window: what a window costs, with nothing kept.
    pub async fn discard(mut self) -> Result<(), sqlx::Error> {
        self.write_out().await?;
        self.tx.rollback().await
    }

    async fn write_out(&mut self) -> Result<(), sqlx::Error> {
        let version = self.version;
        std::mem::take(&mut self.rollups)
            .write(&mut self.tx, version)
            .await?;
        for (shard, (last, n)) in &self.applied {
            read_model::checkpoint::advance(&mut self.tx, version, *shard, *last, *n).await?;
        }
        Ok(())
    }
}

/// Whether `version` is retired, holding its row shared until the transaction ends: a
/// retirement (which updates that row) waits for batches in flight, and every batch after
/// it sees it, so no row is written into a version whose rows are being deleted.
async fn retired(conn: &mut PgConnection, version: i32) -> Result<bool, sqlx::Error> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM read_model_versions WHERE version = $1 FOR SHARE")
            .bind(version)
            .fetch_optional(conn)
            .await?;
    Ok(state.as_deref() == Some("retired"))
}

/// An event's span and the outcome it records when dropped (`failed` unless told
/// otherwise: an early return is a failed or retried batch).
struct EventSpan {
    span: tracing::Span,
    outcome: &'static str,
}

impl EventSpan {
    fn new(span: tracing::Span) -> Self {
        Self {
            span,
            outcome: "failed",
        }
    }
}

impl Drop for EventSpan {
    fn drop(&mut self) {
        self.span.record("outcome", self.outcome);
    }
}

async fn hold(
    conn: &mut PgConnection,
    version: i32,
    shard: u32,
    entry: &Entry,
) -> Result<(), sqlx::Error> {
    dead_letter(
        conn,
        version,
        shard,
        entry,
        "held",
        "waiting behind an earlier dead letter of this message",
        0,
    )
    .await
}

/// Records `entry` in `dead_letters` as `state`; a second record of the same event is a
/// no-op, so a retried park or hold cannot double it.
async fn dead_letter(
    conn: &mut PgConnection,
    version: i32,
    shard: u32,
    entry: &Entry,
    state: &str,
    error: &str,
    attempts: u32,
) -> Result<(), sqlx::Error> {
    let env = &entry.event;
    sqlx::query(
        "INSERT INTO dead_letters (version, shard, message_id, sequence, tx_id, global_position, \
         event_type, state, error, attempts, tenant_id, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
    )
    .bind(version)
    .bind(shard as i32)
    .bind(&env.row.aggregate_id)
    .bind(env.row.sequence)
    .bind(env.cursor.tx_id)
    .bind(env.cursor.global_position)
    .bind(&env.row.event_type)
    .bind(state)
    .bind(error)
    .bind(attempts as i32)
    .bind(env.tenant_id())
    .bind(env.recorded_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Parks `entry` (a poison event) in `dead_letters` with `error`, and moves the checkpoint
/// past it, in one transaction. Nothing happens when it is at or below the checkpoint
/// (`Ok(false)`).
pub async fn park(
    pool: &PgPool,
    version: i32,
    shard: u32,
    entry: &Entry,
    error: &str,
    attempts: u32,
) -> Result<bool, sqlx::Error> {
    let env = &entry.event;
    let mut tx = pool.begin().await?;
    let cp = read_model::checkpoint::lock(&mut tx, version, shard).await?;
    if env.cursor <= cp {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(DEAD_LETTER_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    dead_letter(&mut tx, version, shard, entry, "parked", error, attempts).await?;
    read_model::checkpoint::advance(&mut tx, version, shard, env.cursor, 1).await?;
    tx.commit().await?;
    Ok(true)
}
