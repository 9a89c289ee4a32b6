//! Builders shared by the aggregate-level tests.

use chrono::{DateTime, Duration, TimeZone, Utc};
use cqrs_es::Aggregate;
use serde_json::Value;
use uuid::Uuid;

use crate::{
    decide, Channel, Message, MessageCommand, MessageContent, MessageError, MessageEvent,
    Observation, ObservationKind, SubmitMessage,
};

pub const TENANT: Uuid = Uuid::from_u128(0x1111);
pub const MESSAGE: Uuid = Uuid::from_u128(0x2222);

/// `minutes` after the fixed submission instant.
pub fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

pub fn recipient(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "ada@example.com",
        Channel::Sms => "+14155550123",
        Channel::Push => "fcm:token-123",
    }
}

/// A valid submit at `t(0)`.
pub fn submit(channel: Channel) -> SubmitMessage {
    SubmitMessage {
        tenant_id: TENANT,
        message_id: MESSAGE,
        channel,
        recipient: recipient(channel).into(),
        provider: "acme".into(),
        content: MessageContent::Inline {
            subject: None,
            body: "hello".into(),
        },
        tags: vec!["welcome".into()],
        scheduled_at: None,
        ttl_seconds: None,
        submitted_at: t(0),
        request_fingerprint: "fp-1".into(),
    }
}

/// An observation at `t(minutes)`, received 30 s later.
pub fn obs(kind: ObservationKind, key: &str, minutes: i64) -> Observation {
    Observation {
        kind,
        dedupe_key: key.into(),
        occurred_at: t(minutes),
        received_at: t(minutes) + Duration::seconds(30),
        details: Value::Null,
    }
}

pub fn observe(kind: ObservationKind, key: &str, minutes: i64) -> MessageCommand {
    MessageCommand::RecordObservation(obs(kind, key, minutes))
}

/// Decides `cmd` against `state` and applies the result, like the command service does.
pub fn run(state: &mut Message, cmd: MessageCommand) -> Result<Vec<MessageEvent>, MessageError> {
    let events = decide(state, cmd)?;
    for e in &events {
        state.apply(e.clone());
    }
    Ok(events)
}

/// Runs `cmd` and panics if it is refused.
pub fn ok(state: &mut Message, cmd: MessageCommand) -> Vec<MessageEvent> {
    match run(state, cmd.clone()) {
        Ok(events) => events,
        Err(e) => panic!("{cmd:?} refused: {e}"),
    }
}

/// A freshly submitted (queued) message.
pub fn submitted(channel: Channel) -> Message {
    let mut m = Message::default();
    ok(&mut m, MessageCommand::Submit(submit(channel)));
    m
}

pub fn type_names(events: &[MessageEvent]) -> Vec<&'static str> {
    events.iter().map(MessageEvent::type_name).collect()
}
