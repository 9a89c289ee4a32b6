//! The vocabulary shared by commands, events, the read models and the HTTP API.
//!
//! The snake_case names these enums serialize to are public: clients send them, the read
//! models store them and queries filter on them. Renaming a variant is a breaking change.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A name that is not one of an enum's wire names (see the `FromStr` impls).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what}: {value:?}")]
pub struct UnknownName {
    /// Which vocabulary was being parsed, e.g. `"channel"`.
    pub what: &'static str,
    /// The rejected text.
    pub value: String,
}

/// Declares a fieldless enum whose serde name, `as_str`, `Display` and `FromStr` all come
/// from one literal per variant, so the four can never disagree.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident => $wire:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $wire)] $variant ),+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The wire name (the same string serde uses).
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $wire),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(UnknownName { what: $what, value: s.to_owned() }),
                }
            }
        }
    };
}

wire_enum! {
    /// How a message reaches its recipient. Decides which recipient syntax is valid and
    /// whether the email-only late-bounce rule applies.
    Channel ("channel") {
        /// Email through an ESP (SES, SendGrid, ...).
        Email => "email",
        /// SMS through an SMS gateway (Twilio, ...).
        Sms => "sms",
        /// Mobile or web push (APNs, FCM, ...).
        Push => "push",
    }
}

wire_enum! {
    /// Delivery status of a message: a point in the ranked lattice of
    /// [`MessageStatus::rank`].
    MessageStatus ("status") {
        /// Bottom of the lattice. A never-submitted aggregate reports it; submission moves
        /// straight to `queued` or `scheduled` because validation and queueing are one step.
        Accepted => "accepted",
        /// Waiting for its `scheduled_at`.
        Scheduled => "scheduled",
        /// Waiting to be handed to the provider.
        Queued => "queued",
        /// Handed to the provider.
        Dispatched => "dispatched",
        /// The provider reported a temporary delay and keeps trying.
        Deferred => "deferred",
        /// The recipient's system accepted it (reported by the provider or inferred from
        /// engagement).
        Delivered => "delivered",
        /// The recipient's system refused it (hard or soft, see [`BounceKind`]).
        Bounced => "bounced",
        /// The provider could not send it.
        Failed => "failed",
        /// The provider refused to send it (suppression list, policy, ...).
        Dropped => "dropped",
        /// Its time-to-live ran out before any outcome was known.
        Expired => "expired",
        /// The client cancelled it before dispatch.
        Cancelled => "cancelled",
    }
}

impl Default for MessageStatus {
    /// The lattice bottom, which is also what a never-submitted aggregate reports.
    fn default() -> Self {
        MessageStatus::Accepted
    }
}

impl MessageStatus {
    /// Position in the ranked lattice; a status change never lowers it.
    ///
    /// ```text
    /// accepted(0) < scheduled = queued(1) < cancelled(2) < dispatched(3) < deferred(4)
    ///             < delivered = bounced = failed = dropped = expired(5)
    /// ```
    ///
    /// `cancelled` sits below `dispatched` on purpose: a cancel only succeeds before
    /// dispatch, so any provider observation arriving afterwards proves the message had
    /// already left (the cancel lost a race) and must be allowed to supersede it. All
    /// terminal statuses share one rank; which of them wins is decided by the terminal
    /// order in [`crate::rules::rule_terminal_order`].
    pub const fn rank(self) -> u8 {
        match self {
            MessageStatus::Accepted => 0,
            MessageStatus::Scheduled | MessageStatus::Queued => 1,
            MessageStatus::Cancelled => 2,
            MessageStatus::Dispatched => 3,
            MessageStatus::Deferred => 4,
            MessageStatus::Delivered
            | MessageStatus::Bounced
            | MessageStatus::Failed
            | MessageStatus::Dropped
            | MessageStatus::Expired => 5,
        }
    }

    /// Whether this is an outcome (top of the lattice). `cancelled` is not: provider
    /// evidence can still supersede it.
    pub const fn is_terminal(self) -> bool {
        self.rank() == 5
    }
}

wire_enum! {
    /// What a provider reported about a message.
    ObservationKind ("observation kind") {
        /// The provider accepted the message for sending (one per attempt).
        Dispatched => "dispatched",
        /// Temporary delay; the provider retries.
        Deferred => "deferred",
        /// The recipient's system accepted the message.
        Delivered => "delivered",
        /// Permanent refusal (unknown address, domain does not exist, ...).
        BouncedHard => "bounced_hard",
        /// Transient refusal (mailbox full, auto-reply, greylisting, ...).
        BouncedSoft => "bounced_soft",
        /// The provider could not send the message.
        Failed => "failed",
        /// The provider refused to send the message.
        Dropped => "dropped",
        /// The recipient opened the message.
        Opened => "opened",
        /// The recipient clicked a link.
        Clicked => "clicked",
        /// The recipient marked the message as spam.
        Complained => "complained",
        /// The recipient unsubscribed.
        Unsubscribed => "unsubscribed",
    }
}

impl ObservationKind {
    /// The engagement this observation records, if it is one (engagement is not a status).
    pub const fn engagement(self) -> Option<EngagementKind> {
        match self {
            ObservationKind::Opened => Some(EngagementKind::Opened),
            ObservationKind::Clicked => Some(EngagementKind::Clicked),
            ObservationKind::Complained => Some(EngagementKind::Complained),
            ObservationKind::Unsubscribed => Some(EngagementKind::Unsubscribed),
            _ => None,
        }
    }
}

wire_enum! {
    /// Whether a bounce is permanent.
    BounceKind ("bounce kind") {
        /// Permanent: retrying will not help.
        Hard => "hard",
        /// Transient: the provider may retry and still deliver.
        Soft => "soft",
    }
}

wire_enum! {
    /// A recipient action recorded as a flag and a time, never as a status.
    EngagementKind ("engagement kind") {
        /// The recipient opened the message.
        Opened => "opened",
        /// The recipient clicked a link.
        Clicked => "clicked",
        /// The recipient marked the message as spam.
        Complained => "complained",
        /// The recipient unsubscribed.
        Unsubscribed => "unsubscribed",
    }
}

/// Engagement of a message: for each kind, the earliest time it was observed (a kind is
/// flagged when its time is set), plus the latest engagement of any kind.
///
/// Earliest-per-kind keeps the result independent of arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engagement {
    /// First time the message was opened.
    pub opened_at: Option<DateTime<Utc>>,
    /// First time a link was clicked.
    pub clicked_at: Option<DateTime<Utc>>,
    /// First spam complaint.
    pub complained_at: Option<DateTime<Utc>>,
    /// First unsubscribe.
    pub unsubscribed_at: Option<DateTime<Utc>>,
    /// Latest engagement of any kind.
    pub last_at: Option<DateTime<Utc>>,
}

impl Engagement {
    /// The first time `kind` was observed.
    pub fn first_at(&self, kind: EngagementKind) -> Option<DateTime<Utc>> {
        match kind {
            EngagementKind::Opened => self.opened_at,
            EngagementKind::Clicked => self.clicked_at,
            EngagementKind::Complained => self.complained_at,
            EngagementKind::Unsubscribed => self.unsubscribed_at,
        }
    }

    /// Whether `kind` was observed at least once.
    pub fn has(&self, kind: EngagementKind) -> bool {
        self.first_at(kind).is_some()
    }

    pub(crate) fn record(&mut self, kind: EngagementKind, at: DateTime<Utc>) {
        let slot = match kind {
            EngagementKind::Opened => &mut self.opened_at,
            EngagementKind::Clicked => &mut self.clicked_at,
            EngagementKind::Complained => &mut self.complained_at,
            EngagementKind::Unsubscribed => &mut self.unsubscribed_at,
        };
        *slot = Some(slot.map_or(at, |t| t.min(at)));
        self.last_at = Some(self.last_at.map_or(at, |t| t.max(at)));
    }
}

/// What to send: the text itself, or a provider template and its variables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MessageContent {
    /// The text itself.
    Inline {
        /// Email subject or push title; SMS has none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        subject: Option<String>,
        /// Message body.
        body: String,
    },
    /// A template the provider renders.
    Template {
        /// The provider's template id.
        template_id: String,
        /// Values for the template; always a JSON object.
        #[serde(default)]
        variables: Map<String, Value>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_name<T: Serialize>(value: T) -> String {
        match serde_json::to_value(value).unwrap() {
            Value::String(s) => s,
            other => panic!("not a string: {other}"),
        }
    }

    #[test]
    fn wire_names_agree_with_serde_and_parse_back() {
        fn check<T>(all: &[T])
        where
            T: Copy + Serialize + FromStr + fmt::Display + PartialEq + fmt::Debug,
            <T as FromStr>::Err: fmt::Debug,
        {
            for &v in all {
                let name = serde_name(v);
                assert_eq!(name, v.to_string());
                assert_eq!(name.parse::<T>().unwrap(), v);
                assert!(name.chars().all(|c| c.is_ascii_lowercase() || c == '_'));
            }
        }
        check(Channel::ALL);
        check(MessageStatus::ALL);
        check(ObservationKind::ALL);
        check(BounceKind::ALL);
        check(EngagementKind::ALL);
        assert_eq!(serde_name(ObservationKind::BouncedHard), "bounced_hard");
        assert_eq!(MessageStatus::ALL.len(), 11);
        assert_eq!(ObservationKind::ALL.len(), 11);
    }

    #[test]
    fn unknown_names_are_rejected() {
        let err = "Email".parse::<Channel>().unwrap_err();
        assert_eq!(err.what, "channel");
        assert!("bounced".parse::<ObservationKind>().is_err());
    }

    #[test]
    fn rank_orders_the_lattice() {
        use MessageStatus::*;
        assert!(Accepted.rank() < Queued.rank());
        assert_eq!(Queued.rank(), Scheduled.rank());
        assert!(Queued.rank() < Cancelled.rank());
        assert!(Cancelled.rank() < Dispatched.rank());
        assert!(Dispatched.rank() < Deferred.rank());
        for s in [Delivered, Bounced, Failed, Dropped, Expired] {
            assert!(Deferred.rank() < s.rank());
            assert!(s.is_terminal());
        }
        for s in [Accepted, Scheduled, Queued, Cancelled, Dispatched, Deferred] {
            assert!(!s.is_terminal());
        }
    }

    #[test]
    fn engagement_keeps_first_time_per_kind_and_latest_overall() {
        let t = |m: i64| DateTime::<Utc>::from_timestamp(1_700_000_000 + m * 60, 0).unwrap();
        let mut e = Engagement::default();
        assert!(!e.has(EngagementKind::Opened));
        e.record(EngagementKind::Opened, t(10));
        e.record(EngagementKind::Opened, t(5));
        e.record(EngagementKind::Clicked, t(20));
        e.record(EngagementKind::Opened, t(30));
        assert_eq!(e.opened_at, Some(t(5)));
        assert_eq!(e.clicked_at, Some(t(20)));
        assert_eq!(e.last_at, Some(t(30)));
        assert!(!e.has(EngagementKind::Complained));
    }

    #[test]
    fn content_is_tagged_by_type() {
        let inline: MessageContent =
            serde_json::from_str(r#"{"type":"inline","body":"hi"}"#).unwrap();
        assert_eq!(
            inline,
            MessageContent::Inline {
                subject: None,
                body: "hi".into()
            }
        );
        let template: MessageContent =
            serde_json::from_str(r#"{"type":"template","template_id":"t1","variables":{"a":1}}"#)
                .unwrap();
        match template {
            MessageContent::Template { variables, .. } => assert_eq!(variables["a"], 1),
            other => panic!("{other:?}"),
        }
        assert!(serde_json::from_str::<MessageContent>(
            r#"{"type":"template","template_id":"t","variables":[1]}"#
        )
        .is_err());
    }
}
