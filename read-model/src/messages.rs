//! The `messages` table: current state per message. Every update is guarded by
//! `last_sequence`, so a row only moves forward; `<status>_at` columns hold the first time
//! the message entered that status; `delivered_at` and the latencies come from the best
//! delivery evidence.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// One message's current state, with the time of every transition: a row of `messages`
/// as queries show it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct MessageRow {
    /// The message.
    pub message_id: Uuid,
    /// Current status.
    pub status: String,
    /// `email`, `sms` or `push`.
    pub channel: String,
    /// The provider sending it.
    pub provider: String,
    /// Its tags, as submitted.
    pub tags: Vec<String>,
    /// When Herald accepted it (server time).
    pub submitted_at: Option<DateTime<Utc>>,
    /// Scheduled for.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Entered `queued`.
    pub queued_at: Option<DateTime<Utc>>,
    /// First dispatch.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// First deferral.
    pub deferred_at: Option<DateTime<Utc>>,
    /// Delivery (best evidence).
    pub delivered_at: Option<DateTime<Utc>>,
    /// Whether delivery was inferred from engagement.
    pub delivery_inferred: Option<bool>,
    /// First bounce reported.
    pub bounced_at: Option<DateTime<Utc>>,
    /// First failure reported.
    pub failed_at: Option<DateTime<Utc>>,
    /// First drop reported (the provider refused to send).
    pub dropped_at: Option<DateTime<Utc>>,
    /// When Herald expired it (its time-to-live ran out).
    pub expired_at: Option<DateTime<Utc>>,
    /// When the client cancelled it.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// First open.
    pub opened_at: Option<DateTime<Utc>>,
    /// First click.
    pub clicked_at: Option<DateTime<Utc>>,
    /// First complaint.
    pub complained_at: Option<DateTime<Utc>>,
    /// First unsubscribe reported.
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// Submit to delivered, ms.
    pub latency_ms_from_submit: Option<i64>,
    /// Dispatch to delivered, ms.
    pub latency_ms_from_dispatch: Option<i64>,
    /// Newest event projected.
    pub last_sequence: i64,
    /// Its type.
    pub last_event_type: String,
}

/// The columns of [`MessageRow`], in its order, for `SELECT`.
pub const COLUMNS: &str =
    "message_id, status, channel, provider, tags, submitted_at, scheduled_at, \
    queued_at, dispatched_at, deferred_at, delivered_at, delivery_inferred, bounced_at, failed_at, \
    dropped_at, expired_at, cancelled_at, opened_at, clicked_at, complained_at, unsubscribed_at, \
    latency_ms_from_submit, latency_ms_from_dispatch, last_sequence, last_event_type";
