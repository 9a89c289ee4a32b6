//! What happened to a message: the events of its stream.
//!
//! Every event carries an [`EventHeader`] (tenant, channel, provider, both times, status
//! after and before) so a projector can build its rows from one event without reading the
//! stream's history. Status counters follow `previous_status -> status`: an event whose two
//! statuses are equal recorded a fact (a late dispatch time, a second delivery report, an
//! engagement) without changing the outcome.
//!
//! Serialized externally tagged by variant name, which is also the cqrs-es `event_type`:
//! `{"MessageDelivered": {"tenant_id": ..., "status": "delivered", ...}}`.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::types::{BounceKind, Channel, EngagementKind, MessageContent, MessageStatus};

/// One message's delivery latency as the statistics count it: one sample per delivered
/// message (status `delivered`), its current latency, in the bucket of its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySample {
    /// When the message was delivered (best evidence): the sample's bucket.
    pub delivered_at: DateTime<Utc>,
    /// The latency, in milliseconds.
    pub ms: i64,
}

/// How one event changed a message's latency sample of one metric: the statistics take
/// `before` out and put `after` in, so a message never counts more than once, however its
/// delivery evidence is revised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencyChange {
    /// The sample before the event (`None`: the message had none).
    pub before: Option<LatencySample>,
    /// The sample after it (`None`: it has none any more).
    pub after: Option<LatencySample>,
}

/// Facts every event carries for a stateless read side.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EventHeader {
    /// Owner of the message.
    pub tenant_id: Uuid,
    /// The message (also the aggregate id).
    pub message_id: Uuid,
    /// The message's channel.
    pub channel: Channel,
    /// The message's provider.
    pub provider: String,
    /// When it happened: provider time for observations, server time for submit, cancel
    /// and expiry. Analytics bucket by this.
    pub occurred_at: DateTime<Utc>,
    /// Server time Herald learned of it; `received_at - occurred_at` is the report lag.
    pub received_at: DateTime<Utc>,
    /// Status after this event.
    pub status: MessageStatus,
    /// Status before this event; `None` only on [`MessageSubmitted`].
    #[serde(default)]
    pub previous_status: Option<MessageStatus>,
    /// The message's tags, repeated on every event so per-tag statistics need no lookup.
    #[serde(default)]
    pub tags: Vec<String>,
    /// How this event changed the message's submit-to-delivered latency sample; absent
    /// when it did not ([`crate::rules::rule_latency_sample`]). Version-1 events never
    /// carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submit_latency: Option<LatencyChange>,
    /// Likewise for the dispatch-to-delivered sample.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dispatch_latency: Option<LatencyChange>,
}

/// The message was accepted for sending.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageSubmitted {
    /// Common facts; `occurred_at = received_at = submitted_at`.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Email address, phone number or push token.
    pub recipient: String,
    /// What to send.
    pub content: MessageContent,
    /// Requested send time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Requested time-to-live.
    pub ttl_seconds: Option<u32>,
    /// When the time-to-live runs out (derived; for the expiry timer).
    pub expires_at: Option<DateTime<Utc>>,
    /// Hash of the client's body, compared by idempotent replays.
    pub request_fingerprint: String,
}

/// The provider reported a dispatch attempt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageDispatched {
    /// Common facts.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Provider dedupe key of the report.
    pub dedupe_key: String,
    /// Provider specifics (object or null).
    pub details: Value,
    /// Attempt number, 1-based, strictly increasing in arrival order.
    pub attempt: u32,
    /// The message's first dispatch time after this event (the earliest reported).
    pub dispatched_at: DateTime<Utc>,
    /// Set when a delivery was already known and this report moved `dispatched_at`: the
    /// delivery latency from dispatch became known or changed.
    pub latency_ms_from_dispatch: Option<i64>,
}

/// The provider reported a temporary delay.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageDeferred {
    /// Common facts.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Provider dedupe key of the report.
    pub dedupe_key: String,
    /// Provider specifics (object or null).
    pub details: Value,
}

/// The provider reported delivery, or engagement implied it (`inferred`).
///
/// The status says whether the delivery decided the outcome: a hard-bounced email can still
/// learn when it was delivered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageDelivered {
    /// Common facts.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Dedupe key of the report (of the engagement report when inferred).
    pub dedupe_key: String,
    /// Provider specifics (object or null; null when inferred).
    pub details: Value,
    /// Inferred from engagement rather than reported.
    pub inferred: bool,
    /// `occurred_at - submitted_at` in ms (clamped at 0). Set when this event became the
    /// message's best delivery evidence; `None` when a better one was already known.
    pub latency_ms_from_submit: Option<i64>,
    /// `occurred_at - dispatched_at` in ms (clamped at 0), when set as above and the
    /// dispatch time is known.
    pub latency_ms_from_dispatch: Option<i64>,
}

/// The provider reported a bounce.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageBounced {
    /// Common facts.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Provider dedupe key of the report.
    pub dedupe_key: String,
    /// Provider specifics (object or null).
    pub details: Value,
    /// Hard or soft.
    pub bounce: BounceKind,
}

/// The provider reported a failure to send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageFailed {
    /// Common facts.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Provider dedupe key of the report.
    pub dedupe_key: String,
    /// Provider specifics (object or null).
    pub details: Value,
}

/// The provider reported it refused to send.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageDropped {
    /// Common facts.
    #[serde(flatten)]
    pub header: EventHeader,
    /// Provider dedupe key of the report.
    pub dedupe_key: String,
    /// Provider specifics (object or null).
    pub details: Value,
}

/// Herald gave up on the message: its time-to-live ran out with no outcome known.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageExpired {
    /// Common facts; `occurred_at = received_at` = the expiry time.
    #[serde(flatten)]
    pub header: EventHeader,
}

/// The client cancelled the message before dispatch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MessageCancelled {
    /// Common facts; `occurred_at = received_at` = the request time.
    #[serde(flatten)]
    pub header: EventHeader,
    /// The client's reason.
    pub reason: Option<String>,
}

/// The provider reported recipient engagement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EngagementRecorded {
    /// Common facts (status unchanged by engagement itself).
    #[serde(flatten)]
    pub header: EventHeader,
    /// Provider dedupe key of the report.
    pub dedupe_key: String,
    /// Provider specifics (object or null).
    pub details: Value,
    /// Which engagement.
    pub engagement: EngagementKind,
    /// The first report of this kind for the message (in arrival order): exactly one event
    /// per kind has it, so counting them gives unique opens, clicks, ...
    pub first: bool,
}

/// An event of a Message stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum MessageEvent {
    /// See [`MessageSubmitted`].
    MessageSubmitted(MessageSubmitted),
    /// See [`MessageDispatched`].
    MessageDispatched(MessageDispatched),
    /// See [`MessageDeferred`].
    MessageDeferred(MessageDeferred),
    /// See [`MessageDelivered`].
    MessageDelivered(MessageDelivered),
    /// See [`MessageBounced`].
    MessageBounced(MessageBounced),
    /// See [`MessageFailed`].
    MessageFailed(MessageFailed),
    /// See [`MessageDropped`].
    MessageDropped(MessageDropped),
    /// See [`MessageExpired`].
    MessageExpired(MessageExpired),
    /// See [`MessageCancelled`].
    MessageCancelled(MessageCancelled),
    /// See [`EngagementRecorded`].
    EngagementRecorded(EngagementRecorded),
}

/// The version every event type is at; bump per type when its payload changes shape.
///
/// * `1`: the first shape.
/// * `2`: the header carries the latency changes ([`EventHeader::submit_latency`],
///   [`EventHeader::dispatch_latency`]); a version-1 event reads as one that changed no
///   sample, and the read side counts its `latency_ms_from_*` the version-1 way.
pub const EVENT_VERSION: &str = "2";

impl MessageEvent {
    /// Every event type name, as stored in the event store's `event_type` column.
    pub const EVENT_TYPES: &'static [&'static str] = &[
        "MessageSubmitted",
        "MessageDispatched",
        "MessageDeferred",
        "MessageDelivered",
        "MessageBounced",
        "MessageFailed",
        "MessageDropped",
        "MessageExpired",
        "MessageCancelled",
        "EngagementRecorded",
    ];

    /// The variant name (the cqrs-es event type).
    pub const fn type_name(&self) -> &'static str {
        match self {
            MessageEvent::MessageSubmitted(_) => "MessageSubmitted",
            MessageEvent::MessageDispatched(_) => "MessageDispatched",
            MessageEvent::MessageDeferred(_) => "MessageDeferred",
            MessageEvent::MessageDelivered(_) => "MessageDelivered",
            MessageEvent::MessageBounced(_) => "MessageBounced",
            MessageEvent::MessageFailed(_) => "MessageFailed",
            MessageEvent::MessageDropped(_) => "MessageDropped",
            MessageEvent::MessageExpired(_) => "MessageExpired",
            MessageEvent::MessageCancelled(_) => "MessageCancelled",
            MessageEvent::EngagementRecorded(_) => "EngagementRecorded",
        }
    }

    /// The facts every event carries, to fill in derived ones.
    pub(crate) fn header_mut(&mut self) -> &mut EventHeader {
        match self {
            MessageEvent::MessageSubmitted(e) => &mut e.header,
            MessageEvent::MessageDispatched(e) => &mut e.header,
            MessageEvent::MessageDeferred(e) => &mut e.header,
            MessageEvent::MessageDelivered(e) => &mut e.header,
            MessageEvent::MessageBounced(e) => &mut e.header,
            MessageEvent::MessageFailed(e) => &mut e.header,
            MessageEvent::MessageDropped(e) => &mut e.header,
            MessageEvent::MessageExpired(e) => &mut e.header,
            MessageEvent::MessageCancelled(e) => &mut e.header,
            MessageEvent::EngagementRecorded(e) => &mut e.header,
        }
    }

    /// The facts every event carries.
    pub const fn header(&self) -> &EventHeader {
        match self {
            MessageEvent::MessageSubmitted(e) => &e.header,
            MessageEvent::MessageDispatched(e) => &e.header,
            MessageEvent::MessageDeferred(e) => &e.header,
            MessageEvent::MessageDelivered(e) => &e.header,
            MessageEvent::MessageBounced(e) => &e.header,
            MessageEvent::MessageFailed(e) => &e.header,
            MessageEvent::MessageDropped(e) => &e.header,
            MessageEvent::MessageExpired(e) => &e.header,
            MessageEvent::MessageCancelled(e) => &e.header,
            MessageEvent::EngagementRecorded(e) => &e.header,
        }
    }

    /// Owner of the message.
    pub const fn tenant_id(&self) -> Uuid {
        self.header().tenant_id
    }

    /// The message.
    pub const fn message_id(&self) -> Uuid {
        self.header().message_id
    }

    /// The message's channel.
    pub const fn channel(&self) -> Channel {
        self.header().channel
    }

    /// The message's provider.
    pub fn provider(&self) -> &str {
        &self.header().provider
    }

    /// Provider time (server time for submit, cancel, expiry); analytics use it.
    pub const fn occurred_at(&self) -> DateTime<Utc> {
        self.header().occurred_at
    }

    /// Server time Herald learned of it.
    pub const fn received_at(&self) -> DateTime<Utc> {
        self.header().received_at
    }

    /// Status after this event.
    pub const fn status(&self) -> MessageStatus {
        self.header().status
    }

    /// Status before this event (`None` on submission).
    pub const fn previous_status(&self) -> Option<MessageStatus> {
        self.header().previous_status
    }

    /// Whether this event moved the status.
    pub fn status_changed(&self) -> bool {
        self.previous_status() != Some(self.status())
    }

    /// The provider dedupe key, for events recording an observation.
    pub fn dedupe_key(&self) -> Option<&str> {
        match self {
            MessageEvent::MessageDispatched(e) => Some(&e.dedupe_key),
            MessageEvent::MessageDeferred(e) => Some(&e.dedupe_key),
            MessageEvent::MessageDelivered(e) => Some(&e.dedupe_key),
            MessageEvent::MessageBounced(e) => Some(&e.dedupe_key),
            MessageEvent::MessageFailed(e) => Some(&e.dedupe_key),
            MessageEvent::MessageDropped(e) => Some(&e.dedupe_key),
            MessageEvent::EngagementRecorded(e) => Some(&e.dedupe_key),
            MessageEvent::MessageSubmitted(_)
            | MessageEvent::MessageExpired(_)
            | MessageEvent::MessageCancelled(_) => None,
        }
    }

    /// Provider details, for events recording an observation.
    pub fn details(&self) -> Option<&Value> {
        match self {
            MessageEvent::MessageDispatched(e) => Some(&e.details),
            MessageEvent::MessageDeferred(e) => Some(&e.details),
            MessageEvent::MessageDelivered(e) => Some(&e.details),
            MessageEvent::MessageBounced(e) => Some(&e.details),
            MessageEvent::MessageFailed(e) => Some(&e.details),
            MessageEvent::MessageDropped(e) => Some(&e.details),
            MessageEvent::EngagementRecorded(e) => Some(&e.details),
            MessageEvent::MessageSubmitted(_)
            | MessageEvent::MessageExpired(_)
            | MessageEvent::MessageCancelled(_) => None,
        }
    }

    /// Delivery latency from submission, on the delivery event that set it.
    pub const fn latency_ms_from_submit(&self) -> Option<i64> {
        match self {
            MessageEvent::MessageDelivered(e) => e.latency_ms_from_submit,
            _ => None,
        }
    }

    /// Delivery latency from dispatch, on the delivery event that set it or the late
    /// dispatch report that made it known.
    pub const fn latency_ms_from_dispatch(&self) -> Option<i64> {
        match self {
            MessageEvent::MessageDelivered(e) => e.latency_ms_from_dispatch,
            MessageEvent::MessageDispatched(e) => e.latency_ms_from_dispatch,
            _ => None,
        }
    }
}

impl DomainEvent for MessageEvent {
    fn event_type(&self) -> String {
        self.type_name().to_owned()
    }

    fn event_version(&self) -> String {
        EVENT_VERSION.to_owned()
    }
}
