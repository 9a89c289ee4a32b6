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
        generation_check: Duration::from_millis(200),
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

    /// Runs the oracle over every message of `version` and returns its report, requiring
    /// every event to be applied.
    pub async fn verify(&self, version: i32) -> oracle::Report {
        let options = oracle::Options {
            version: Some(version),
            shards: self.settings.stream_shards,
            caught_up: true,
            chunk: 50,
            ..oracle::Options::default()
        };
        oracle::verify(&self.pool, &options, |_| {})
            .await
            .expect("verify runs")
    }

    /// Asserts that `version` holds exactly what the oracle computes from the event store,
    /// every column of every row, with every event applied.
    pub async fn assert_verified(&self, version: i32) {
        let report = self.verify(version).await;
        assert!(report.messages > 0, "nothing to verify:\n{report}");
        assert!(report.is_clean(), "verify found differences:\n{report}");
    }
}

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
        let tuning = h.tuning();
        Self::on(h, tuning).await
    }

    /// Starts both on `h`, the projector tuned by `tuning`.
    pub async fn on(h: Harness, tuning: ProjectorSettings) -> Self {
        let projector = h.start("projector-1", tuning).await;
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
