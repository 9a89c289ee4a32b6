//! Running one command against one Message stream.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`, but a command answer must carry the new
//! sequence (for the consistency token) and the resulting state. So this composes the
//! framework's public `EventStore` pieces instead: load the aggregate from its events
//! (event-store mode: no snapshots, which would re-apply events), decide with the pure
//! domain, commit, and read the sequence off the committed envelopes. Query processors are
//! never involved: read models are fed from the event store by the relay, not in-process.

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{AggregateError, EventStore};
use domain::{decide, Message, MessageCommand, MessageError, MessageEvent};
use postgres_es::PostgresEventRepository;
use tracing::Instrument;
use uuid::Uuid;

/// The Postgres-backed event store of Message streams.
pub type MessageStore = PersistedEventStore<PostgresEventRepository, Message>;

/// How often an optimistic-concurrency conflict is retried before the client is told.
pub const MAX_ATTEMPTS: u32 = 5;

/// The result of a command that the domain accepted.
#[derive(Debug, Clone)]
pub struct Executed {
    /// The stream's sequence after the command (unchanged when nothing was recorded).
    pub sequence: u64,
    /// The events recorded by this command (empty for an idempotent no-op).
    pub events: Vec<MessageEvent>,
    /// The message's state after the command.
    pub state: Message,
}

/// Why a command was not recorded.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// The domain refused it.
    #[error(transparent)]
    Domain(#[from] MessageError),
    /// Other writers kept winning the race for this stream.
    #[error("the message was changed concurrently {0} times in a row")]
    Conflict(u32),
    /// The database could not be reached (or no connection was free in time).
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// Anything else from the store: a defect or corrupt data.
    #[error("event store failure: {0}")]
    Store(String),
}

/// Executes `command` on message `id`, retrying optimistic-concurrency conflicts.
///
/// `check` runs on the loaded state before deciding (tenant scoping for every command but
/// submit). `metadata` is stored with every event the command records.
pub async fn execute(
    store: &MessageStore,
    id: Uuid,
    command: &MessageCommand,
    check: impl Fn(&Message) -> Result<(), MessageError>,
    metadata: &HashMap<String, String>,
) -> Result<Executed, ExecError> {
    let aggregate_id = id.to_string();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let context = store
            .load_aggregate(&aggregate_id)
            .instrument(tracing::info_span!("aggregate.load", attempt))
            .await
            .map_err(store_error)?;
        let current = context.current_sequence as u64;
        check(&context.aggregate)?;
        let events = decide(&context.aggregate, command.clone())?;
        if events.is_empty() {
            return Ok(Executed {
                sequence: current,
                events,
                state: context.aggregate,
            });
        }
        let mut state = context.aggregate.clone();
        for event in &events {
            cqrs_es::Aggregate::apply(&mut state, event.clone());
        }
        let commit_span = tracing::info_span!(
            "event_store.commit",
            attempt,
            events = events.len(),
            sequence = tracing::field::Empty,
        );
        match store
            .commit(events.clone(), context, metadata.clone())
            .instrument(commit_span.clone())
            .await
        {
            Ok(envelopes) => {
                let sequence = envelopes.last().map_or(current, |e| e.sequence as u64);
                commit_span.record("sequence", sequence);
                return Ok(Executed {
                    sequence,
                    events,
                    state,
                });
            }
            Err(AggregateError::AggregateConflict) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, "optimistic-concurrency conflict; retrying");
                // Someone appended first: reload and decide again on their result.
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(AggregateError::AggregateConflict) => return Err(ExecError::Conflict(attempt)),
            Err(e) => return Err(store_error(e)),
        }
    }
}

/// Exponential backoff with jitter, so racing writers do not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = 2u64.pow(attempt.min(6));
    let jitter = (Uuid::new_v4().as_u128() % u128::from(base.max(1))) as u64;
    Duration::from_millis(base + jitter)
}

fn store_error(e: AggregateError<MessageError>) -> ExecError {
    match e {
        AggregateError::UserError(e) => ExecError::Domain(e),
        AggregateError::AggregateConflict => ExecError::Conflict(1),
        AggregateError::DatabaseConnectionError(e) => ExecError::Unavailable(e.to_string()),
        AggregateError::UnexpectedError(e) => {
            // postgres-es reports pool time-outs and dropped connections as "unexpected";
            // they are outages, not defects.
            match e.downcast_ref::<sqlx::Error>() {
                Some(
                    sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::Io(_)
                    | sqlx::Error::Tls(_),
                ) => ExecError::Unavailable(e.to_string()),
                _ => ExecError::Store(e.to_string()),
            }
        }
        other => ExecError::Store(other.to_string()),
    }
}
