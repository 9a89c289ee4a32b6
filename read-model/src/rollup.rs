//! The rollups: one row per (version, tenant, bucket, channel, provider, tag) and level,
//! holding every measure of that group at once: status counts and engagement as arrays in
//! a fixed order, and the two latency sketches whole, each as one `bytea` of bins ascending
//! ([`crate::sketch::encode`]: 3 bytes a bin at 15 minutes, sent to a reader as they are
//! stored, in rows small enough that PostgreSQL keeps them uncompressed and inline).
//!
//! Three levels are kept exactly, in the same transaction as the events they count:
//! 15 minutes (every UTC offset in use is a multiple of it), 1 hour and 1 UTC day. A query
//! reads the coarsest level whose edges fall on all of its bucket edges
//! ([`Level::coarsest_for`]), so one row serves a whole group and bucket, and a day of
//! one group is one row at the day level, 24 at the hour level.
//!
//! The order of [`STATUSES`] and [`ENGAGEMENTS`] is the storage layout: append, never
//! reorder. Arrays written before an append are shorter; a missing element is 0.

use chrono::{DateTime, TimeZone, Utc};

/// The read-model generation of this layout (migration V9). Versions of an older
/// generation are read by the query service as they are but no longer projected.
pub const GENERATION: i32 = 2;

/// Statuses a message can enter, in storage order (index `i` of `entered`).
pub const STATUSES: [&str; 10] = [
    "scheduled",
    "queued",
    "cancelled",
    "dispatched",
    "deferred",
    "delivered",
    "bounced",
    "failed",
    "dropped",
    "expired",
];

/// Engagement kinds, in storage order (index `i` of `engaged` and `engaged_first`).
pub const ENGAGEMENTS: [&str; 4] = ["opened", "clicked", "complained", "unsubscribed"];

/// The latency metrics, each with its sketch column (`bytea`, [`crate::sketch::encode`]).
pub const METRICS: [(&str, &str); 2] = [
    ("submit_to_delivered", "submit_sketch"),
    ("dispatch_to_delivered", "dispatch_sketch"),
];

/// Every column of a rollup row after the version, in the order readers select them.
pub const COLUMNS: &str = "tenant_id, bucket, channel, provider, tag, entered, engaged, \
     engaged_first, submit_sketch, dispatch_sketch";

/// The storage index of a status name.
pub fn status_index(name: &str) -> Option<usize> {
    STATUSES.iter().position(|s| *s == name)
}

/// The storage index of an engagement kind.
pub fn engagement_index(name: &str) -> Option<usize> {
    ENGAGEMENTS.iter().position(|s| *s == name)
}

/// A rollup level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// 15 UTC minutes.
    Quarter,
    /// 1 UTC hour.
    Hour,
    /// 1 UTC day.
    Day,
}

impl Level {
    /// Every level, finest first.
    pub const ALL: [Level; 3] = [Level::Quarter, Level::Hour, Level::Day];

    /// Its width in seconds.
    pub const fn seconds(self) -> i64 {
        match self {
            Level::Quarter => 900,
            Level::Hour => 3_600,
            Level::Day => 86_400,
        }
    }

    /// Its table.
    pub const fn table(self) -> &'static str {
        match self {
            Level::Quarter => "message_rollup_15m",
            Level::Hour => "message_rollup_1h",
            Level::Day => "message_rollup_1d",
        }
    }

    /// Its name in answers (`15m`, `1h`, `1d`).
    pub const fn name(self) -> &'static str {
        match self {
            Level::Quarter => "15m",
            Level::Hour => "1h",
            Level::Day => "1d",
        }
    }

    /// The bucket of this level holding `t` (rounding down, also before 1970).
    pub fn bucket(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let w = self.seconds();
        Utc.timestamp_opt(t.timestamp().div_euclid(w) * w, 0)
            .single()
            .expect("a whole multiple of the width within the range of t")
    }

    /// Whether `t` is an edge of this level's buckets.
    pub fn is_edge(self, t: DateTime<Utc>) -> bool {
        t.timestamp_subsec_nanos() == 0 && t.timestamp().rem_euclid(self.seconds()) == 0
    }

    /// The coarsest level every one of `edges` is an edge of: each bucket of it lies inside
    /// one requested bucket, so summing it answers exactly. `None` when even 15 minutes do
    /// not divide them.
    pub fn coarsest_for(edges: &[DateTime<Utc>]) -> Option<Level> {
        Level::ALL
            .into_iter()
            .rev()
            .find(|l| edges.iter().all(|e| l.is_edge(*e)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn buckets_round_down_at_every_level() {
        let t = at("2024-03-01T12:44:59.5Z");
        assert_eq!(Level::Quarter.bucket(t), at("2024-03-01T12:30:00Z"));
        assert_eq!(Level::Hour.bucket(t), at("2024-03-01T12:00:00Z"));
        assert_eq!(Level::Day.bucket(t), at("2024-03-01T00:00:00Z"));
        assert_eq!(
            Level::Day.bucket(at("1969-12-31T23:59:59Z")),
            at("1969-12-31T00:00:00Z")
        );
    }

    #[test]
    fn the_coarsest_level_divides_every_edge() {
        let days = [at("2024-03-01T00:00:00Z"), at("2024-03-02T00:00:00Z")];
        assert_eq!(Level::coarsest_for(&days), Some(Level::Day));
        // Berlin midnights are whole UTC hours.
        let berlin = [at("2024-02-29T23:00:00Z"), at("2024-03-31T22:00:00Z")];
        assert_eq!(Level::coarsest_for(&berlin), Some(Level::Hour));
        // Kolkata (+05:30) and Kathmandu (+05:45).
        assert_eq!(
            Level::coarsest_for(&[at("2024-02-29T18:30:00Z")]),
            Some(Level::Quarter)
        );
        assert_eq!(
            Level::coarsest_for(&[at("2024-02-29T18:15:00Z")]),
            Some(Level::Quarter)
        );
        assert_eq!(Level::coarsest_for(&[at("2024-02-29T18:10:00Z")]), None);
        assert_eq!(Level::coarsest_for(&[at("2024-02-29T18:00:00.5Z")]), None);
    }

    #[test]
    fn statuses_are_every_status_a_message_can_enter_once() {
        let mut all: Vec<&str> = domain::MessageStatus::ALL
            .iter()
            .map(|s| s.as_str())
            .filter(|s| *s != "accepted")
            .collect();
        all.sort();
        let mut stored = STATUSES.to_vec();
        stored.sort();
        assert_eq!(stored, all);
        let mut kinds: Vec<&str> = domain::EngagementKind::ALL
            .iter()
            .map(|k| k.as_str())
            .collect();
        kinds.sort();
        let mut stored = ENGAGEMENTS.to_vec();
        stored.sort();
        assert_eq!(stored, kinds);
    }
}
