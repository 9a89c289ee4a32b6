//! One event as the `events` table stores it: the row the appender writes, and the columns
//! postgres-es and every Herald reader agree on.

/// One stored event, before the database adds its position, transaction and time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    /// Stream id (the message id as text).
    pub aggregate_id: String,
    /// Position in the stream, from 1.
    pub sequence: i64,
    /// `DomainEvent::event_type` (the variant name).
    pub event_type: String,
    /// `DomainEvent::event_version`.
    pub event_version: String,
    /// The serialized event (JSON text; stored as jsonb).
    pub payload: String,
    /// The serialized metadata map (JSON text; stored as jsonb).
    pub metadata: String,
}
