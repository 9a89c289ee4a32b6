//! What clients, providers and Herald's own timers ask of a message.
//!
//! Every time a command needs comes inside it (server receive times are stamped by the
//! service), so deciding a command never reads a clock.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::types::{Channel, MessageContent, ObservationKind};

/// Namespace of the UUIDv5 message ids derived from idempotency keys. Fixed forever:
/// changing it would give every retried request a new message.
pub const HERALD_MESSAGE_NAMESPACE: Uuid =
    Uuid::from_u128(0x6f1c_2a9e_5d3b_4c8e_9a71_3e0b_8d4f_2c55);

/// The message id for a client's idempotency key.
///
/// The tenant is part of the name so two tenants using the same key get different
/// messages. The tenant's 16 bytes come first at a fixed width, so no (tenant, key) pair
/// can collide with another by shifting bytes between the two.
pub fn message_id_for(tenant_id: Uuid, idempotency_key: &str) -> Uuid {
    let mut name = Vec::with_capacity(16 + idempotency_key.len());
    name.extend_from_slice(tenant_id.as_bytes());
    name.extend_from_slice(idempotency_key.as_bytes());
    Uuid::new_v5(&HERALD_MESSAGE_NAMESPACE, &name)
}

/// A client's request to send one message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SubmitMessage {
    /// Owner of the message (from the API key, never from the body).
    pub tenant_id: Uuid,
    /// The aggregate id: [`message_id_for`] when the client gave an idempotency key.
    pub message_id: Uuid,
    /// How to reach the recipient.
    pub channel: Channel,
    /// Email address, E.164 phone number or push token, per `channel`.
    pub recipient: String,
    /// Provider that will send it, e.g. `ses`, `twilio`.
    pub provider: String,
    /// What to send.
    pub content: MessageContent,
    /// Client labels for filtering and stats.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Send no earlier than this; absent or not in the future means now.
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Give up if no outcome is known this many seconds after the send time.
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
    /// Server time the request was received.
    pub submitted_at: DateTime<Utc>,
    /// Hash of the client's request body, computed by the service. A repeated submit with
    /// the same fingerprint is a replay; with another, a reused idempotency key.
    pub request_fingerprint: String,
}

/// Something a provider reported about a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// What happened.
    pub kind: ObservationKind,
    /// The provider's id for this report (e.g. SendGrid `sg_event_id`); the same key twice
    /// is the same report delivered twice.
    pub dedupe_key: String,
    /// Provider time of the event; analytics use it.
    pub occurred_at: DateTime<Utc>,
    /// Server time Herald received the report; kept to measure lag.
    pub received_at: DateTime<Utc>,
    /// Provider specifics (bounce reason, clicked URL, ...): a JSON object or null.
    #[serde(default)]
    pub details: Value,
}

/// A command for the Message aggregate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageCommand {
    /// Create the message.
    Submit(SubmitMessage),
    /// Record a provider report.
    RecordObservation(Observation),
    /// Stop the message before it is dispatched.
    Cancel {
        /// Free text from the client.
        reason: Option<String>,
        /// Server time of the request.
        requested_at: DateTime<Utc>,
    },
    /// Give up on the message because its time-to-live ran out (sent by Herald's timer).
    Expire {
        /// Server time of the expiry.
        at: DateTime<Utc>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_stable_per_tenant_and_key() {
        let tenant = Uuid::from_u128(1);
        let a = message_id_for(tenant, "order-42");
        assert_eq!(a, message_id_for(tenant, "order-42"));
        assert_eq!(a.get_version_num(), 5);
        assert_ne!(a, message_id_for(tenant, "order-43"));
    }

    #[test]
    fn same_key_for_two_tenants_gives_two_ids() {
        let key = "same-key";
        assert_ne!(
            message_id_for(Uuid::from_u128(1), key),
            message_id_for(Uuid::from_u128(2), key)
        );
    }

    #[test]
    fn message_id_is_pinned() {
        // Values computed by an independent UUIDv5 implementation (Python's uuid/hashlib)
        // over namespace || tenant bytes || key. A change here would silently break
        // idempotent retries of requests made before it.
        assert_eq!(
            message_id_for(Uuid::nil(), "k").to_string(),
            "32d38bc5-17fa-56cc-b2ca-08dc4087e8ae"
        );
        assert_eq!(
            message_id_for(Uuid::from_u128(0x1111), "order-42").to_string(),
            "b76b1cf5-a68f-5e3a-a055-95054736c784"
        );
    }

    #[test]
    fn observation_details_default_to_null() {
        let obs: Observation = serde_json::from_str(
            r#"{"kind":"delivered","dedupe_key":"k","occurred_at":"2024-01-01T00:00:00Z","received_at":"2024-01-01T00:00:01Z"}"#,
        )
        .unwrap();
        assert_eq!(obs.details, Value::Null);
        assert_eq!(obs.kind, ObservationKind::Delivered);
    }
}
