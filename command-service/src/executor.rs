//! Running one command against one Message stream.
//!
//! cqrs-es's `CqrsFramework::execute` returns `()`, but a command answer must carry the new
//! sequence (for the consistency token) and the resulting state. So this composes the
//! framework's public `EventStore` pieces instead: load the aggregate from its events
//! (event-store mode: no snapshots, which would re-apply events), decide with the pure
//! domain, append, and answer with the new sequence. Query processors are never involved:
//! read models are fed from the event store by the relay, not in-process.
//!
//! Loading goes through cqrs-es's event store over Herald's [`EventRepository`] (which
//! reports an undecodable stored event as an error instead of panicking). Appending goes
//! through the [`Appender`] (group commit: concurrent commands share a transaction) into the
//! same table, with the row format and optimistic-concurrency key postgres-es uses.

use std::collections::HashMap;
use std::time::Duration;

use cqrs_es::persist::PersistedEventStore;
use cqrs_es::{Aggregate, AggregateError, DomainEvent, EventStore};
use domain::{decide, Message, MessageCommand, MessageError, MessageEvent};
use event_store::{AppendError, Appender, Committed, EventRepository, EventRow, UnreadableEvent};
use tracing::Instrument;
use uuid::Uuid;

/// The Postgres-backed event store of Message streams.
pub type MessageStore = PersistedEventStore<EventRepository, Message>;

/// Message streams: loaded through cqrs-es, appended through the group-commit appender.
pub struct Streams {
    store: MessageStore,
    repository: EventRepository,
    appender: Appender,
}

impl Streams {
    /// Streams in `pool`'s event store.
    pub fn new(pool: sqlx::PgPool) -> Self {
        let repository = EventRepository::new(pool.clone());
        Self {
            store: PersistedEventStore::new_event_store(repository.clone()),
            repository,
            // Two flushers: one gathers the next group while the other commits.
            appender: Appender::start(pool, Message::TYPE, 2, 2_000),
        }
    }

    /// The tenant that owns message `id` according to its stored metadata (read with SQL
    /// alone, so it works for a stream whose events do not decode).
    pub async fn owner_of(&self, id: Uuid) -> Result<Option<String>, ExecError> {
        self.repository
            .owner_of(Message::TYPE, &id.to_string())
            .await
            .map_err(|e| {
                if event_store::fault::is_outage(&e) {
                    ExecError::Unavailable(e.to_string())
                } else {
                    ExecError::Store(e.to_string())
                }
            })
    }
}

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
    /// How the events were committed (`None` when nothing was recorded).
    pub committed: Option<Committed>,
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
    /// A stored event of this message does not decode: the message cannot take commands
    /// until an operator repairs it.
    #[error("message {message_id} cannot be read: {reason}")]
    Unreadable {
        /// The message.
        message_id: Uuid,
        /// The undecodable event's sequence, when known.
        sequence: Option<i64>,
        /// What the decoder said.
        reason: String,
    },
    /// The database refused the events (never a client's mistake: input is validated
    /// before it gets here).
    #[error("event store refused the events: {0}")]
    Refused(String),
    /// Anything else from the store: a defect.
    #[error("event store failure: {0}")]
    Store(String),
}

/// Executes `command` on message `id`, retrying optimistic-concurrency conflicts.
///
/// `fresh` says the id was just generated (a submit without idempotency key), so there is
/// no stream to load. `check` runs on the loaded state before deciding (tenant scoping for
/// every command but submit). `metadata` is stored with every event the command records.
pub async fn execute(
    streams: &Streams,
    id: Uuid,
    fresh: bool,
    command: &MessageCommand,
    check: impl Fn(&Message) -> Result<(), MessageError>,
    metadata: &HashMap<String, String>,
) -> Result<Executed, ExecError> {
    let aggregate_id = id.to_string();
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (loaded, current) = if fresh && attempt == 1 {
            (Message::default(), 0)
        } else {
            let context = streams
                .store
                .load_aggregate(&aggregate_id)
                .instrument(tracing::info_span!("aggregate.load", attempt))
                .await
                .map_err(|e| store_error(id, e))?;
            let current = context.current_sequence as u64;
            (context.aggregate, current)
        };
        check(&loaded)?;
        let events = decide(&loaded, command.clone())?;
        if events.is_empty() {
            return Ok(Executed {
                sequence: current,
                events,
                state: loaded,
                committed: None,
            });
        }
        let metadata_json =
            serde_json::to_string(metadata).map_err(|e| ExecError::Store(e.to_string()))?;
        let mut rows = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            rows.push(EventRow {
                aggregate_id: aggregate_id.clone(),
                sequence: (current + i as u64 + 1) as i64,
                event_type: event.event_type(),
                event_version: event.event_version(),
                payload: serde_json::to_string(event)
                    .map_err(|e| ExecError::Store(e.to_string()))?,
                metadata: metadata_json.clone(),
            });
        }
        let mut state = loaded;
        for event in &events {
            state.apply(event.clone());
        }
        let commit_span = tracing::info_span!(
            "event_store.commit",
            attempt,
            events = events.len(),
            sequence = tracing::field::Empty,
        );
        match streams
            .appender
            .append(rows)
            .instrument(commit_span.clone())
            .await
        {
            Ok(committed) => {
                let sequence = current + events.len() as u64;
                commit_span.record("sequence", sequence);
                return Ok(Executed {
                    sequence,
                    events,
                    state,
                    committed: Some(committed),
                });
            }
            Err(AppendError::Conflict) if attempt < MAX_ATTEMPTS => {
                tracing::debug!(attempt, "optimistic-concurrency conflict; retrying");
                // Someone appended first: reload and decide again on their result.
                tokio::time::sleep(backoff(attempt)).await;
            }
            Err(AppendError::Conflict) => return Err(ExecError::Conflict(attempt)),
            Err(AppendError::Unavailable(e)) => return Err(ExecError::Unavailable(e)),
            Err(AppendError::Refused(e)) => return Err(ExecError::Refused(e)),
        }
    }
}

/// Exponential backoff with jitter, so racing writers do not collide again in lockstep.
fn backoff(attempt: u32) -> Duration {
    let base = 2u64.pow(attempt.min(6));
    let jitter = (Uuid::new_v4().as_u128() % u128::from(base.max(1))) as u64;
    Duration::from_millis(base + jitter)
}

fn store_error(id: Uuid, e: AggregateError<MessageError>) -> ExecError {
    match e {
        AggregateError::UserError(e) => ExecError::Domain(e),
        AggregateError::AggregateConflict => ExecError::Conflict(1),
        AggregateError::DatabaseConnectionError(e) => ExecError::Unavailable(e.to_string()),
        // Either the repository could not decode the stored JSON, or cqrs-es could not
        // turn the decoded JSON into a `MessageEvent`.
        AggregateError::DeserializationError(e) => match e.downcast_ref::<UnreadableEvent>() {
            Some(u) => ExecError::Unreadable {
                message_id: id,
                sequence: Some(u.sequence),
                reason: u.reason.clone(),
            },
            None => ExecError::Unreadable {
                message_id: id,
                sequence: None,
                reason: e.to_string(),
            },
        },
        AggregateError::UnexpectedError(e) => ExecError::Store(e.to_string()),
    }
}
