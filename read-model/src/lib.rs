//! The read-model contract: everything the projector writes and the query service reads,
//! defined once.
//!
//! * [`tables`]: the tables of a read-model version, and which of them are versioned.
//! * [`rollup`]: the rollup levels and their row layout.
//! * [`sketch`]: the latency sketch's bins and percentiles.
//! * [`shard`]: which stream shard a message belongs to, and a shard's projection name.
//! * [`checkpoint`]: per `(version, shard)`, the last event applied.
//! * [`versions`]: which read-model versions are live, and which one queries read.
//! * [`relay_position`]: how far the relay has published, overall and per shard.
//! * [`lag`]: how far a version trails the event store, measured cheaply.
//! * [`freshness`]: what every answer says about how current it is.
//! * [`messages`] and [`dead_letters`]: the rows queries and tools read.
//! * [`schema`]: the objects all of this relies on, checked after every migration run.
//!
//! Writing the rows is the projector's; reading them for answers is the query service's.
//! Both depend on this crate, neither on the other.

pub mod checkpoint;
pub mod dead_letters;
pub mod freshness;
pub mod lag;
pub mod messages;
pub mod relay_position;
pub mod rollup;
pub mod schema;
pub mod shard;
pub mod sketch;
pub mod tables;
pub mod versions;

pub use freshness::Freshness;
pub use lag::Lag;
