//! A command service running in-process against a fresh database, with a tenant and key.

#![allow(dead_code)]

use serde_json::{json, Value};
use service_kit::auth::ApiKeys;
use test_support::{self as testing, RunningApp, TestDb};
use uuid::Uuid;

pub struct TestApp {
    pub app: RunningApp,
    pub db: TestDb,
    pub pool: sqlx::PgPool,
    pub client: reqwest::Client,
    pub key: String,
    pub tenant: Uuid,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// Like [`TestApp::spawn`], with the test settings adjusted by `adjust` first.
    pub async fn spawn_with(adjust: impl FnOnce(&mut service_kit::Settings)) -> Self {
        let db = TestDb::empty().await;
        let mut settings = testing::settings(&db.url);
        adjust(&mut settings);
        let app = RunningApp::spawn(
            command_service::build(settings)
                .await
                .expect("service starts"),
        );
        let pool = db.pool().await;
        let (tenant, key) = ApiKeys::new(pool.clone())
            .create_tenant(&format!("tenant-{}", Uuid::new_v4()))
            .await
            .unwrap();
        Self {
            app,
            db,
            pool,
            client: reqwest::Client::new(),
            key,
            tenant: tenant.id,
        }
    }

    /// A second tenant's key on the same service.
    pub async fn other_tenant_key(&self) -> String {
        ApiKeys::new(self.pool.clone())
            .create_tenant(&format!("other-{}", Uuid::new_v4()))
            .await
            .unwrap()
            .1
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.get(self.app.url(path)).bearer_auth(&self.key)
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client.post(self.app.url(path)).bearer_auth(&self.key)
    }

    pub async fn submit(&self, body: &Value) -> Value {
        let response = self.post("/v1/messages").json(body).send().await.unwrap();
        assert_eq!(
            response.status().as_u16(),
            202,
            "{:?}",
            response.text().await
        );
        response.json().await.unwrap()
    }

    pub async fn observe(&self, id: &str, body: &Value) -> reqwest::Response {
        self.post(&format!("/v1/messages/{id}/observations"))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn event_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// The stored events of one message: (sequence, event_type, payload, metadata).
    pub async fn stream(&self, id: &str) -> Vec<(i64, String, Value, Value)> {
        sqlx::query_as(
            "SELECT sequence, event_type, payload, metadata FROM events
              WHERE aggregate_type = 'Message' AND aggregate_id = $1 ORDER BY sequence",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .unwrap()
    }
}

pub fn email() -> Value {
    json!({
        "channel": "email",
        "recipient": "ada@example.com",
        "provider": "ses",
        "content": {"type": "inline", "subject": "Hello", "body": "Welcome aboard"},
        "tags": ["welcome"]
    })
}

pub fn observation(kind: &str, key: &str) -> Value {
    json!({"kind": kind, "dedupe_key": key, "occurred_at": chrono::Utc::now().to_rfc3339()})
}
