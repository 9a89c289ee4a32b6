//! A position in the event store's commit-safe order.
//!
//! A [`Cursor`] is `(tx_id, global_position)`: the writing transaction, then the append
//! order within it. Readers take only rows below the transaction horizon (see
//! [`crate::stored::BELOW_HORIZON`]) in cursor order, so no transaction can commit behind a
//! cursor. It is also the Redis stream entry id of the event (`<tx_id>-<global_position>`,
//! both u63), so ids increase with the cursor and a repeated `XADD` of the same event is
//! refused by Redis instead of duplicated.

use std::fmt;
use std::str::FromStr;

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
}
