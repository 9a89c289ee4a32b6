//! What the read models must hold for one message, computed from its events alone.
//!
//! The stream is replayed with the domain crate, and everything else is written out again
//! here instead of borrowed from the projector: the 15-minute bucket, the tag expansion,
//! "entered a status", the per-event latencies, the earliest time of each kind of report,
//! and the one-sample-per-delivered-message latency rule. A bug in the projector's version
//! of any of them therefore shows up as a difference instead of being repeated on both
//! sides. The one shared definition is the sketch's bin ([`read_model::sketch::bin_of`]),
//! which has its own tests against hand-computed boundaries.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use domain::{EngagementKind, Message, MessageEvent, MessageStatus, Submission};
use event_store::StoredEvent;
use read_model::rollup::{Level, ENGAGEMENTS, STATUSES};
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

/// The key of one rollup row: its level and group (with that level's bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RollupKey {
    /// Which level (and so which table).
    pub level: Level,
    /// The group and bucket.
    pub dims: Dims,
}

impl RollupKey {
    /// The table the row lives in.
    pub fn table(&self) -> &'static str {
        self.level.table()
    }
}

/// One rollup row's measures: counts per status and engagement per kind in storage order
/// (`read_model::rollup`), and each latency metric's sketch as bin → samples.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollupRow {
    /// Messages entering each status.
    pub entered: Vec<i64>,
    /// Engagement reports per kind.
    pub engaged: Vec<i64>,
    /// First engagement reports per kind.
    pub engaged_first: Vec<i64>,
    /// Submit-to-delivered and dispatch-to-delivered sketches.
    pub sketches: [BTreeMap<i32, i64>; 2],
}

impl Default for RollupRow {
    fn default() -> Self {
        Self {
            entered: vec![0; STATUSES.len()],
            engaged: vec![0; ENGAGEMENTS.len()],
            engaged_first: vec![0; ENGAGEMENTS.len()],
            sketches: Default::default(),
        }
    }
}

impl RollupRow {
    /// Adds `other` into `self`, dropping sketch bins that cancel out.
    pub fn add(&mut self, other: &RollupRow) {
        for (a, b) in [
            (&mut self.entered, &other.entered),
            (&mut self.engaged, &other.engaged),
            (&mut self.engaged_first, &other.engaged_first),
        ] {
            for (x, y) in a.iter_mut().zip(b) {
                *x += y;
            }
        }
        for (mine, theirs) in self.sketches.iter_mut().zip(&other.sketches) {
            for (bin, n) in theirs {
                *mine.entry(*bin).or_default() += n;
            }
            mine.retain(|_, n| *n != 0);
        }
    }

    /// Nothing counted.
    pub fn is_empty(&self) -> bool {
        self.entered
            .iter()
            .chain(&self.engaged)
            .chain(&self.engaged_first)
            .all(|n| *n == 0)
            && self.sketches.iter().all(BTreeMap::is_empty)
    }
}

/// Rollup rows, summed.
pub type Rollups = HashMap<RollupKey, RollupRow>;

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

/// The bucket `seconds` wide holding `t`: whole multiples of the width since the Unix
/// epoch, rounding down (also before 1970).
pub fn bucket_of(t: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    let start = t.timestamp().div_euclid(seconds) * seconds;
    Utc.timestamp_opt(start, 0).single().expect("in range")
}

/// The 15-minute bucket holding `t`.
pub fn bucket(t: DateTime<Utc>) -> DateTime<Utc> {
    bucket_of(t, BUCKET_SECONDS)
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

/// The latency metrics, in the order of [`RollupRow::sketches`].
pub const METRICS: [&str; 2] = ["submit_to_delivered", "dispatch_to_delivered"];

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
            correlation_id: meta(&ev.row.metadata, "correlation_id"),
            causation_id: meta(&ev.row.metadata, "causation_id"),
            traceparent: meta(&ev.row.metadata, "traceparent"),
        });

        // Rollups, at every level: the event's own bucket for counts, the delivery's for
        // latency.
        let mut add = |at: DateTime<Utc>, row: &RollupRow| {
            for level in Level::ALL {
                for tag in tag_values(&sub.tags) {
                    let key = RollupKey {
                        level,
                        dims: Dims {
                            tenant_id: sub.tenant_id,
                            bucket: bucket_of(at, level.seconds()),
                            channel: sub.channel.as_str().into(),
                            provider: sub.provider.clone(),
                            tag,
                        },
                    };
                    out.rollups.entry(key).or_default().add(row);
                }
            }
        };
        let mut counted = RollupRow::default();
        if status_changed {
            let i = STATUSES
                .iter()
                .position(|s| *s == status.as_str())
                .expect("every status a message enters has a place");
            counted.entered[i] += 1;
        }
        if let (Some(kind), Some(first)) = (&engagement, engagement_first) {
            let i = ENGAGEMENTS
                .iter()
                .position(|k| k == kind)
                .expect("every engagement kind has a place");
            counted.engaged[i] += 1;
            counted.engaged_first[i] += i64::from(first);
        }
        if ev.row.event_version == "1" {
            for (i, value) in [lat_submit, lat_dispatch].into_iter().enumerate() {
                if let Some(ms) = value {
                    counted.sketches[i].insert(read_model::sketch::bin_of(ms), 1);
                }
            }
        }
        if !counted.is_empty() {
            add(h.occurred_at, &counted);
        }
        if ev.row.event_version != "1" {
            let (was, now) = (samples(&before, &sub), samples(after, &sub));
            for i in 0..METRICS.len() {
                if was[i] == now[i] {
                    continue;
                }
                for (sample, delta) in [(was[i], -1), (now[i], 1)] {
                    let Some((at, ms)) = sample else { continue };
                    let mut moved = RollupRow::default();
                    moved.sketches[i].insert(read_model::sketch::bin_of(ms), delta);
                    add(at, &moved);
                }
            }
        }

        fold.add(&event, &before, after, ev, lat_submit, lat_dispatch);
    }
    out.rollups.retain(|_, v| !v.is_empty());

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
