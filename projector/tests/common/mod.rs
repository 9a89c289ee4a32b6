//! Shared test support: a database and Redis prefix of the test's own, an event writer that
//! appends the way the command service does, a random workload, and the "direct computation
//! over the event store" every equality assertion compares the read models against.

#![allow(dead_code)]

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::persist::PersistedEventStore;
use cqrs_es::EventStore;
use domain::{
    Channel, Message, MessageCommand, MessageContent, Observation, ObservationKind, SubmitMessage,
};
use postgres_es::PostgresEventRepository;
use projector::envelope::Envelope;
use projector::ProjectorSettings;
use redis::aio::MultiplexedConnection;
use service_kit::testing::{RunningApp, TestDb};
use service_kit::Settings;
use sqlx::PgPool;
use uuid::Uuid;

pub type Store = PersistedEventStore<PostgresEventRepository, Message>;

pub struct Harness {
    pub db: TestDb,
    pub pool: PgPool,
    pub settings: Settings,
    pub redis: MultiplexedConnection,
    pub store: Store,
}

impl Harness {
    pub async fn new() -> Self {
        let db = TestDb::migrated().await;
        let pool = db.pool().await;
        let settings = service_kit::testing::settings(&db.url);
        let client = redis::Client::open(settings.redis_url.as_str()).unwrap();
        let redis = client.get_multiplexed_async_connection().await.unwrap();
        let store =
            PersistedEventStore::new_event_store(PostgresEventRepository::new(pool.clone()));
        Self {
            db,
            pool,
            settings,
            redis,
            store,
        }
    }

    /// Fast settings for tests: short polls and blocks, small batches.
    pub fn tuning(&self) -> ProjectorSettings {
        ProjectorSettings {
            relay_poll: Duration::from_millis(50),
            block: Duration::from_millis(200),
            trim_interval: Duration::from_millis(300),
            batch: 100,
            relay_batch: 200,
            max_failures: 3,
            ..ProjectorSettings::default()
        }
    }

    /// Settings of one replica: the harness's database and prefix, its own instance id.
    pub fn replica_settings(&self, instance: &str) -> Settings {
        let mut s = self.settings.clone();
        s.instance_id = instance.to_string();
        s
    }

    pub async fn start(&self, instance: &str, tuning: ProjectorSettings) -> RunningApp {
        let app = projector::build_with(self.replica_settings(instance), tuning)
            .await
            .expect("projector starts");
        RunningApp::spawn(app)
    }

    pub async fn context(&self, tuning: ProjectorSettings) -> projector::consumer::Context {
        let conns = service_kit::Connections::open(&self.settings, "test")
            .await
            .unwrap();
        projector::context(&conns, &self.settings, tuning)
    }

    /// Decides `cmd` on the message's replayed state and commits the events (one
    /// transaction), like the command service. Returns how many events were appended.
    pub async fn append(&self, message: Uuid, cmd: MessageCommand) -> usize {
        append_with(&self.store, message, cmd).await
    }

    /// Runs `plan` with `writers` concurrent tasks (each message belongs to one task; a
    /// task interleaves the commands of its messages).
    pub async fn write(&self, plan: Plan, writers: usize) -> usize {
        let mut lanes: Vec<Vec<(Uuid, Vec<MessageCommand>)>> = vec![Vec::new(); writers];
        for (i, m) in plan.messages.into_iter().enumerate() {
            lanes[i % writers].push(m);
        }
        let mut tasks = Vec::new();
        for lane in lanes {
            let store = PersistedEventStore::<PostgresEventRepository, Message>::new_event_store(
                PostgresEventRepository::new(self.pool.clone()),
            );
            let h = Writer { store };
            tasks.push(tokio::spawn(async move {
                let mut queues: Vec<(Uuid, std::collections::VecDeque<MessageCommand>)> = lane
                    .into_iter()
                    .map(|(id, cmds)| (id, cmds.into()))
                    .collect();
                let mut n = 0;
                while !queues.is_empty() {
                    for (id, q) in queues.iter_mut() {
                        if let Some(cmd) = q.pop_front() {
                            n += h.append(*id, cmd).await;
                        }
                    }
                    queues.retain(|(_, q)| !q.is_empty());
                }
                n
            }));
        }
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    }

    pub async fn message_event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_type = 'Message'")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn projected_count(&self, version: i32) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM message_events WHERE version = $1")
            .bind(version)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Waits (bounded) until every Message event is in `message_events` of `version`.
    pub async fn wait_projected(&self, version: i32, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let want = self.message_event_count().await;
            let have = self.projected_count(version).await;
            if have == want {
                return;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("version {version}: {have} of {want} events projected after {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every entry of every shard stream, in id order per shard.
    pub async fn stream_entries(&self, shards: u32) -> Vec<(u32, Envelope)> {
        let mut redis = self.redis.clone();
        let mut out = Vec::new();
        for shard in 0..shards {
            let key = projector::shard::stream_key(&self.settings.redis_prefix, shard);
            for e in projector::relay::read_stream(&mut redis, &key)
                .await
                .unwrap()
            {
                out.push((shard, e));
            }
        }
        out
    }

    /// Deletes every Redis key of this test (never anyone else's).
    pub async fn wipe_redis(&self) -> usize {
        let mut redis = self.redis.clone();
        let pattern = format!("{}:*", self.settings.redis_prefix);
        let mut cursor = 0u64;
        let mut deleted = 0;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut redis)
                .await
                .unwrap();
            if !keys.is_empty() {
                let n: usize = redis::cmd("DEL")
                    .arg(&keys)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                deleted += n;
            }
            if next == 0 {
                return deleted;
            }
            cursor = next;
        }
    }

    /// Asserts every read model of `version` equals a direct computation over the event
    /// store (SQL over `events` payloads, independent of the projector's code).
    pub async fn assert_matches_event_store(&self, version: i32) {
        let p = &self.pool;
        let want_events: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT aggregate_id, sequence, event_type FROM events \
             WHERE aggregate_type = 'Message' ORDER BY 1, 2",
        )
        .fetch_all(p)
        .await
        .unwrap();
        let have_events: Vec<(String, i64, String)> = sqlx::query_as(
            "SELECT message_id::text, sequence, event_type FROM message_events \
             WHERE version = $1 ORDER BY 1, 2",
        )
        .bind(version)
        .fetch_all(p)
        .await
        .unwrap();
        assert!(!want_events.is_empty());
        assert_eq!(
            have_events.len(),
            want_events.len(),
            "message_events row count"
        );
        assert_eq!(have_events, want_events, "message_events rows");

        let want_stats: Vec<StatRow> = sqlx::query_as(&format!(
            "{EXPANDED} SELECT tenant, bucket, channel, provider, tag, p->>'status', count(*) \
             FROM dims WHERE (p->>'previous_status') IS DISTINCT FROM (p->>'status') \
             GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        ))
        .fetch_all(p)
        .await
        .unwrap();
        let have_stats: Vec<StatRow> = sqlx::query_as(
            "SELECT tenant_id::text, bucket, channel, provider, tag, status, entered \
             FROM message_stats_15m WHERE version = $1 ORDER BY 1, 2, 3, 4, 5, 6",
        )
        .bind(version)
        .fetch_all(p)
        .await
        .unwrap();
        assert!(!want_stats.is_empty());
        assert_eq!(have_stats, want_stats, "message_stats_15m");

        let want_eng: Vec<EngRow> = sqlx::query_as(&format!(
            "{EXPANDED} SELECT tenant, bucket, channel, provider, tag, p->>'engagement', \
             count(*), count(*) FILTER (WHERE (p->>'first')::boolean) \
             FROM dims WHERE kind = 'EngagementRecorded' \
             GROUP BY 1, 2, 3, 4, 5, 6 ORDER BY 1, 2, 3, 4, 5, 6"
        ))
        .fetch_all(p)
        .await
        .unwrap();
        let have_eng: Vec<EngRow> = sqlx::query_as(
            "SELECT tenant_id::text, bucket, channel, provider, tag, engagement, total, \
             unique_messages FROM message_engagement_15m WHERE version = $1 \
             ORDER BY 1, 2, 3, 4, 5, 6",
        )
        .bind(version)
        .fetch_all(p)
        .await
        .unwrap();
        assert_eq!(have_eng, want_eng, "message_engagement_15m");

        let want_msgs: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT DISTINCT ON (aggregate_id) aggregate_id, \
             (SELECT j.value->>'status' FROM jsonb_each(payload) j), sequence FROM events \
             WHERE aggregate_type = 'Message' ORDER BY aggregate_id, sequence DESC",
        )
        .fetch_all(p)
        .await
        .unwrap();
        let have_msgs: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT message_id::text, status, last_sequence FROM messages WHERE version = $1 \
             ORDER BY 1",
        )
        .bind(version)
        .fetch_all(p)
        .await
        .unwrap();
        assert_eq!(have_msgs, want_msgs, "messages: status and last_sequence");

        // Per-message facts equal the aggregate's own view (domain::replay of the stream).
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT aggregate_id, payload::text FROM events WHERE aggregate_type = 'Message' \
             ORDER BY aggregate_id, sequence",
        )
        .fetch_all(p)
        .await
        .unwrap();
        let mut streams: std::collections::BTreeMap<String, Vec<domain::MessageEvent>> =
            Default::default();
        for (id, payload) in rows {
            streams
                .entry(id)
                .or_default()
                .push(serde_json::from_str(&payload).unwrap());
        }
        let replayed = streams;
        let want_facts: Vec<Facts> = replayed
            .clone()
            .into_iter()
            .map(|(id, events)| {
                let m = domain::replay(events);
                (
                    id,
                    m.status().as_str().to_string(),
                    m.submission().map(|s| s.submitted_at),
                    m.dispatched_at(),
                    m.delivered_at(),
                    m.delivery_inferred(),
                    m.latency_ms_from_submit(),
                    m.latency_ms_from_dispatch(),
                    m.engagement().opened_at,
                    m.engagement().clicked_at,
                )
            })
            .collect();
        let have_facts: Vec<Facts> = sqlx::query_as(
            "SELECT message_id::text, status, submitted_at, dispatched_at, delivered_at, \
             delivery_inferred, latency_ms_from_submit, latency_ms_from_dispatch, opened_at, \
             clicked_at FROM messages WHERE version = $1 ORDER BY 1",
        )
        .bind(version)
        .fetch_all(p)
        .await
        .unwrap();
        assert_eq!(have_facts, want_facts, "messages: per-message facts");

        // The latency sketch: one sample per delivered message, its current latency, in the
        // bucket of its delivery.
        let mut want_lat: std::collections::BTreeMap<LatRow, i64> = Default::default();
        for events in replayed.values() {
            let h = events[0].header().clone();
            let m = domain::replay(events.clone());
            let mut tags: std::collections::BTreeSet<String> = h.tags.iter().cloned().collect();
            tags.insert(String::new());
            for (metric, sample) in [
                ("submit_to_delivered", m.submit_latency()),
                ("dispatch_to_delivered", m.dispatch_latency()),
            ] {
                let Some(sample) = sample else { continue };
                for tag in &tags {
                    *want_lat
                        .entry((
                            h.tenant_id.to_string(),
                            projector::project::bucket_15m(sample.delivered_at),
                            h.channel.as_str().to_string(),
                            h.provider.clone(),
                            tag.clone(),
                            metric.to_string(),
                            projector::sketch::bin_of(sample.ms),
                        ))
                        .or_default() += 1;
                }
            }
        }
        let have_lat: Vec<(LatRow, i64)> = sqlx::query_as::<
            _,
            (
                String,
                DateTime<Utc>,
                String,
                String,
                String,
                String,
                i32,
                i64,
            ),
        >(
            "SELECT tenant_id::text, bucket, channel, provider, tag, metric, bin, count \
             FROM message_latency_15m WHERE version = $1",
        )
        .bind(version)
        .fetch_all(p)
        .await
        .unwrap()
        .into_iter()
        .map(|(a, b, c, d, e, f, g, n)| ((a, b, c, d, e, f, g), n))
        .collect();
        let have_lat: std::collections::BTreeMap<LatRow, i64> = have_lat.into_iter().collect();
        assert!(!want_lat.is_empty());
        assert_eq!(have_lat, want_lat, "message_latency_15m");

        // Each event was applied once: the checkpoints' event counters add up.
        let applied: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(events), 0)::bigint FROM projection_checkpoints WHERE projection = $1",
        )
        .bind(projector::shard::projection_name(version))
        .fetch_one(p)
        .await
        .unwrap();
        let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(p)
            .await
            .unwrap();
        assert_eq!(applied, total, "events applied per the checkpoints");
    }
}

type Facts = (
    String,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<bool>,
    Option<i64>,
    Option<i64>,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);
type LatRow = (String, DateTime<Utc>, String, String, String, String, i32);
type StatRow = (String, DateTime<Utc>, String, String, String, String, i64);
type EngRow = (
    String,
    DateTime<Utc>,
    String,
    String,
    String,
    String,
    i64,
    i64,
);

/// Every Message event with its 15-minute bucket, once overall (tag '') and once per
/// distinct tag.
const EXPANDED: &str = "WITH ev AS ( \
       SELECT j.key AS kind, j.value AS p FROM events e, jsonb_each(e.payload) j \
       WHERE e.aggregate_type = 'Message'), \
     dims AS ( \
       SELECT kind, p, p->>'tenant_id' AS tenant, \
         to_timestamp(floor(extract(epoch FROM (p->>'occurred_at')::timestamptz) / 900) * 900) AS bucket, \
         p->>'channel' AS channel, p->>'provider' AS provider, t.tag \
       FROM ev, LATERAL (SELECT '' AS tag UNION SELECT jsonb_array_elements_text(p->'tags')) t)";

struct Writer {
    store: Store,
}

impl Writer {
    async fn append(&self, message: Uuid, cmd: MessageCommand) -> usize {
        append_with(&self.store, message, cmd).await
    }
}

/// Decides `cmd` on the message's replayed state and commits the events in one
/// transaction, like the command service. Returns how many events were appended.
pub async fn append_with(store: &Store, message: Uuid, cmd: MessageCommand) -> usize {
    let id = message.to_string();
    loop {
        let ctx = store.load_aggregate(&id).await.expect("load");
        let events = match domain::decide(&ctx.aggregate, cmd.clone()) {
            Ok(e) => e,
            Err(e) => panic!("{cmd:?} refused: {e}"),
        };
        if events.is_empty() {
            return 0;
        }
        let n = events.len();
        let metadata = HashMap::from([
            ("correlation_id".to_string(), Uuid::new_v4().to_string()),
            ("causation_id".to_string(), Uuid::new_v4().to_string()),
            (
                "traceparent".to_string(),
                format!("00-{}-00000000000000a1-01", Uuid::new_v4().simple()),
            ),
            ("tenant_id".to_string(), events[0].tenant_id().to_string()),
            ("received_at".to_string(), Utc::now().to_rfc3339()),
        ]);
        match store.commit(events, ctx, metadata).await {
            Ok(_) => return n,
            Err(cqrs_es::AggregateError::AggregateConflict) => continue,
            Err(e) => panic!("commit failed: {e}"),
        }
    }
}

/// xorshift64*: deterministic randomness without a dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Commands for a set of messages.
#[derive(Clone, Default)]
pub struct Plan {
    pub messages: Vec<(Uuid, Vec<MessageCommand>)>,
}

impl Plan {
    pub fn split(self, at: usize) -> (Plan, Plan) {
        let mut a = self.messages;
        let b = a.split_off(at.min(a.len()));
        (Plan { messages: a }, Plan { messages: b })
    }
}

pub const TENANTS: [Uuid; 2] = [Uuid::from_u128(0xa1), Uuid::from_u128(0xb2)];

fn base_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 9, 0, 0).unwrap()
}

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

pub fn observe(kind: ObservationKind, key: &str, at: DateTime<Utc>) -> MessageCommand {
    MessageCommand::RecordObservation(Observation {
        kind,
        dedupe_key: key.into(),
        occurred_at: at,
        received_at: at + chrono::Duration::seconds(20),
        details: serde_json::Value::Null,
    })
}

/// `n` messages over three hours: submissions, dispatches, outcomes (some out of order, some
/// duplicated), engagement.
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
        let mut cmds = vec![submit(id, tenant, t0, channel, provider, my_tags)];
        let dispatched = t0 + ms(&mut rng, 5_000);
        let delivered = dispatched + ms(&mut rng, 120_000);
        let mut obs = vec![observe(
            ObservationKind::Dispatched,
            &format!("{id}-d"),
            dispatched,
        )];
        match rng.below(10) {
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
        if rng.chance(20) {
            let dup = obs[rng.below(obs.len() as u64) as usize].clone();
            obs.push(dup);
        }
        cmds.extend(obs);
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
