//! Herald's event store: the `events` table and everything that touches it from the write
//! side.
//!
//! * [`row`]: the one definition of a stored event row.
//! * [`appender`]: group commit, many commands' events in one transaction, each command
//!   all or nothing and isolated from the others' failures.
//! * [`repository`]: loading an aggregate's events for cqrs-es, decoding without panics.
//! * [`fault`]: the one classification of database failures every Herald crate uses.
//!
//! The table's shape is postgres-es's (it names its columns in every statement, so the
//! extra commit-safe columns Herald adds are invisible to it); see migration V1.

pub mod appender;
pub mod fault;
pub mod repository;
pub mod row;

pub use appender::{AppendError, Appender, Committed};
pub use fault::Fault;
pub use repository::{EventRepository, UnreadableEvent};
pub use row::EventRow;
