//! The Message aggregate: state, decisions and the cqrs-es binding.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::command::{MessageCommand, Observation, SubmitMessage};
use crate::error::MessageError;
use crate::event::{
    EngagementRecorded, EventHeader, LatencyChange, LatencySample, MessageBounced,
    MessageCancelled, MessageDeferred, MessageDelivered, MessageDispatched, MessageDropped,
    MessageEvent, MessageExpired, MessageFailed, MessageSubmitted,
};
use crate::rules::{
    claim_wins, rule_cancel_only_before_dispatch, rule_delivery_evidence, rule_dispatch_attempts,
    rule_engagement_implies_delivery, rule_expire_only_while_open, rule_expires_at,
    rule_initial_status, rule_latency_ms, rule_latency_sample, rule_observation_limit,
    rule_observation_seen, rule_observed_after_submission, rule_requires_submission,
    rule_status_never_lowers, rule_submit_once, Outcome, TerminalClaim,
};
use crate::types::{
    BounceKind, Channel, Engagement, MessageContent, MessageStatus, ObservationKind,
};
use crate::validate::{validate_cancel_reason, validate_observation, validate_submit};

/// What the message was created with (from [`MessageSubmitted`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    /// The tenant the message belongs to.
    pub tenant_id: Uuid,
    /// The message (and aggregate) id.
    pub message_id: Uuid,
    /// How it reaches its recipient.
    pub channel: Channel,
    /// Email address, E.164 number or push token.
    pub recipient: String,
    /// The provider that sends it.
    pub provider: String,
    /// What is sent.
    pub content: MessageContent,
    /// The client's labels, carried on every event.
    pub tags: Vec<String>,
    /// Requested send time.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Requested time-to-live.
    pub ttl_seconds: Option<u32>,
    /// When the time-to-live runs out.
    pub expires_at: Option<DateTime<Utc>>,
    /// Server time of the submission.
    pub submitted_at: DateTime<Utc>,
    /// Hash of the client's body.
    pub request_fingerprint: String,
}

/// The Message aggregate: one per message, rebuilt from its events.
///
/// The default value is a message that was never submitted (an empty stream).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    submission: Option<Submission>,
    /// As recorded by the last event (decisions are stored, not recomputed on replay).
    status: MessageStatus,
    /// Highest-ranked non-terminal status seen; the status when there is no outcome.
    progress: MessageStatus,
    /// Winning terminal claim under the terminal order.
    outcome: Option<TerminalClaim>,
    /// Best delivery evidence (reported beats inferred, then earliest).
    delivery: Option<TerminalClaim>,
    dispatch_attempts: u32,
    dispatched_at: Option<DateTime<Utc>>,
    deferred_at: Option<DateTime<Utc>>,
    engagement: Engagement,
    cancelled_at: Option<DateTime<Utc>>,
    cancel_reason: Option<String>,
    expired_at: Option<DateTime<Utc>>,
    /// Dedupe keys of every recorded observation (ordered so serialization is stable).
    seen: BTreeSet<String>,
}

/// Rebuilds a message from its stream (a plain fold of [`Aggregate::apply`]).
pub fn replay<I: IntoIterator<Item = MessageEvent>>(events: I) -> Message {
    let mut message = Message::default();
    for event in events {
        message.apply(event);
    }
    message
}

/// Decides which events a command produces against `state`, without changing it.
///
/// Pure and synchronous: [`Aggregate::handle`] writes exactly these events to its sink, and
/// services or tests can call this directly. An empty vector means the command was an
/// idempotent no-op (replayed submit, duplicate observation, repeated cancel, late expiry).
///
/// Input validation comes first, so a malformed command is
/// [`Invalid`](crate::ErrorKind::Invalid) whatever the state, then the rules of
/// [`crate::rules`] in the order their docs give.
pub fn decide(state: &Message, command: MessageCommand) -> Result<Vec<MessageEvent>, MessageError> {
    let events = match command {
        MessageCommand::Submit(cmd) => decide_submit(state, cmd),
        MessageCommand::RecordObservation(obs) => decide_observation(state, obs),
        MessageCommand::Cancel {
            reason,
            requested_at,
        } => decide_cancel(state, reason, requested_at),
        MessageCommand::Expire { at } => decide_expire(state, at),
    }?;
    Ok(with_latency_changes(state, events))
}

/// Records on each event how it changed the message's latency samples
/// ([`rule_latency_sample`]), comparing the state before and after it. A derived fact: it
/// lets the read side keep one sample per message without reading the message's state.
fn with_latency_changes(state: &Message, events: Vec<MessageEvent>) -> Vec<MessageEvent> {
    let mut scratch = state.clone();
    events
        .into_iter()
        .map(|mut event| {
            let before = (scratch.submit_latency(), scratch.dispatch_latency());
            scratch.apply(event.clone());
            let after = (scratch.submit_latency(), scratch.dispatch_latency());
            let change = |b: Option<LatencySample>, a: Option<LatencySample>| {
                (b != a).then_some(LatencyChange {
                    before: b,
                    after: a,
                })
            };
            let header = event.header_mut();
            header.submit_latency = change(before.0, after.0);
            header.dispatch_latency = change(before.1, after.1);
            event
        })
        .collect()
}

fn decide_submit(state: &Message, cmd: SubmitMessage) -> Result<Vec<MessageEvent>, MessageError> {
    validate_submit(&cmd)?;
    let existing = state
        .submission
        .as_ref()
        .map(|s| (s.tenant_id, s.request_fingerprint.as_str()));
    if !rule_submit_once(existing, cmd.tenant_id, &cmd.request_fingerprint)? {
        return Ok(Vec::new());
    }
    let status = rule_initial_status(cmd.submitted_at, cmd.scheduled_at);
    let expires_at = rule_expires_at(cmd.submitted_at, cmd.scheduled_at, cmd.ttl_seconds);
    Ok(vec![MessageEvent::MessageSubmitted(MessageSubmitted {
        header: EventHeader {
            tenant_id: cmd.tenant_id,
            message_id: cmd.message_id,
            channel: cmd.channel,
            provider: cmd.provider,
            occurred_at: cmd.submitted_at,
            received_at: cmd.submitted_at,
            status,
            previous_status: None,
            tags: cmd.tags,
            submit_latency: None,
            dispatch_latency: None,
        },
        recipient: cmd.recipient,
        content: cmd.content,
        scheduled_at: cmd.scheduled_at,
        ttl_seconds: cmd.ttl_seconds,
        expires_at,
        request_fingerprint: cmd.request_fingerprint,
    })])
}

/// Builds events one at a time against a scratch copy of the state, so an event's
/// `previous_status` is the status the previous event of the same command left.
struct Emitter {
    state: Message,
    events: Vec<MessageEvent>,
}

impl Emitter {
    fn new(state: &Message) -> Self {
        Emitter {
            state: state.clone(),
            events: Vec::new(),
        }
    }

    fn emit(&mut self, event: MessageEvent) {
        self.state.apply(event.clone());
        self.events.push(event);
    }
}

fn decide_observation(
    state: &Message,
    obs: Observation,
) -> Result<Vec<MessageEvent>, MessageError> {
    validate_observation(&obs)?;
    let sub = rule_requires_submission(state)?;
    rule_observed_after_submission(sub.submitted_at, obs.occurred_at)?;
    if rule_observation_seen(&state.seen, &obs.dedupe_key) {
        return Ok(Vec::new());
    }
    rule_observation_limit(state.seen.len())?;

    let mut out = Emitter::new(state);
    let channel = sub.channel;
    let reported = |outcome| TerminalClaim {
        outcome,
        occurred_at: obs.occurred_at,
        dedupe_key: obs.dedupe_key.clone(),
    };
    match obs.kind {
        ObservationKind::Dispatched => {
            let attempt = rule_dispatch_attempts(state.dispatch_attempts)?;
            let dispatched_at = state
                .dispatched_at
                .map_or(obs.occurred_at, |t| t.min(obs.occurred_at));
            let latency_ms_from_dispatch = match &state.delivery {
                Some(d) if state.dispatched_at != Some(dispatched_at) => {
                    Some(rule_latency_ms(dispatched_at, d.occurred_at))
                }
                _ => None,
            };
            let header = state.header(
                sub,
                obs.occurred_at,
                obs.received_at,
                state.status_with_progress(MessageStatus::Dispatched),
            );
            out.emit(MessageEvent::MessageDispatched(MessageDispatched {
                header,
                dedupe_key: obs.dedupe_key,
                details: obs.details,
                attempt,
                dispatched_at,
                latency_ms_from_dispatch,
            }));
        }
        ObservationKind::Deferred => {
            let header = state.header(
                sub,
                obs.occurred_at,
                obs.received_at,
                state.status_with_progress(MessageStatus::Deferred),
            );
            out.emit(MessageEvent::MessageDeferred(MessageDeferred {
                header,
                dedupe_key: obs.dedupe_key,
                details: obs.details,
            }));
        }
        ObservationKind::Delivered => {
            let claim = reported(Outcome::Delivered { inferred: false });
            let event = state.delivered_event(sub, &obs, claim, obs.details.clone());
            out.emit(event);
        }
        ObservationKind::BouncedHard | ObservationKind::BouncedSoft => {
            let bounce = if obs.kind == ObservationKind::BouncedHard {
                BounceKind::Hard
            } else {
                BounceKind::Soft
            };
            let claim = reported(Outcome::Bounced { bounce });
            let header = state.header(
                sub,
                obs.occurred_at,
                obs.received_at,
                state.status_with_claim(channel, &claim),
            );
            out.emit(MessageEvent::MessageBounced(MessageBounced {
                header,
                dedupe_key: obs.dedupe_key,
                details: obs.details,
                bounce,
            }));
        }
        ObservationKind::Failed => {
            let claim = reported(Outcome::Failed);
            let header = state.header(
                sub,
                obs.occurred_at,
                obs.received_at,
                state.status_with_claim(channel, &claim),
            );
            out.emit(MessageEvent::MessageFailed(MessageFailed {
                header,
                dedupe_key: obs.dedupe_key,
                details: obs.details,
            }));
        }
        ObservationKind::Dropped => {
            let claim = reported(Outcome::Dropped);
            let header = state.header(
                sub,
                obs.occurred_at,
                obs.received_at,
                state.status_with_claim(channel, &claim),
            );
            out.emit(MessageEvent::MessageDropped(MessageDropped {
                header,
                dedupe_key: obs.dedupe_key,
                details: obs.details,
            }));
        }
        ObservationKind::Opened
        | ObservationKind::Clicked
        | ObservationKind::Complained
        | ObservationKind::Unsubscribed => {
            if let Some(claim) = rule_engagement_implies_delivery(&obs) {
                // Only when it improves the delivery evidence: otherwise a reported or
                // earlier inferred delivery already dominates it, for status and time alike.
                if rule_delivery_evidence(channel, state.delivery.as_ref(), &claim) {
                    let event = state.delivered_event(sub, &obs, claim, Value::Null);
                    out.emit(event);
                }
            }
            if let Some(engagement) = obs.kind.engagement() {
                let current = &out.state;
                let header = current.header(sub, obs.occurred_at, obs.received_at, current.status);
                let first = !current.engagement.has(engagement);
                out.emit(MessageEvent::EngagementRecorded(EngagementRecorded {
                    header,
                    dedupe_key: obs.dedupe_key,
                    details: obs.details,
                    engagement,
                    first,
                }));
            }
        }
    }
    Ok(out.events)
}

fn decide_cancel(
    state: &Message,
    reason: Option<String>,
    requested_at: DateTime<Utc>,
) -> Result<Vec<MessageEvent>, MessageError> {
    if let Some(reason) = &reason {
        validate_cancel_reason(reason)?;
    }
    let sub = rule_requires_submission(state)?;
    if !rule_cancel_only_before_dispatch(state.status)? {
        return Ok(Vec::new());
    }
    let status = state.status_with_progress(MessageStatus::Cancelled);
    Ok(vec![MessageEvent::MessageCancelled(MessageCancelled {
        header: state.header(sub, requested_at, requested_at, status),
        reason,
    })])
}

fn decide_expire(state: &Message, at: DateTime<Utc>) -> Result<Vec<MessageEvent>, MessageError> {
    let sub = rule_requires_submission(state)?;
    if !rule_expire_only_while_open(state.status, sub.expires_at, at)? {
        return Ok(Vec::new());
    }
    let claim = expiry_claim(at);
    let status = state.status_with_claim(sub.channel, &claim);
    Ok(vec![MessageEvent::MessageExpired(MessageExpired {
        header: state.header(sub, at, at, status),
    })])
}

fn expiry_claim(at: DateTime<Utc>) -> TerminalClaim {
    TerminalClaim {
        outcome: Outcome::Expired,
        occurred_at: at,
        dedupe_key: String::new(),
    }
}

impl Message {
    /// Status from the facts alone: the winning terminal claim if any, else the progress.
    fn derived_status(progress: MessageStatus, outcome: Option<&TerminalClaim>) -> MessageStatus {
        outcome.map_or(progress, |c| c.outcome.status())
    }

    /// The status the recorded facts imply; equal to the recorded [`Message::status`]
    /// whenever `decide` and `apply` agree (checked by the replay property).
    #[cfg(test)]
    pub(crate) fn status_from_facts(&self) -> MessageStatus {
        Self::derived_status(self.progress, self.outcome.as_ref())
    }

    fn status_with_progress(&self, incoming: MessageStatus) -> MessageStatus {
        let progress = rule_status_never_lowers(self.progress, incoming);
        Self::derived_status(progress, self.outcome.as_ref())
    }

    fn outcome_with(&self, channel: Channel, claim: &TerminalClaim) -> Option<TerminalClaim> {
        if claim_wins(channel, self.outcome.as_ref(), claim) {
            Some(claim.clone())
        } else {
            self.outcome.clone()
        }
    }

    fn status_with_claim(&self, channel: Channel, claim: &TerminalClaim) -> MessageStatus {
        Self::derived_status(self.progress, self.outcome_with(channel, claim).as_ref())
    }

    /// Header for an event of this message; the status before it is the current one.
    fn header(
        &self,
        sub: &Submission,
        occurred_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
        status: MessageStatus,
    ) -> EventHeader {
        EventHeader {
            tenant_id: sub.tenant_id,
            message_id: sub.message_id,
            channel: sub.channel,
            provider: sub.provider.clone(),
            occurred_at,
            received_at,
            status,
            previous_status: Some(self.status),
            tags: sub.tags.clone(),
            submit_latency: None,
            dispatch_latency: None,
        }
    }

    /// A delivery event (reported or inferred) for `claim`, with latencies when it becomes
    /// the best delivery evidence.
    fn delivered_event(
        &self,
        sub: &Submission,
        obs: &Observation,
        claim: TerminalClaim,
        details: Value,
    ) -> MessageEvent {
        let improves = rule_delivery_evidence(sub.channel, self.delivery.as_ref(), &claim);
        let (latency_ms_from_submit, latency_ms_from_dispatch) = if improves {
            (
                Some(rule_latency_ms(sub.submitted_at, claim.occurred_at)),
                self.dispatched_at
                    .map(|d| rule_latency_ms(d, claim.occurred_at)),
            )
        } else {
            (None, None)
        };
        let inferred = matches!(claim.outcome, Outcome::Delivered { inferred: true });
        MessageEvent::MessageDelivered(MessageDelivered {
            header: self.header(
                sub,
                obs.occurred_at,
                obs.received_at,
                self.status_with_claim(sub.channel, &claim),
            ),
            dedupe_key: claim.dedupe_key,
            details,
            inferred,
            latency_ms_from_submit,
            latency_ms_from_dispatch,
        })
    }

    /// A provider-reported terminal outcome: its report is remembered, its claim weighed.
    fn take_reported(
        &mut self,
        channel: Channel,
        outcome: Outcome,
        occurred_at: DateTime<Utc>,
        dedupe_key: String,
    ) {
        self.remember(&dedupe_key);
        self.take_claim(
            channel,
            TerminalClaim {
                outcome,
                occurred_at,
                dedupe_key,
            },
        );
    }

    fn take_claim(&mut self, channel: Channel, claim: TerminalClaim) {
        self.outcome = self.outcome_with(channel, &claim);
    }

    fn remember(&mut self, dedupe_key: &str) {
        self.seen.insert(dedupe_key.to_owned());
    }

    /// Whether a message was submitted (the stream is not empty).
    pub fn is_submitted(&self) -> bool {
        self.submission.is_some()
    }

    /// What the message was created with.
    pub fn submission(&self) -> Option<&Submission> {
        self.submission.as_ref()
    }

    /// `MessageNotFound` unless the message exists and belongs to `tenant_id`, so another
    /// tenant's message is indistinguishable from a missing one.
    pub fn ensure_tenant(&self, tenant_id: Uuid) -> Result<&Submission, MessageError> {
        match &self.submission {
            Some(sub) if sub.tenant_id == tenant_id => Ok(sub),
            _ => Err(MessageError::MessageNotFound),
        }
    }

    /// The tenant the message belongs to (`None` before submission).
    pub fn tenant_id(&self) -> Option<Uuid> {
        self.submission.as_ref().map(|s| s.tenant_id)
    }

    /// The message id (`None` before submission).
    pub fn message_id(&self) -> Option<Uuid> {
        self.submission.as_ref().map(|s| s.message_id)
    }

    /// The message's channel (`None` before submission).
    pub fn channel(&self) -> Option<Channel> {
        self.submission.as_ref().map(|s| s.channel)
    }

    /// The message's provider (`None` before submission).
    pub fn provider(&self) -> Option<&str> {
        self.submission.as_ref().map(|s| s.provider.as_str())
    }

    /// Current status (`accepted`, the lattice bottom, before submission).
    pub fn status(&self) -> MessageStatus {
        self.status
    }

    /// The terminal claim that decided the status, if it is terminal.
    pub fn outcome(&self) -> Option<&TerminalClaim> {
        self.outcome.as_ref()
    }

    /// When the outcome happened, if the status is terminal.
    pub fn outcome_at(&self) -> Option<DateTime<Utc>> {
        self.outcome.as_ref().map(|c| c.occurred_at)
    }

    /// Bounce kind, when the status is `bounced`.
    pub fn bounce(&self) -> Option<BounceKind> {
        match self.outcome.as_ref().map(|c| c.outcome) {
            Some(Outcome::Bounced { bounce }) => Some(bounce),
            _ => None,
        }
    }

    /// Dispatch attempts recorded.
    pub fn dispatch_attempts(&self) -> u32 {
        self.dispatch_attempts
    }

    /// Earliest reported dispatch time.
    pub fn dispatched_at(&self) -> Option<DateTime<Utc>> {
        self.dispatched_at
    }

    /// Earliest reported deferral time.
    pub fn deferred_at(&self) -> Option<DateTime<Utc>> {
        self.deferred_at
    }

    /// The best delivery claim (whatever the status; see
    /// [`crate::rules::rule_delivery_evidence`]): it changes exactly when an event becomes
    /// the new delivery evidence, even if the time does not.
    pub fn delivery(&self) -> Option<&TerminalClaim> {
        self.delivery.as_ref()
    }

    /// Best known delivery time (whatever the status; see [`crate::rules::rule_delivery_evidence`]).
    pub fn delivered_at(&self) -> Option<DateTime<Utc>> {
        self.delivery.as_ref().map(|c| c.occurred_at)
    }

    /// Whether the best known delivery is only inferred from engagement.
    pub fn delivery_inferred(&self) -> Option<bool> {
        self.delivery
            .as_ref()
            .map(|c| matches!(c.outcome, Outcome::Delivered { inferred: true }))
    }

    /// Delivery latency from submission, when a delivery is known.
    pub fn latency_ms_from_submit(&self) -> Option<i64> {
        let sub = self.submission.as_ref()?;
        self.delivered_at()
            .map(|d| rule_latency_ms(sub.submitted_at, d))
    }

    /// Delivery latency from the first dispatch, when both are known.
    pub fn latency_ms_from_dispatch(&self) -> Option<i64> {
        Some(rule_latency_ms(self.dispatched_at?, self.delivered_at()?))
    }

    /// The submit-to-delivered sample the statistics count for this message
    /// ([`rule_latency_sample`]).
    pub fn submit_latency(&self) -> Option<LatencySample> {
        rule_latency_sample(
            self.status,
            self.delivered_at(),
            self.latency_ms_from_submit(),
        )
    }

    /// The dispatch-to-delivered sample the statistics count for this message.
    pub fn dispatch_latency(&self) -> Option<LatencySample> {
        rule_latency_sample(
            self.status,
            self.delivered_at(),
            self.latency_ms_from_dispatch(),
        )
    }

    /// Engagement flags and first times.
    pub fn engagement(&self) -> &Engagement {
        &self.engagement
    }

    /// Latest engagement of any kind.
    pub fn last_engagement_at(&self) -> Option<DateTime<Utc>> {
        self.engagement.last_at
    }

    /// When the client cancelled it (kept even if provider evidence superseded the cancel).
    pub fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.cancelled_at
    }

    /// The client's cancel reason.
    pub fn cancel_reason(&self) -> Option<&str> {
        self.cancel_reason.as_deref()
    }

    /// When Herald expired it (kept even if a provider outcome superseded the expiry).
    pub fn expired_at(&self) -> Option<DateTime<Utc>> {
        self.expired_at
    }

    /// When its time-to-live runs out.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.submission.as_ref().and_then(|s| s.expires_at)
    }

    /// Distinct observations recorded (at most [`crate::rules::MAX_OBSERVATIONS`]).
    pub fn observation_count(&self) -> usize {
        self.seen.len()
    }

    /// Whether an observation with this dedupe key was recorded.
    pub fn has_seen(&self, dedupe_key: &str) -> bool {
        self.seen.contains(dedupe_key)
    }
}

impl Aggregate for Message {
    const TYPE: &'static str = "Message";
    type Command = MessageCommand;
    type Event = MessageEvent;
    type Error = MessageError;
    type Services = ();

    async fn handle(
        &mut self,
        command: Self::Command,
        _services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        for event in decide(self, command)? {
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: Self::Event) {
        let channel = event.channel();
        self.status = event.status();
        match event {
            MessageEvent::MessageSubmitted(e) => {
                self.progress = e.header.status;
                self.submission = Some(Submission {
                    tenant_id: e.header.tenant_id,
                    message_id: e.header.message_id,
                    channel: e.header.channel,
                    recipient: e.recipient,
                    provider: e.header.provider,
                    content: e.content,
                    tags: e.header.tags.clone(),
                    scheduled_at: e.scheduled_at,
                    ttl_seconds: e.ttl_seconds,
                    expires_at: e.expires_at,
                    submitted_at: e.header.occurred_at,
                    request_fingerprint: e.request_fingerprint,
                });
            }
            MessageEvent::MessageDispatched(e) => {
                self.remember(&e.dedupe_key);
                self.progress = rule_status_never_lowers(self.progress, MessageStatus::Dispatched);
                self.dispatch_attempts = self.dispatch_attempts.max(e.attempt);
                self.dispatched_at = Some(
                    self.dispatched_at
                        .map_or(e.header.occurred_at, |t| t.min(e.header.occurred_at)),
                );
            }
            MessageEvent::MessageDeferred(e) => {
                self.remember(&e.dedupe_key);
                self.progress = rule_status_never_lowers(self.progress, MessageStatus::Deferred);
                self.deferred_at = Some(
                    self.deferred_at
                        .map_or(e.header.occurred_at, |t| t.min(e.header.occurred_at)),
                );
            }
            MessageEvent::MessageDelivered(e) => {
                self.remember(&e.dedupe_key);
                let claim = TerminalClaim {
                    outcome: Outcome::Delivered {
                        inferred: e.inferred,
                    },
                    occurred_at: e.header.occurred_at,
                    dedupe_key: e.dedupe_key,
                };
                if rule_delivery_evidence(channel, self.delivery.as_ref(), &claim) {
                    self.delivery = Some(claim.clone());
                }
                self.take_claim(channel, claim);
            }
            MessageEvent::MessageBounced(e) => self.take_reported(
                channel,
                Outcome::Bounced { bounce: e.bounce },
                e.header.occurred_at,
                e.dedupe_key,
            ),
            MessageEvent::MessageFailed(e) => {
                self.take_reported(channel, Outcome::Failed, e.header.occurred_at, e.dedupe_key)
            }
            MessageEvent::MessageDropped(e) => self.take_reported(
                channel,
                Outcome::Dropped,
                e.header.occurred_at,
                e.dedupe_key,
            ),
            MessageEvent::MessageExpired(e) => {
                self.expired_at = Some(e.header.occurred_at);
                self.take_claim(channel, expiry_claim(e.header.occurred_at));
            }
            MessageEvent::MessageCancelled(e) => {
                self.progress = rule_status_never_lowers(self.progress, MessageStatus::Cancelled);
                self.cancelled_at = Some(e.header.occurred_at);
                self.cancel_reason = e.reason;
            }
            MessageEvent::EngagementRecorded(e) => {
                self.remember(&e.dedupe_key);
                self.engagement.record(e.engagement, e.header.occurred_at);
            }
        }
    }
}
