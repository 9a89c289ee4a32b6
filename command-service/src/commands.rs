//! The three commands, shared by the single endpoints and the batch endpoint: build the
//! domain command, attach metadata, execute, and turn the result into an answer or an
//! [`ApiError`] (the one place domain and store errors meet HTTP).

use std::collections::HashMap;
use std::time::Instant;

use axum::http::StatusCode;
use chrono::Utc;
use domain::{ErrorKind, Message, MessageCommand, MessageError};
use service_kit::auth::Tenant;
use service_kit::http_error::ApiError;
use service_kit::request_context::RequestContext;
use uuid::Uuid;

use crate::api::{CommandAnswer, ObservationRequest, SubmitRequest};
use crate::executor::{self, ExecError};
use crate::metrics::Kind;
use crate::AppState;

/// An accepted command's answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// What the client gets.
    pub answer: CommandAnswer,
    /// True when this repeated an earlier submit with the same idempotency key and body.
    pub replayed: bool,
    /// Events this command appended to the event store.
    pub appended: usize,
    /// How they were committed (`None` when nothing was appended).
    pub committed: Option<event_store::Committed>,
}

/// Runs `command`, recording its metrics as a command of `kind`.
async fn recorded(
    state: &AppState,
    kind: Kind,
    command: impl std::future::Future<Output = Result<Outcome, ApiError>>,
) -> Result<Outcome, ApiError> {
    let started = Instant::now();
    let result = command.await;
    let appended = result.as_ref().map_or(0, |o| o.appended);
    state.metrics.record(kind, started, &result, appended);
    let outcome = crate::metrics::outcome_label(&result);
    match &result {
        Ok(o) => tracing::info!(
            kind = kind.as_str(),
            outcome,
            message_id = %o.answer.message_id,
            sequence = o.answer.sequence,
            "command executed"
        ),
        Err(e) => tracing::info!(
            kind = kind.as_str(),
            outcome,
            status = e.status.as_u16(),
            code = %e.code,
            "command refused"
        ),
    }
    result
}

/// Submit with an optional idempotency key (the id is derived from it when present).
pub async fn submit(
    state: &AppState,
    tenant: Tenant,
    ctx: &RequestContext,
    key: Option<String>,
    body: SubmitRequest,
) -> Result<Outcome, ApiError> {
    recorded(state, Kind::Submit, async {
        let id = match &key {
            Some(key) => {
                domain::validate::validate_idempotency_key(key).map_err(domain_error)?;
                domain::message_id_for(tenant.id, key)
            }
            None => Uuid::new_v4(),
        };
        submit_unrecorded(state, tenant, ctx, id, key, body).await
    })
    .await
}

/// Submit as message `id`: derived from `key` when there is one, otherwise newly generated
/// for this request (no stream is loaded for it).
pub async fn submit_as(
    state: &AppState,
    tenant: Tenant,
    ctx: &RequestContext,
    id: Uuid,
    key: Option<String>,
    body: SubmitRequest,
) -> Result<Outcome, ApiError> {
    recorded(
        state,
        Kind::Submit,
        submit_unrecorded(state, tenant, ctx, id, key, body),
    )
    .await
}

#[tracing::instrument(name = "command.submit", skip_all, fields(message_id = %id))]
async fn submit_unrecorded(
    state: &AppState,
    tenant: Tenant,
    ctx: &RequestContext,
    id: Uuid,
    key: Option<String>,
    body: SubmitRequest,
) -> Result<Outcome, ApiError> {
    if let Some(key) = &key {
        domain::validate::validate_idempotency_key(key).map_err(domain_error)?;
    }
    // Without a key the id was generated for this request: no stream can exist yet.
    let fresh = key.is_none();
    let now = Utc::now();
    let command = body.into_command(tenant.id, id, now);
    let mut metadata = metadata(tenant, ctx, now);
    if let Some(key) = key {
        metadata.insert("idempotency_key".into(), key);
    }
    let done =
        match executor::execute(&state.streams, id, fresh, &command, |_| Ok(()), &metadata).await {
            Ok(done) => done,
            Err(e) => return Err(refusal(state, tenant, e).await),
        };
    if done.events.is_empty() {
        // Same key, same body: the original answer, which was the submit itself.
        let sub = done
            .state
            .submission()
            .ok_or_else(|| ApiError::internal(&"replayed submit has no submission"))?;
        let status = domain::rules::rule_initial_status(sub.submitted_at, sub.scheduled_at);
        return Ok(Outcome {
            answer: CommandAnswer {
                message_id: id,
                status,
                changed: false,
                sequence: 1,
                consistency_token: service_kit::consistency::ConsistencyToken {
                    message_id: id,
                    sequence: 1,
                },
            },
            replayed: true,
            appended: 0,
            committed: None,
        });
    }
    Ok(Outcome {
        answer: CommandAnswer::new(id, &done.state, done.sequence, true),
        replayed: false,
        appended: done.events.len(),
        committed: done.committed,
    })
}

/// Record a provider observation.
pub async fn observe(
    state: &AppState,
    tenant: Tenant,
    ctx: &RequestContext,
    id: Uuid,
    body: ObservationRequest,
) -> Result<Outcome, ApiError> {
    let now = Utc::now();
    recorded(
        state,
        Kind::Observe,
        run(state, tenant, ctx, id, body.into_command(now), now),
    )
    .await
}

/// Cancel before dispatch.
pub async fn cancel(
    state: &AppState,
    tenant: Tenant,
    ctx: &RequestContext,
    id: Uuid,
    reason: Option<String>,
) -> Result<Outcome, ApiError> {
    let now = Utc::now();
    let command = MessageCommand::Cancel {
        reason,
        requested_at: now,
    };
    recorded(
        state,
        Kind::Cancel,
        run(state, tenant, ctx, id, command, now),
    )
    .await
}

#[tracing::instrument(name = "command", skip_all, fields(kind = command_kind(&command), message_id = %id))]
async fn run(
    state: &AppState,
    tenant: Tenant,
    ctx: &RequestContext,
    id: Uuid,
    command: MessageCommand,
    now: chrono::DateTime<Utc>,
) -> Result<Outcome, ApiError> {
    let metadata = metadata(tenant, ctx, now);
    // Another tenant's message answers exactly like a missing one.
    let owned = |m: &Message| m.ensure_tenant(tenant.id).map(|_| ());
    let done = match executor::execute(&state.streams, id, false, &command, owned, &metadata).await
    {
        Ok(done) => done,
        Err(e) => return Err(refusal(state, tenant, e).await),
    };
    let changed = !done.events.is_empty();
    Ok(Outcome {
        answer: CommandAnswer::new(id, &done.state, done.sequence, changed),
        replayed: false,
        appended: done.events.len(),
        committed: done.committed,
    })
}

fn command_kind(command: &MessageCommand) -> &'static str {
    match command {
        MessageCommand::Submit(_) => "submit",
        MessageCommand::RecordObservation(_) => "observe",
        MessageCommand::Cancel { .. } => "cancel",
        _ => "other",
    }
}

/// Metadata stored with every event of one command.
fn metadata(
    tenant: Tenant,
    ctx: &RequestContext,
    now: chrono::DateTime<Utc>,
) -> HashMap<String, String> {
    HashMap::from([
        ("correlation_id".to_string(), ctx.correlation_id.clone()),
        // Each command is its own cause; a batch shares the correlation id, not this.
        ("causation_id".to_string(), Uuid::new_v4().to_string()),
        ("traceparent".to_string(), ctx.traceparent.clone()),
        ("tenant_id".to_string(), tenant.id.to_string()),
        (
            "received_at".to_string(),
            now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        ),
    ])
}

/// Domain refusals: 400 invalid input, 404 unknown message, 409 idempotency conflict, 422
/// a rule of the message's lifecycle.
pub fn domain_error(e: MessageError) -> ApiError {
    let status = match e.kind() {
        ErrorKind::Invalid => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::RuleViolation => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let mut api = ApiError::new(status, e.code(), e.to_string());
    api.field = e.field().map(str::to_string);
    api
}

/// The answer for a command the executor did not carry out. A message whose stored events
/// cannot be read is the owner's problem to hear about, and nobody else's: another tenant
/// gets the same 404 as for any message that is not theirs.
async fn refusal(state: &AppState, tenant: Tenant, e: ExecError) -> ApiError {
    if let ExecError::Unreadable {
        message_id,
        sequence,
        ref reason,
    } = e
    {
        match state.streams.owner_of(message_id).await {
            Ok(Some(owner)) if owner == tenant.id.to_string() => {
                tracing::error!(%message_id, ?sequence, %reason, "stored event cannot be read");
                let at = sequence.map_or(String::new(), |s| format!(" (event {s})"));
                return ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "message_unreadable",
                    format!(
                        "message {message_id} has a stored event{at} that cannot be read; it \
                         takes no commands until an operator repairs it"
                    ),
                );
            }
            Ok(_) => return domain_error(MessageError::MessageNotFound),
            Err(e) => return exec_error(e),
        }
    }
    exec_error(e)
}

fn exec_error(e: ExecError) -> ApiError {
    match e {
        ExecError::Domain(e) => domain_error(e),
        ExecError::Conflict(attempts) => ApiError::new(
            StatusCode::CONFLICT,
            "concurrent_modification",
            format!("the message was modified concurrently ({attempts} attempts); retry"),
        )
        .with_retry_after(1),
        ExecError::Unavailable(cause) => ApiError::unavailable(&cause),
        e @ (ExecError::Unreadable { .. } | ExecError::Refused(_) | ExecError::Store(_)) => {
            ApiError::internal(&e)
        }
    }
}
