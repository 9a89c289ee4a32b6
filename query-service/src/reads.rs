//! Message reads: one message's current state, its timeline, and a filtered, paginated list.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use chrono::{DateTime, Utc};
use domain::{Channel, MessageStatus};
use serde::{Deserialize, Serialize};
use service_kit::auth::Tenant;
use service_kit::consistency::ConsistencyToken;
use service_kit::http_error::{ApiError, ApiPath, ApiQuery};
use sqlx::{FromRow, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{db_error, AppState};
use read_model::messages::COLUMNS as MESSAGE_COLUMNS;
use read_model::Freshness;

/// Most messages one list page holds.
pub const MAX_PAGE: i64 = 500;

/// One message's current state, with the time of every transition (a row of the read
/// model's `messages` table).
pub type MessageView = read_model::messages::MessageRow;

/// One event of a message's timeline.
#[derive(Debug, Serialize, Deserialize)]
pub struct TimelineEvent {
    /// Position in the message's stream.
    pub sequence: i64,
    /// Event type, e.g. `MessageDelivered`.
    pub event_type: String,
    /// Status after it.
    pub status: String,
    /// Status before it.
    pub previous_status: Option<String>,
    /// Whether it changed the status.
    pub status_changed: bool,
    /// Provider time (or server time for submit, cancel, expiry).
    pub occurred_at: DateTime<Utc>,
    /// When Herald received it.
    pub received_at: DateTime<Utc>,
    /// The provider's report id.
    pub dedupe_key: Option<String>,
    /// Correlation id of the request that caused it.
    pub correlation_id: Option<String>,
    /// The full event, as stored in the event store.
    pub payload: Box<serde_json::value::RawValue>,
}

/// A timeline row as read from the read model; its payload comes from the event store.
#[derive(FromRow)]
struct TimelineRow {
    sequence: i64,
    event_type: String,
    status: String,
    previous_status: Option<String>,
    status_changed: bool,
    occurred_at: DateTime<Utc>,
    received_at: DateTime<Utc>,
    dedupe_key: Option<String>,
    correlation_id: Option<String>,
}

impl TimelineRow {
    fn into_event(self, payload: String) -> Result<TimelineEvent, ApiError> {
        Ok(TimelineEvent {
            sequence: self.sequence,
            event_type: self.event_type,
            status: self.status,
            previous_status: self.previous_status,
            status_changed: self.status_changed,
            occurred_at: self.occurred_at,
            received_at: self.received_at,
            dedupe_key: self.dedupe_key,
            correlation_id: self.correlation_id,
            payload: serde_json::value::RawValue::from_string(payload)
                .map_err(|e| ApiError::internal(&e))?,
        })
    }
}

/// A single message with freshness.
#[derive(Debug, Serialize, Deserialize)]
pub struct MessageAnswer {
    /// The message.
    pub message: MessageView,
    /// How current it is.
    pub freshness: Freshness,
}

/// A page of a timeline, with freshness.
#[derive(Debug, Serialize, Deserialize)]
pub struct TimelineAnswer {
    /// The message.
    pub message_id: Uuid,
    /// Its events in stream order, at most `limit` of them.
    pub events: Vec<TimelineEvent>,
    /// Pass as `after` for the next page; absent on the last page.
    pub next_after: Option<i64>,
    /// How current it is.
    pub freshness: Freshness,
}

/// Most events one timeline page holds (a message has at most about a thousand).
pub const MAX_TIMELINE_PAGE: i64 = 1_000;
/// A page ends once its payloads pass this many bytes (each event carries its payload, up
/// to the largest body): every timeline answer stays about this size or smaller.
pub const MAX_TIMELINE_PAGE_BYTES: usize = 1024 * 1024;

/// `GET /v1/messages/{id}/events` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineParams {
    /// Events after this sequence (from the previous page's `next_after`).
    pub after: Option<i64>,
    /// Page size (default 200, at most 1000).
    pub limit: Option<i64>,
    /// A token from the command service.
    pub consistency_token: Option<String>,
    /// Longest wait for it, ms (default 2000, at most 10000).
    pub wait_ms: Option<u64>,
}

/// Read-your-writes parameters every read accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    /// A token from the command service.
    pub consistency_token: Option<String>,
    /// Longest wait for it, ms (default 2000, at most 10000).
    pub wait_ms: Option<u64>,
}

/// The token of a read: the `consistency_token` parameter or the `Consistency-Token` header.
pub fn token_of(
    param: Option<&str>,
    headers: &HeaderMap,
) -> Result<Option<ConsistencyToken>, ApiError> {
    let raw = match param {
        Some(p) => Some(p.to_string()),
        None => headers
            .get("consistency-token")
            .map(|v| v.to_str().unwrap_or("").to_string()),
    };
    raw.map(|r| {
        r.parse::<ConsistencyToken>()
            .map_err(|e| ApiError::invalid("consistency_token", e.to_string()))
    })
    .transpose()
}

/// The wait bound of a read.
pub fn wait_of(wait_ms: Option<u64>) -> Result<Duration, ApiError> {
    match wait_ms {
        None => Ok(Duration::from_millis(2_000)),
        Some(ms) if ms <= 10_000 => Ok(Duration::from_millis(ms)),
        Some(_) => Err(ApiError::invalid("wait_ms", "wait_ms: expected 0 to 10000")),
    }
}

/// Resolves the version and waits for the token, if any: (version, consistent).
pub async fn prepare(
    state: &AppState,
    tenant: Tenant,
    token: Option<ConsistencyToken>,
    wait: Duration,
) -> Result<(i32, Option<bool>), ApiError> {
    let version = read_model::versions::active(&state.read)
        .await
        .map_err(db_error)?;
    let consistent = match token {
        None => None,
        Some(token) => Some(
            read_model::freshness::wait_for(
                &state.read,
                version,
                tenant.id,
                token.message_id,
                token.sequence,
                wait,
            )
            .await
            .map_err(db_error)?,
        ),
    };
    Ok((version, consistent))
}

/// The id, read-model version and consistency of a one-message read.
async fn one_message(
    state: &AppState,
    tenant: Tenant,
    raw_id: &str,
    headers: &HeaderMap,
    params: &ConsistencyParams,
) -> Result<(Uuid, i32, Option<bool>), ApiError> {
    let id = Uuid::parse_str(raw_id).map_err(|_| ApiError::not_found("message"))?;
    let token = token_of(params.consistency_token.as_deref(), headers)?;
    let (version, consistent) = prepare(state, tenant, token, wait_of(params.wait_ms)?).await?;
    Ok((id, version, consistent))
}

/// `GET /v1/messages/{id}`.
pub async fn get_message(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    ApiPath(raw_id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ConsistencyParams>,
) -> Result<Json<MessageAnswer>, ApiError> {
    state
        .timed("messages_get", async {
            let (id, version, consistent) = one_message(&state, tenant, &raw_id, &headers, &params).await?;
            let message: Option<MessageView> = sqlx::query_as(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE version = $1 AND message_id = $2 AND tenant_id = $3"
            ))
            .bind(version)
            .bind(id)
            .bind(tenant.id)
            .fetch_optional(&state.read)
            .await
            .map_err(db_error)?;
            let message = message.ok_or_else(|| ApiError::not_found("message").with_code("message_not_found"))?;
            let freshness = state.freshness(version, tenant, consistent).await?;
            Ok(Json(MessageAnswer { message, freshness }))
        })
        .await
}

/// `GET /v1/messages/{id}/events`: the message's events in stream order, a page at a time.
pub async fn get_timeline(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    ApiPath(raw_id): ApiPath<String>,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<TimelineParams>,
) -> Result<Json<TimelineAnswer>, ApiError> {
    state
        .timed("timeline", async {
            let limit = params.limit.unwrap_or(200);
            if !(1..=MAX_TIMELINE_PAGE).contains(&limit) {
                return Err(ApiError::invalid(
                    "limit",
                    format!("limit: expected 1 to {MAX_TIMELINE_PAGE}"),
                ));
            }
            let after = params.after.unwrap_or(0);
            if after < 0 {
                return Err(ApiError::invalid("after", "after: expected a sequence, 0 or more"));
            }
            let consistency = ConsistencyParams {
                consistency_token: params.consistency_token.clone(),
                wait_ms: params.wait_ms,
            };
            let (id, version, consistent) =
                one_message(&state, tenant, &raw_id, &headers, &consistency).await?;
            let rows = sqlx::query_as::<_, TimelineRow>(
                "SELECT sequence, event_type, status, previous_status, status_changed, occurred_at,
                        received_at, dedupe_key, correlation_id
                   FROM message_events
                  WHERE version = $1 AND message_id = $2 AND tenant_id = $3 AND sequence > $4
                  ORDER BY sequence LIMIT $5",
            )
            .bind(version)
            .bind(id)
            .bind(tenant.id)
            .bind(after)
            .bind(limit + 1)
            .fetch_all(&state.read)
            .await
            .map_err(db_error)?;
            let mut more = rows.len() as i64 > limit;
            let rows: Vec<TimelineRow> = rows.into_iter().take(limit as usize).collect();
            let sequences: Vec<i64> = rows.iter().map(|r| r.sequence).collect();
            let mut rows = rows.into_iter();
            // Payloads live once, in the event store: read in sequence order, until the page
            // holds about MAX_TIMELINE_PAGE_BYTES of them.
            let mut payloads = sqlx::query_as::<_, (i64, String)>(
                "SELECT sequence, payload::text FROM events
                  WHERE aggregate_type = 'Message' AND aggregate_id = $1 AND sequence = ANY($2)
                  ORDER BY sequence",
            )
            .bind(id.to_string())
            .bind(&sequences)
            .fetch(&state.store);
            let mut events: Vec<TimelineEvent> = Vec::with_capacity(sequences.len());
            let mut bytes = 0usize;
            while let Some((sequence, payload)) =
                futures::TryStreamExt::try_next(&mut payloads).await.map_err(db_error)?
            {
                if bytes >= MAX_TIMELINE_PAGE_BYTES && !events.is_empty() {
                    more = true;
                    break;
                }
                let row = rows.next().filter(|r| r.sequence == sequence).ok_or_else(|| {
                    ApiError::internal(&format!(
                        "the event store and the read model disagree on event {sequence} of {id}"
                    ))
                })?;
                bytes += payload.len();
                events.push(row.into_event(payload)?);
            }
            drop(payloads);
            if events.len() < sequences.len() && !more {
                return Err(ApiError::internal(&format!(
                    "events of {id} in the read model are missing from the event store"
                )));
            }
            let next_after = if more {
                events.last().map(|e| e.sequence)
            } else {
                None
            };
            if events.is_empty() {
                // Past the last page of a message that exists is an empty page; otherwise
                // the message is not this tenant's (or not projected yet).
                let exists: Option<i32> = sqlx::query_scalar(
                    "SELECT 1 FROM messages WHERE version = $1 AND message_id = $2 AND tenant_id = $3",
                )
                .bind(version)
                .bind(id)
                .bind(tenant.id)
                .fetch_optional(&state.read)
                .await
                .map_err(db_error)?;
                if exists.is_none() || after == 0 {
                    return Err(ApiError::not_found("message").with_code("message_not_found"));
                }
            }
            let freshness = state.freshness(version, tenant, consistent).await?;
            Ok(Json(TimelineAnswer {
                message_id: id,
                events,
                next_after,
                freshness,
            }))
        })
        .await
}

/// `GET /v1/messages` parameters.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Current status.
    pub status: Option<MessageStatus>,
    /// Only messages on this channel.
    pub channel: Option<Channel>,
    /// Only messages sent by this provider.
    pub provider: Option<String>,
    /// Has this tag.
    pub tag: Option<String>,
    /// Submitted at or after.
    pub from: Option<DateTime<Utc>>,
    /// Submitted before.
    pub to: Option<DateTime<Utc>>,
    /// Page size (default 50, at most 500).
    pub limit: Option<i64>,
    /// Continue after this cursor (from the previous page's `next_cursor`).
    pub cursor: Option<String>,
    /// Read-your-writes token.
    pub consistency_token: Option<String>,
    /// Longest wait for it, ms.
    pub wait_ms: Option<u64>,
}

/// A page of messages.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListAnswer {
    /// Newest submitted first.
    pub messages: Vec<MessageView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
    /// How current it is.
    pub freshness: Freshness,
}

/// The keyset of the list order (submitted_at desc, message_id desc), as an opaque cursor.
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id.simple())
}

fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let bad = || ApiError::invalid("cursor", "cursor: not a cursor this service issued");
    let (micros, id) = raw.split_once('_').ok_or_else(bad)?;
    let at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| bad())?).ok_or_else(bad)?;
    Ok((at, Uuid::parse_str(id).map_err(|_| bad())?))
}

/// `GET /v1/messages`: newest first, keyset-paginated so pages stay stable while messages
/// keep arriving.
pub async fn list_messages(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListAnswer>, ApiError> {
    let timer = state.clone();
    let answer = answer_list_messages(State(state), tenant, headers, ApiQuery(params));
    timer.timed("messages_list", answer).await
}

async fn answer_list_messages(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    headers: HeaderMap,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<ListAnswer>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit: expected 1 to {MAX_PAGE}"),
        ));
    }
    if let Some(p) = &params.provider {
        domain::validate::validate_provider(p)
            .map_err(|e| ApiError::invalid("provider", e.to_string()))?;
    }
    if let Some(t) = &params.tag {
        domain::validate::validate_tags(std::slice::from_ref(t))
            .map_err(|e| ApiError::invalid("tag", e.to_string()))?;
    }
    if let (Some(from), Some(to)) = (params.from, params.to) {
        if from >= to {
            return Err(ApiError::invalid("to", "to: must be after from"));
        }
    }
    let after = params.cursor.as_deref().map(decode_cursor).transpose()?;
    let token = token_of(params.consistency_token.as_deref(), &headers)?;
    let (version, consistent) = prepare(&state, tenant, token, wait_of(params.wait_ms)?).await?;

    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {MESSAGE_COLUMNS} FROM messages WHERE version = "
    ));
    q.push_bind(version)
        .push(" AND tenant_id = ")
        .push_bind(tenant.id);
    q.push(" AND submitted_at IS NOT NULL");
    if let Some(s) = params.status {
        q.push(" AND status = ").push_bind(s.as_str());
    }
    if let Some(c) = params.channel {
        q.push(" AND channel = ").push_bind(c.as_str());
    }
    if let Some(p) = &params.provider {
        q.push(" AND provider = ").push_bind(p);
    }
    if let Some(t) = &params.tag {
        q.push(" AND ").push_bind(t).push(" = ANY(tags)");
    }
    if let Some(from) = params.from {
        q.push(" AND submitted_at >= ").push_bind(from);
    }
    if let Some(to) = params.to {
        q.push(" AND submitted_at < ").push_bind(to);
    }
    if let Some((at, id)) = after {
        q.push(" AND (submitted_at, message_id) < (")
            .push_bind(at)
            .push(", ")
            .push_bind(id)
            .push(")");
    }
    q.push(" ORDER BY submitted_at DESC, message_id DESC LIMIT ")
        .push_bind(limit + 1);
    let mut messages: Vec<MessageView> = q
        .build_query_as()
        .fetch_all(&state.read)
        .await
        .map_err(db_error)?;
    let next_cursor = if messages.len() as i64 > limit {
        messages.truncate(limit as usize);
        messages
            .last()
            .and_then(|m| m.submitted_at.map(|at| encode_cursor(at, m.message_id)))
    } else {
        None
    };
    let freshness = state.freshness(version, tenant, consistent).await?;
    Ok(Json(ListAnswer {
        messages,
        next_cursor,
        freshness,
    }))
}
