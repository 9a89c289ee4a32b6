//! The whole read path in-process: events appended the way the command service appends
//! them, the projector (relay and consumer) moving them through Redis into the read models,
//! and the query service answering over HTTP. The event writer and workload come from the
//! projector's own test support, so both crates exercise one definition.

#![allow(dead_code)]

#[path = "../../../projector/tests/common/mod.rs"]
pub mod common;

use std::time::Duration;

use serde_json::Value;
use service_kit::auth::ApiKeys;
use service_kit::testing::RunningApp;
use uuid::Uuid;

pub use common::{observe, submit, Harness};

pub struct Pipeline {
    pub h: Harness,
    pub projector: RunningApp,
    pub query: RunningApp,
    pub client: reqwest::Client,
}

impl Pipeline {
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
            .unwrap();
        ApiKeys::new(self.h.pool.clone()).add_key(id).await.unwrap()
    }

    /// Waits until every appended event is in the active read model.
    pub async fn settle(&self) {
        let total = self.h.message_event_count().await;
        common::eventually(
            Duration::from_secs(60),
            "projection to catch up",
            || async { (self.h.projected_count(1).await >= total).then_some(()) },
        )
        .await;
    }

    pub async fn get(&self, key: &str, path_and_query: &str) -> (u16, Value) {
        let response = self
            .client
            .get(self.query.url(path_and_query))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

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
