//! The whole pipeline in one test process: a projector (relay and consumers) on the
//! test's database and Redis prefix, the query service beside it, and the equality check
//! the delivery tests end with.

use std::time::Duration;

use chrono::{DateTime, Utc};
use projector::ProjectorSettings;
use serde_json::Value;
use service_kit::auth::ApiKeys;
use uuid::Uuid;

use crate::{Harness, RunningApp};

/// Projector settings for tests: short polls and blocks, small batches, few retries.
pub fn fast_projector() -> ProjectorSettings {
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

impl Harness {
    /// [`fast_projector`].
    pub fn tuning(&self) -> ProjectorSettings {
        fast_projector()
    }

    /// A projector replica called `instance` on this harness, running in-process.
    pub async fn start(&self, instance: &str, tuning: ProjectorSettings) -> RunningApp {
        let app = projector::build_with(self.replica_settings(instance), tuning)
            .await
            .expect("projector starts");
        RunningApp::spawn(app)
    }

    /// The projector's shared context on this harness (for operator commands).
    pub async fn context(&self, tuning: ProjectorSettings) -> projector::Context {
        let conns = service_kit::Connections::open(&self.settings, "test")
            .await
            .expect("connections open");
        projector::context(&conns, &self.settings, tuning).expect("context")
    }

    /// Every entry of every shard stream, in id order per shard.
    pub async fn stream_entries(&self, shards: u32) -> Vec<(u32, projector::stream::Entry)> {
        let mut redis = self.redis.clone();
        let mut out = Vec::new();
        for shard in 0..shards {
            let key = projector::stream::stream_key(&self.settings.redis_prefix, shard);
            for e in projector::stream::read_all(&mut redis, &key)
                .await
                .expect("stream readable")
            {
                out.push((shard, e));
            }
        }
        out
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
                            read_model::tables::bucket_15m(sample.delivered_at),
                            h.channel.as_str().to_string(),
                            h.provider.clone(),
                            tag.clone(),
                            metric.to_string(),
                            read_model::sketch::bin_of(sample.ms),
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
        .bind(read_model::shard::projection_name(version))
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

/// A harness with a projector and a query service running in-process.
pub struct Pipeline {
    /// Database, Redis prefix, writer.
    pub h: Harness,
    /// The projector (relay and consumers).
    pub projector: RunningApp,
    /// The query service.
    pub query: RunningApp,
    /// An HTTP client.
    pub client: reqwest::Client,
}

impl Pipeline {
    /// Starts both on a fresh harness.
    pub async fn start() -> Self {
        let h = Harness::new().await;
        let projector = h.start("projector-1", h.tuning()).await;
        let app = query_service::build(h.settings.clone())
            .await
            .expect("query service starts");
        let query = RunningApp::spawn(app);
        Self {
            h,
            projector,
            query,
            client: reqwest::Client::new(),
        }
    }

    /// A tenant with the given id and a key for it.
    pub async fn tenant(&self, id: Uuid) -> String {
        sqlx::query("INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(format!("tenant-{id}"))
            .execute(&self.h.pool)
            .await
            .expect("tenant");
        ApiKeys::new(self.h.pool.clone())
            .add_key(id)
            .await
            .expect("key")
    }

    /// Waits until every appended event is in the active read model.
    pub async fn settle(&self) {
        let total = self.h.message_event_count().await;
        crate::events::eventually(
            Duration::from_secs(60),
            "projection to catch up",
            || async {
                let active = read_model::versions::active(&self.h.pool).await.ok()?;
                (self.h.projected_count(active).await >= total).then_some(())
            },
        )
        .await;
    }

    /// `GET` of the query service with `key`: status and JSON body (`null` if none).
    pub async fn get(&self, key: &str, path_and_query: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.query.url(path_and_query))
            .bearer_auth(key)
            .send()
            .await
            .expect("query service answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A statistics answer, which must be 200.
    pub async fn stats(&self, key: &str, query: &str) -> Value {
        let (status, body) = self.get(key, &format!("/v1/stats/messages?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        body
    }
}

/// Percent-encodes a query value (times carry `+`).
pub fn enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `from=..&to=..` for a half-open range.
pub fn range(from: &str, to: &str) -> String {
    format!("from={}&to={}", enc(from), enc(to))
}

/// A timestamp from RFC 3339 text.
pub fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("an RFC 3339 time")
        .with_timezone(&Utc)
}
