//! Stream shards and cursors.
//!
//! A [`Cursor`] is the position of an event in commit-safe order, `(tx_id, global_position)`.
//! It is also the Redis stream entry id of the event (`<tx_id>-<global_position>`, both
//! u64), so ids increase with the cursor and a repeated `XADD` of the same event is refused
//! by Redis ("equal or smaller than the target stream top item") instead of duplicated.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// Position of an event in commit-safe order. `Cursor::ZERO` is before every event.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// The writing transaction (`events.tx_id`, an xid8, as a number).
    pub tx_id: i64,
    /// `events.global_position`.
    pub global_position: i64,
}

impl Cursor {
    /// Before every event.
    pub const ZERO: Cursor = Cursor {
        tx_id: 0,
        global_position: 0,
    };

    /// A cursor from its two parts.
    pub const fn new(tx_id: i64, global_position: i64) -> Self {
        Self {
            tx_id,
            global_position,
        }
    }

    /// The Redis stream entry id of the event at this cursor.
    pub fn entry_id(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.tx_id, self.global_position)
    }
}

/// A text that is not `<u63>-<u63>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a stream entry id / cursor: {0:?}")]
pub struct BadCursor(pub String);

impl FromStr for Cursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadCursor(s.to_string());
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let tx_id: i64 = a.parse().map_err(|_| bad())?;
        let global_position: i64 = b.parse().map_err(|_| bad())?;
        if tx_id < 0 || global_position < 0 {
            return Err(bad());
        }
        Ok(Self::new(tx_id, global_position))
    }
}

/// The shard of an aggregate: the first four bytes of SHA-256(aggregate_id), big-endian,
/// modulo `shards`. The SQL function `herald_shard(text, int)` (migration V3) computes the
/// same value, so one shard can be read straight from the event store.
pub fn shard_of(aggregate_id: &str, shards: u32) -> u32 {
    let digest = Sha256::digest(aggregate_id.as_bytes());
    let prefix = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    prefix % shards.max(1)
}

/// The stream key of `shard`: `{prefix}:events:{shard}`.
pub fn stream_key(prefix: &str, shard: u32) -> String {
    format!("{prefix}:events:{shard}")
}

/// The consumer group of a read-model version: `projector-v<version>`.
pub fn group_name(version: i32) -> String {
    format!("projector-v{version}")
}

/// The `projection` name of a read-model version in `projection_checkpoints`.
pub fn projection_name(version: i32) -> String {
    format!("read_model_v{version}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_through_entry_ids_and_orders_like_the_tuple() {
        let c = Cursor::new(812, 44);
        assert_eq!(c.entry_id(), "812-44");
        assert_eq!("812-44".parse::<Cursor>().unwrap(), c);
        assert!(Cursor::new(812, 44) < Cursor::new(813, 1));
        assert!(Cursor::new(812, 44) < Cursor::new(812, 45));
        assert!("812".parse::<Cursor>().is_err());
        assert!("a-1".parse::<Cursor>().is_err());
        assert!("-1-2".parse::<Cursor>().is_err());
    }

    #[test]
    fn shard_is_the_sha256_prefix_modulo_n() {
        // sha256("abc") starts ba7816bf = 3128432319; mod 4 = 3, mod 7 = 3128432319 % 7.
        assert_eq!(shard_of("abc", 4), 3);
        assert_eq!(shard_of("abc", 7), (3_128_432_319u64 % 7) as u32);
        assert_eq!(shard_of("abc", 1), 0);
        let spread: std::collections::BTreeSet<u32> = (0..200)
            .map(|i| shard_of(&format!("message-{i}"), 4))
            .collect();
        assert_eq!(spread.len(), 4);
    }
}
