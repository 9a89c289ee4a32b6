//! The tables of the read models (migration V3 and later), and the bucket their counters
//! are kept in. Every row of a versioned table
//! carries its read-model `version`: a rebuild writes version N+1 beside N, queries read
//! [`crate::versions::active`], and retiring a version deletes its rows from each of these.

/// One row per event: what queries filter and show.
pub const MESSAGE_EVENTS: &str = "message_events";
/// Current state per message.
pub const MESSAGES: &str = "messages";
/// Status counters per 15-minute bucket, read-model generation 1 (read, no longer written).
pub const STATS_15M: &str = "message_stats_15m";
/// Engagement counters per 15-minute bucket, generation 1.
pub const ENGAGEMENT_15M: &str = "message_engagement_15m";
/// The latency sketch per 15-minute bucket and bin, generation 1.
pub const LATENCY_15M: &str = "message_latency_15m";
/// Events set aside by the projector.
pub const DEAD_LETTERS: &str = "dead_letters";

/// The tables whose rows belong to one read-model version.
pub const VERSIONED: [&str; 9] = [
    MESSAGE_EVENTS,
    MESSAGES,
    STATS_15M,
    ENGAGEMENT_15M,
    LATENCY_15M,
    crate::rollup::Level::Quarter.table(),
    crate::rollup::Level::Hour.table(),
    crate::rollup::Level::Day.table(),
    DEAD_LETTERS,
];

/// The 15-minute UTC bucket of `t`: the rollups' finest unit. Every UTC offset in use is a
/// multiple of 15 minutes, so local days, weeks and months in any zone are unions of them.
pub fn bucket_15m(t: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    crate::rollup::Level::Quarter.bucket(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    #[test]
    fn buckets_are_fifteen_utc_minutes() {
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 12, 44, 59).unwrap();
        assert_eq!(
            bucket_15m(t),
            Utc.with_ymd_and_hms(2024, 3, 1, 12, 30, 0).unwrap()
        );
        let t = Utc.with_ymd_and_hms(2024, 3, 1, 12, 45, 0).unwrap();
        assert_eq!(bucket_15m(t), t);
        let before_epoch = Utc.with_ymd_and_hms(1969, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(
            bucket_15m(before_epoch),
            Utc.with_ymd_and_hms(1969, 12, 31, 23, 45, 0).unwrap()
        );
    }
}
