//! The wire format of the command API: request bodies, answers, and how a request becomes
//! a domain command. Unknown fields are refused so a typo is a 400, not silently ignored.

use chrono::{DateTime, Utc};
use domain::{
    Channel, Message, MessageCommand, MessageContent, MessageStatus, Observation, ObservationKind,
    SubmitMessage,
};
use serde::{Deserialize, Serialize};
use service_kit::consistency::ConsistencyToken;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// `POST /v1/messages` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// `email`, `sms` or `push`.
    pub channel: Channel,
    /// Address, E.164 number or push token.
    pub recipient: String,
    /// Provider name, e.g. `ses`.
    pub provider: String,
    /// Inline content or a template reference.
    #[serde(deserialize_with = "service_kit::http_error::object_only")]
    pub content: MessageContent,
    /// Labels for filtering and statistics.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Send no earlier than this.
    #[serde(default)]
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Give up this many seconds after the send time.
    #[serde(default)]
    pub ttl_seconds: Option<u32>,
}

/// `POST /v1/messages/{id}/observations` body.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObservationRequest {
    /// What the provider reports.
    pub kind: ObservationKind,
    /// The provider's id of this report; repeats with the same key change nothing.
    pub dedupe_key: String,
    /// Provider time of the event.
    pub occurred_at: DateTime<Utc>,
    /// Provider-specific details (an object).
    #[serde(default)]
    pub details: serde_json::Value,
}

/// `POST /v1/messages/{id}/cancel` body (optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why, for the record.
    #[serde(default)]
    pub reason: Option<String>,
}

/// The answer to every accepted command.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CommandAnswer {
    /// The message.
    pub message_id: Uuid,
    /// Its status after the command.
    pub status: MessageStatus,
    /// Whether the command recorded anything (false for a duplicate report or a repeat).
    pub changed: bool,
    /// The stream's sequence after the command.
    pub sequence: u64,
    /// Pass to the query service to read this write.
    pub consistency_token: ConsistencyToken,
}

impl CommandAnswer {
    /// The answer for `message_id` at `sequence` with `state`.
    pub fn new(message_id: Uuid, state: &Message, sequence: u64, changed: bool) -> Self {
        Self {
            message_id,
            status: state.status(),
            changed,
            sequence,
            consistency_token: ConsistencyToken {
                message_id,
                sequence,
            },
        }
    }
}

impl SubmitRequest {
    /// The domain command for this request.
    pub fn into_command(
        self,
        tenant_id: Uuid,
        message_id: Uuid,
        now: DateTime<Utc>,
    ) -> MessageCommand {
        let request_fingerprint = self.fingerprint();
        MessageCommand::Submit(SubmitMessage {
            tenant_id,
            message_id,
            channel: self.channel,
            recipient: self.recipient,
            provider: self.provider,
            content: self.content,
            tags: self.tags,
            scheduled_at: self.scheduled_at,
            ttl_seconds: self.ttl_seconds,
            submitted_at: now,
            request_fingerprint,
        })
    }

    /// SHA-256 of the request in canonical JSON (object keys sorted at every level), so
    /// the same request with its keys in another order is still "the same body".
    pub fn fingerprint(&self) -> String {
        let value = serde_json::to_value(self).expect("a request serialises");
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        hex::encode(Sha256::digest(canonical.as_bytes()))
    }
}

fn write_canonical(value: &serde_json::Value, out: &mut String) {
    match value {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        serde_json::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

impl ObservationRequest {
    /// The domain command for this report, received `now`.
    pub fn into_command(self, now: DateTime<Utc>) -> MessageCommand {
        MessageCommand::RecordObservation(Observation {
            kind: self.kind,
            dedupe_key: self.dedupe_key,
            occurred_at: self.occurred_at,
            received_at: now,
            details: self.details,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a: SubmitRequest = serde_json::from_str(
            r#"{"channel":"email","recipient":"a@b.co","provider":"ses",
                "content":{"type":"template","template_id":"t","variables":{"x":1,"y":2}}}"#,
        )
        .unwrap();
        let b: SubmitRequest = serde_json::from_str(
            r#"{"provider":"ses","content":{"variables":{"y":2,"x":1},"template_id":"t","type":"template"},
                "recipient":"a@b.co","channel":"email"}"#,
        )
        .unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut c = a.clone();
        c.recipient = "other@b.co".into();
        assert_ne!(a.fingerprint(), c.fingerprint());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<SubmitRequest>(
            r#"{"channel":"email","recipient":"a@b.co","provider":"ses","content":{"type":"inline","body":"b"},"tenant_id":"x"}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("tenant_id"), "{err}");
    }
}
