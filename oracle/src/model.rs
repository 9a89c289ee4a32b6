//! What the read models must hold for one message, computed from its events alone.
//!
//! The stream is replayed with the domain crate, and everything else is written out again
//! here instead of borrowed from the projector: the 15-minute bucket, the tag expansion,
//! "entered a status", the per-event latencies, the earliest time of each kind of report,
//! and the one-sample-per-delivered-message latency rule. A bug in the projector's version
//! of any of them therefore shows up as a difference instead of being repeated on both
//! sides. The one shared definition is the sketch's bin ([`read_model::sketch::bin_of`]),
//! which has its own tests against hand-computed boundaries.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use domain::{EngagementKind, Message, MessageEvent, MessageStatus, Submission};
use event_store::StoredEvent;
use uuid::Uuid;

/// One `message_events` row (every column but `version` and the wall-clock `projected_at`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRow {
    pub tenant_id: Uuid,
    pub message_id: Uuid,
    pub sequence: i64,
    pub global_position: i64,
    pub tx_id: i64,
    pub event_type: String,
    pub event_version: String,
    pub status: String,
    pub previous_status: Option<String>,
    pub status_changed: bool,
    pub channel: String,
    pub provider: String,
    pub tags: Vec<String>,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub latency_ms_from_submit: Option<i64>,
    pub latency_ms_from_dispatch: Option<i64>,
    pub dedupe_key: Option<String>,
    pub engagement: Option<String>,
    pub engagement_first: Option<bool>,
    pub payload: serde_json::Value,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
    pub traceparent: Option<String>,
}

/// One `messages` row (every column but `version` and `projected_at`).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MessageRow {
    pub message_id: Uuid,
    pub tenant_id: Uuid,
    pub channel: String,
    pub provider: String,
    pub tags: Vec<String>,
    pub status: String,
    pub submitted_at: Option<DateTime<Utc>>,
    pub scheduled_at: Option<DateTime<Utc>>,
    pub queued_at: Option<DateTime<Utc>>,
    pub dispatched_at: Option<DateTime<Utc>>,
    pub deferred_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub delivery_inferred: Option<bool>,
    pub bounced_at: Option<DateTime<Utc>>,
    pub failed_at: Option<DateTime<Utc>>,
    pub dropped_at: Option<DateTime<Utc>>,
    pub expired_at: Option<DateTime<Utc>>,
    pub cancelled_at: Option<DateTime<Utc>>,
    pub opened_at: Option<DateTime<Utc>>,
    pub clicked_at: Option<DateTime<Utc>>,
    pub complained_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    pub latency_ms_from_submit: Option<i64>,
    pub latency_ms_from_dispatch: Option<i64>,
    pub last_sequence: i64,
    pub last_event_type: String,
    pub last_occurred_at: DateTime<Utc>,
}

/// The dimensions every rollup row shares.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dims {
    pub tenant_id: Uuid,
    pub bucket: DateTime<Utc>,
    pub channel: String,
    pub provider: String,
    pub tag: String,
}

/// The key of one rollup row. Its values are `[entered, 0]`, `[total, unique_messages]`
/// or `[count, 0]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RollupKey {
    /// `message_stats_15m` (dims, status).
    Status(Dims, String),
    /// `message_engagement_15m` (dims, engagement).
    Engagement(Dims, String),
    /// `message_latency_15m` (dims, metric, bin).
    Latency(Dims, String, i32),
}

impl RollupKey {
    /// The table the row lives in.
    pub fn table(&self) -> &'static str {
        match self {
            RollupKey::Status(..) => "message_stats_15m",
            RollupKey::Engagement(..) => "message_engagement_15m",
            RollupKey::Latency(..) => "message_latency_15m",
        }
    }

    /// The bucket of the row.
    pub fn dims(&self) -> &Dims {
        match self {
            RollupKey::Status(d, _) | RollupKey::Engagement(d, _) | RollupKey::Latency(d, _, _) => {
                d
            }
        }
    }
}

/// Rollup contributions, summed.
pub type Rollups = HashMap<RollupKey, [i64; 2]>;

/// What one message's applied events must have produced.
#[derive(Debug, Default)]
pub struct Expected {
    /// Its `message_events` rows, in sequence order.
    pub events: Vec<EventRow>,
    /// Its `messages` row (`None` when no event of it is applied yet).
    pub message: Option<MessageRow>,
    /// Its contributions to the rollups.
    pub rollups: Rollups,
}

/// An applied event the oracle cannot read: the projector must have parked it instead.
#[derive(Debug, thiserror::Error)]
#[error("{what} (event #{sequence} of {aggregate_id})")]
pub struct Unreadable {
    pub aggregate_id: String,
    pub sequence: i64,
    pub what: String,
}

/// The width of the finest rollup bucket, in seconds.
pub const BUCKET_SECONDS: i64 = 15 * 60;

/// The 15-minute UTC bucket holding `t`: whole multiples of 900 s since the Unix epoch,
/// rounding down (also before 1970).
pub fn bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    let start = t.timestamp().div_euclid(BUCKET_SECONDS) * BUCKET_SECONDS;
    Utc.timestamp_opt(start, 0).single().expect("in range")
}

/// `t` as a `timestamptz` column holds it: microseconds, the rest truncated toward the
/// PostgreSQL epoch (2000-01-01), which is how the driver encodes it.
pub fn as_stored(t: DateTime<Utc>) -> DateTime<Utc> {
    let epoch = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
    match (t - epoch).num_microseconds() {
        Some(us) => epoch + Duration::microseconds(us),
        None => t,
    }
}

/// Whole milliseconds from `from` to `to`, never negative (provider clocks may lag ours).
pub fn millis(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds().max(0)
}

/// The tag values a message is counted under: '' (every message) and each distinct tag.
pub fn tag_values(tags: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = tags.iter().filter(|t| !t.is_empty()).cloned().collect();
    out.insert(String::new());
    out
}

/// The latency samples a message in `state` counts for, per metric
/// (`submit_to_delivered`, `dispatch_to_delivered`): while it is delivered, one each, at
/// its delivery time.
fn samples(state: &Message, sub: &Submission) -> [Option<(DateTime<Utc>, i64)>; 2] {
    if state.status() != MessageStatus::Delivered {
        return [None, None];
    }
    let Some(delivered) = state.delivered_at() else {
        return [None, None];
    };
    [
        Some((delivered, millis(sub.submitted_at, delivered))),
        state
            .dispatched_at()
            .map(|d| (delivered, millis(d, delivered))),
    ]
}

const METRICS: [&str; 2] = ["submit_to_delivered", "dispatch_to_delivered"];

/// Text fields of the event metadata (a flat map of strings).
fn meta(metadata: &str, key: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(metadata)
        .ok()?
        .get(key)?
        .as_str()
        .map(String::from)
}

/// The earliest of `slot` and `t`.
fn earliest(slot: &mut Option<DateTime<Utc>>, t: DateTime<Utc>) {
    *slot = Some(slot.map_or(t, |s| s.min(t)));
}

/// Computes what the read models hold for one message from its stream (in sequence
/// order), counting only the events `applied` says the read model has taken.
pub fn expect(
    stream: &[StoredEvent],
    applied: impl Fn(&StoredEvent) -> bool,
) -> Result<Expected, Unreadable> {
    let mut out = Expected::default();
    let mut state = Message::default();
    let mut engaged: BTreeSet<&'static str> = BTreeSet::new();
    // What the applied events say about the message, folded in sequence order: its
    // `messages` row is made of the applied events only, so an event an operator skipped
    // leaves out what it alone would have set.
    let mut fold = Fold::default();
    let unreadable = |ev: &StoredEvent, what: String| Unreadable {
        aggregate_id: ev.row.aggregate_id.clone(),
        sequence: ev.row.sequence,
        what,
    };
    for ev in stream {
        let is_applied = applied(ev);
        let event: MessageEvent = match serde_json::from_str(&ev.row.payload) {
            Ok(e) => e,
            Err(e) if is_applied => {
                return Err(unreadable(ev, format!("applied but unreadable: {e}")));
            }
            // Parked: the read model never took it, and neither does this replay.
            Err(_) => continue,
        };
        let before = state.clone();
        state.apply(event.clone());
        if !is_applied {
            continue;
        }
        let Some(sub) = state.submission().cloned() else {
            return Err(unreadable(
                ev,
                "stream does not start with a submission".into(),
            ));
        };
        let after = &state;
        let h = event.header();
        let status = after.status();
        let previous = before.is_submitted().then(|| before.status());
        let status_changed = previous != Some(status);

        let (engagement, engagement_first) = match &event {
            MessageEvent::EngagementRecorded(g) => {
                let kind = g.engagement.as_str();
                (Some(kind.to_string()), Some(engaged.insert(kind)))
            }
            _ => (None, None),
        };
        let (lat_submit, lat_dispatch) = if ev.row.event_version == "1" {
            // Version 1 predates the latency rule below: the read side takes what the
            // event recorded.
            (
                event.latency_ms_from_submit(),
                event.latency_ms_from_dispatch(),
            )
        } else {
            match &event {
                MessageEvent::MessageDelivered(_) if before.delivery() != after.delivery() => {
                    let delivered = after.delivered_at().expect("a delivery claim has a time");
                    (
                        Some(millis(sub.submitted_at, delivered)),
                        after.dispatched_at().map(|d| millis(d, delivered)),
                    )
                }
                MessageEvent::MessageDispatched(_)
                    if before.dispatched_at() != after.dispatched_at() =>
                {
                    match (before.delivered_at(), after.dispatched_at()) {
                        (Some(delivered), Some(d)) => (None, Some(millis(d, delivered))),
                        _ => (None, None),
                    }
                }
                _ => (None, None),
            }
        };

        out.events.push(EventRow {
            tenant_id: sub.tenant_id,
            message_id: sub.message_id,
            sequence: ev.row.sequence,
            global_position: ev.cursor.global_position,
            tx_id: ev.cursor.tx_id,
            event_type: ev.row.event_type.clone(),
            event_version: ev.row.event_version.clone(),
            status: status.as_str().into(),
            previous_status: previous.map(|s| s.as_str().into()),
            status_changed,
            channel: sub.channel.as_str().into(),
            provider: sub.provider.clone(),
            tags: sub.tags.clone(),
            occurred_at: as_stored(h.occurred_at),
            received_at: as_stored(h.received_at),
            recorded_at: ev.recorded_at,
            latency_ms_from_submit: lat_submit,
            latency_ms_from_dispatch: lat_dispatch,
            dedupe_key: event.dedupe_key().map(String::from),
            engagement: engagement.clone(),
            engagement_first,
            payload: serde_json::from_str(&ev.row.payload).expect("decoded above"),
            correlation_id: meta(&ev.row.metadata, "correlation_id"),
            causation_id: meta(&ev.row.metadata, "causation_id"),
            traceparent: meta(&ev.row.metadata, "traceparent"),
        });

        // Rollups: the event's own bucket for counts, the delivery's for latency.
        let dims = |at: DateTime<Utc>| -> Vec<Dims> {
            tag_values(&sub.tags)
                .into_iter()
                .map(|tag| Dims {
                    tenant_id: sub.tenant_id,
                    bucket: bucket(at),
                    channel: sub.channel.as_str().into(),
                    provider: sub.provider.clone(),
                    tag,
                })
                .collect()
        };
        let mut add = |key: RollupKey, v: [i64; 2]| {
            let slot = out.rollups.entry(key).or_default();
            slot[0] += v[0];
            slot[1] += v[1];
        };
        if status_changed {
            for d in dims(h.occurred_at) {
                add(RollupKey::Status(d, status.as_str().into()), [1, 0]);
            }
        }
        if let (Some(kind), Some(first)) = (&engagement, engagement_first) {
            for d in dims(h.occurred_at) {
                add(
                    RollupKey::Engagement(d, kind.clone()),
                    [1, i64::from(first)],
                );
            }
        }
        if ev.row.event_version == "1" {
            for (metric, value) in METRICS.iter().zip([lat_submit, lat_dispatch]) {
                let Some(ms) = value else { continue };
                for d in dims(h.occurred_at) {
                    let key =
                        RollupKey::Latency(d, metric.to_string(), read_model::sketch::bin_of(ms));
                    add(key, [1, 0]);
                }
            }
        } else {
            let (was, now) = (samples(&before, &sub), samples(after, &sub));
            for (i, metric) in METRICS.iter().enumerate() {
                if was[i] == now[i] {
                    continue;
                }
                for (sample, delta) in [(was[i], -1), (now[i], 1)] {
                    let Some((at, ms)) = sample else { continue };
                    for d in dims(at) {
                        let key = RollupKey::Latency(
                            d,
                            metric.to_string(),
                            read_model::sketch::bin_of(ms),
                        );
                        add(key, [delta, 0]);
                    }
                }
            }
        }

        fold.add(&event, &before, after, ev, lat_submit, lat_dispatch);
    }
    out.rollups.retain(|_, v| *v != [0, 0]);

    if let (Some(last), Some(sub)) = (&fold.last, state.submission()) {
        out.message = Some(MessageRow {
            message_id: sub.message_id,
            tenant_id: sub.tenant_id,
            channel: sub.channel.as_str().into(),
            provider: sub.provider.clone(),
            tags: sub.tags.clone(),
            status: fold.status.expect("set with last").as_str().into(),
            submitted_at: fold.at[SUBMITTED],
            scheduled_at: fold.at[SCHEDULED],
            queued_at: fold.at[QUEUED],
            dispatched_at: fold.at[DISPATCHED],
            deferred_at: fold.at[DEFERRED],
            delivered_at: fold.delivered.map(|(t, _)| t),
            delivery_inferred: fold.delivered.map(|(_, inferred)| inferred),
            bounced_at: fold.at[BOUNCED],
            failed_at: fold.at[FAILED],
            dropped_at: fold.at[DROPPED],
            expired_at: fold.at[EXPIRED],
            cancelled_at: fold.at[CANCELLED],
            opened_at: fold.at[OPENED],
            clicked_at: fold.at[CLICKED],
            complained_at: fold.at[COMPLAINED],
            unsubscribed_at: fold.at[UNSUBSCRIBED],
            latency_ms_from_submit: fold.latency[0],
            latency_ms_from_dispatch: fold.latency[1],
            last_sequence: last.0,
            last_event_type: last.1.clone(),
            last_occurred_at: last.2,
        });
    }
    Ok(out)
}

const SUBMITTED: usize = 0;
const SCHEDULED: usize = 1;
const QUEUED: usize = 2;
const DISPATCHED: usize = 3;
const DEFERRED: usize = 4;
const BOUNCED: usize = 5;
const FAILED: usize = 6;
const DROPPED: usize = 7;
const EXPIRED: usize = 8;
const CANCELLED: usize = 9;
const OPENED: usize = 10;
const CLICKED: usize = 11;
const COMPLAINED: usize = 12;
const UNSUBSCRIBED: usize = 13;

/// The `messages` row as the applied events build it.
#[derive(Default)]
struct Fold {
    /// The earliest time of each kind of report (the constants above).
    at: [Option<DateTime<Utc>>; 14],
    /// The best delivery evidence: its time and whether it is inferred.
    delivered: Option<(DateTime<Utc>, bool)>,
    /// The latest known latency from submission and from dispatch.
    latency: [Option<i64>; 2],
    /// Status after the last applied event.
    status: Option<MessageStatus>,
    /// Sequence, type and time of the last applied event.
    last: Option<(i64, String, DateTime<Utc>)>,
}

impl Fold {
    fn add(
        &mut self,
        event: &MessageEvent,
        before: &Message,
        after: &Message,
        stored: &StoredEvent,
        lat_submit: Option<i64>,
        lat_dispatch: Option<i64>,
    ) {
        let at = as_stored(event.header().occurred_at);
        let kind = match event {
            MessageEvent::MessageSubmitted(_) => {
                earliest(&mut self.at[SUBMITTED], at);
                if after.status() == MessageStatus::Scheduled {
                    SCHEDULED
                } else {
                    QUEUED
                }
            }
            MessageEvent::MessageDispatched(x) => {
                earliest(&mut self.at[DISPATCHED], as_stored(x.dispatched_at));
                DISPATCHED
            }
            MessageEvent::MessageDeferred(_) => DEFERRED,
            MessageEvent::MessageDelivered(_) => usize::MAX,
            MessageEvent::MessageBounced(_) => BOUNCED,
            MessageEvent::MessageFailed(_) => FAILED,
            MessageEvent::MessageDropped(_) => DROPPED,
            MessageEvent::MessageExpired(_) => EXPIRED,
            MessageEvent::MessageCancelled(_) => CANCELLED,
            MessageEvent::EngagementRecorded(g) => match g.engagement {
                EngagementKind::Opened => OPENED,
                EngagementKind::Clicked => CLICKED,
                EngagementKind::Complained => COMPLAINED,
                EngagementKind::Unsubscribed => UNSUBSCRIBED,
            },
        };
        if kind != DISPATCHED && kind != usize::MAX {
            earliest(&mut self.at[kind], at);
        }
        if matches!(event, MessageEvent::MessageDelivered(_))
            && before.delivery() != after.delivery()
        {
            self.delivered = after
                .delivered_at()
                .map(|t| (as_stored(t), after.delivery_inferred() == Some(true)));
        }
        for (slot, value) in self.latency.iter_mut().zip([lat_submit, lat_dispatch]) {
            if value.is_some() {
                *slot = value;
            }
        }
        self.status = Some(after.status());
        self.last = Some((stored.row.sequence, stored.row.event_type.clone(), at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn buckets_are_quarter_hours_rounding_down_also_before_1970() {
        assert_eq!(
            bucket(at("2024-03-01T12:14:59.999Z")),
            at("2024-03-01T12:00:00Z")
        );
        assert_eq!(
            bucket(at("2024-03-01T12:15:00Z")),
            at("2024-03-01T12:15:00Z")
        );
        assert_eq!(
            bucket(at("1969-12-31T23:59:59Z")),
            at("1969-12-31T23:45:00Z")
        );
    }

    #[test]
    fn stored_times_keep_microseconds_and_drop_the_rest() {
        assert_eq!(
            as_stored(at("2024-03-01T12:00:00.123456789Z")),
            at("2024-03-01T12:00:00.123456Z")
        );
        assert_eq!(
            as_stored(at("2024-03-01T12:00:00Z")),
            at("2024-03-01T12:00:00Z")
        );
    }

    #[test]
    fn latency_never_goes_negative_and_counts_whole_milliseconds() {
        let t = at("2024-03-01T12:00:00Z");
        assert_eq!(millis(t, t + Duration::microseconds(1_999)), 1);
        assert_eq!(millis(t + Duration::seconds(1), t), 0);
    }

    #[test]
    fn every_message_counts_once_overall_and_once_per_distinct_tag() {
        let v = tag_values(&["b".into(), "a".into(), "b".into()]);
        assert_eq!(v.into_iter().collect::<Vec<_>>(), ["", "a", "b"]);
    }
}
