//! What a statistics query costs against its tenant's budget (`query_cost_per_second`):
//! the stored rows it reads for one series, times 4 for each `group_by` dimension.
//!
//! It is known before anything is read, from the plan the query would run, so a query over
//! the budget is refused before it costs anything. A series of the rollups reads one row
//! per interval of the level serving it (15 minutes, an hour, a day); the raw path reads
//! events, counted as [`RAW_FACTOR`] rows per 15 minutes. How many series a grouping
//! yields is not known before reading; 4 per dimension is a nominal fan-out (3 channels, a
//! few providers, statuses or tags) that keeps a three-way grouping 64 times as dear as
//! none.

use chrono::{DateTime, Utc};
use read_model::rollup::Level;

use super::engine::Source;
use super::params::StatsQuery;
use super::rollups::{self, Piece, Read};

/// Rows one raw 15-minute interval counts as: it scans events, not one stored row.
pub const RAW_FACTOR: u64 = 4;
/// What each `group_by` dimension multiplies the cost by.
pub const PER_DIMENSION: u64 = 4;

/// The cost of `q` served from `source`.
pub fn of(q: &StatsQuery, source: Source) -> u64 {
    let rows = match source {
        Source::Rollup => {
            let plan = rollups::plan(q);
            if plan.is_empty() {
                intervals(q.from, q.to, Level::Quarter)
            } else {
                plan.iter().map(rows_of).sum()
            }
        }
        Source::Raw => intervals(q.from, q.to, Level::Quarter) * RAW_FACTOR,
    };
    rows.max(1) * PER_DIMENSION.pow(q.group_by.len() as u32)
}

fn rows_of(piece: &Piece) -> u64 {
    match &piece.read {
        Read::Rows(level) => intervals(piece.from, piece.to, *level),
        Read::DaysMovingHours(moved) => {
            intervals(piece.from, piece.to, Level::Day) + moved.len() as u64
        }
    }
}

/// Intervals of `level` that `[from, to)` touches.
fn intervals(from: DateTime<Utc>, to: DateTime<Utc>, level: Level) -> u64 {
    let seconds = (to - from).num_seconds().max(0) as u64;
    seconds.div_ceil(level.seconds() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::params;

    fn query(pairs: &[(&str, &str)]) -> StatsQuery {
        let now: DateTime<Utc> = "2026-06-01T00:00:00Z".parse().unwrap();
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params::parse(&pairs, now).unwrap()
    }

    #[test]
    fn a_query_costs_the_rows_of_the_level_that_serves_it_per_series() {
        let month = [
            ("from", "2026-04-01T00:00:00Z"),
            ("to", "2026-05-01T00:00:00Z"),
        ];
        let hours = query(&[month[0], month[1], ("bucket", "hour")]);
        assert_eq!(of(&hours, Source::Rollup), 30 * 24);
        let by_channel = query(&[
            month[0],
            month[1],
            ("bucket", "hour"),
            ("group_by", "channel"),
        ]);
        assert_eq!(of(&by_channel, Source::Rollup), 30 * 24 * 4);
        let quarters = query(&[month[0], month[1], ("bucket", "15m")]);
        assert_eq!(of(&quarters, Source::Rollup), 30 * 96);
        assert_eq!(of(&quarters, Source::Raw), 30 * 96 * RAW_FACTOR);
        // UTC days are read as days: far cheaper than their hours.
        let days = query(&[month[0], month[1], ("bucket", "day")]);
        assert_eq!(of(&days, Source::Rollup), 30);
        // Berlin's days move a few hours: still far below 24 rows a day.
        let berlin = query(&[
            month[0],
            month[1],
            ("bucket", "day"),
            ("tz", "Europe/Berlin"),
        ]);
        let cost = of(&berlin, Source::Rollup);
        assert!(cost > 30 && cost < 30 * 24, "{cost}");
    }
}
