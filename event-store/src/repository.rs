//! Loading an aggregate's events for cqrs-es, without ever panicking on what is stored.
//!
//! cqrs-es's `PersistedEventStore` (event-store mode) asks a repository for a stream's
//! events and replays them. postgres-es's repository decodes each row with `Row::get`,
//! which panics when a stored payload does not decode, taking the request's connection
//! down with it. This repository reads the same table and columns, but fetches payloads as
//! text and decodes them itself: a stored event that cannot be read becomes an
//! [`UnreadableEvent`] naming the stream and the sequence, which the caller can answer
//! like any other error.
//!
//! Appends never go through here: Herald writes with the group-commit
//! [`crate::Appender`]. Snapshots are never read (event-store mode keeps none).

use cqrs_es::persist::{
    PersistedEventRepository, PersistenceError, ReplayStream, SerializedEvent, SerializedSnapshot,
};
use cqrs_es::Aggregate;
use serde_json::Value;
use sqlx::PgPool;

use crate::fault::Fault;

/// A stored event that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("stored event {sequence} of {aggregate_id} cannot be read: {reason}")]
pub struct UnreadableEvent {
    /// The stream.
    pub aggregate_id: String,
    /// The event's position in it.
    pub sequence: i64,
    /// What the decoder said.
    pub reason: String,
}

/// The Postgres `events` table as a cqrs-es repository (reads only).
#[derive(Clone, Debug)]
pub struct EventRepository {
    pool: PgPool,
}

impl EventRepository {
    /// A repository over `pool`'s `events` table.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    async fn select(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
        after: i64,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        type Row = (i64, String, String, String, String);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT sequence, event_type, event_version, payload::text, metadata::text \
               FROM events WHERE aggregate_type = $1 AND aggregate_id = $2 AND sequence > $3 \
              ORDER BY sequence",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .bind(after)
        .fetch_all(&self.pool)
        .await
        .map_err(database_error)?;
        rows.into_iter()
            .map(|(sequence, event_type, event_version, payload, metadata)| {
                let decode = |text: &str| {
                    serde_json::from_str::<Value>(text).map_err(|e| {
                        PersistenceError::DeserializationError(Box::new(UnreadableEvent {
                            aggregate_id: aggregate_id.to_string(),
                            sequence,
                            reason: e.to_string(),
                        }))
                    })
                };
                Ok(SerializedEvent::new(
                    aggregate_id.to_string(),
                    usize::try_from(sequence).unwrap_or_default(),
                    aggregate_type.to_string(),
                    event_type,
                    event_version,
                    decode(&payload)?,
                    decode(&metadata)?,
                ))
            })
            .collect()
    }
}

fn database_error(e: sqlx::Error) -> PersistenceError {
    if Fault::of_sqlx(&e).is_retryable() {
        PersistenceError::ConnectionError(Box::new(e))
    } else {
        PersistenceError::UnknownError(Box::new(e))
    }
}

impl PersistedEventRepository for EventRepository {
    async fn get_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        self.select(A::TYPE, aggregate_id, 0).await
    }

    async fn get_last_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
        last_sequence: usize,
    ) -> Result<Vec<SerializedEvent>, PersistenceError> {
        let after = i64::try_from(last_sequence).unwrap_or(i64::MAX);
        self.select(A::TYPE, aggregate_id, after).await
    }

    async fn get_snapshot<A: Aggregate>(
        &self,
        _aggregate_id: &str,
    ) -> Result<Option<SerializedSnapshot>, PersistenceError> {
        Ok(None)
    }

    async fn persist<A: Aggregate>(
        &self,
        _events: &[SerializedEvent],
        _snapshot_update: Option<(String, Value, usize)>,
    ) -> Result<(), PersistenceError> {
        Err(PersistenceError::UnknownError(
            "Herald appends through the group-commit appender, never through the repository".into(),
        ))
    }

    async fn stream_events<A: Aggregate>(
        &self,
        aggregate_id: &str,
    ) -> Result<ReplayStream, PersistenceError> {
        let events = self.select(A::TYPE, aggregate_id, 0).await?;
        let (mut feed, stream) = ReplayStream::new(events.len().max(1));
        for event in events {
            if feed.push(Ok(event)).await.is_err() {
                break;
            }
        }
        Ok(stream)
    }

    async fn stream_all_events<A: Aggregate>(&self) -> Result<ReplayStream, PersistenceError> {
        Err(PersistenceError::UnknownError(
            "replaying every stream goes through the projector's rebuild, not cqrs-es".into(),
        ))
    }
}

impl EventRepository {
    /// The tenant that recorded `aggregate_id`'s first event, read from its metadata with
    /// SQL alone, so it answers even when the events themselves do not decode (to tell the
    /// owner "unreadable" and everyone else "not found").
    pub async fn owner_of(
        &self,
        aggregate_type: &str,
        aggregate_id: &str,
    ) -> Result<Option<String>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT metadata->>'tenant_id' FROM events \
              WHERE aggregate_type = $1 AND aggregate_id = $2 ORDER BY sequence LIMIT 1",
        )
        .bind(aggregate_type)
        .bind(aggregate_id)
        .fetch_optional(&self.pool)
        .await
        .map(Option::flatten)
    }
}
