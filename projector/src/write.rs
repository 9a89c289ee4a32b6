//! Writing one batch's rows: `message_events` (ignoring events already there), then the
//! `messages` state and the rollups ([`crate::counters`]) from the rows actually inserted,
//! so a redelivered event never counts twice.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use domain::{EngagementKind, MessageEvent, MessageStatus};
use event_store::StoredEvent;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::counters::Rollups;
use crate::error::{Error, Result};

/// Trace facts from the event metadata.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    correlation_id: Option<String>,
    causation_id: Option<String>,
    traceparent: Option<String>,
}

/// A stored event with its payload decoded.
pub struct Decoded<'a> {
    pub(crate) env: &'a StoredEvent,
    pub(crate) event: MessageEvent,
    meta: Meta,
}

/// Decodes a Message event; `Ok(None)` for other aggregate types (nothing to project).
pub fn decode(env: &StoredEvent) -> Result<Option<Decoded<'_>>> {
    if env.aggregate_type != "Message" {
        return Ok(None);
    }
    let event: MessageEvent = serde_json::from_str(&env.row.payload).map_err(|e| {
        Error::Poison(format!(
            "cannot decode {} #{} of {}: {e}",
            env.row.event_type, env.row.sequence, env.row.aggregate_id
        ))
    })?;
    let meta: serde_json::Value = serde_json::from_str(&env.row.metadata).unwrap_or_default();
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

/// Rows per multi-row statement of the messages and counter upserts.
pub(crate) const STATS_CHUNK: usize = 2_000;

/// Inserts the events into `message_events` (ignoring ones already there), then updates
/// `messages` and the counters from the rows actually inserted. Returns how many were.
pub async fn write_events(
    conn: &mut PgConnection,
    version: i32,
    events: &[Decoded<'_>],
) -> Result<u64> {
    let mut rollups = Rollups::default();
    let inserted = write_rows(conn, version, events, &mut rollups).await?;
    rollups.write(conn, version).await?;
    Ok(inserted)
}

/// [`write_events`] without writing the counters: what the newly inserted rows count is
/// added to `rollups`, which the caller writes, in the same transaction, when it chooses
/// (a rebuild sums a whole window of reads first).
pub(crate) async fn write_rows(
    conn: &mut PgConnection,
    version: i32,
    events: &[Decoded<'_>],
    rollups: &mut Rollups,
) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut order: Vec<&Decoded> = events.iter().collect();
    order.sort_by_key(|d| (d.event.message_id(), d.env.row.sequence));

    let mut inserted: HashSet<(Uuid, i64)> = HashSet::new();
    for chunk in order.chunks(EVENTS_CHUNK) {
        inserted.extend(insert_events(conn, version, chunk).await?);
    }
    let new: Vec<&Decoded> = order
        .into_iter()
        .filter(|d| inserted.contains(&(d.event.message_id(), d.env.row.sequence)))
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
    rollups.add(&new);
    Ok(new.len() as u64)
}

/// Rows per `message_events` statement (25 binds each, under the 65,535 bind limit).
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
         latency_ms_from_dispatch, dedupe_key, engagement, engagement_first, correlation_id, causation_id, traceparent) ",
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
            .push_bind(d.env.row.sequence)
            .push_bind(d.env.cursor.global_position)
            .push_bind(d.env.cursor.tx_id)
            .push_bind(e.type_name())
            .push_bind(&d.env.row.event_version)
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
        self.last_sequence = d.env.row.sequence;
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
