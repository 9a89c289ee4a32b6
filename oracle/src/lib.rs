//! Herald's oracle: an independent account of what every read model must hold.
//!
//! The projector builds the read models incrementally, from stream entries, in batches;
//! this crate computes the same tables from scratch, from the event store, with the domain
//! crate and its own definitions (see [`model`]), and [`verify()`] diffs the two every
//! column of every row: `message_events`, `messages`, the rollups and their latency
//! sketches, and the checkpoints per shard. Operators run it as `projector verify`; the
//! delivery and fault tests end with it.

pub mod diff;
pub mod model;
pub mod verify;

pub use diff::{Difference, Differences};
pub use verify::{verify, Options, Progress, Report, Scope, VerifyError};
