//! `verify`: the oracle run over a scope of messages against one read-model version.
//!
//! The whole run reads one REPEATABLE READ snapshot, so the read model, its checkpoints and
//! the event store are seen at one instant even while the projector keeps writing: each
//! message is expected to hold exactly the events of its shard up to that shard's
//! checkpoint, minus the ones parked or held in `dead_letters`. The snapshot is read-only
//! and takes no transaction id, so it never holds back the relay's horizon; it does hold
//! back vacuum for as long as the run lasts, which is why long runs are scoped.
//!
//! Memory stays bounded: messages are read in chunks of `chunk`, and the expected rollup
//! rows of the scope, the one thing that must be summed over all messages before it can be
//! compared, are capped at `max_rollup_rows` (a larger scope is refused, naming a smaller
//! one).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use event_store::stored::{read_streams, SHARD_KEY};
use event_store::Cursor;
use futures::TryStreamExt;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use crate::diff::{Difference, Differences, EVENT_COLUMNS, MESSAGE_COLUMNS};
use crate::model::{self, Dims, EventRow, MessageRow, RollupKey, RollupRow, Rollups};
use read_model::rollup::{Level, ENGAGEMENTS, STATUSES};

/// Which messages a run covers.
#[derive(Debug, Clone, PartialEq)]
pub enum Scope {
    /// Every message, every rollup row, every checkpoint.
    All,
    /// The messages and rollup rows of one tenant.
    Tenant(Uuid),
    /// The rollup buckets in `[from, to)` (widened to whole 15-minute buckets) and every
    /// message with an event in them.
    Window {
        /// Start (inclusive).
        from: DateTime<Utc>,
        /// End (exclusive).
        to: DateTime<Utc>,
    },
    /// `messages` messages picked at random (reproducibly, by `seed`): their rows only, as
    /// rollups sum over messages a sample does not hold.
    Sample {
        /// How many.
        messages: u32,
        /// Picks the same sample again.
        seed: String,
    },
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => write!(f, "every message"),
            Scope::Tenant(t) => write!(f, "tenant {t}"),
            Scope::Window { from, to } => write!(f, "buckets {from} .. {to}"),
            Scope::Sample { messages, seed } => {
                write!(f, "a sample of {messages} messages (seed {seed:?})")
            }
        }
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// The read-model version (`None`: the active one).
    pub version: Option<i32>,
    /// What it covers.
    pub scope: Scope,
    /// Stream shards (`HERALD_STREAM_SHARDS`): which checkpoint covers which message.
    pub shards: u32,
    /// Also require every event to be applied (a lagging shard is a difference).
    pub caught_up: bool,
    /// Messages read per round trip.
    pub chunk: usize,
    /// Differences kept in full for the report.
    pub show: usize,
    /// Most expected rollup rows held in memory.
    pub max_rollup_rows: usize,
    /// Rest between chunks, to keep the load on the database down.
    pub pause: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            version: None,
            scope: Scope::All,
            shards: 4,
            caught_up: false,
            chunk: 500,
            show: 20,
            max_rollup_rows: 1_000_000,
            pause: Duration::ZERO,
        }
    }
}

/// How far a run has got.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Messages checked so far.
    pub messages: u64,
    /// Messages in the scope, when known up front.
    pub of: Option<u64>,
}

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The version compared.
    pub version: i32,
    /// What was covered.
    pub scope: Scope,
    /// Messages checked.
    pub messages: u64,
    /// Events the read model holds for them (applied).
    pub applied: u64,
    /// Their events beyond the checkpoints, not applied yet.
    pub pending: u64,
    /// Their events parked or held in `dead_letters`.
    pub dead_lettered: u64,
    /// Rollup rows compared (`None`: not in this scope).
    pub rollup_rows: Option<u64>,
    /// Shards whose checkpoint was checked (`None`: not in this scope).
    pub checkpoints: Option<u32>,
    /// Every difference.
    pub differences: Differences,
}

impl Report {
    /// No difference at all.
    pub fn is_clean(&self) -> bool {
        self.differences.total() == 0
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "read-model version {}, {}", self.version, self.scope)?;
        writeln!(
            f,
            "  messages     {} checked: {} events applied, {} not yet applied, {} dead-lettered",
            self.messages, self.applied, self.pending, self.dead_lettered
        )?;
        match self.rollup_rows {
            Some(n) => writeln!(f, "  rollups      {n} rows compared")?,
            None => writeln!(f, "  rollups      not compared (a sample)")?,
        }
        match self.checkpoints {
            Some(n) => writeln!(f, "  checkpoints  {n} shards checked")?,
            None => writeln!(f, "  checkpoints  not checked (only with every message)")?,
        }
        let total = self.differences.total();
        if total == 0 {
            return writeln!(f, "  differences  none");
        }
        let per: Vec<String> = self
            .differences
            .per_table
            .iter()
            .map(|(t, n)| format!("{t} {n}"))
            .collect();
        writeln!(f, "  differences  {total} ({})", per.join(", "))?;
        for d in &self.differences.first {
            writeln!(f, "    {d}")?;
        }
        if (self.differences.first.len() as u64) < total {
            writeln!(
                f,
                "    ... and {} more",
                total - self.differences.first.len() as u64
            )?;
        }
        Ok(())
    }
}

/// Why a run could not finish (differences are not errors: they are in the [`Report`]).
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The version does not exist.
    #[error("read-model version {0} does not exist")]
    NoVersion(i32),
    /// The scope's expected rollups do not fit the memory bound.
    #[error(
        "the scope holds more than {0} rollup rows; verify a tenant (--tenant) or a window \
         (--from/--to) at a time"
    )]
    TooLarge(usize),
    /// The options make no sense.
    #[error("{0}")]
    Options(String),
}

/// Runs the oracle over `opts.scope` and compares every row of every read model of the
/// version, reporting `progress` after each chunk.
pub async fn verify(
    pool: &PgPool,
    opts: &Options,
    mut progress: impl FnMut(Progress),
) -> Result<Report, VerifyError> {
    if opts.chunk == 0 || opts.shards == 0 {
        return Err(VerifyError::Options(
            "chunk and shards must be positive".into(),
        ));
    }
    let scope = match &opts.scope {
        Scope::Window { from, to } => {
            let (from, to) = (model::bucket(*from), ceil_bucket(*to));
            if from >= to {
                return Err(VerifyError::Options("the window is empty".into()));
            }
            Scope::Window { from, to }
        }
        s => s.clone(),
    };
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let version = match opts.version {
        Some(v) => v,
        None => {
            sqlx::query_scalar("SELECT version FROM read_model_active")
                .fetch_one(&mut *tx)
                .await?
        }
    };
    let known: Option<i32> =
        sqlx::query_scalar("SELECT generation FROM read_model_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(generation) = known else {
        return Err(VerifyError::NoVersion(version));
    };
    if generation < read_model::rollup::GENERATION {
        return Err(VerifyError::Options(format!(
            "version {version} is of read-model generation {generation}, whose rollups this \
             release no longer writes; verify a version of generation {} (a projector builds \
             one when the schema requires it)",
            read_model::rollup::GENERATION
        )));
    }
    let checkpoints = checkpoints(&mut tx, version).await?;

    let mut run = Run {
        version,
        shards: opts.shards,
        checkpoints: &checkpoints,
        diffs: Differences::new(opts.show),
        rollups: Rollups::new(),
        max_rollups: opts.max_rollup_rows,
        window: match scope {
            Scope::Window { from, to } => Some((from, to)),
            _ => None,
        },
        report: Counts::default(),
    };
    let of = match &scope {
        Scope::All => Some(
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM events WHERE aggregate_type = 'Message' AND sequence = 1",
            )
            .fetch_one(&mut *tx)
            .await? as u64,
        ),
        Scope::Sample { messages, .. } => Some(u64::from(*messages)),
        _ => None,
    };

    match &scope {
        Scope::Sample { messages, seed } => {
            let mut ids: Vec<String> = sqlx::query_scalar(
                "SELECT aggregate_id FROM events WHERE aggregate_type = 'Message' \
                 AND sequence = 1 ORDER BY md5(aggregate_id || $1) LIMIT $2",
            )
            .bind(seed)
            .bind(i64::from(*messages))
            .fetch_all(&mut *tx)
            .await?;
            ids.sort();
            for chunk in ids.chunks(opts.chunk) {
                run.chunk(&mut tx, chunk).await?;
                progress(Progress {
                    messages: run.report.messages,
                    of,
                });
                pause(opts.pause).await;
            }
        }
        _ => {
            let mut after = String::new();
            loop {
                let ids = candidates(&mut tx, &scope, &after, opts.chunk).await?;
                let Some(last) = ids.last() else { break };
                after.clone_from(last);
                run.chunk(&mut tx, &ids).await?;
                progress(Progress {
                    messages: run.report.messages,
                    of,
                });
                pause(opts.pause).await;
            }
            run.unexpected_rows(&mut tx, &scope).await?;
        }
    }

    let rollup_rows = match scope {
        Scope::Sample { .. } => None,
        _ => Some(run.compare_rollups(&mut tx, &scope).await?),
    };
    let checked_checkpoints = match scope {
        Scope::All => {
            run.compare_checkpoints(&mut tx, opts.caught_up).await?;
            Some(opts.shards)
        }
        _ => None,
    };
    tx.rollback().await?;
    Ok(Report {
        version,
        scope,
        messages: run.report.messages,
        applied: run.report.applied,
        pending: run.report.pending,
        dead_lettered: run.report.dead_lettered,
        rollup_rows,
        checkpoints: checked_checkpoints,
        differences: run.diffs,
    })
}

async fn pause(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

fn ceil_bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    let b = model::bucket(t);
    if b == t {
        b
    } else {
        b + chrono::Duration::seconds(model::BUCKET_SECONDS)
    }
}

/// Per shard: the cursor of the last applied event and the events counted.
type Checkpoints = HashMap<u32, (Cursor, i64)>;

async fn checkpoints(conn: &mut PgConnection, version: i32) -> Result<Checkpoints, sqlx::Error> {
    let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position, events FROM projection_checkpoints \
         WHERE projection = $1",
    )
    .bind(read_model::shard::projection_name(version))
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(s, tx, gp, n)| (s as u32, (Cursor::new(tx, gp), n)))
        .collect())
}

/// The next `limit` message ids of the scope after `after`, in id order.
async fn candidates(
    conn: &mut PgConnection,
    scope: &Scope,
    after: &str,
    limit: usize,
) -> Result<Vec<String>, sqlx::Error> {
    const BASE: &str = "SELECT aggregate_id FROM events WHERE aggregate_type = 'Message' \
         AND sequence = 1 AND aggregate_id > $1";
    let limit = limit as i64;
    match scope {
        Scope::Tenant(t) => {
            sqlx::query_scalar(&format!(
                "{BASE} AND metadata->>'tenant_id' = $3 ORDER BY aggregate_id LIMIT $2"
            ))
            .bind(after)
            .bind(limit)
            .bind(t.to_string())
            .fetch_all(conn)
            .await
        }
        Scope::Window { from, to } => {
            sqlx::query_scalar(&format!(
                "{BASE} AND EXISTS (SELECT 1 FROM events w, jsonb_each(w.payload) j \
                   WHERE w.aggregate_type = 'Message' AND w.aggregate_id = events.aggregate_id \
                   AND (j.value->>'occurred_at')::timestamptz >= $3 \
                   AND (j.value->>'occurred_at')::timestamptz < $4) \
                 ORDER BY aggregate_id LIMIT $2"
            ))
            .bind(after)
            .bind(limit)
            .bind(from)
            .bind(to)
            .fetch_all(conn)
            .await
        }
        _ => {
            sqlx::query_scalar(&format!("{BASE} ORDER BY aggregate_id LIMIT $2"))
                .bind(after)
                .bind(limit)
                .fetch_all(conn)
                .await
        }
    }
}

#[derive(Default)]
struct Counts {
    messages: u64,
    applied: u64,
    pending: u64,
    dead_lettered: u64,
    /// `message_events` and `messages` rows of the read model met while comparing messages.
    seen_event_rows: u64,
    seen_message_rows: u64,
    /// Of the seen `message_events` rows, those in the window.
    seen_window_rows: u64,
}

struct Run<'a> {
    version: i32,
    shards: u32,
    checkpoints: &'a Checkpoints,
    diffs: Differences,
    rollups: Rollups,
    max_rollups: usize,
    window: Option<(DateTime<Utc>, DateTime<Utc>)>,
    report: Counts,
}

impl Run<'_> {
    /// Checks the messages `ids` and adds their rollup contributions.
    async fn chunk(&mut self, conn: &mut PgConnection, ids: &[String]) -> Result<(), VerifyError> {
        let events = read_streams(&mut *conn, "Message", ids).await?;
        let uuids: Vec<Uuid> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        let dead: HashSet<i64> = sqlx::query_scalar(
            "SELECT global_position FROM dead_letters WHERE version = $1 \
             AND message_id = ANY($2) AND state IN ('parked', 'held', 'skipped')",
        )
        .bind(self.version)
        .bind(ids)
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
        let mut have_events: HashMap<Uuid, BTreeMap<i64, EventRow>> = HashMap::new();
        for row in sqlx::query_as::<_, EventRow>(&format!(
            "SELECT {EVENT_COLUMNS} FROM message_events WHERE version = $1 \
             AND message_id = ANY($2)"
        ))
        .bind(self.version)
        .bind(&uuids)
        .fetch_all(&mut *conn)
        .await?
        {
            if let Some((from, to)) = self.window {
                if row.occurred_at >= from && row.occurred_at < to {
                    self.report.seen_window_rows += 1;
                }
            }
            self.report.seen_event_rows += 1;
            have_events
                .entry(row.message_id)
                .or_default()
                .insert(row.sequence, row);
        }
        let mut have_messages: HashMap<Uuid, MessageRow> =
            sqlx::query_as::<_, MessageRow>(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE version = $1 \
                 AND message_id = ANY($2)"
            ))
            .bind(self.version)
            .bind(&uuids)
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|r| (r.message_id, r))
            .collect();
        self.report.seen_message_rows += have_messages.len() as u64;

        for stream in events.chunk_by(|a, b| a.row.aggregate_id == b.row.aggregate_id) {
            let aggregate_id = &stream[0].row.aggregate_id;
            self.report.messages += 1;
            let checkpoint = self
                .checkpoints
                .get(&read_model::shard::shard_of(aggregate_id, self.shards))
                .map_or(Cursor::new(0, 0), |c| c.0);
            let applied = |e: &event_store::StoredEvent| {
                e.cursor <= checkpoint && !dead.contains(&e.cursor.global_position)
            };
            for e in stream {
                if dead.contains(&e.cursor.global_position) {
                    self.report.dead_lettered += 1;
                } else if e.cursor > checkpoint {
                    self.report.pending += 1;
                }
            }
            let Ok(message_id) = aggregate_id.parse::<Uuid>() else {
                self.diffs.add(Difference {
                    table: "events",
                    key: aggregate_id.clone(),
                    column: "aggregate_id".into(),
                    expected: "a UUID".into(),
                    actual: format!("{aggregate_id:?}"),
                });
                continue;
            };
            let expected = match model::expect(stream, applied) {
                Ok(e) => e,
                Err(unreadable) => {
                    self.diffs.add(Difference {
                        table: "events",
                        key: format!("{}#{}", unreadable.aggregate_id, unreadable.sequence),
                        column: "payload".into(),
                        expected: "readable, or parked in dead_letters".into(),
                        actual: unreadable.what,
                    });
                    continue;
                }
            };
            self.report.applied += expected.events.len() as u64;
            let mut have = have_events.remove(&message_id).unwrap_or_default();
            for want in &expected.events {
                let row = have.remove(&want.sequence);
                let key = format!("{message_id}#{}", want.sequence);
                self.diffs
                    .rows("message_events", &key, Some(want), row.as_ref());
            }
            for (sequence, row) in have {
                let key = format!("{message_id}#{sequence}");
                self.diffs
                    .rows::<EventRow>("message_events", &key, None, Some(&row));
            }
            let have = have_messages.remove(&message_id);
            self.diffs.rows(
                "messages",
                &message_id.to_string(),
                expected.message.as_ref(),
                have.as_ref(),
            );
            for (key, v) in expected.rollups {
                if let Some((from, to)) = self.window {
                    if !inside(&key, from, to) {
                        continue;
                    }
                }
                self.rollups.entry(key).or_default().add(&v);
            }
            if self.rollups.len() > self.max_rollups {
                return Err(VerifyError::TooLarge(self.max_rollups));
            }
        }
        Ok(())
    }

    /// Rows of the read model for messages the scope's event store does not hold.
    async fn unexpected_rows(
        &mut self,
        conn: &mut PgConnection,
        scope: &Scope,
    ) -> Result<(), sqlx::Error> {
        let tenant = match scope {
            Scope::Tenant(t) => Some(*t),
            Scope::Window { .. } => return self.unexpected_in_window(conn).await,
            _ => None,
        };
        let filter = "AND ($2::uuid IS NULL OR tenant_id = $2)";
        for (table, seen) in [
            ("message_events", self.report.seen_event_rows),
            ("messages", self.report.seen_message_rows),
        ] {
            let total: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} WHERE version = $1 {filter}"
            ))
            .bind(self.version)
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await?;
            if total as u64 == seen {
                continue;
            }
            // Rows whose message has no submission in the event store (of this tenant).
            let same_tenant = "AND ($2::uuid IS NULL OR e.metadata->>'tenant_id' = $2::text)";
            let strays: Vec<String> = sqlx::query_scalar(&format!(
                "SELECT DISTINCT r.message_id::text FROM {table} r WHERE r.version = $1 {filter} \
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.aggregate_type = 'Message' \
                   AND e.aggregate_id = r.message_id::text AND e.sequence = 1 {same_tenant}) \
                 LIMIT 20"
            ))
            .bind(self.version)
            .bind(tenant)
            .fetch_all(&mut *conn)
            .await?;
            self.diffs.add(Difference {
                table,
                key: if strays.is_empty() {
                    "scope".into()
                } else {
                    strays.join(", ")
                },
                column: "(row)".into(),
                expected: format!("{seen} rows"),
                actual: format!("{total} rows"),
            });
        }
        Ok(())
    }

    async fn unexpected_in_window(&mut self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        let (from, to) = self.window.expect("a window");
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM message_events WHERE version = $1 \
             AND occurred_at >= $2 AND occurred_at < $3",
        )
        .bind(self.version)
        .bind(from)
        .bind(to)
        .fetch_one(&mut *conn)
        .await?;
        if total as u64 != self.report.seen_window_rows {
            self.diffs.add(Difference {
                table: "message_events",
                key: format!("occurred_at in {from} .. {to}"),
                column: "(row)".into(),
                expected: format!("{} rows", self.report.seen_window_rows),
                actual: format!("{total} rows"),
            });
        }
        Ok(())
    }

    /// Compares every rollup row of the scope, at every level, with the expected sums;
    /// returns how many rows were compared.
    async fn compare_rollups(
        &mut self,
        conn: &mut PgConnection,
        scope: &Scope,
    ) -> Result<u64, sqlx::Error> {
        let (tenant, from, to) = match scope {
            Scope::Tenant(t) => (Some(*t), None, None),
            Scope::Window { from, to } => (None, Some(*from), Some(*to)),
            _ => (None, None, None),
        };
        let mut compared = 0;
        for level in Level::ALL {
            // In a window, only buckets wholly inside it: their every event is in scope.
            let sql = format!(
                "SELECT {} FROM {} WHERE version = $1 AND ($2::uuid IS NULL OR tenant_id = $2) \
                 AND ($3::timestamptz IS NULL OR bucket >= $3) \
                 AND ($4::timestamptz IS NULL OR bucket + make_interval(secs => $5) <= $4)",
                read_model::rollup::COLUMNS,
                level.table()
            );
            let mut rows = sqlx::query(&sql)
                .bind(self.version)
                .bind(tenant)
                .bind(from)
                .bind(to)
                .bind(level.seconds() as f64)
                .fetch(&mut *conn);
            while let Some(row) = rows.try_next().await? {
                compared += 1;
                let key = RollupKey {
                    level,
                    dims: Dims {
                        tenant_id: row.try_get(0)?,
                        bucket: row.try_get(1)?,
                        channel: row.try_get(2)?,
                        provider: row.try_get(3)?,
                        tag: row.try_get(4)?,
                    },
                };
                let have = RollupRow {
                    entered: row.try_get(5)?,
                    engaged: row.try_get(6)?,
                    engaged_first: row.try_get(7)?,
                    sketches: [stored_sketch(&row, 8)?, stored_sketch(&row, 9)?],
                };
                let want = self.rollups.remove(&key);
                if want.as_ref() != Some(&have) {
                    rollup_differences(&mut self.diffs, &key, want.as_ref(), Some(&have));
                }
            }
        }
        let mut missing: Vec<(RollupKey, RollupRow)> = self.rollups.drain().collect();
        missing.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, want) in missing {
            rollup_differences(&mut self.diffs, &key, Some(&want), None);
        }
        Ok(compared)
    }

    /// Each shard's checkpoint counts exactly the events up to its cursor; with
    /// `caught_up`, the cursor is the shard's last event.
    async fn compare_checkpoints(
        &mut self,
        conn: &mut PgConnection,
        caught_up: bool,
    ) -> Result<(), sqlx::Error> {
        let shards: Vec<i32> = (0..self.shards as i32).collect();
        let cursor = |s: &i32| {
            self.checkpoints
                .get(&(*s as u32))
                .map_or(Cursor::new(0, 0), |c| c.0)
        };
        let txs: Vec<i64> = shards.iter().map(|s| cursor(s).tx_id).collect();
        let gps: Vec<i64> = shards.iter().map(|s| cursor(s).global_position).collect();
        let rows: Vec<(i32, i64, i64)> = sqlx::query_as(&format!(
            "WITH cp AS (SELECT * FROM unnest($2::int[], $3::bigint[], $4::bigint[]) \
                 AS c(shard, tx, gp)) \
             SELECT cp.shard, \
               count(e.global_position) FILTER (WHERE (e.tx_id::text::bigint, e.global_position) <= (cp.tx, cp.gp)), \
               count(e.global_position) FILTER (WHERE (e.tx_id::text::bigint, e.global_position) > (cp.tx, cp.gp)) \
             FROM cp LEFT JOIN (SELECT ({SHARD_KEY} % $1)::int AS shard, tx_id, \
                 global_position FROM events) e ON e.shard = cp.shard \
             GROUP BY cp.shard ORDER BY cp.shard"
        ))
        .bind(self.shards as i32)
        .bind(&shards)
        .bind(&txs)
        .bind(&gps)
        .fetch_all(&mut *conn)
        .await?;
        for (shard, upto, beyond) in rows {
            let counted = self.checkpoints.get(&(shard as u32)).map_or(0, |c| c.1);
            let key = format!(
                "{} shard {shard}",
                read_model::shard::projection_name(self.version)
            );
            if counted != upto {
                self.diffs.add(Difference {
                    table: "projection_checkpoints",
                    key: key.clone(),
                    column: "events".into(),
                    expected: format!("{upto} (the events up to its cursor)"),
                    actual: counted.to_string(),
                });
            }
            if caught_up && beyond > 0 {
                self.diffs.add(Difference {
                    table: "projection_checkpoints",
                    key,
                    column: "(cursor)".into(),
                    expected: "the shard's last event".into(),
                    actual: format!("{beyond} events behind"),
                });
            }
        }
        let stray: Vec<i32> = self
            .checkpoints
            .keys()
            .map(|s| *s as i32)
            .filter(|s| *s >= self.shards as i32)
            .collect();
        if !stray.is_empty() {
            self.diffs.add(Difference {
                table: "projection_checkpoints",
                key: read_model::shard::projection_name(self.version),
                column: "shard".into(),
                expected: format!("below {}", self.shards),
                actual: format!("{stray:?}"),
            });
        }
        Ok(())
    }
}

/// Whether the bucket of `key` lies wholly inside `[from, to)`.
fn inside(key: &RollupKey, from: DateTime<Utc>, to: DateTime<Utc>) -> bool {
    let b = key.dims.bucket;
    b >= from && b + chrono::Duration::seconds(key.level.seconds()) <= to
}

/// The sketch stored in `column` of a rollup row, read by the layout the schema documents
/// (nothing when empty; else a byte giving the width `w` of every count, then for each bin
/// its big-endian `int2`, `-32768` standing for the zero bin, and its samples as a
/// big-endian signed integer of `w` bytes), not by the projector's code. Bins out of
/// order, which every reader relies on, are refused.
fn stored_sketch(
    row: &sqlx::postgres::PgRow,
    column: usize,
) -> Result<BTreeMap<i32, i64>, sqlx::Error> {
    let refused = |why: String| sqlx::Error::ColumnDecode {
        index: column.to_string(),
        source: why.into(),
    };
    let bytes: &[u8] = row.try_get(column)?;
    let mut out = BTreeMap::new();
    let Some((&w, records)) = bytes.split_first() else {
        return Ok(out);
    };
    let w = usize::from(w);
    if ![1, 2, 4, 8].contains(&w) || records.len() % (2 + w) != 0 {
        return Err(refused(format!(
            "a sketch of {} bytes with counts of {w} bytes is not a whole number of bins",
            bytes.len()
        )));
    }
    for record in records.chunks_exact(2 + w) {
        let bin = match i16::from_be_bytes([record[0], record[1]]) {
            i16::MIN => i32::MIN,
            b => i32::from(b),
        };
        let mut samples: i64 = if record[2] >= 0x80 { -1 } else { 0 };
        for byte in &record[2..] {
            samples = (samples << 8) | i64::from(*byte);
        }
        if out.last_key_value().is_some_and(|(last, _)| *last >= bin) {
            return Err(refused(format!(
                "a sketch's bins do not ascend at bin {bin}"
            )));
        }
        out.insert(bin, samples);
    }
    Ok(out)
}

/// The differences between two versions of one rollup row, measure by measure.
fn rollup_differences(
    diffs: &mut Differences,
    key: &RollupKey,
    want: Option<&RollupRow>,
    have: Option<&RollupRow>,
) {
    let d = &key.dims;
    let row_key = format!(
        "tenant {} bucket {} {}/{} tag {:?}",
        d.tenant_id,
        d.bucket.format("%Y-%m-%dT%H:%M:%SZ"),
        d.channel,
        d.provider,
        d.tag
    );
    let difference = |column: String, expected: String, actual: String| Difference {
        table: key.table(),
        key: row_key.clone(),
        column,
        expected,
        actual,
    };
    let (want, have) = match (want, have) {
        (Some(w), Some(h)) => (w, h),
        (Some(w), None) => {
            diffs.add(difference("(row)".into(), summary(w), "no row".into()));
            return;
        }
        (None, Some(h)) => {
            diffs.add(difference("(row)".into(), "no row".into(), summary(h)));
            return;
        }
        (None, None) => return,
    };
    let arrays = [
        ("entered", &STATUSES[..], &want.entered, &have.entered),
        ("engaged", &ENGAGEMENTS[..], &want.engaged, &have.engaged),
        (
            "engaged_first",
            &ENGAGEMENTS[..],
            &want.engaged_first,
            &have.engaged_first,
        ),
    ];
    for (column, names, w, h) in arrays {
        let len = w.len().max(h.len());
        for i in 0..len {
            let (x, y) = (w.get(i).copied(), h.get(i).copied());
            if x.unwrap_or(0) != y.unwrap_or(0) || (i >= names.len() && x != y) {
                let name = names.get(i).copied().unwrap_or("?");
                diffs.add(difference(
                    format!("{column}[{name}]"),
                    x.unwrap_or(0).to_string(),
                    y.map_or("missing".into(), |v| v.to_string()),
                ));
            }
        }
        if w.len() != h.len() {
            diffs.add(difference(
                format!("{column} (length)"),
                w.len().to_string(),
                h.len().to_string(),
            ));
        }
    }
    for (i, metric) in crate::model::METRICS.iter().enumerate() {
        if want.sketches[i] != have.sketches[i] {
            diffs.add(difference(
                format!("{metric} sketch"),
                format!("{:?}", want.sketches[i]),
                format!("{:?}", have.sketches[i]),
            ));
        }
    }
}

fn summary(r: &RollupRow) -> String {
    let entered: i64 = r.entered.iter().sum();
    let engaged: i64 = r.engaged.iter().sum();
    let samples: Vec<i64> = r.sketches.iter().map(|s| s.values().sum()).collect();
    format!(
        "a row ({entered} entered, {engaged} engagements, {} + {} latency samples)",
        samples[0], samples[1]
    )
}
