//! Herald's event store: the `events` table and everything that touches it from the write
//! side.
//!
//! * [`row`]: the one definition of an event row as it is appended.
//! * [`appender`]: group commit, many commands' events in one transaction, each command
//!   all or nothing and isolated from the others' failures.
//! * [`repository`]: loading an aggregate's events for cqrs-es, decoding without panics.
//! * [`cursor`] and [`stored`]: reading the store in commit-safe order (relay, catch-up,
//!   rebuild), and the transaction horizon that order waits behind.
//! * [`fault`]: the one classification of failures every Herald crate uses.
//!
//! The table's shape is postgres-es's (it names its columns in every statement, so the
//! extra commit-safe columns Herald adds are invisible to it); see migration V1.

pub mod appender;
pub mod cursor;
pub mod fault;
pub mod repository;
pub mod row;
pub mod schema;
pub mod stored;

pub use appender::{AppendError, Appender, Committed};
pub use cursor::{BadCursor, Cursor};
pub use fault::Fault;
pub use repository::{EventRepository, UnreadableEvent};
pub use row::EventRow;
pub use stored::StoredEvent;
