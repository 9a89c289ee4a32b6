//! Writing events the way the command service does, and the workloads tests write.
//!
//! [`Writer`] decides each command on the message's replayed state (loaded through
//! event-store's repository, as the command service loads it) and appends its events
//! through the group-commit [`Appender`], so concurrent writers share transactions exactly
//! as concurrent commands do.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, DomainEvent, EventStore};
use domain::{
    Channel, Message, MessageCommand, MessageContent, Observation, ObservationKind, SubmitMessage,
};
use event_store::{AppendError, Appender, EventRepository, EventRow};
use sqlx::PgPool;
use uuid::Uuid;

/// Appends commands' events to one event store; cheap to clone (one appender shared).
#[derive(Clone)]
pub struct Writer {
    store: std::sync::Arc<PersistedEventStore<EventRepository, Message>>,
    appender: Appender,
}

impl Writer {
    /// A writer into `pool`'s event store.
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: std::sync::Arc::new(PersistedEventStore::new_event_store(EventRepository::new(
                pool.clone(),
            ))),
            appender: Appender::start(pool, Message::TYPE, 2, 2_000),
        }
    }

    /// Decides `cmd` on message `id`'s state and appends the events (retrying a lost
    /// race). Returns how many events were appended; panics when the domain refuses.
    pub async fn append(&self, id: Uuid, cmd: MessageCommand) -> usize {
        let aggregate_id = id.to_string();
        loop {
            let ctx = self
                .store
                .load_aggregate(&aggregate_id)
                .await
                .expect("load");
            let events = match domain::decide(&ctx.aggregate, cmd.clone()) {
                Ok(e) => e,
                Err(e) => panic!("{cmd:?} refused: {e}"),
            };
            if events.is_empty() {
                return 0;
            }
            let metadata = serde_json::to_string(&HashMap::from([
                ("correlation_id".to_string(), Uuid::new_v4().to_string()),
                ("causation_id".to_string(), Uuid::new_v4().to_string()),
                (
                    "traceparent".to_string(),
                    format!("00-{}-00000000000000a1-01", Uuid::new_v4().simple()),
                ),
                ("tenant_id".to_string(), events[0].tenant_id().to_string()),
                ("received_at".to_string(), Utc::now().to_rfc3339()),
            ]))
            .expect("metadata serialises");
            let current = ctx.current_sequence as i64;
            let rows: Vec<EventRow> = events
                .iter()
                .enumerate()
                .map(|(i, e)| EventRow {
                    aggregate_id: aggregate_id.clone(),
                    sequence: current + i as i64 + 1,
                    event_type: e.event_type(),
                    event_version: e.event_version(),
                    payload: serde_json::to_string(e).expect("an event serialises"),
                    metadata: metadata.clone(),
                })
                .collect();
            match self.appender.append(rows).await {
                Ok(_) => return events.len(),
                Err(AppendError::Conflict) => continue,
                Err(e) => panic!("append failed: {e}"),
            }
        }
    }

    /// Runs `plan` with `writers` concurrent tasks (each message belongs to one task; a
    /// task interleaves the commands of its messages). Returns the events appended.
    pub async fn write(&self, plan: Plan, writers: usize) -> usize {
        let mut lanes: Vec<Vec<(Uuid, Vec<MessageCommand>)>> = vec![Vec::new(); writers.max(1)];
        for (i, m) in plan.messages.into_iter().enumerate() {
            lanes[i % writers.max(1)].push(m);
        }
        let mut tasks = Vec::new();
        for lane in lanes {
            let writer = self.clone();
            tasks.push(tokio::spawn(async move {
                let mut queues: Vec<(Uuid, std::collections::VecDeque<MessageCommand>)> = lane
                    .into_iter()
                    .map(|(id, cmds)| (id, cmds.into()))
                    .collect();
                let mut n = 0;
                while !queues.is_empty() {
                    for (id, q) in queues.iter_mut() {
                        if let Some(cmd) = q.pop_front() {
                            n += writer.append(*id, cmd).await;
                        }
                    }
                    queues.retain(|(_, q)| !q.is_empty());
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.expect("writer task");
        }
        total
    }
}

/// xorshift64*: deterministic randomness without a dependency.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Commands for a set of messages.
#[derive(Clone, Default)]
pub struct Plan {
    /// Each message and its commands in the order they are sent.
    pub messages: Vec<(Uuid, Vec<MessageCommand>)>,
}

impl Plan {
    /// The same plan with every time moved by `by` (to place a workload across a DST
    /// change, say).
    pub fn shifted(mut self, by: chrono::Duration) -> Plan {
        for (_, cmds) in &mut self.messages {
            for cmd in cmds.iter_mut() {
                match cmd {
                    MessageCommand::Submit(s) => {
                        s.submitted_at += by;
                        s.scheduled_at = s.scheduled_at.map(|t| t + by);
                    }
                    MessageCommand::RecordObservation(o) => {
                        o.occurred_at += by;
                        o.received_at += by;
                    }
                    MessageCommand::Cancel { requested_at, .. } => *requested_at += by,
                    MessageCommand::Expire { at } => *at += by,
                }
            }
        }
        self
    }

    /// The first `at` messages, and the rest.
    pub fn split(self, at: usize) -> (Plan, Plan) {
        let mut a = self.messages;
        let b = a.split_off(at.min(a.len()));
        (Plan { messages: a }, Plan { messages: b })
    }
}

/// The two tenants of [`plan`]'s messages.
pub const TENANTS: [Uuid; 2] = [Uuid::from_u128(0xa1), Uuid::from_u128(0xb2)];

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 9, 0, 0).unwrap()
}

/// A submit of `message` by `tenant` at `at`, with a recipient fitting `channel`.
pub fn submit(
    message: Uuid,
    tenant: Uuid,
    at: DateTime<Utc>,
    channel: Channel,
    provider: &str,
    tags: Vec<String>,
) -> MessageCommand {
    MessageCommand::Submit(SubmitMessage {
        tenant_id: tenant,
        message_id: message,
        channel,
        recipient: match channel {
            Channel::Email => "ada@example.com".into(),
            Channel::Sms => "+14155550123".into(),
            Channel::Push => "fcm:token-1".into(),
        },
        provider: provider.into(),
        content: MessageContent::Inline {
            subject: None,
            body: "hello".into(),
        },
        tags,
        scheduled_at: None,
        ttl_seconds: None,
        submitted_at: at,
        request_fingerprint: format!("fp-{message}"),
    })
}

/// An observation of `kind` with dedupe key `key` at `at`, received 20 s later.
pub fn observe(kind: ObservationKind, key: &str, at: DateTime<Utc>) -> MessageCommand {
    MessageCommand::RecordObservation(Observation {
        kind,
        dedupe_key: key.into(),
        occurred_at: at,
        received_at: at + chrono::Duration::seconds(20),
        details: serde_json::Value::Null,
    })
}

/// `n` messages over three hours: submissions (some scheduled, some cancelled), dispatches,
/// every kind of outcome (some out of order, some duplicated, some revised), engagement of
/// every kind, and expiry of the messages nobody reported on.
pub fn plan(seed: u64, n: usize) -> Plan {
    let mut rng = Rng(seed.max(1));
    let tags = ["welcome", "billing", "promo"];
    let providers = ["ses", "sendgrid", "twilio"];
    let mut messages = Vec::with_capacity(n);
    for i in 0..n {
        let id = Uuid::new_v4();
        let tenant = TENANTS[i % 2];
        let channel = if rng.chance(60) {
            Channel::Email
        } else {
            Channel::Sms
        };
        let provider = providers[rng.below(3) as usize];
        let my_tags: Vec<String> = tags
            .iter()
            .filter(|_| rng.chance(40))
            .map(|t| t.to_string())
            .collect();
        let t0 = base_time() + chrono::Duration::seconds(rng.below(3 * 3600) as i64);
        let ms = |rng: &mut Rng, max: u64| chrono::Duration::milliseconds(rng.below(max) as i64);
        let mut first = submit(id, tenant, t0, channel, provider, my_tags);
        if rng.chance(8) {
            // Scheduled for later, with a time-to-live.
            if let MessageCommand::Submit(s) = &mut first {
                s.scheduled_at = Some(t0 + chrono::Duration::minutes(10));
                s.ttl_seconds = Some(3_600);
            }
        }
        let mut cmds = vec![first];
        if rng.chance(5) {
            // Cancelled before the provider reported anything; a later report still counts.
            cmds.push(MessageCommand::Cancel {
                reason: Some("changed my mind".into()),
                requested_at: t0 + chrono::Duration::seconds(1),
            });
        }
        let dispatched = t0 + ms(&mut rng, 5_000);
        let delivered = dispatched + ms(&mut rng, 120_000);
        let mut obs = vec![observe(
            ObservationKind::Dispatched,
            &format!("{id}-d"),
            dispatched,
        )];
        match rng.below(16) {
            10 => obs.push(observe(
                ObservationKind::Dropped,
                &format!("{id}-x"),
                delivered,
            )),
            11 => {
                obs.push(observe(
                    ObservationKind::Deferred,
                    &format!("{id}-w"),
                    dispatched + chrono::Duration::seconds(1),
                ));
                obs.push(observe(
                    ObservationKind::Delivered,
                    &format!("{id}-v"),
                    delivered,
                ));
            }
            12 => {
                obs.push(observe(
                    ObservationKind::BouncedSoft,
                    &format!("{id}-s"),
                    delivered,
                ));
                obs.push(observe(
                    ObservationKind::Delivered,
                    &format!("{id}-v"),
                    delivered + chrono::Duration::minutes(3),
                ));
            }
            13 => {
                obs.push(observe(
                    ObservationKind::Delivered,
                    &format!("{id}-v"),
                    delivered,
                ));
                for (kind, key) in [
                    (ObservationKind::Complained, "cp"),
                    (ObservationKind::Unsubscribed, "un"),
                ] {
                    obs.push(observe(
                        kind,
                        &format!("{id}-{key}"),
                        delivered + chrono::Duration::minutes(30),
                    ));
                }
            }
            14 => {
                // Never heard of again: Herald expires it (the command comes last).
                obs.clear();
            }
            15 => {
                // Delivered, then a late dispatch report earlier than the first one: the
                // dispatch latency is revised.
                obs.push(observe(
                    ObservationKind::Delivered,
                    &format!("{id}-v"),
                    delivered,
                ));
                obs.push(observe(
                    ObservationKind::Dispatched,
                    &format!("{id}-d0"),
                    t0,
                ));
            }
            0 => obs.push(observe(
                ObservationKind::BouncedHard,
                &format!("{id}-b"),
                delivered,
            )),
            1 => obs.push(observe(
                ObservationKind::Failed,
                &format!("{id}-f"),
                delivered,
            )),
            2 => {}
            _ => {
                obs.push(observe(
                    ObservationKind::Delivered,
                    &format!("{id}-v"),
                    delivered,
                ));
                if rng.chance(50) {
                    let opened = delivered + ms(&mut rng, 3_600_000);
                    obs.push(observe(
                        ObservationKind::Opened,
                        &format!("{id}-o1"),
                        opened,
                    ));
                    if rng.chance(30) {
                        obs.push(observe(
                            ObservationKind::Opened,
                            &format!("{id}-o2"),
                            opened + chrono::Duration::minutes(5),
                        ));
                    }
                    if rng.chance(40) {
                        obs.push(observe(
                            ObservationKind::Clicked,
                            &format!("{id}-c"),
                            opened + chrono::Duration::minutes(1),
                        ));
                    }
                }
            }
        }
        // Providers report out of order and more than once; an open reported before the
        // delivery makes the delivery inferred first, then revised by the real report.
        if rng.chance(25) && obs.len() > 1 {
            obs.swap(0, 1);
        }
        if rng.chance(30) {
            let opened = format!("{id}-o1");
            if let Some(i) = obs.iter().position(
                |o| matches!(o, MessageCommand::RecordObservation(x) if x.dedupe_key == opened),
            ) {
                let o = obs.remove(i);
                obs.insert(0, o);
            }
        }
        if rng.chance(20) && !obs.is_empty() {
            let dup = obs[rng.below(obs.len() as u64) as usize].clone();
            obs.push(dup);
        }
        let never_heard = obs.is_empty();
        cmds.extend(obs);
        if never_heard {
            cmds.push(MessageCommand::Expire {
                at: t0 + chrono::Duration::hours(2),
            });
        }
        messages.push((id, cmds));
    }
    Plan { messages }
}

/// Polls `check` until it returns `Some`, for at most `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
