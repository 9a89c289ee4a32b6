//! Why a command was refused.
//!
//! Every error has a stable snake_case [`code`](MessageError::code) (public API: clients
//! branch on it), an optional [`field`](MessageError::field) naming the offending input,
//! and a [`kind`](MessageError::kind) so the HTTP layer maps errors to statuses in one place.

use chrono::{DateTime, Utc};

use crate::types::{Channel, MessageStatus};

/// Coarse class of a [`MessageError`], one per HTTP status the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The command itself is malformed or out of bounds, whatever the state (HTTP 400).
    Invalid,
    /// The message does not exist (HTTP 404).
    NotFound,
    /// The request contradicts an earlier one with the same identity (HTTP 409).
    Conflict,
    /// The command is well formed but a domain rule forbids it in the current state
    /// (HTTP 422).
    RuleViolation,
}

/// A command refused by the Message aggregate; nothing was recorded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The recipient does not fit the channel's address syntax.
    #[error("recipient is not a valid {channel} recipient: {reason}")]
    InvalidRecipient {
        /// Channel whose syntax was applied.
        channel: Channel,
        /// What is wrong.
        reason: &'static str,
    },
    /// The provider name is not `[a-z0-9_-]{1,64}`.
    #[error("provider is invalid: {reason}")]
    InvalidProvider {
        /// What is wrong.
        reason: &'static str,
    },
    /// More tags than [`crate::validate::MAX_TAGS`].
    #[error("too many tags: {count} (at most {max})")]
    TooManyTags {
        /// Tags given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// One tag is malformed or repeated.
    #[error("tag {index} is invalid: {reason}")]
    InvalidTag {
        /// Zero-based position in `tags`.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `ttl_seconds` is zero or above the maximum.
    #[error("ttl_seconds is invalid: {reason}")]
    InvalidTtl {
        /// What is wrong.
        reason: &'static str,
    },
    /// `scheduled_at` is too far ahead.
    #[error("scheduled_at is invalid: {reason}")]
    InvalidSchedule {
        /// What is wrong.
        reason: &'static str,
    },
    /// Some part of the content is empty, too large or not allowed on the channel.
    #[error("{field} is invalid: {reason}")]
    InvalidContent {
        /// Dotted path of the offending part, e.g. `content.body`.
        field: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// The request fingerprint computed by the service is empty or malformed.
    #[error("request_fingerprint is invalid: {reason}")]
    InvalidFingerprint {
        /// What is wrong.
        reason: &'static str,
    },
    /// The client's idempotency key is empty, too long or not printable ASCII.
    #[error("idempotency key is invalid: {reason}")]
    InvalidIdempotencyKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// The observation's provider dedupe key is empty, too long or has control characters.
    #[error("dedupe_key is invalid: {reason}")]
    InvalidDedupeKey {
        /// What is wrong.
        reason: &'static str,
    },
    /// The observation's details are not a JSON object (or null), or are too large.
    #[error("details are invalid: {reason}")]
    InvalidDetails {
        /// What is wrong.
        reason: &'static str,
    },
    /// The observation claims to have happened after Herald received it.
    #[error("occurred_at is invalid: {reason}")]
    InvalidOccurredAt {
        /// What is wrong.
        reason: &'static str,
    },
    /// The cancel reason is too long or has control characters.
    #[error("reason is invalid: {reason}")]
    InvalidCancelReason {
        /// What is wrong.
        reason: &'static str,
    },
    /// No message was submitted under this id.
    #[error("message not found")]
    MessageNotFound,
    /// The idempotency key was already used for a different request body.
    #[error("the idempotency key was already used with a different request")]
    IdempotencyKeyReused,
    /// Cancel after the message left Herald.
    #[error("cannot cancel a message that is already {status}")]
    CancelAfterDispatch {
        /// Status at the time of the cancel.
        status: MessageStatus,
    },
    /// Cancel after the message expired.
    #[error("cannot cancel a message that has expired")]
    CancelAfterExpiry,
    /// One more dispatch than [`crate::rules::MAX_DISPATCH_ATTEMPTS`].
    #[error("dispatch attempts exhausted (at most {max})")]
    DispatchAttemptsExhausted {
        /// The cap.
        max: u32,
    },
    /// One more distinct observation than [`crate::rules::MAX_OBSERVATIONS`].
    #[error("too many observations for one message (at most {max})")]
    ObservationLimitReached {
        /// The cap.
        max: usize,
    },
    /// The observation claims to have happened before the message was submitted.
    #[error(
        "observation occurred at {occurred_at}, before the message was submitted at {submitted_at}"
    )]
    ObservedBeforeSubmission {
        /// Provider time of the observation.
        occurred_at: DateTime<Utc>,
        /// Server time of the submission.
        submitted_at: DateTime<Utc>,
    },
    /// Expire before the message's time-to-live ran out.
    #[error("the message does not expire before {expires_at}")]
    ExpireBeforeDeadline {
        /// When the time-to-live runs out.
        expires_at: DateTime<Utc>,
    },
}

impl MessageError {
    /// Stable machine-readable code (snake_case); part of the public API.
    pub const fn code(&self) -> &'static str {
        match self {
            MessageError::InvalidRecipient { .. } => "invalid_recipient",
            MessageError::InvalidProvider { .. } => "invalid_provider",
            MessageError::TooManyTags { .. } => "too_many_tags",
            MessageError::InvalidTag { .. } => "invalid_tag",
            MessageError::InvalidTtl { .. } => "invalid_ttl",
            MessageError::InvalidSchedule { .. } => "invalid_scheduled_at",
            MessageError::InvalidContent { .. } => "invalid_content",
            MessageError::InvalidFingerprint { .. } => "invalid_request_fingerprint",
            MessageError::InvalidIdempotencyKey { .. } => "invalid_idempotency_key",
            MessageError::InvalidDedupeKey { .. } => "invalid_dedupe_key",
            MessageError::InvalidDetails { .. } => "invalid_details",
            MessageError::InvalidOccurredAt { .. } => "invalid_occurred_at",
            MessageError::InvalidCancelReason { .. } => "invalid_reason",
            MessageError::MessageNotFound => "message_not_found",
            MessageError::IdempotencyKeyReused => "idempotency_key_reused",
            MessageError::CancelAfterDispatch { .. } => "cancel_after_dispatch",
            MessageError::CancelAfterExpiry => "cancel_after_expiry",
            MessageError::DispatchAttemptsExhausted { .. } => "dispatch_attempts_exhausted",
            MessageError::ObservationLimitReached { .. } => "observation_limit_reached",
            MessageError::ObservedBeforeSubmission { .. } => "observed_before_submission",
            MessageError::ExpireBeforeDeadline { .. } => "expire_before_deadline",
        }
    }

    /// The request field at fault, as the client spelled it (`None` when the whole
    /// request or the message's state is at fault).
    pub const fn field(&self) -> Option<&'static str> {
        match self {
            MessageError::InvalidRecipient { .. } => Some("recipient"),
            MessageError::InvalidProvider { .. } => Some("provider"),
            MessageError::TooManyTags { .. } | MessageError::InvalidTag { .. } => Some("tags"),
            MessageError::InvalidTtl { .. } => Some("ttl_seconds"),
            MessageError::InvalidSchedule { .. } => Some("scheduled_at"),
            MessageError::InvalidContent { field, .. } => Some(field),
            MessageError::InvalidFingerprint { .. } => Some("request_fingerprint"),
            MessageError::InvalidIdempotencyKey { .. } => Some("idempotency_key"),
            MessageError::InvalidDedupeKey { .. } => Some("dedupe_key"),
            MessageError::InvalidDetails { .. } => Some("details"),
            MessageError::InvalidOccurredAt { .. }
            | MessageError::ObservedBeforeSubmission { .. } => Some("occurred_at"),
            MessageError::InvalidCancelReason { .. } => Some("reason"),
            MessageError::ExpireBeforeDeadline { .. } => Some("at"),
            MessageError::MessageNotFound
            | MessageError::IdempotencyKeyReused
            | MessageError::CancelAfterDispatch { .. }
            | MessageError::CancelAfterExpiry
            | MessageError::DispatchAttemptsExhausted { .. }
            | MessageError::ObservationLimitReached { .. } => None,
        }
    }

    /// Which class of refusal this is.
    pub const fn kind(&self) -> ErrorKind {
        match self {
            MessageError::InvalidRecipient { .. }
            | MessageError::InvalidProvider { .. }
            | MessageError::TooManyTags { .. }
            | MessageError::InvalidTag { .. }
            | MessageError::InvalidTtl { .. }
            | MessageError::InvalidSchedule { .. }
            | MessageError::InvalidContent { .. }
            | MessageError::InvalidFingerprint { .. }
            | MessageError::InvalidIdempotencyKey { .. }
            | MessageError::InvalidDedupeKey { .. }
            | MessageError::InvalidDetails { .. }
            | MessageError::InvalidOccurredAt { .. }
            | MessageError::InvalidCancelReason { .. } => ErrorKind::Invalid,
            MessageError::MessageNotFound => ErrorKind::NotFound,
            MessageError::IdempotencyKeyReused => ErrorKind::Conflict,
            MessageError::CancelAfterDispatch { .. }
            | MessageError::CancelAfterExpiry
            | MessageError::DispatchAttemptsExhausted { .. }
            | MessageError::ObservationLimitReached { .. }
            | MessageError::ObservedBeforeSubmission { .. }
            | MessageError::ExpireBeforeDeadline { .. } => ErrorKind::RuleViolation,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn one_of_each() -> Vec<MessageError> {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        vec![
            MessageError::InvalidRecipient {
                channel: Channel::Sms,
                reason: "r",
            },
            MessageError::InvalidProvider { reason: "r" },
            MessageError::TooManyTags { count: 21, max: 20 },
            MessageError::InvalidTag {
                index: 0,
                reason: "r",
            },
            MessageError::InvalidTtl { reason: "r" },
            MessageError::InvalidSchedule { reason: "r" },
            MessageError::InvalidContent {
                field: "content.body",
                reason: "r",
            },
            MessageError::InvalidFingerprint { reason: "r" },
            MessageError::InvalidIdempotencyKey { reason: "r" },
            MessageError::InvalidDedupeKey { reason: "r" },
            MessageError::InvalidDetails { reason: "r" },
            MessageError::InvalidOccurredAt { reason: "r" },
            MessageError::InvalidCancelReason { reason: "r" },
            MessageError::MessageNotFound,
            MessageError::IdempotencyKeyReused,
            MessageError::CancelAfterDispatch {
                status: MessageStatus::Delivered,
            },
            MessageError::CancelAfterExpiry,
            MessageError::DispatchAttemptsExhausted { max: 5 },
            MessageError::ObservationLimitReached { max: 1000 },
            MessageError::ObservedBeforeSubmission {
                occurred_at: t,
                submitted_at: t,
            },
            MessageError::ExpireBeforeDeadline { expires_at: t },
        ]
    }

    #[test]
    fn codes_are_unique_snake_case_and_messages_non_empty() {
        let all = one_of_each();
        let codes: HashSet<_> = all.iter().map(MessageError::code).collect();
        assert_eq!(codes.len(), all.len(), "every variant has its own code");
        for e in &all {
            assert!(e.code().chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            assert!(!e.to_string().is_empty());
        }
    }

    #[test]
    fn kinds_match_the_documented_mapping() {
        let kind_of = |code: &str| {
            one_of_each()
                .into_iter()
                .find(|e| e.code() == code)
                .unwrap()
                .kind()
        };
        assert_eq!(kind_of("invalid_recipient"), ErrorKind::Invalid);
        assert_eq!(kind_of("message_not_found"), ErrorKind::NotFound);
        assert_eq!(kind_of("idempotency_key_reused"), ErrorKind::Conflict);
        for code in [
            "cancel_after_dispatch",
            "cancel_after_expiry",
            "dispatch_attempts_exhausted",
            "observation_limit_reached",
            "observed_before_submission",
            "expire_before_deadline",
        ] {
            assert_eq!(kind_of(code), ErrorKind::RuleViolation, "{code}");
        }
        // Every Invalid error names the field the client must fix.
        for e in one_of_each() {
            if e.kind() == ErrorKind::Invalid {
                assert!(e.field().is_some(), "{}", e.code());
            }
        }
    }

    #[test]
    fn content_errors_name_the_exact_part() {
        let e = MessageError::InvalidContent {
            field: "content.subject",
            reason: "too long",
        };
        assert_eq!(e.field(), Some("content.subject"));
        assert_eq!(e.to_string(), "content.subject is invalid: too long");
    }
}
