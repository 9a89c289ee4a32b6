//! HTTP handlers. Each does the HTTP part (extract, authenticate, map errors) and leaves
//! the command itself to [`crate::commands`], which the batch endpoint shares.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use service_kit::auth::Tenant;
use service_kit::http_error::{
    object_only, ApiEnvelope, ApiError, ApiJson, ApiPath, ErrorDetail, OptionalApiJson,
};
use service_kit::quota::Admission;
use service_kit::request_context::RequestContext;
use uuid::Uuid;

use crate::api::{CancelRequest, CommandAnswer, ObservationRequest, SubmitRequest};
use crate::commands::{self, Outcome};
use crate::AppState;

/// Most commands one batch may carry.
pub const MAX_BATCH_COMMANDS: usize = 1_000;
/// Batches run this many messages' commands at once; commands of one message run in order.
const BATCH_CONCURRENCY: usize = 128;

fn accepted(outcome: Outcome) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(outcome.answer)).into_response();
    if outcome.replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// `POST /v1/messages`.
pub async fn submit(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    ctx: RequestContext,
    headers: HeaderMap,
    ApiJson(body): ApiJson<SubmitRequest>,
) -> Result<Response, ApiError> {
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::invalid("Idempotency-Key", "Idempotency-Key must be printable text")
                })?
                .to_string(),
        ),
    };
    let outcome = commands::submit(&state, tenant, &ctx, key, body).await?;
    Ok(accepted(outcome))
}

/// `POST /v1/messages/{id}/observations`.
pub async fn observe(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ObservationRequest>,
) -> Result<Response, ApiError> {
    let id = message_id(&id)?;
    Ok(accepted(
        commands::observe(&state, tenant, &ctx, id, body).await?,
    ))
}

/// `POST /v1/messages/{id}/cancel`. The body is optional; when present it must be a JSON
/// object.
pub async fn cancel(
    State(state): State<Arc<AppState>>,
    tenant: Tenant,
    ctx: RequestContext,
    ApiPath(id): ApiPath<String>,
    OptionalApiJson(body): OptionalApiJson<CancelRequest>,
) -> Result<Response, ApiError> {
    let id = message_id(&id)?;
    let reason = body.and_then(|b| b.reason);
    Ok(accepted(
        commands::cancel(&state, tenant, &ctx, id, reason).await?,
    ))
}

/// A message id from the path: anything that is not a UUID cannot name a message.
fn message_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::not_found("message"))
}

/// `POST /v1/batch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// The commands, each `{"op": "submit" | "observe" | "cancel", ...}`.
    pub commands: Vec<serde_json::Value>,
}

/// One command of a batch.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchItem {
    /// Submit a message.
    Submit {
        /// Optional idempotency key, as the `Idempotency-Key` header.
        #[serde(default)]
        idempotency_key: Option<String>,
        /// The message.
        #[serde(deserialize_with = "object_only")]
        message: SubmitRequest,
    },
    /// Record a provider observation.
    Observe {
        /// The message.
        message_id: Uuid,
        /// The report.
        #[serde(deserialize_with = "object_only")]
        observation: ObservationRequest,
    },
    /// Cancel a message.
    Cancel {
        /// The message.
        message_id: Uuid,
        /// The client's reason, kept on the event.
        #[serde(default)]
        reason: Option<String>,
    },
}

/// The outcome of one batch command, in request order.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchResult {
    /// Position in the request.
    pub index: usize,
    /// The HTTP status this command would have had on its own.
    pub status: u16,
    /// The answer, when accepted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<CommandAnswer>,
    /// The error, when refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
}

/// `POST /v1/batch` answer.
#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    /// Commands accepted.
    pub accepted: usize,
    /// Commands refused.
    pub failed: usize,
    /// One result per command, in request order.
    pub results: Vec<BatchResult>,
}

/// `POST /v1/batch`: up to [`MAX_BATCH_COMMANDS`] commands; a result per command. Commands
/// on different messages run concurrently; commands on one message run in request order.
/// Every command of the batch counts against the tenant's batch rate, charged before any
/// runs: a batch over it is refused whole with 429.
pub async fn batch(
    State(state): State<Arc<AppState>>,
    admission: Admission,
    ctx: RequestContext,
    ApiEnvelope(body): ApiEnvelope<BatchRequest>,
) -> Result<Json<BatchAnswer>, ApiError> {
    let tenant = admission.tenant();
    let n = body.commands.len();
    if n == 0 || n > MAX_BATCH_COMMANDS {
        return Err(ApiError::invalid(
            "commands",
            format!("a batch carries 1 to {MAX_BATCH_COMMANDS} commands, got {n}"),
        ));
    }
    // The whole batch against the tenant's batch rate: refused whole, or run whole.
    admission.charge_batch(n)?;
    let mut results: Vec<Option<BatchResult>> = (0..n).map(|_| None).collect();
    // Group by target message, preserving request order within each group.
    let mut groups: Vec<(Uuid, Vec<(usize, BatchItem)>)> = Vec::new();
    let mut group_of: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
    for (index, raw) in body.commands.into_iter().enumerate() {
        // Each command is checked on its own: one unstorable or malformed command fails
        // itself, not the batch.
        let item = service_kit::json::check_storable(&raw, &format!("commands[{index}]"))
            .map_err(ApiError::from)
            .and_then(|()| batch_item(raw));
        let item: BatchItem = match item {
            Ok(item) => item,
            Err(e) => {
                results[index] = Some(failure(index, e));
                continue;
            }
        };
        let target = match &item {
            BatchItem::Submit {
                idempotency_key: Some(key),
                ..
            } => domain::message_id_for(tenant.id, key),
            BatchItem::Submit {
                idempotency_key: None,
                ..
            } => Uuid::new_v4(),
            BatchItem::Observe { message_id, .. } | BatchItem::Cancel { message_id, .. } => {
                *message_id
            }
        };
        let slot = *group_of.entry(target).or_insert_with(|| {
            groups.push((target, Vec::new()));
            groups.len() - 1
        });
        groups[slot].1.push((index, item));
    }

    use futures::StreamExt;
    let state_ref = &state;
    let ctx_ref = &ctx;
    let done: Vec<Vec<BatchResult>> = futures::stream::iter(groups)
        .map(|(target, items)| async move {
            let mut out = Vec::with_capacity(items.len());
            for (index, item) in items {
                let outcome = match item {
                    BatchItem::Submit {
                        idempotency_key,
                        message,
                    } => {
                        commands::submit_as(
                            state_ref,
                            tenant,
                            ctx_ref,
                            target,
                            idempotency_key,
                            message,
                        )
                        .await
                    }
                    BatchItem::Observe { observation, .. } => {
                        commands::observe(state_ref, tenant, ctx_ref, target, observation).await
                    }
                    BatchItem::Cancel { reason, .. } => {
                        commands::cancel(state_ref, tenant, ctx_ref, target, reason).await
                    }
                };
                out.push(match outcome {
                    Ok(outcome) => BatchResult {
                        index,
                        status: StatusCode::ACCEPTED.as_u16(),
                        result: Some(outcome.answer),
                        error: None,
                    },
                    Err(e) => failure(index, e),
                });
            }
            out
        })
        .buffer_unordered(BATCH_CONCURRENCY)
        .collect()
        .await;
    for result in done.into_iter().flatten() {
        let index = result.index;
        results[index] = Some(result);
    }
    let results: Vec<BatchResult> = results
        .into_iter()
        .map(|r| r.expect("every command has a result"))
        .collect();
    let accepted = results.iter().filter(|r| r.result.is_some()).count();
    Ok(Json(BatchAnswer {
        accepted,
        failed: n - accepted,
        results,
    }))
}

/// One batch command from its JSON, which must be an object.
fn batch_item(raw: serde_json::Value) -> Result<BatchItem, ApiError> {
    if !raw.is_object() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "a batch command must be a JSON object",
        ));
    }
    service_kit::http_error::typed(raw)
}

fn failure(index: usize, e: ApiError) -> BatchResult {
    BatchResult {
        index,
        status: e.status.as_u16(),
        result: None,
        error: Some(ErrorDetail {
            code: e.code,
            message: e.message,
            field: e.field,
            limit: e.limit.map(|l| *l),
        }),
    }
}
