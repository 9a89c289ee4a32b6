//! `herald-naive`: the baseline the command service is measured against — a cqrs-es
//! service written the way the framework's demo writes one: `CqrsFramework::execute` with
//! its defaults and a `GenericQuery` view updated in-process after each commit. Same
//! aggregate, same request body, same event store; no authentication.
//!
//! Environment: `HERALD_DATABASE_URL` (a migrated Herald database), `HERALD_NAIVE_ADDR`
//! (default 127.0.0.1:8090).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use cqrs_es::persist::GenericQuery;
use cqrs_es::{EventEnvelope, View};
use domain::{Message, MessageCommand, MessageContent, SubmitMessage};
use postgres_es::{PostgresCqrs, PostgresViewRepository};
use serde::{Deserialize, Serialize};

/// The demo-style view: the message's status, kept by the framework's query processor.
#[derive(Debug, Default, Serialize, Deserialize)]
struct StatusView {
    status: String,
    events: u64,
}

impl View<Message> for StatusView {
    fn update(&mut self, event: &EventEnvelope<Message>) {
        self.status = event.payload.status().as_str().to_string();
        self.events += 1;
    }
}

#[derive(Deserialize)]
struct SubmitBody {
    channel: domain::Channel,
    recipient: String,
    provider: String,
    content: MessageContent,
    #[serde(default)]
    tags: Vec<String>,
}

async fn submit(
    State(cqrs): State<Arc<PostgresCqrs<Message>>>,
    Json(body): Json<SubmitBody>,
) -> (StatusCode, Json<serde_json::Value>) {
    let id = uuid::Uuid::new_v4();
    let command = MessageCommand::Submit(SubmitMessage {
        tenant_id: uuid::Uuid::nil(),
        message_id: id,
        channel: body.channel,
        recipient: body.recipient,
        provider: body.provider,
        content: body.content,
        tags: body.tags,
        scheduled_at: None,
        ttl_seconds: None,
        submitted_at: chrono::Utc::now(),
        request_fingerprint: "naive".into(),
    });
    match cqrs.execute(&id.to_string(), command).await {
        Ok(()) => (
            StatusCode::ACCEPTED,
            Json(serde_json::json!({"message_id": id})),
        ),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": e.to_string()})),
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let url = std::env::var("HERALD_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:55432/herald".into());
    let addr = std::env::var("HERALD_NAIVE_ADDR").unwrap_or_else(|_| "127.0.0.1:8090".into());
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(16)
        .connect(&url)
        .await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS naive_status_view (view_id text PRIMARY KEY, version bigint NOT NULL, payload json NOT NULL)")
        .execute(&pool)
        .await?;
    let views = Arc::new(PostgresViewRepository::<StatusView, Message>::new(
        "naive_status_view",
        pool.clone(),
    ));
    let query = GenericQuery::new(views);
    let cqrs = Arc::new(postgres_es::postgres_cqrs(pool, vec![Box::new(query)], ()));
    let app = Router::new()
        .route("/v1/messages", post(submit))
        .route("/ready", axum::routing::get(|| async { "ready" }))
        .with_state(cqrs);
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    eprintln!("herald-naive listening on {addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
