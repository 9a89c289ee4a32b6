//! Operator commands: dead letters (list, retry, skip), rebuilding the read models, and
//! retiring an old read-model version.

use std::collections::BTreeMap;

use event_store::stored::{read_after, read_positions};
use event_store::Cursor;
use read_model::dead_letters::DeadLetter;
use read_model::shard::shard_of;
use sqlx::PgPool;

use crate::apply::{apply, Stop};
use crate::batch::{Window, DEAD_LETTER_LOCK_KEY};
use crate::error::{Error, Result};
use crate::stream::{self, group_name, stream_key, Entry};
use crate::write::{decode, write_events};
use crate::Context;

/// Dead letters still waiting (`parked`, `held`), or all of them with `all`.
pub async fn list(pool: &PgPool, all: bool) -> Result<Vec<DeadLetter>> {
    Ok(read_model::dead_letters::list(pool, all).await?)
}

/// Re-applies the parked event `id` and every event of its message held behind it, in
/// sequence order, in one transaction; marks them `resolved`. Returns how many were
/// applied. On failure nothing changes except the parked row's `attempts` and `error`.
pub async fn retry(read_db: &PgPool, events_db: &PgPool, id: i64) -> Result<usize> {
    match drain(read_db, events_db, id, false).await {
        Ok(n) => Ok(n),
        Err(e) => {
            let _ = sqlx::query(
                "UPDATE dead_letters SET attempts = attempts + 1, error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(e.to_string())
            .execute(read_db)
            .await;
            Err(e)
        }
    }
}

/// Marks the parked event `id` `skipped` (its event is never applied to this version) and
/// applies the events of its message held behind it. If one of those fails, the skip still
/// stands and that event becomes the message's parked one.
pub async fn skip(read_db: &PgPool, events_db: &PgPool, id: i64) -> Result<usize> {
    match drain(read_db, events_db, id, true).await {
        Ok(n) => Ok(n),
        Err(e @ Error::Refused(_)) => Err(e),
        Err(e) => {
            // Keep the skip; park the first held event with the error instead.
            let mut tx = read_db.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(DEAD_LETTER_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            let row: Option<(i32, String)> = sqlx::query_as(
                "UPDATE dead_letters SET state = 'skipped', resolved_at = now() \
                 WHERE id = $1 AND state = 'parked' RETURNING version, message_id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((version, message)) = row {
                sqlx::query(
                    "UPDATE dead_letters SET state = 'parked', error = $3, attempts = 1 \
                     WHERE id = (SELECT id FROM dead_letters WHERE version = $1 AND message_id = $2 \
                     AND state = 'held' ORDER BY sequence LIMIT 1)",
                )
                .bind(version)
                .bind(message)
                .bind(e.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Err(e)
        }
    }
}

async fn drain(read_db: &PgPool, events_db: &PgPool, id: i64, skip_first: bool) -> Result<usize> {
    let mut tx = read_db.begin().await?;
    // Exclusive: no batch is parking events of this message while it drains.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DEAD_LETTER_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let row: Option<(i32, String, String)> = sqlx::query_as(
        "SELECT version, message_id, state FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((version, message, state)) = row else {
        return Err(Error::Refused(format!("no dead letter {id}")));
    };
    if state != "parked" {
        return Err(Error::Refused(format!(
            "dead letter {id} is {state}; only parked ones can be retried or skipped \
             (held ones drain with the parked event of their message)"
        )));
    }
    if skip_first {
        sqlx::query("UPDATE dead_letters SET state = 'skipped', resolved_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, global_position FROM dead_letters WHERE version = $1 AND message_id = $2 \
         AND state IN ('parked', 'held') ORDER BY sequence",
    )
    .bind(version)
    .bind(&message)
    .fetch_all(&mut *tx)
    .await?;
    let positions: Vec<i64> = rows.iter().map(|(_, p)| *p).collect();
    let ids: Vec<i64> = rows.iter().map(|(i, _)| *i).collect();
    // The event store is the source of truth: a corrected event is read afresh.
    let mut envs = read_positions(events_db, &positions).await?;
    envs.sort_by_key(|e| e.row.sequence);
    let mut decoded = Vec::with_capacity(envs.len());
    for env in &envs {
        if let Some(d) = decode(env)? {
            decoded.push(d);
        }
    }
    write_events(&mut tx, version, &decoded).await?;
    sqlx::query(
        "UPDATE dead_letters SET state = 'resolved', resolved_at = now() WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// Events per read-model transaction of a rebuild applied shard by shard (larger than a
/// live batch: fewer commits).
const REBUILD_BATCH: usize = 1_000;
/// Events a window of the first pass applies at most before it commits ([`Window`]).
const WINDOW_EVENTS: u64 = 1_000_000;
/// Rollup sketch bins a window holds in memory at most before it commits: the bound on a
/// rebuild's memory beyond one read (a bin is a map entry of a few tens of bytes, so about
/// 40 MiB).
const WINDOW_BINS: usize = 1_000_000;

/// Advisory-lock key held by whoever builds a read-model version ("HERALDRB"): one build at
/// a time, whether an operator's `projector rebuild` or a projector keeping up with the
/// schema's generation.
pub const REBUILD_LOCK_KEY: i64 = 0x4845_5241_4c44_5242;

/// The rebuild lock, held on a connection of its own for as long as the value lives (the
/// lock dies with the connection, so a crashed builder never leaves it held).
pub struct RebuildLock(#[allow(dead_code)] sqlx::PgConnection);

impl RebuildLock {
    /// The lock if nobody else holds it.
    pub async fn try_take(pool: &PgPool) -> Result<Option<Self>> {
        let mut conn = pool.acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(REBUILD_LOCK_KEY)
            .fetch_one(&mut conn)
            .await?;
        Ok(got.then_some(Self(conn)))
    }
}

/// Builds a new read-model version of the generation the schema requires, straight from
/// the event store (see [`build`]). Refused while another build runs. Returns the version.
pub async fn rebuild(ctx: &Context) -> Result<i32> {
    let Some(_lock) = RebuildLock::try_take(&ctx.read_db).await? else {
        return Err(Error::Refused(
            "another read-model build is running (a projector keeping up with a schema change, \
             or another rebuild); wait for it"
                .into(),
        ));
    };
    let generation = read_model::versions::generations(&ctx.read_db)
        .await?
        .required;
    let version = new_version(ctx, generation).await?;
    build(ctx, version).await?;
    Ok(version)
}

/// Registers a new version of `generation`, `building`.
pub async fn new_version(ctx: &Context, generation: i32) -> Result<i32> {
    register_version(&ctx.read_db, generation).await
}

/// Registers a new version of `generation`, `building`, on `executor` (a pool, or the
/// transaction of a dry run that rolls it back).
async fn register_version<'c, E: sqlx::PgExecutor<'c>>(
    executor: E,
    generation: i32,
) -> Result<i32> {
    Ok(sqlx::query_scalar(
        "INSERT INTO read_model_versions (version, state, generation) \
         SELECT coalesce(max(version), 0) + 1, 'building', $1 FROM read_model_versions \
         RETURNING version",
    )
    .bind(generation)
    .fetch_one(executor)
    .await?)
}

/// Fills `version` straight from the event store (not through Redis), makes it live (the
/// running projectors pick it up and continue from its checkpoints), catches it up once
/// more, then switches queries to it atomically. The previous version stays live until
/// retired. Safe to run again on a version a crashed build left half-done: events at or
/// below a shard's checkpoint are skipped. The caller holds the [`RebuildLock`].
pub async fn build(ctx: &Context, version: i32) -> Result<()> {
    tracing::info!(version, "building read models from the event store");
    let started = std::time::Instant::now();
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM read_model_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&ctx.read_db)
            .await?;
    let building = state.as_deref() == Some("building");
    // A build resumed after it went live shares the version with the projectors already:
    // it goes shard by shard, like them, instead of holding every checkpoint for a window.
    let mut cursor = if building {
        first_pass(ctx, version).await?
    } else {
        catch_up(ctx, version, Cursor::ZERO).await?
    };
    sqlx::query(
        "UPDATE read_model_versions SET state = 'live', live_at = coalesce(live_at, now()) \
         WHERE version = $1",
    )
    .bind(version)
    .execute(&ctx.read_db)
    .await?;
    // Whatever arrived during the bulk pass; live projectors continue from here.
    cursor = catch_up(ctx, version, cursor).await?;
    if building {
        compact_rollup_indexes(ctx).await?;
    }
    sqlx::query("UPDATE read_model_active SET version = $1, switched_at = now()")
        .bind(version)
        .execute(&ctx.read_db)
        .await?;
    tracing::info!(
        version,
        %cursor,
        seconds = started.elapsed().as_secs(),
        "read-model version built and active"
    );
    Ok(())
}

/// Rebuilds the rollup tables' indexes, chunk by chunk, without blocking readers or
/// writers (`REINDEX CONCURRENTLY`).
///
/// A build writes each rollup row once per window, and each write is a new row version
/// with a new entry in every index: the covering counts index holds the counters, so no
/// update is HOT. Vacuum frees the old entries but leaves their pages sparse, and
/// counts-only answers scan that index: after two builds of a 1M-event store, the busiest
/// hour chunk's was 40 MB where its live entries need 6.8 MB, and an hour-by-channel read
/// of the newer version touched 520 pages instead of about 100.
async fn compact_rollup_indexes(ctx: &Context) -> Result<()> {
    for level in read_model::rollup::Level::ALL {
        let chunks: Vec<String> = sqlx::query_scalar("SELECT show_chunks($1::regclass)::text")
            .bind(level.table())
            .fetch_all(&ctx.read_db)
            .await?;
        for chunk in chunks {
            // A chunk's name comes from TimescaleDB (`_timescaledb_internal._hyper_…`),
            // already quoted where needed by the regclass text.
            sqlx::query(&format!("REINDEX TABLE CONCURRENTLY {chunk}"))
                .execute(&ctx.read_db)
                .await?;
        }
    }
    Ok(())
}

/// The events in the store after `cursor`: what a rebuild from there reads (an estimate:
/// events committed meanwhile are read too). From the start, the relay's per-shard counts
/// and its lag give the size of the store without a scan of it (which takes seconds at ten
/// million events).
async fn remaining(ctx: &Context, cursor: Cursor) -> Result<i64> {
    let counted = if cursor == Cursor::ZERO {
        read_model::relay_position::published_total(&ctx.events_db, ctx.settings.shards).await?
    } else {
        None
    };
    Ok(match counted {
        Some(published) => published + read_model::lag::relay(&ctx.events_db).await?.0,
        None => {
            sqlx::query_scalar(
                "SELECT count(*) FROM events \
                 WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)",
            )
            .bind(cursor.tx_id)
            .bind(cursor.global_position)
            .fetch_one(&ctx.events_db)
            .await?
        }
    })
}

/// What a rebuild would take, from a sample of its first pass ([`estimate`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Events in the store: what a rebuild reads.
    pub events: i64,
    /// Events the sample applied.
    pub sampled: u64,
    /// How long the sample took, its rollups and checkpoints written.
    pub took: std::time::Duration,
}

impl Estimate {
    /// Events per second the sample applied.
    pub fn rate(&self) -> f64 {
        self.sampled as f64 / self.took.as_secs_f64().max(1e-3)
    }

    /// The first pass over the whole store at the sample's rate.
    pub fn first_pass(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.events.max(0) as f64 / self.rate().max(1.0))
    }
}

impl std::fmt::Display for Estimate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} events in the event store; a sample of the first pass applied the first {} \
             in {:.1} s ({:.0} events/s), so the first pass would take about {} s; \
             then the events that arrive meanwhile and the rollup index rebuild (not sampled). \
             Nothing was kept.",
            self.events,
            self.sampled,
            self.took.as_secs_f64(),
            self.rate(),
            self.first_pass().as_secs()
        )
    }
}

/// `projector rebuild --dry-run`: how long a rebuild would take. Applies the store's first
/// events for about `sample`, as a rebuild's first pass does (one window: rows, rollups
/// summed in memory and written, checkpoints), to a version registered in the same
/// transaction, then rolls it all back: no version, row or checkpoint is kept. Refused
/// while a build runs (it would skew both). The sample's events are the store's oldest;
/// a store whose traffic changed shape over time rebuilds at a different pace.
pub async fn estimate(ctx: &Context, sample: std::time::Duration) -> Result<Estimate> {
    let Some(_lock) = RebuildLock::try_take(&ctx.read_db).await? else {
        return Err(Error::Refused(
            "a read-model build is running; a dry run would slow it and measure it, not the \
             rebuild"
                .into(),
        ));
    };
    let events = remaining(ctx, Cursor::ZERO).await?;
    let generation = read_model::versions::generations(&ctx.read_db)
        .await?
        .required;
    let shards = ctx.settings.shards;
    let started = std::time::Instant::now();
    let mut tx = ctx.read_db.begin().await?;
    let version = register_version(&mut *tx, generation).await?;
    let mut window = Window::open_in(tx, version, shards).await?;
    let mut cursor = Cursor::ZERO;
    while started.elapsed() < sample {
        let read = read_after(&ctx.events_db, cursor, ctx.settings.rebuild_read).await?;
        let Some(last) = read.last().map(|e| e.cursor) else {
            break;
        };
        // A read the window cannot take would go shard by shard in a rebuild; the sample
        // ends before it.
        if !window.apply(&by_shard(read, shards)).await? {
            break;
        }
        cursor = last;
    }
    let sampled = window.events();
    window.discard().await?;
    Ok(Estimate {
        events,
        sampled,
        took: started.elapsed(),
    })
}

/// A rebuild's progress lines, every 10 seconds: events done, rate and ETA.
struct Progress {
    version: i32,
    todo: i64,
    read: u64,
    started: std::time::Instant,
    logged: std::time::Instant,
}

impl Progress {
    /// Counts what there is to do after `cursor` ([`remaining`]).
    async fn start(ctx: &Context, version: i32, cursor: Cursor) -> Result<Self> {
        let todo = remaining(ctx, cursor).await?;
        let now = std::time::Instant::now();
        Ok(Self {
            version,
            todo,
            read: 0,
            started: now,
            logged: now,
        })
    }

    fn read(&mut self, n: usize, cursor: Cursor) {
        self.read += n as u64;
        if self.logged.elapsed() < std::time::Duration::from_secs(10) {
            return;
        }
        let rate = self.read as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
        let left = (self.todo as f64 - self.read as f64).max(0.0);
        tracing::info!(
            version = self.version,
            events = self.read,
            of = self.todo,
            events_per_s = rate.round(),
            eta_s = (left / rate.max(1.0)).round(),
            %cursor,
            "building read models: progress"
        );
        self.logged = std::time::Instant::now();
    }
}

/// The events of one read, by shard.
fn by_shard(events: Vec<event_store::StoredEvent>, shards: u32) -> Vec<(u32, Vec<Entry>)> {
    let mut runs: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
    for e in events {
        runs.entry(shard_of(&e.row.aggregate_id, shards))
            .or_default()
            .push(Entry::from(e));
    }
    runs.into_iter().collect()
}

/// The first pass of a build, while no projector writes `version` (it is `building`):
/// the store in cursor order, read after read into [`Window`]s, each one transaction whose
/// rollups are summed in memory and written once, until it holds [`WINDOW_EVENTS`] events
/// or [`WINDOW_BINS`] sketch bins, or has been open for `HERALD_REBUILD_WINDOW_MS`. A read
/// a window cannot take goes shard by shard.
async fn first_pass(ctx: &Context, version: i32) -> Result<Cursor> {
    let shards = ctx.settings.shards;
    let mut cursor = Cursor::ZERO;
    let mut progress = Progress::start(ctx, version, cursor).await?;
    let mut window: Option<Window> = None;
    loop {
        let events = read_after(&ctx.events_db, cursor, ctx.settings.rebuild_read).await?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            break;
        };
        progress.read(events.len(), last);
        let runs = by_shard(events, shards);
        let open = match window.as_mut() {
            Some(w) => w,
            None => window.insert(Window::open(&ctx.read_db, version, shards).await?),
        };
        if open.apply(&runs).await? {
            if open.events() >= WINDOW_EVENTS
                || open.bins() >= WINDOW_BINS
                || open.age() >= ctx.settings.rebuild_window
            {
                window.take().expect("open").commit().await?;
            }
        } else {
            // What the window holds is kept; this read goes shard by shard after it.
            if let Some(w) = window.take() {
                w.commit().await?;
            }
            by_shard_apply(ctx, version, runs).await?;
        }
        cursor = last;
    }
    if let Some(w) = window.take() {
        w.commit().await?;
    }
    Ok(cursor)
}

/// Applies the store's events after `cursor` to `version` shard by shard, as projectors
/// write it concurrently (it is `live`).
async fn catch_up(ctx: &Context, version: i32, mut cursor: Cursor) -> Result<Cursor> {
    let mut progress = Progress::start(ctx, version, cursor).await?;
    loop {
        let events = read_after(&ctx.events_db, cursor, ctx.settings.rebuild_read).await?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            return Ok(cursor);
        };
        progress.read(events.len(), last);
        by_shard_apply(ctx, version, by_shard(events, ctx.settings.shards)).await?;
        cursor = last;
    }
}

/// Applies one read's runs, each shard's in batches and in order, the shards concurrently:
/// they are independent (their own checkpoints, their own messages), so the database, not
/// one connection's round trips, sets the pace.
async fn by_shard_apply(ctx: &Context, version: i32, runs: Vec<(u32, Vec<Entry>)>) -> Result<()> {
    let writes = runs.into_iter().map(|(shard, entries)| async move {
        for chunk in entries.chunks(REBUILD_BATCH) {
            match apply(ctx, version, shard, chunk).await {
                Ok(()) => {}
                Err(Stop::Halt { error, .. }) => return Err(error),
                Err(Stop::Gap { .. }) => {
                    unreachable!("events read from the store carry no stream predecessor")
                }
            }
        }
        Ok::<(), Error>(())
    });
    futures::future::try_join_all(writes).await?;
    Ok(())
}

/// Stops projecting `version` (it must not be the active one), drops its consumer groups
/// and deletes its rows. Run again on a retired version, it finishes the deletes.
pub async fn retire(ctx: &Context, version: i32) -> Result<()> {
    let active = read_model::versions::active(&ctx.read_db).await?;
    if active == version {
        return Err(Error::Refused(format!(
            "version {version} is active; rebuild first"
        )));
    }
    let n = sqlx::query(
        "UPDATE read_model_versions SET state = 'retired', retired_at = now() \
         WHERE version = $1 AND state <> 'retired'",
    )
    .bind(version)
    .execute(&ctx.read_db)
    .await?
    .rows_affected();
    if n == 0 {
        // Already retired: a retirement cut short (after the mark, before the deletes)
        // finishes here, so no rows are left behind for ever.
        let retired: Option<String> =
            sqlx::query_scalar("SELECT state FROM read_model_versions WHERE version = $1")
                .bind(version)
                .fetch_optional(&ctx.read_db)
                .await?;
        if retired.as_deref() != Some("retired") {
            return Err(Error::Refused(format!("no live version {version}")));
        }
    }
    let mut redis = stream::connect(&ctx.redis, std::time::Duration::from_secs(5)).await?;
    for shard in 0..ctx.settings.shards {
        stream::destroy_group(
            &mut redis,
            &stream_key(&ctx.prefix, shard),
            &group_name(version),
        )
        .await;
    }
    for table in read_model::tables::VERSIONED {
        sqlx::query(&format!("DELETE FROM {table} WHERE version = $1"))
            .bind(version)
            .execute(&ctx.read_db)
            .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(read_model::shard::projection_name(version))
        .execute(&ctx.read_db)
        .await?;
    Ok(())
}

/// Operator commands of the `projector` binary.
#[derive(Debug, clap::Parser)]
#[command(name = "projector", no_binary_name = true, disable_version_flag = true)]
pub enum Command {
    /// Events the projector could not apply.
    #[command(subcommand)]
    DeadLetters(DeadLetters),
    /// Builds a new read-model version from the event store and makes it active.
    Rebuild {
        /// Only say how long it would take: applies the first events for a while and keeps
        /// nothing.
        #[arg(long)]
        dry_run: bool,
        /// How long the dry run samples, in seconds.
        #[arg(long, default_value_t = 15)]
        sample_seconds: u64,
    },
    /// Drops an old read-model version and its stream groups.
    Retire {
        /// The version to drop (never the active one).
        version: i32,
    },
    /// Recomputes the read models from the event store and compares every row.
    Verify(VerifyArgs),
}

/// `projector dead-letters ...`.
#[derive(Debug, clap::Subcommand)]
pub enum DeadLetters {
    /// Lists the waiting dead letters (parked and held).
    List {
        /// Also the resolved and skipped ones.
        #[arg(long)]
        all: bool,
    },
    /// Applies a parked event again, and the events held behind it.
    Retry {
        /// The dead letter's id (from `list`).
        id: i64,
    },
    /// Gives up on a parked event and applies the events held behind it.
    Skip {
        /// The dead letter's id (from `list`).
        id: i64,
    },
}

/// `projector verify`: exit status 0 when the read model equals the oracle's computation,
/// 1 on any difference.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Read-model version (default: the active one).
    #[arg(long)]
    pub version: Option<i32>,
    /// Only this tenant's messages and rollup rows.
    #[arg(long, conflicts_with_all = ["from", "sample"])]
    pub tenant: Option<uuid::Uuid>,
    /// Only rollup buckets from this time (RFC 3339) and the messages with events in them.
    #[arg(long, requires = "to", conflicts_with = "sample")]
    pub from: Option<chrono::DateTime<chrono::Utc>>,
    /// End of the window (exclusive, RFC 3339).
    #[arg(long, requires = "from")]
    pub to: Option<chrono::DateTime<chrono::Utc>>,
    /// Only this many messages picked at random (their rows; no rollups).
    #[arg(long)]
    pub sample: Option<u32>,
    /// Picks the same sample again.
    #[arg(long, default_value = "herald")]
    pub seed: String,
    /// Also count events not yet applied as differences.
    #[arg(long)]
    pub caught_up: bool,
    /// Messages per round trip.
    #[arg(long, default_value_t = 500)]
    pub chunk: usize,
    /// Pause between chunks, in milliseconds (to spare a busy database).
    #[arg(long, default_value_t = 0)]
    pub pause_ms: u64,
    /// Differences printed in full.
    #[arg(long, default_value_t = 20)]
    pub show: usize,
    /// Most expected rollup rows held in memory before the scope is refused as too large.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_rollup_rows: usize,
}

impl VerifyArgs {
    /// The oracle's options for `shards` stream shards.
    pub fn options(&self, shards: u32) -> oracle::Options {
        let scope = match (self.tenant, self.from, self.to, self.sample) {
            (Some(t), ..) => oracle::Scope::Tenant(t),
            (_, Some(from), Some(to), _) => oracle::Scope::Window { from, to },
            (.., Some(n)) => oracle::Scope::Sample {
                messages: n,
                seed: self.seed.clone(),
            },
            _ => oracle::Scope::All,
        };
        oracle::Options {
            version: self.version,
            scope,
            shards,
            caught_up: self.caught_up,
            chunk: self.chunk,
            show: self.show,
            max_rollup_rows: self.max_rollup_rows,
            pause: std::time::Duration::from_millis(self.pause_ms),
        }
    }
}

/// The `projector <command>` hook of the service binary.
pub async fn command(
    args: Vec<String>,
    settings: service_kit::Settings,
) -> Result<(), service_kit::cli::CommandError> {
    use clap::Parser;
    use service_kit::cli::CommandError;
    let command = match Command::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            print!("{e}");
            return Ok(());
        }
        Err(e) => return Err(CommandError::Usage(e.to_string())),
    };
    run_command(command, settings).await.map_err(|e| match e {
        Error::Refused(_) => CommandError::Usage(e.to_string()),
        e => CommandError::Failed(e.to_string()),
    })
}

async fn run_command(command: Command, settings: service_kit::Settings) -> Result<()> {
    let tuning =
        crate::ProjectorSettings::from_env(&settings).map_err(|e| Error::Refused(e.to_string()))?;
    let conns = service_kit::Connections::open(&settings, "projector-admin")
        .await
        .map_err(|e| Error::Refused(e.to_string()))?;
    match command {
        Command::DeadLetters(DeadLetters::List { all }) => {
            let rows = list(&conns.read_db, all).await?;
            println!("id\tversion\tstate\tmessage_id\tsequence\tevent_type\tattempts\terror");
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.version,
                    r.state,
                    r.message_id,
                    r.sequence,
                    r.event_type,
                    r.attempts,
                    r.error.replace('\n', " ")
                );
            }
            Ok(())
        }
        Command::DeadLetters(DeadLetters::Retry { id }) => {
            let applied = retry(&conns.read_db, &conns.db, id).await?;
            println!("applied {applied} event(s)");
            Ok(())
        }
        Command::DeadLetters(DeadLetters::Skip { id }) => {
            let applied = skip(&conns.read_db, &conns.db, id).await?;
            println!("skipped; applied {applied} held event(s)");
            Ok(())
        }
        Command::Rebuild {
            dry_run: true,
            sample_seconds,
        } => {
            let ctx = crate::context(&conns, &settings, tuning)?;
            let sample = std::time::Duration::from_secs(sample_seconds);
            println!("{}", estimate(&ctx, sample).await?);
            Ok(())
        }
        Command::Rebuild { dry_run: false, .. } => {
            let ctx = crate::context(&conns, &settings, tuning)?;
            let v = rebuild(&ctx).await?;
            println!("read-model version {v} built and active");
            Ok(())
        }
        Command::Retire { version } => {
            let ctx = crate::context(&conns, &settings, tuning)?;
            retire(&ctx, version).await?;
            println!("read-model version {version} retired");
            Ok(())
        }
        Command::Verify(args) => verify(&conns.db, &args.options(settings.stream_shards)).await,
    }
}

/// Runs the oracle and prints its report (progress on standard error every few seconds);
/// any difference is an error, so the exit status says whether the read model is right.
pub async fn verify(events_db: &PgPool, options: &oracle::Options) -> Result<()> {
    let started = std::time::Instant::now();
    let mut last = started;
    let report = oracle::verify(events_db, options, |p| {
        if last.elapsed() >= std::time::Duration::from_secs(5) {
            last = std::time::Instant::now();
            match p.of {
                Some(of) if of > 0 => eprintln!(
                    "verify: {} of {of} messages ({:.0}%), {:.0} s",
                    p.messages,
                    100.0 * p.messages as f64 / of as f64,
                    started.elapsed().as_secs_f64()
                ),
                _ => eprintln!(
                    "verify: {} messages, {:.0} s",
                    p.messages,
                    started.elapsed().as_secs_f64()
                ),
            }
        }
    })
    .await
    .map_err(|e| match e {
        oracle::VerifyError::Database(e) => Error::Database(e),
        e => Error::Refused(e.to_string()),
    })?;
    print!("{report}");
    if report.is_clean() {
        Ok(())
    } else {
        Err(Error::Differences(report.differences.total()))
    }
}
