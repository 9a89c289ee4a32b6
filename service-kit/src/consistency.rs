//! The consistency token: what a command answer hands the client so a later read can wait
//! until the read side has caught up with that write (read-your-writes).
//!
//! It names a message and the sequence number of its newest event after the command, as
//! `<message uuid>.<sequence>`. Opaque to clients, but deliberately readable in logs.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A message and the stream position a read must reflect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConsistencyToken {
    /// The message (aggregate) id.
    pub message_id: Uuid,
    /// The sequence of its newest event when the token was issued.
    pub sequence: u64,
}

/// A token that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid consistency token: expected <message id>.<sequence>")]
pub struct InvalidToken;

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.message_id.simple(), self.sequence)
    }
}

impl FromStr for ConsistencyToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (id, seq) = s.split_once('.').ok_or(InvalidToken)?;
        let message_id = Uuid::parse_str(id).map_err(|_| InvalidToken)?;
        // Stream sequences are stored as bigint: a token past i64::MAX names no event that
        // can exist (and would read back negative).
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(InvalidToken);
        }
        let sequence = seq
            .parse::<u64>()
            .ok()
            .filter(|s| i64::try_from(*s).is_ok())
            .ok_or(InvalidToken)?;
        Ok(Self {
            message_id,
            sequence,
        })
    }
}

impl serde::Serialize for ConsistencyToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ConsistencyToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let t = ConsistencyToken {
            message_id: Uuid::from_u128(7),
            sequence: 42,
        };
        let text = t.to_string();
        assert_eq!(text, "00000000000000000000000000000007.42");
        assert_eq!(text.parse::<ConsistencyToken>(), Ok(t));
        let max = format!("{}.{}", Uuid::from_u128(7).simple(), i64::MAX);
        assert_eq!(
            max.parse::<ConsistencyToken>().unwrap().sequence,
            i64::MAX as u64
        );
        for bad in [
            "",
            "x.1",
            "00000000000000000000000000000007",
            "00000000000000000000000000000007.-1",
            "00000000000000000000000000000007.a",
            "00000000000000000000000000000007.9223372036854775808",
            "00000000000000000000000000000007.18446744073709551615",
            "00000000000000000000000000000007.+5",
        ] {
            assert_eq!(bad.parse::<ConsistencyToken>(), Err(InvalidToken), "{bad}");
        }
    }
}
