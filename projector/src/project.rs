//! Applying events to a read-model version: one transaction per batch writes the rows
//! idempotently, bumps counters only for rows actually inserted, and advances the
//! `(projection, shard)` checkpoint.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, TimeZone, Utc};
use domain::{EngagementKind, MessageEvent, MessageStatus};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use tracing::Instrument;
use uuid::Uuid;

use crate::envelope::Envelope;
use crate::metrics::ProjectorMetrics;
use crate::shard::{projection_name, Cursor};
use crate::sketch;

/// Advisory-lock key guarding dead letters: batches take it shared, `dead-letters retry`
/// and `skip` exclusive, so a message is never drained while a batch parks behind it.
pub const DEAD_LETTER_LOCK_KEY: i64 = 0x4845_5241_4c44_444c; // "HERALDDL"

/// Why a batch was not applied.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The stream lost entries: the first new entry's predecessor is past the checkpoint.
    /// Catch up from the event store up to `upto` (inclusive), then retry.
    #[error("stream gap: entries up to {upto} are missing")]
    Gap {
        /// The last missing cursor.
        upto: Cursor,
    },
    /// The database refused the batch, or an event could not be read.
    #[error("{0}")]
    Failed(String),
    /// The database could not be reached: not the event's fault, never counted as a failure.
    #[error("database unavailable: {0}")]
    Unavailable(String),
}

impl From<sqlx::Error> for BatchError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => BatchError::Unavailable(e.to_string()),
            // Deadlock, serialization failure, lock timeout, shutdown, starting up: transient.
            sqlx::Error::Database(ref db)
                if matches!(
                    db.code().as_deref(),
                    Some("40001" | "40P01" | "55P03" | "57P01" | "57P02" | "57P03")
                ) =>
            {
                BatchError::Unavailable(e.to_string())
            }
            other => BatchError::Failed(format!("database: {other}")),
        }
    }
}

/// What a successful batch did.
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

/// Trace facts from the event metadata.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
}

/// An envelope with its event decoded.
pub struct Decoded<'a> {
    env: &'a Envelope,
    event: MessageEvent,
    meta: Meta,
}

/// Decodes a Message event; `Ok(None)` for other aggregate types (nothing to project).
pub fn decode(env: &Envelope) -> Result<Option<Decoded<'_>>, String> {
    if env.aggregate_type != "Message" {
        return Ok(None);
    }
    let event: MessageEvent = serde_json::from_str(&env.payload).map_err(|e| {
        format!(
            "cannot decode {} #{} of {}: {e}",
            env.event_type, env.sequence, env.aggregate_id
        )
    })?;
    let meta: serde_json::Value = serde_json::from_str(&env.metadata).unwrap_or_default();
    let text = |k: &str| meta.get(k).and_then(|v| v.as_str()).map(String::from);
    Ok(Some(Decoded {
        env,
        meta: Meta {
            correlation_id: text("correlation_id"),
            causation_id: text("causation_id"),
            traceparent: text("traceparent"),
        },
        event,
    }))
}

/// The 15-minute UTC bucket of `t`.
pub fn bucket_15m(t: DateTime<Utc>) -> DateTime<Utc> {
    let secs = t.timestamp().div_euclid(900) * 900;
    Utc.timestamp_opt(secs, 0).single().expect("in range")
}

/// Ensures the checkpoint row exists and locks it for this transaction.
pub async fn lock_checkpoint(
    conn: &mut PgConnection,
    version: i32,
    shard: u32,
) -> Result<Cursor, sqlx::Error> {
    // One statement: creates the row if missing, locks it (DO UPDATE takes the row lock,
    // like FOR UPDATE) and returns the current cursor.
    let (tx_id, gp): (i64, i64) = sqlx::query_as(
        "INSERT INTO projection_checkpoints (projection, shard) VALUES ($1, $2) \
         ON CONFLICT (projection, shard) DO UPDATE SET projection = EXCLUDED.projection \
         RETURNING tx_id, global_position",
    )
    .bind(projection_name(version))
    .bind(shard as i32)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Cursor::new(tx_id, gp))
}

/// The checkpoint of `(version, shard)` (zero when none yet).
pub async fn checkpoint(pool: &PgPool, version: i32, shard: u32) -> Result<Cursor, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_position FROM projection_checkpoints \
         WHERE projection = $1 AND shard = $2",
    )
    .bind(projection_name(version))
    .bind(shard as i32)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Cursor::ZERO, |(a, b)| Cursor::new(a, b)))
}

async fn advance_checkpoint(
    conn: &mut PgConnection,
    version: i32,
    shard: u32,
    to: Cursor,
    events: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET tx_id = $3, global_position = $4, \
         events = events + $5, updated_at = now() WHERE projection = $1 AND shard = $2",
    )
    .bind(projection_name(version))
    .bind(shard as i32)
    .bind(to.tx_id)
    .bind(to.global_position)
    .bind(events)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Applies `events` of one shard (in cursor order) to `version` in one transaction. Events
/// at or below the checkpoint are skipped; a stream entry whose predecessor is past the
/// checkpoint reports [`BatchError::Gap`] and changes nothing.
pub async fn apply_batch(
    pool: &PgPool,
    version: i32,
    shard: u32,
    events: &[Envelope],
) -> Result<Applied, BatchError> {
    apply_batch_observed(pool, version, shard, events, None).await
}

/// [`apply_batch`], traced (a `projector.batch` span linked to every event's trace, and per
/// event a `projector.apply_event` continuing it; see [`crate::trace`]) and, with
/// `metrics`, measured at the commit: batch size, events projected, and per event the time
/// from its commit in the event store to the read-model commit.
pub async fn apply_batch_observed(
    pool: &PgPool,
    version: i32,
    shard: u32,
    events: &[Envelope],
    metrics: Option<&ProjectorMetrics>,
) -> Result<Applied, BatchError> {
    let batch = crate::trace::batch(version, shard, events);
    let result = apply_traced(pool, version, shard, events, metrics, &batch)
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
    events: &[Envelope],
    metrics: Option<&ProjectorMetrics>,
    batch: &tracing::Span,
) -> Result<Applied, BatchError> {
    let mut tx = pool.begin().await?;
    let cp = lock_checkpoint(&mut tx, version, shard).await?;
    let fresh: Vec<&Envelope> = events.iter().filter(|e| e.cursor > cp).collect();
    let skipped = (events.len() - fresh.len()) as u64;
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
        before = e.cursor;
    }
    // One span per event, in the command's trace; closed (with an outcome) when this
    // function returns, so each spans the event's whole read-model transaction.
    let mut spans: Vec<EventSpan> = fresh
        .iter()
        .map(|e| EventSpan::new(crate::trace::apply_event(e, version, shard, batch)))
        .collect();

    // Takes the dead-letter lock shared (the first branch, always evaluated, yields '')
    // and finds the messages waiting behind a dead letter, in one round trip.
    let ids: Vec<String> = fresh.iter().map(|e| e.aggregate_id.clone()).collect();
    let mut held: HashSet<String> = sqlx::query_scalar(
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
    for (env, span) in fresh.iter().zip(spans.iter_mut()) {
        if held.contains(&env.aggregate_id) {
            hold(&mut tx, version, shard, env).await?;
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
    held.clear();
    let inserted = write_events(&mut tx, version, &decoded).await?;
    let last = fresh.last().expect("not empty").cursor;
    advance_checkpoint(&mut tx, version, shard, last, fresh.len() as i64).await?;
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
    env: &Envelope,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO dead_letters (version, shard, message_id, sequence, tx_id, global_position, \
         event_type, state, error, tenant_id, recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7, \
         'held', 'waiting behind an earlier dead letter of this message', $8, $9) \
         ON CONFLICT DO NOTHING",
    )
    .bind(version)
    .bind(shard as i32)
    .bind(&env.aggregate_id)
    .bind(env.sequence)
    .bind(env.cursor.tx_id)
    .bind(env.cursor.global_position)
    .bind(&env.event_type)
    .bind(env.tenant_id())
    .bind(env.recorded_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Parks `env` (a poison event) in `dead_letters` with `error`, and moves the checkpoint
/// past it, in one transaction. Nothing happens when it is at or below the checkpoint.
pub async fn park(
    pool: &PgPool,
    version: i32,
    shard: u32,
    env: &Envelope,
    error: &str,
    attempts: u32,
) -> Result<bool, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let cp = lock_checkpoint(&mut tx, version, shard).await?;
    if env.cursor <= cp {
        tx.rollback().await?;
        return Ok(false);
    }
    sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
        .bind(DEAD_LETTER_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO dead_letters (version, shard, message_id, sequence, tx_id, global_position, \
         event_type, state, error, attempts, tenant_id, recorded_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'parked', $8, $9, $10, $11) ON CONFLICT DO NOTHING",
    )
    .bind(version)
    .bind(shard as i32)
    .bind(&env.aggregate_id)
    .bind(env.sequence)
    .bind(env.cursor.tx_id)
    .bind(env.cursor.global_position)
    .bind(&env.event_type)
    .bind(error)
    .bind(attempts as i32)
    .bind(env.tenant_id())
    .bind(env.recorded_at)
    .execute(&mut *tx)
    .await?;
    advance_checkpoint(&mut tx, version, shard, env.cursor, 1).await?;
    tx.commit().await?;
    Ok(true)
}

const STATS_CHUNK: usize = 2_000;

/// Inserts the events into `message_events` (ignoring ones already there), then updates
/// `messages` and the counters from the rows actually inserted. Returns how many were.
pub async fn write_events(
    conn: &mut PgConnection,
    version: i32,
    events: &[Decoded<'_>],
) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut order: Vec<&Decoded> = events.iter().collect();
    order.sort_by_key(|d| (d.event.message_id(), d.env.sequence));

    let mut inserted: HashSet<(Uuid, i64)> = HashSet::new();
    for chunk in order.chunks(EVENTS_CHUNK) {
        inserted.extend(insert_events(conn, version, chunk).await?);
    }
    let new: Vec<&Decoded> = order
        .into_iter()
        .filter(|d| inserted.contains(&(d.event.message_id(), d.env.sequence)))
        .collect();
    if new.is_empty() {
        return Ok(0);
    }
    // `new` is sorted by (message, sequence): fold each message's events in order.
    let mut patches: BTreeMap<Uuid, Patch> = BTreeMap::new();
    for d in &new {
        patches.entry(d.event.message_id()).or_default().apply(d);
    }
    let patches: Vec<Patch> = patches.into_values().collect();
    upsert_messages(conn, version, &patches).await?;
    upsert_counters(conn, version, &new).await?;
    Ok(new.len() as u64)
}

/// Rows per `message_events` statement (26 binds each, under the 65,535 bind limit).
const EVENTS_CHUNK: usize = 1_000;

async fn insert_events(
    conn: &mut PgConnection,
    version: i32,
    chunk: &[&Decoded<'_>],
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO message_events (version, tenant_id, message_id, sequence, global_position, \
         tx_id, event_type, event_version, status, previous_status, status_changed, channel, \
         provider, tags, occurred_at, received_at, recorded_at, latency_ms_from_submit, \
         latency_ms_from_dispatch, dedupe_key, engagement, engagement_first, payload, \
         correlation_id, causation_id, traceparent) ",
    );
    q.push_values(chunk, |mut b, d| {
        let e = &d.event;
        let h = e.header();
        let (engagement, first) = match e {
            MessageEvent::EngagementRecorded(g) => (Some(g.engagement.as_str()), Some(g.first)),
            _ => (None, None),
        };
        b.push_bind(version)
            .push_bind(h.tenant_id)
            .push_bind(h.message_id)
            .push_bind(d.env.sequence)
            .push_bind(d.env.cursor.global_position)
            .push_bind(d.env.cursor.tx_id)
            .push_bind(e.type_name())
            .push_bind(&d.env.event_version)
            .push_bind(h.status.as_str())
            .push_bind(h.previous_status.map(|s| s.as_str()))
            .push_bind(e.status_changed())
            .push_bind(h.channel.as_str())
            .push_bind(&h.provider)
            .push_bind(&h.tags)
            .push_bind(h.occurred_at)
            .push_bind(h.received_at)
            .push_bind(d.env.recorded_at)
            .push_bind(e.latency_ms_from_submit())
            .push_bind(e.latency_ms_from_dispatch())
            .push_bind(e.dedupe_key())
            .push_bind(engagement)
            .push_bind(first)
            .push_bind(&d.env.payload)
            .push_unseparated("::jsonb")
            .push_bind(&d.meta.correlation_id)
            .push_bind(&d.meta.causation_id)
            .push_bind(&d.meta.traceparent);
    });
    q.push(" ON CONFLICT DO NOTHING RETURNING message_id, sequence");
    q.build_query_as::<(Uuid, i64)>().fetch_all(conn).await
}

fn earliest(slot: &mut Option<DateTime<Utc>>, t: DateTime<Utc>) {
    *slot = Some(slot.map_or(t, |s| s.min(t)));
}

/// What a batch's events say about one message, folded in sequence order.
#[derive(Default)]
struct Patch {
    tenant_id: Uuid,
    message_id: Uuid,
    channel: &'static str,
    provider: String,
    tags: Vec<String>,
    status: &'static str,
    times: [Option<DateTime<Utc>>; 14],
    delivered_at: Option<DateTime<Utc>>,
    delivery_inferred: Option<bool>,
    latency_submit: Option<i64>,
    latency_dispatch: Option<i64>,
    last_sequence: i64,
    last_event_type: &'static str,
    last_occurred_at: Option<DateTime<Utc>>,
}

/// Columns merged with LEAST (the earliest report of each kind), in `Patch::times` order.
const EARLIEST: [&str; 14] = [
    "submitted_at",
    "scheduled_at",
    "queued_at",
    "dispatched_at",
    "deferred_at",
    "bounced_at",
    "failed_at",
    "dropped_at",
    "expired_at",
    "cancelled_at",
    "opened_at",
    "clicked_at",
    "complained_at",
    "unsubscribed_at",
];

impl Patch {
    fn apply(&mut self, d: &Decoded) {
        let e = &d.event;
        let h = e.header();
        let at = h.occurred_at;
        self.tenant_id = h.tenant_id;
        self.message_id = h.message_id;
        self.channel = h.channel.as_str();
        self.provider.clone_from(&h.provider);
        self.tags.clone_from(&h.tags);
        self.status = h.status.as_str();
        self.last_sequence = d.env.sequence;
        self.last_event_type = e.type_name();
        self.last_occurred_at = Some(at);
        let t = &mut self.times;
        match e {
            MessageEvent::MessageSubmitted(_) => {
                earliest(&mut t[0], at);
                if h.status == MessageStatus::Scheduled {
                    earliest(&mut t[1], at);
                } else {
                    earliest(&mut t[2], at);
                }
            }
            MessageEvent::MessageDispatched(x) => {
                earliest(&mut t[3], x.dispatched_at);
                if x.latency_ms_from_dispatch.is_some() {
                    self.latency_dispatch = x.latency_ms_from_dispatch;
                }
            }
            MessageEvent::MessageDeferred(_) => earliest(&mut t[4], at),
            MessageEvent::MessageDelivered(x) => {
                if x.latency_ms_from_submit.is_some() {
                    self.delivered_at = Some(at);
                    self.delivery_inferred = Some(x.inferred);
                    self.latency_submit = x.latency_ms_from_submit;
                }
                if x.latency_ms_from_dispatch.is_some() {
                    self.latency_dispatch = x.latency_ms_from_dispatch;
                }
            }
            MessageEvent::MessageBounced(_) => earliest(&mut t[5], at),
            MessageEvent::MessageFailed(_) => earliest(&mut t[6], at),
            MessageEvent::MessageDropped(_) => earliest(&mut t[7], at),
            MessageEvent::MessageExpired(_) => earliest(&mut t[8], at),
            MessageEvent::MessageCancelled(_) => earliest(&mut t[9], at),
            MessageEvent::EngagementRecorded(x) => {
                let i = match x.engagement {
                    EngagementKind::Opened => 10,
                    EngagementKind::Clicked => 11,
                    EngagementKind::Complained => 12,
                    EngagementKind::Unsubscribed => 13,
                };
                earliest(&mut t[i], at);
            }
        }
    }
}

async fn upsert_messages(
    conn: &mut PgConnection,
    version: i32,
    patches: &[Patch],
) -> Result<(), sqlx::Error> {
    for chunk in patches.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO messages (version, message_id, tenant_id, channel, provider, tags, \
             status, ",
        );
        for c in &EARLIEST {
            q.push(*c).push(", ");
        }
        q.push(
            "delivered_at, delivery_inferred, latency_ms_from_submit, latency_ms_from_dispatch, \
             last_sequence, last_event_type, last_occurred_at) ",
        );
        q.push_values(chunk, |mut b, p| {
            b.push_bind(version)
                .push_bind(p.message_id)
                .push_bind(p.tenant_id)
                .push_bind(p.channel)
                .push_bind(&p.provider)
                .push_bind(&p.tags)
                .push_bind(p.status);
            for t in &p.times {
                b.push_bind(*t);
            }
            b.push_bind(p.delivered_at)
                .push_bind(p.delivery_inferred)
                .push_bind(p.latency_submit)
                .push_bind(p.latency_dispatch)
                .push_bind(p.last_sequence)
                .push_bind(p.last_event_type)
                .push_bind(p.last_occurred_at);
        });
        q.push(
            " ON CONFLICT (version, message_id) DO UPDATE SET tenant_id = EXCLUDED.tenant_id, \
             channel = EXCLUDED.channel, provider = EXCLUDED.provider, tags = EXCLUDED.tags, \
             status = EXCLUDED.status, ",
        );
        for c in &EARLIEST {
            q.push(format!("{c} = LEAST(messages.{c}, EXCLUDED.{c}), "));
        }
        q.push(
            "delivered_at = COALESCE(EXCLUDED.delivered_at, messages.delivered_at), \
             delivery_inferred = CASE WHEN EXCLUDED.delivered_at IS NOT NULL \
                 THEN EXCLUDED.delivery_inferred ELSE messages.delivery_inferred END, \
             latency_ms_from_submit = COALESCE(EXCLUDED.latency_ms_from_submit, messages.latency_ms_from_submit), \
             latency_ms_from_dispatch = COALESCE(EXCLUDED.latency_ms_from_dispatch, messages.latency_ms_from_dispatch), \
             last_sequence = EXCLUDED.last_sequence, last_event_type = EXCLUDED.last_event_type, \
             last_occurred_at = EXCLUDED.last_occurred_at, projected_at = now() \
             WHERE messages.last_sequence < EXCLUDED.last_sequence",
        );
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

type Dims = (Uuid, DateTime<Utc>, &'static str, String, String);

/// The tag dimension values of an event: '' (all messages) plus each distinct tag.
fn tag_dims(tags: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = tags.iter().filter(|t| !t.is_empty()).cloned().collect();
    out.insert(String::new());
    out
}

/// The latency-sketch deltas of one event: `(metric, +1 or -1, delivery time, ms)`.
///
/// Version-2 events carry the change of the message's sample (taken out, put in). A
/// version-1 event predates that: it counted one sample per event carrying a latency, in
/// the bucket of its own time, and is read the same way still, so a read model of a
/// version-1 store keeps the answers it had.
fn latency_deltas(d: &Decoded<'_>) -> Vec<(&'static str, i64, DateTime<Utc>, i64)> {
    let e = &d.event;
    let h = e.header();
    let mut out = Vec::new();
    if d.env.event_version == "1" {
        if let Some(v) = e.latency_ms_from_submit() {
            out.push(("submit_to_delivered", 1, h.occurred_at, v));
        }
        if let Some(v) = e.latency_ms_from_dispatch() {
            out.push(("dispatch_to_delivered", 1, h.occurred_at, v));
        }
        return out;
    }
    for (metric, change) in [
        ("submit_to_delivered", h.submit_latency),
        ("dispatch_to_delivered", h.dispatch_latency),
    ] {
        let Some(change) = change else { continue };
        if let Some(b) = change.before {
            out.push((metric, -1, b.delivered_at, b.ms));
        }
        if let Some(a) = change.after {
            out.push((metric, 1, a.delivered_at, a.ms));
        }
    }
    out
}

async fn upsert_counters(
    conn: &mut PgConnection,
    version: i32,
    new: &[&Decoded<'_>],
) -> Result<(), sqlx::Error> {
    let mut stats: BTreeMap<(Dims, &'static str), i64> = BTreeMap::new();
    let mut engagement: BTreeMap<(Dims, &'static str), (i64, i64)> = BTreeMap::new();
    // One latency sample per delivered message, its current value, in the bucket of its
    // delivery: each event says how it changed the sample (taken out of one bin, put into
    // another), so the deltas are summed here and rows only ever move by them.
    let mut latency: BTreeMap<(Dims, &'static str, i32), i64> = BTreeMap::new();
    for d in new {
        let e = &d.event;
        let h = e.header();
        let bucket = bucket_15m(h.occurred_at);
        for tag in tag_dims(&h.tags) {
            let dims: Dims = (
                h.tenant_id,
                bucket,
                h.channel.as_str(),
                h.provider.clone(),
                tag,
            );
            if e.status_changed() {
                *stats.entry((dims.clone(), h.status.as_str())).or_default() += 1;
            }
            if let MessageEvent::EngagementRecorded(g) = e {
                let slot = engagement
                    .entry((dims.clone(), g.engagement.as_str()))
                    .or_default();
                slot.0 += 1;
                slot.1 += i64::from(g.first);
            }
            for (metric, delta, at, ms) in latency_deltas(d) {
                let dims = (
                    dims.0,
                    bucket_15m(at),
                    dims.2,
                    dims.3.clone(),
                    dims.4.clone(),
                );
                *latency
                    .entry((dims, metric, sketch::bin_of(ms)))
                    .or_default() += delta;
            }
        }
    }
    latency.retain(|_, n| *n != 0);
    let stats: Vec<_> = stats.into_iter().collect();
    for chunk in stats.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO message_stats_15m (version, tenant_id, bucket, channel, provider, tag, \
             status, entered) ",
        );
        q.push_values(chunk, |mut b, ((dims, status), n)| {
            b.push_bind(version)
                .push_bind(dims.0)
                .push_bind(dims.1)
                .push_bind(dims.2)
                .push_bind(&dims.3)
                .push_bind(&dims.4)
                .push_bind(*status)
                .push_bind(*n);
        });
        q.push(
            " ON CONFLICT (version, tenant_id, bucket, channel, provider, tag, status) \
             DO UPDATE SET entered = message_stats_15m.entered + EXCLUDED.entered",
        );
        q.build().execute(&mut *conn).await?;
    }
    let engagement: Vec<_> = engagement.into_iter().collect();
    for chunk in engagement.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO message_engagement_15m (version, tenant_id, bucket, channel, provider, \
             tag, engagement, total, unique_messages) ",
        );
        q.push_values(chunk, |mut b, ((dims, kind), (total, unique))| {
            b.push_bind(version)
                .push_bind(dims.0)
                .push_bind(dims.1)
                .push_bind(dims.2)
                .push_bind(&dims.3)
                .push_bind(&dims.4)
                .push_bind(*kind)
                .push_bind(*total)
                .push_bind(*unique);
        });
        q.push(
            " ON CONFLICT (version, tenant_id, bucket, channel, provider, tag, engagement) \
             DO UPDATE SET total = message_engagement_15m.total + EXCLUDED.total, \
             unique_messages = message_engagement_15m.unique_messages + EXCLUDED.unique_messages",
        );
        q.build().execute(&mut *conn).await?;
    }
    let latency: Vec<_> = latency.into_iter().collect();
    for chunk in latency.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO message_latency_15m (version, tenant_id, bucket, channel, provider, tag, \
             metric, bin, count) ",
        );
        q.push_values(chunk, |mut b, ((dims, metric, bin), n)| {
            b.push_bind(version)
                .push_bind(dims.0)
                .push_bind(dims.1)
                .push_bind(dims.2)
                .push_bind(&dims.3)
                .push_bind(&dims.4)
                .push_bind(*metric)
                .push_bind(*bin)
                .push_bind(*n);
        });
        q.push(
            " ON CONFLICT (version, tenant_id, bucket, channel, provider, tag, metric, bin) \
             DO UPDATE SET count = message_latency_15m.count + EXCLUDED.count",
        );
        q.build().execute(&mut *conn).await?;
        // A sample that moved away leaves its bin empty: remove the row, so a read model
        // built live and one rebuilt in bigger batches hold the same rows.
        let emptied: Vec<_> = chunk.iter().filter(|(_, n)| *n < 0).collect();
        if !emptied.is_empty() {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
                "DELETE FROM message_latency_15m WHERE count = 0 AND \
                 (version, tenant_id, bucket, channel, provider, tag, metric, bin) IN ",
            );
            q.push_tuples(emptied, |mut b, ((dims, metric, bin), _)| {
                b.push_bind(version)
                    .push_bind(dims.0)
                    .push_bind(dims.1)
                    .push_bind(dims.2)
                    .push_bind(&dims.3)
                    .push_bind(&dims.4)
                    .push_bind(*metric)
                    .push_bind(*bin);
            });
            q.build().execute(&mut *conn).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_fifteen_utc_minutes() {
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 12, 44, 59).unwrap();
        assert_eq!(
            bucket_15m(t),
            Utc.with_ymd_and_hms(2024, 3, 1, 12, 30, 0).unwrap()
        );
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 12, 45, 0).unwrap();
        assert_eq!(bucket_15m(t), t);
    }

    #[test]
    fn every_event_counts_once_overall_and_once_per_distinct_tag() {
        let dims = tag_dims(&["a".into(), "b".into(), "a".into(), String::new()]);
        assert_eq!(
            dims.into_iter().collect::<Vec<_>>(),
            vec![String::new(), "a".to_string(), "b".to_string()]
        );
    }
}
