//! The Message aggregate's invariants, one named function per rule.
//!
//! [`crate::decide`] is only the composition of these functions; each is documented with
//! the reason it exists and tested on its own below.
//!
//! # Why the status is order-independent
//!
//! Providers report at least once and out of order, so the final status must not depend on
//! arrival order. Every observation is turned into a contribution that depends only on the
//! observation itself (never on the state it meets), and the status is the maximum of all
//! contributions under a fixed total order:
//!
//! * non-terminal contributions (`dispatched`, `deferred`, and Herald's own `cancelled`)
//!   combine by [`MessageStatus::rank`] ([`rule_status_never_lowers`]);
//! * terminal contributions ([`TerminalClaim`]s) combine by [`rule_terminal_order`], and
//!   any terminal claim outranks every non-terminal status.
//!
//! A maximum under a total order is commutative, associative and idempotent, so any
//! permutation of the same observations, with any duplicates, ends in the same status.
//! Keeping only the current maximum is enough: a claim that lost once loses forever.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Message, Submission};
use crate::command::Observation;
use crate::error::MessageError;
use crate::types::{BounceKind, Channel, MessageStatus};
use crate::validate::MAX_CLOCK_SKEW;

/// Most dispatch attempts per message. Providers retry internally; Herald re-dispatching
/// more often than this means something is broken, and each attempt may cost money.
pub const MAX_DISPATCH_ATTEMPTS: u32 = 5;

/// Most distinct observations per message. A real message sees a dozen at most; the cap
/// keeps a misbehaving provider from growing one stream (and its dedupe set) without bound.
pub const MAX_OBSERVATIONS: usize = 1_000;

/// A terminal outcome claimed by one observation (or by Herald's expiry).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalClaim {
    /// What is claimed.
    pub outcome: Outcome,
    /// When it happened (provider time; server time for an expiry).
    pub occurred_at: DateTime<Utc>,
    /// Dedupe key of the observation making the claim; empty for an expiry, which happens
    /// at most once.
    pub dedupe_key: String,
}

/// A terminal outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Delivered; `inferred` when only engagement proves it.
    Delivered {
        /// Whether delivery was inferred from engagement rather than reported.
        inferred: bool,
    },
    /// The recipient's system refused it.
    Bounced {
        /// Hard or soft.
        bounce: BounceKind,
    },
    /// The provider could not send it.
    Failed,
    /// The provider refused to send it.
    Dropped,
    /// Herald gave up: its time-to-live ran out first.
    Expired,
}

impl Outcome {
    /// The status this outcome gives the message.
    pub const fn status(self) -> MessageStatus {
        match self {
            Outcome::Delivered { .. } => MessageStatus::Delivered,
            Outcome::Bounced { .. } => MessageStatus::Bounced,
            Outcome::Failed => MessageStatus::Failed,
            Outcome::Dropped => MessageStatus::Dropped,
            Outcome::Expired => MessageStatus::Expired,
        }
    }
}

/// Rule 1, submit once: the first submit creates the message; a repeat with the same tenant
/// and request fingerprint is an idempotent replay (`Ok(false)`: record nothing, the
/// service answers with the original result); any other repeat reuses an idempotency key
/// for a different request, a [`MessageError::IdempotencyKeyReused`] conflict.
///
/// `existing` is the tenant and fingerprint of the recorded submission, if any.
pub fn rule_submit_once(
    existing: Option<(uuid::Uuid, &str)>,
    tenant_id: uuid::Uuid,
    fingerprint: &str,
) -> Result<bool, MessageError> {
    match existing {
        None => Ok(true),
        Some((t, f)) if t == tenant_id && f == fingerprint => Ok(false),
        Some(_) => Err(MessageError::IdempotencyKeyReused),
    }
}

/// Rule 2, exists before anything else: every command but submit needs a submitted
/// message; on an empty stream it is [`MessageError::MessageNotFound`].
pub fn rule_requires_submission(state: &Message) -> Result<&Submission, MessageError> {
    state.submission().ok_or(MessageError::MessageNotFound)
}

/// The status a new message starts in: `scheduled` when it must wait for a time strictly
/// after its submission, `queued` otherwise (a past `scheduled_at` means "now").
pub fn rule_initial_status(
    submitted_at: DateTime<Utc>,
    scheduled_at: Option<DateTime<Utc>>,
) -> MessageStatus {
    match scheduled_at {
        Some(at) if at > submitted_at => MessageStatus::Scheduled,
        _ => MessageStatus::Queued,
    }
}

/// When a message's time-to-live runs out: `ttl` after its send time (the schedule time if
/// later than submission), so a scheduled message does not age while it waits.
pub fn rule_expires_at(
    submitted_at: DateTime<Utc>,
    scheduled_at: Option<DateTime<Utc>>,
    ttl_seconds: Option<u32>,
) -> Option<DateTime<Utc>> {
    let send_at = scheduled_at.map_or(submitted_at, |at| at.max(submitted_at));
    ttl_seconds.map(|ttl| send_at + Duration::seconds(i64::from(ttl)))
}

/// Rule 3, dedupe: an observation whose provider dedupe key was already recorded is the
/// same report delivered again (providers deliver at least once) and changes nothing.
pub fn rule_observation_seen(seen: &BTreeSet<String>, dedupe_key: &str) -> bool {
    seen.contains(dedupe_key)
}

/// Bounded dedupe set: a message accepts at most [`MAX_OBSERVATIONS`] distinct observations
/// and then refuses more with [`MessageError::ObservationLimitReached`] rather than grow
/// without bound. Duplicates of recorded ones stay harmless no-ops.
pub fn rule_observation_limit(recorded: usize) -> Result<(), MessageError> {
    if recorded >= MAX_OBSERVATIONS {
        return Err(MessageError::ObservationLimitReached {
            max: MAX_OBSERVATIONS,
        });
    }
    Ok(())
}

/// An observation cannot precede the message's submission by more than
/// [`MAX_CLOCK_SKEW`]: such a report belongs to another message (or a broken clock), and
/// letting it in would put it in the wrong analytics bucket and make latencies negative.
pub fn rule_observed_after_submission(
    submitted_at: DateTime<Utc>,
    occurred_at: DateTime<Utc>,
) -> Result<(), MessageError> {
    if occurred_at < submitted_at - MAX_CLOCK_SKEW {
        return Err(MessageError::ObservedBeforeSubmission {
            occurred_at,
            submitted_at,
        });
    }
    Ok(())
}

/// Rule 4, the ranked lattice: combining the current status with an incoming one keeps
/// the higher [`MessageStatus::rank`]; on equal rank the current one stays. A late,
/// lower-ranked observation therefore never lowers the status (its time is still kept by
/// the caller, e.g. a late `dispatched` sets `dispatched_at`).
///
/// Because `cancelled` ranks below `dispatched`, provider evidence that the message was
/// dispatched supersedes a cancel that lost the race with the dispatcher: the status then
/// tells the truth about the message instead of what the client wished.
pub fn rule_status_never_lowers(current: MessageStatus, incoming: MessageStatus) -> MessageStatus {
    if incoming.rank() > current.rank() {
        incoming
    } else {
        current
    }
}

/// Rule 5a, the late-bounce exception: on email, a hard bounce outranks every other
/// outcome whatever the times, because a receiving server may accept a message and bounce
/// it later (SES reports `Delivery` then `Bounce`). Other channels have no such thing: an
/// SMS gateway's "delivered" is final.
///
/// Only hard bounces qualify: transient (soft) bounces arrive after delivery all the time
/// (auto-replies, mailbox-full notices) without undoing it.
pub const fn rule_late_bounce(channel: Channel, outcome: Outcome) -> bool {
    matches!(channel, Channel::Email)
        && matches!(
            outcome,
            Outcome::Bounced {
                bounce: BounceKind::Hard
            }
        )
}

/// Evidence tier of a terminal outcome; a higher tier beats a lower one whatever the times.
///
/// | tier | outcomes | why |
/// |------|----------|-----|
/// | 4 | email hard bounce | [`rule_late_bounce`] |
/// | 3 | delivered (reported), failed, dropped, hard bounce off email | direct provider reports |
/// | 2 | delivered (inferred from engagement) | Herald's inference, weaker than a report |
/// | 1 | soft bounce | transient: the provider may still retry and deliver |
/// | 0 | expired | Herald's own give-up; any provider outcome is better information |
pub const fn terminal_tier(channel: Channel, outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Expired => 0,
        Outcome::Bounced {
            bounce: BounceKind::Soft,
        } => 1,
        Outcome::Delivered { inferred: true } => 2,
        _ if rule_late_bounce(channel, outcome) => 4,
        _ => 3,
    }
}

/// Tie-break between outcomes of one tier at the same instant: the more pessimistic one
/// wins (the failure is the report someone must act on).
const fn same_instant_rank(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Delivered { .. } | Outcome::Expired => 0,
        Outcome::Dropped => 1,
        Outcome::Failed => 2,
        Outcome::Bounced { .. } => 3,
    }
}

/// Rule 5, the terminal total order: `Greater` when claim `a` beats claim `b`.
///
/// Claims compare lexicographically by
/// 1. evidence tier ([`terminal_tier`]), higher wins — this is where the late-bounce
///    exception lives, as a tier rather than a pairwise exception, because a pairwise
///    "bounce beats delivered" next to "earliest wins" would be cyclic (delivered@1 beats
///    failed@2 beats bounced@3 beats delivered@1) and make the result order-dependent;
/// 2. `occurred_at`, earlier wins: the first outcome is what happened to the message, and
///    later contradicting reports are usually echoes or provider confusion;
/// 3. at the same instant, dropped < failed < bounced over delivered (pessimistic);
/// 4. dedupe key, smaller wins (arbitrary but deterministic).
///
/// Two distinct claims never compare `Equal` (their dedupe keys differ), so the order is
/// total and the winner among any set of claims is unique.
pub fn rule_terminal_order(channel: Channel, a: &TerminalClaim, b: &TerminalClaim) -> Ordering {
    terminal_tier(channel, a.outcome)
        .cmp(&terminal_tier(channel, b.outcome))
        .then_with(|| b.occurred_at.cmp(&a.occurred_at))
        .then_with(|| same_instant_rank(a.outcome).cmp(&same_instant_rank(b.outcome)))
        .then_with(|| b.dedupe_key.cmp(&a.dedupe_key))
}

/// Whether `incoming` replaces `current` as the best claim under [`rule_terminal_order`].
pub fn claim_wins(
    channel: Channel,
    current: Option<&TerminalClaim>,
    incoming: &TerminalClaim,
) -> bool {
    current.is_none_or(|c| rule_terminal_order(channel, incoming, c) == Ordering::Greater)
}

/// Rule 6, engagement implies delivery: an engagement observation claims an inferred
/// delivery at its own time (it cannot have been opened before it arrived).
///
/// Where that claim lands follows [`rule_terminal_order`]: it makes a queued, dispatched,
/// deferred, expired or soft-bounced message delivered; it does not override a direct
/// failure report (failed, dropped, hard bounce), which "forbids" the inference for the
/// status, though the engagement itself is still recorded. Returns `None` for
/// non-engagement observations.
pub fn rule_engagement_implies_delivery(obs: &Observation) -> Option<TerminalClaim> {
    obs.kind.engagement().map(|_| TerminalClaim {
        outcome: Outcome::Delivered { inferred: true },
        occurred_at: obs.occurred_at,
        dedupe_key: obs.dedupe_key.clone(),
    })
}

/// Rule 6b, best delivery evidence: the delivery time Herald reports is the best delivered
/// claim under [`rule_terminal_order`], so a reported delivery replaces an inferred one
/// (the engagement time is only an upper bound), and among equals the earliest counts.
/// This is tracked apart from the status: a hard-bounced email still remembers when it was
/// delivered. Returns whether `incoming` improves on `current`.
pub fn rule_delivery_evidence(
    channel: Channel,
    current: Option<&TerminalClaim>,
    incoming: &TerminalClaim,
) -> bool {
    debug_assert!(matches!(incoming.outcome, Outcome::Delivered { .. }));
    claim_wins(channel, current, incoming)
}

/// Rule 7, cancel only before dispatch: `Ok(true)` when the message may be cancelled
/// (accepted, scheduled, queued); `Ok(false)` when it already is (a repeated cancel is an
/// idempotent no-op); [`MessageError::CancelAfterExpiry`] when it expired; otherwise
/// [`MessageError::CancelAfterDispatch`].
///
/// Observations arriving after a cancel are still recorded and can supersede it (see
/// [`rule_status_never_lowers`]).
pub fn rule_cancel_only_before_dispatch(status: MessageStatus) -> Result<bool, MessageError> {
    match status {
        MessageStatus::Accepted | MessageStatus::Scheduled | MessageStatus::Queued => Ok(true),
        MessageStatus::Cancelled => Ok(false),
        MessageStatus::Expired => Err(MessageError::CancelAfterExpiry),
        status => Err(MessageError::CancelAfterDispatch { status }),
    }
}

/// Rule 8, capped dispatch attempts: each distinct `dispatched` observation is attempt
/// `recorded + 1`, so attempt numbers strictly increase (in arrival order); an attempt
/// beyond [`MAX_DISPATCH_ATTEMPTS`] is refused with
/// [`MessageError::DispatchAttemptsExhausted`].
pub fn rule_dispatch_attempts(recorded: u32) -> Result<u32, MessageError> {
    if recorded >= MAX_DISPATCH_ATTEMPTS {
        return Err(MessageError::DispatchAttemptsExhausted {
            max: MAX_DISPATCH_ATTEMPTS,
        });
    }
    Ok(recorded + 1)
}

/// Rule 9, expire only while open: `Ok(true)` when the message has no outcome and is not
/// cancelled. Once it has an outcome or was cancelled, expiry is an idempotent no-op
/// (`Ok(false)`): the expiry timer races provider reports and losing that race is not an
/// error. Expiring before the message's own deadline (when it has a TTL) is refused with
/// [`MessageError::ExpireBeforeDeadline`]; a message without TTL may be expired at any time
/// (an operator's decision).
///
/// An expiry is the weakest terminal claim ([`terminal_tier`] 0): a provider outcome
/// arriving afterwards replaces it.
pub fn rule_expire_only_while_open(
    status: MessageStatus,
    expires_at: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Result<bool, MessageError> {
    if status.is_terminal() || status == MessageStatus::Cancelled {
        return Ok(false);
    }
    match expires_at {
        Some(deadline) if at < deadline => Err(MessageError::ExpireBeforeDeadline {
            expires_at: deadline,
        }),
        _ => Ok(true),
    }
}

/// Rule 10, latency: milliseconds from `from` to `to`, both provider or server times as the
/// caller chooses, clamped at zero because provider clocks may run slightly behind ours.
/// Analytics always use `occurred_at`; `received_at` is kept only to measure lag.
pub fn rule_latency_ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds().max(0)
}

/// Rule 10, one latency sample per delivered message: the statistics count a message's
/// latency while its status is `delivered`, as its current value (from the best delivery
/// evidence and the earliest dispatch known), in the bucket of its delivery time. So when
/// the evidence is revised (an inferred delivery replaced by a reported one, an earlier
/// `dispatched` arriving late) the sample moves instead of being counted again, and when
/// the outcome stops being a delivery (an email that hard-bounces after its delivery) the
/// sample goes. `None` while there is nothing to count.
pub fn rule_latency_sample(
    status: MessageStatus,
    delivered_at: Option<DateTime<Utc>>,
    latency_ms: Option<i64>,
) -> Option<crate::event::LatencySample> {
    if status != MessageStatus::Delivered {
        return None;
    }
    Some(crate::event::LatencySample {
        delivered_at: delivered_at?,
        ms: latency_ms?,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;
    use crate::types::ObservationKind;

    fn t(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_700_000_000 + minutes * 60, 0).unwrap()
    }

    fn claim(outcome: Outcome, minutes: i64, key: &str) -> TerminalClaim {
        TerminalClaim {
            outcome,
            occurred_at: t(minutes),
            dedupe_key: key.into(),
        }
    }

    const DELIVERED: Outcome = Outcome::Delivered { inferred: false };
    const INFERRED: Outcome = Outcome::Delivered { inferred: true };
    const HARD: Outcome = Outcome::Bounced {
        bounce: BounceKind::Hard,
    };
    const SOFT: Outcome = Outcome::Bounced {
        bounce: BounceKind::Soft,
    };

    fn winner(channel: Channel, claims: &[TerminalClaim]) -> TerminalClaim {
        claims
            .iter()
            .max_by(|a, b| rule_terminal_order(channel, a, b))
            .unwrap()
            .clone()
    }

    #[test]
    fn rule_submit_once_replays_same_fingerprint_and_conflicts_otherwise() {
        let tenant = uuid::Uuid::from_u128(7);
        assert_eq!(rule_submit_once(None, tenant, "f1"), Ok(true));
        assert_eq!(
            rule_submit_once(Some((tenant, "f1")), tenant, "f1"),
            Ok(false)
        );
        assert_eq!(
            rule_submit_once(Some((tenant, "f1")), tenant, "f2"),
            Err(MessageError::IdempotencyKeyReused)
        );
        assert_eq!(
            rule_submit_once(Some((tenant, "f1")), uuid::Uuid::from_u128(8), "f1"),
            Err(MessageError::IdempotencyKeyReused)
        );
    }

    #[test]
    fn rule_requires_submission_refuses_an_empty_stream() {
        assert_eq!(
            rule_requires_submission(&Message::default()).unwrap_err(),
            MessageError::MessageNotFound
        );
        let submitted = crate::replay([crate::MessageEvent::MessageSubmitted(
            crate::MessageSubmitted {
                header: crate::EventHeader {
                    tenant_id: uuid::Uuid::from_u128(1),
                    message_id: uuid::Uuid::from_u128(2),
                    channel: Channel::Sms,
                    provider: "p".into(),
                    occurred_at: t(0),
                    received_at: t(0),
                    status: MessageStatus::Queued,
                    previous_status: None,
                    tags: vec![],
                    submit_latency: None,
                    dispatch_latency: None,
                },
                recipient: "+14155550123".into(),
                content: crate::MessageContent::Inline {
                    subject: None,
                    body: "b".into(),
                },
                scheduled_at: None,
                ttl_seconds: None,
                expires_at: None,
                request_fingerprint: "f".into(),
            },
        )]);
        let sub = rule_requires_submission(&submitted).unwrap();
        assert_eq!(sub.message_id, uuid::Uuid::from_u128(2));
    }

    #[test]
    fn rule_initial_status_schedules_only_future_sends() {
        assert_eq!(rule_initial_status(t(0), None), MessageStatus::Queued);
        assert_eq!(rule_initial_status(t(0), Some(t(0))), MessageStatus::Queued);
        assert_eq!(
            rule_initial_status(t(0), Some(t(-5))),
            MessageStatus::Queued
        );
        assert_eq!(
            rule_initial_status(t(0), Some(t(5))),
            MessageStatus::Scheduled
        );
    }

    #[test]
    fn rule_expires_at_counts_from_the_send_time() {
        assert_eq!(rule_expires_at(t(0), None, None), None);
        assert_eq!(rule_expires_at(t(0), Some(t(10)), None), None);
        assert_eq!(rule_expires_at(t(0), None, Some(60)), Some(t(1)));
        assert_eq!(rule_expires_at(t(0), Some(t(10)), Some(60)), Some(t(11)));
        assert_eq!(rule_expires_at(t(0), Some(t(-10)), Some(60)), Some(t(1)));
    }

    #[test]
    fn rule_observation_seen_matches_exact_keys() {
        let seen: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        assert!(rule_observation_seen(&seen, "a"));
        assert!(!rule_observation_seen(&seen, "A"));
        assert!(!rule_observation_seen(&seen, "c"));
    }

    #[test]
    fn rule_observation_limit_refuses_the_one_after_the_cap() {
        assert_eq!(rule_observation_limit(0), Ok(()));
        assert_eq!(rule_observation_limit(MAX_OBSERVATIONS - 1), Ok(()));
        assert_eq!(
            rule_observation_limit(MAX_OBSERVATIONS),
            Err(MessageError::ObservationLimitReached {
                max: MAX_OBSERVATIONS
            })
        );
    }

    #[test]
    fn rule_observed_after_submission_tolerates_skew_only() {
        assert_eq!(rule_observed_after_submission(t(0), t(0)), Ok(()));
        assert_eq!(rule_observed_after_submission(t(0), t(-15)), Ok(()));
        assert_eq!(
            rule_observed_after_submission(t(0), t(-16))
                .unwrap_err()
                .code(),
            "observed_before_submission"
        );
    }

    #[test]
    fn rule_status_never_lowers_keeps_the_higher_rank() {
        use MessageStatus::*;
        assert_eq!(rule_status_never_lowers(Queued, Dispatched), Dispatched);
        assert_eq!(rule_status_never_lowers(Dispatched, Queued), Dispatched);
        assert_eq!(rule_status_never_lowers(Deferred, Dispatched), Deferred);
        assert_eq!(rule_status_never_lowers(Dispatched, Deferred), Deferred);
        assert_eq!(rule_status_never_lowers(Delivered, Deferred), Delivered);
        // Equal rank: the current one stays.
        assert_eq!(rule_status_never_lowers(Scheduled, Queued), Scheduled);
        // A dispatch proves a cancel lost the race.
        assert_eq!(rule_status_never_lowers(Cancelled, Dispatched), Dispatched);
        assert_eq!(rule_status_never_lowers(Queued, Cancelled), Cancelled);
    }

    #[test]
    fn rule_late_bounce_is_email_hard_bounce_only() {
        assert!(rule_late_bounce(Channel::Email, HARD));
        assert!(!rule_late_bounce(Channel::Email, SOFT));
        assert!(!rule_late_bounce(Channel::Sms, HARD));
        assert!(!rule_late_bounce(Channel::Push, HARD));
        assert!(!rule_late_bounce(Channel::Email, Outcome::Failed));
    }

    #[test]
    fn late_bounce_beats_an_earlier_delivery_on_email_only() {
        let delivered = claim(DELIVERED, 1, "d");
        let bounced = claim(HARD, 60, "b");
        assert_eq!(
            winner(Channel::Email, &[delivered.clone(), bounced.clone()]),
            bounced
        );
        assert_eq!(
            winner(Channel::Sms, &[delivered.clone(), bounced.clone()]),
            delivered
        );
        // A soft bounce after delivery is an auto-reply, not an undelivery.
        let soft = claim(SOFT, 60, "s");
        assert_eq!(
            winner(Channel::Email, &[delivered.clone(), soft]),
            delivered
        );
    }

    #[test]
    fn terminal_order_earliest_wins_within_a_tier() {
        let failed = claim(Outcome::Failed, 2, "f");
        let delivered = claim(DELIVERED, 1, "d");
        let dropped = claim(Outcome::Dropped, 3, "x");
        for channel in Channel::ALL.iter().copied() {
            assert_eq!(
                winner(
                    channel,
                    &[failed.clone(), delivered.clone(), dropped.clone()]
                ),
                delivered
            );
        }
    }

    #[test]
    fn terminal_order_tiers() {
        let ch = Channel::Email;
        let expired = claim(Outcome::Expired, 0, "");
        let soft = claim(SOFT, 10, "s");
        let inferred = claim(INFERRED, 20, "o");
        let failed = claim(Outcome::Failed, 30, "f");
        let hard = claim(HARD, 40, "h");
        let ladder = [&expired, &soft, &inferred, &failed, &hard];
        for (i, lower) in ladder.iter().enumerate() {
            for higher in &ladder[i + 1..] {
                assert_eq!(rule_terminal_order(ch, higher, lower), Ordering::Greater);
                assert_eq!(rule_terminal_order(ch, lower, higher), Ordering::Less);
            }
        }
        // Off email, a hard bounce is an ordinary report: earliest wins.
        assert_eq!(
            rule_terminal_order(Channel::Sms, &failed, &hard),
            Ordering::Greater
        );
    }

    #[test]
    fn terminal_order_ties_are_pessimistic_then_by_key() {
        let ch = Channel::Sms;
        let d = claim(DELIVERED, 5, "a");
        let x = claim(Outcome::Dropped, 5, "b");
        let f = claim(Outcome::Failed, 5, "c");
        let b = claim(HARD, 5, "d");
        assert_eq!(winner(ch, &[d.clone(), x.clone(), f.clone(), b.clone()]), b);
        assert_eq!(winner(ch, &[d.clone(), x.clone(), f.clone()]), f);
        assert_eq!(winner(ch, &[d.clone(), x.clone()]), x);
        let d2 = claim(DELIVERED, 5, "0");
        assert_eq!(winner(ch, &[d.clone(), d2.clone()]), d2);
        assert_eq!(rule_terminal_order(ch, &d, &d), Ordering::Equal);
    }

    #[test]
    fn terminal_order_is_a_total_order_on_a_sample() {
        // Transitivity and antisymmetry over every triple of a varied sample: the
        // property order-independence rests on.
        let outcomes = [
            DELIVERED,
            INFERRED,
            HARD,
            SOFT,
            Outcome::Failed,
            Outcome::Dropped,
            Outcome::Expired,
        ];
        let mut claims = Vec::new();
        for (i, o) in outcomes.iter().enumerate() {
            for m in [1, 2] {
                claims.push(claim(*o, m, &format!("k{i}{m}")));
            }
        }
        for ch in Channel::ALL.iter().copied() {
            for a in &claims {
                for b in &claims {
                    let ab = rule_terminal_order(ch, a, b);
                    assert_eq!(ab, rule_terminal_order(ch, b, a).reverse());
                    assert_eq!(ab == Ordering::Equal, a == b);
                    for c in &claims {
                        if ab == Ordering::Greater
                            && rule_terminal_order(ch, b, c) == Ordering::Greater
                        {
                            assert_eq!(rule_terminal_order(ch, a, c), Ordering::Greater);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn claim_wins_when_nothing_is_known_or_it_is_stronger() {
        let a = claim(Outcome::Failed, 5, "a");
        let earlier = claim(Outcome::Dropped, 4, "b");
        assert!(claim_wins(Channel::Sms, None, &a));
        assert!(claim_wins(Channel::Sms, Some(&a), &earlier));
        assert!(!claim_wins(Channel::Sms, Some(&earlier), &a));
        assert!(
            !claim_wins(Channel::Sms, Some(&a), &a),
            "a claim does not beat itself"
        );
    }

    #[test]
    fn rule_engagement_implies_delivery_at_the_engagement_time() {
        let obs = |kind| Observation {
            kind,
            dedupe_key: "e1".into(),
            occurred_at: t(9),
            received_at: t(10),
            details: Value::Null,
        };
        for kind in [
            ObservationKind::Opened,
            ObservationKind::Clicked,
            ObservationKind::Complained,
            ObservationKind::Unsubscribed,
        ] {
            assert_eq!(
                rule_engagement_implies_delivery(&obs(kind)),
                Some(claim(INFERRED, 9, "e1"))
            );
        }
        for kind in [
            ObservationKind::Dispatched,
            ObservationKind::Delivered,
            ObservationKind::BouncedHard,
        ] {
            assert_eq!(rule_engagement_implies_delivery(&obs(kind)), None);
        }
    }

    #[test]
    fn engagement_inference_does_not_override_a_failure_report() {
        let inferred = claim(INFERRED, 1, "o");
        for beaten in [claim(Outcome::Expired, 0, ""), claim(SOFT, 0, "s")] {
            assert!(claim_wins(Channel::Email, Some(&beaten), &inferred));
        }
        for stronger in [
            claim(Outcome::Failed, 2, "f"),
            claim(Outcome::Dropped, 2, "x"),
            claim(HARD, 2, "h"),
        ] {
            assert!(!claim_wins(Channel::Sms, Some(&stronger), &inferred));
        }
    }

    #[test]
    fn rule_delivery_evidence_prefers_reports_then_earliest() {
        let ch = Channel::Email;
        let inferred_late = claim(INFERRED, 10, "o1");
        let inferred_early = claim(INFERRED, 5, "o2");
        let reported = claim(DELIVERED, 8, "d");
        assert!(rule_delivery_evidence(ch, None, &inferred_late));
        assert!(rule_delivery_evidence(
            ch,
            Some(&inferred_late),
            &inferred_early
        ));
        assert!(!rule_delivery_evidence(
            ch,
            Some(&inferred_early),
            &inferred_late
        ));
        // A report replaces an inference even when later than it.
        assert!(rule_delivery_evidence(ch, Some(&inferred_early), &reported));
        assert!(!rule_delivery_evidence(
            ch,
            Some(&reported),
            &inferred_early
        ));
        assert!(rule_delivery_evidence(
            ch,
            Some(&reported),
            &claim(DELIVERED, 7, "d0")
        ));
    }

    #[test]
    fn rule_cancel_only_before_dispatch_by_status() {
        use MessageStatus::*;
        for s in [Accepted, Scheduled, Queued] {
            assert_eq!(rule_cancel_only_before_dispatch(s), Ok(true), "{s}");
        }
        assert_eq!(rule_cancel_only_before_dispatch(Cancelled), Ok(false));
        assert_eq!(
            rule_cancel_only_before_dispatch(Expired),
            Err(MessageError::CancelAfterExpiry)
        );
        for s in [Dispatched, Deferred, Delivered, Bounced, Failed, Dropped] {
            assert_eq!(
                rule_cancel_only_before_dispatch(s),
                Err(MessageError::CancelAfterDispatch { status: s })
            );
        }
    }

    #[test]
    fn rule_dispatch_attempts_increase_up_to_the_cap() {
        let mut recorded = 0;
        let mut attempts = Vec::new();
        while let Ok(n) = rule_dispatch_attempts(recorded) {
            attempts.push(n);
            recorded = n;
        }
        assert_eq!(attempts, (1..=MAX_DISPATCH_ATTEMPTS).collect::<Vec<_>>());
        assert_eq!(
            rule_dispatch_attempts(MAX_DISPATCH_ATTEMPTS)
                .unwrap_err()
                .code(),
            "dispatch_attempts_exhausted"
        );
    }

    #[test]
    fn rule_expire_only_while_open_by_status_and_deadline() {
        use MessageStatus::*;
        for s in [Accepted, Scheduled, Queued, Dispatched, Deferred] {
            assert_eq!(rule_expire_only_while_open(s, None, t(0)), Ok(true), "{s}");
            assert_eq!(rule_expire_only_while_open(s, Some(t(5)), t(5)), Ok(true));
            assert_eq!(
                rule_expire_only_while_open(s, Some(t(5)), t(4)),
                Err(MessageError::ExpireBeforeDeadline { expires_at: t(5) })
            );
        }
        for s in [Cancelled, Delivered, Bounced, Failed, Dropped, Expired] {
            assert_eq!(
                rule_expire_only_while_open(s, Some(t(5)), t(4)),
                Ok(false),
                "{s}"
            );
        }
    }

    #[test]
    fn rule_latency_sample_exists_only_for_delivered_messages() {
        let sample = crate::event::LatencySample {
            delivered_at: t(2),
            ms: 120_000,
        };
        assert_eq!(
            rule_latency_sample(MessageStatus::Delivered, Some(t(2)), Some(120_000)),
            Some(sample)
        );
        for status in MessageStatus::ALL.iter().copied() {
            if status != MessageStatus::Delivered {
                assert_eq!(
                    rule_latency_sample(status, Some(t(2)), Some(120_000)),
                    None,
                    "{status}"
                );
            }
        }
        assert_eq!(
            rule_latency_sample(MessageStatus::Delivered, Some(t(2)), None),
            None
        );
        assert_eq!(
            rule_latency_sample(MessageStatus::Delivered, None, Some(5)),
            None
        );
    }

    #[test]
    fn rule_latency_ms_is_clamped_at_zero() {
        assert_eq!(rule_latency_ms(t(0), t(2)), 120_000);
        assert_eq!(rule_latency_ms(t(2), t(0)), 0);
        assert_eq!(rule_latency_ms(t(1), t(1)), 0);
    }
}
