//! Local-calendar time buckets in any IANA zone.
//!
//! A day in Europe/Berlin is the span between two local midnights: 23 hours on the spring
//! DST change, 25 on the autumn one. Buckets are therefore computed here as a list of UTC
//! boundaries, and the database only assigns rows to them (`width_bucket` over the list),
//! so the same boundaries serve the 15-minute rollup and the raw events alike.
//!
//! Every real UTC offset in use today is a multiple of 15 minutes (Asia/Kathmandu is
//! +05:45), so every local bucket edge falls on a 15-minute UTC boundary and the rollup is
//! exact; [`Buckets::aligned_to_15m`] checks it (historic local-mean-time offsets are not).

use chrono::{
    DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeZone, Timelike,
    Utc, Weekday,
};
use chrono_tz::Tz;

/// Bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bucket {
    /// 15 local minutes.
    Minutes15,
    /// One local hour.
    Hour,
    /// One local calendar day.
    Day,
    /// One ISO week, Monday 00:00 local.
    Week,
    /// One calendar month.
    Month,
    /// The whole range as one bucket.
    None,
}

impl Bucket {
    /// The wire names, for validation messages.
    pub const NAMES: &'static str = "15m, hour, day, week, month, none";

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "15m" => Self::Minutes15,
            "hour" => Self::Hour,
            "day" => Self::Day,
            "week" => Self::Week,
            "month" => Self::Month,
            "none" => Self::None,
            _ => return None,
        })
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Minutes15 => "15m",
            Self::Hour => "hour",
            Self::Day => "day",
            Self::Week => "week",
            Self::Month => "month",
            Self::None => "none",
        }
    }

    /// The usual length of one bucket (a DST day differs), `None` for months and `none`.
    pub fn nominal(self) -> Option<Duration> {
        match self {
            Self::Minutes15 => Some(Duration::minutes(15)),
            Self::Hour => Some(Duration::hours(1)),
            Self::Day => Some(Duration::days(1)),
            Self::Week => Some(Duration::weeks(1)),
            Self::Month | Self::None => None,
        }
    }
}

/// The buckets covering a half-open range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    /// Bucket starts, ascending, then the end of the last bucket: `n + 1` instants.
    pub edges: Vec<DateTime<Utc>>,
    /// The zone the buckets are local to.
    pub tz: Tz,
}

impl Buckets {
    /// The buckets of width `bucket` local to `tz` that cover `[from, to)`. The first may
    /// start before `from` and the last end after `to` (they are partial); `from < to`.
    pub fn covering(from: DateTime<Utc>, to: DateTime<Utc>, bucket: Bucket, tz: Tz) -> Self {
        debug_assert!(from < to);
        if bucket == Bucket::None {
            return Self {
                edges: vec![from, to],
                tz,
            };
        }
        let mut edges = vec![floor(from, bucket, tz)];
        while *edges.last().expect("non-empty") < to {
            let last = *edges.last().expect("non-empty");
            edges.push(next(last, bucket, tz));
        }
        Self { edges, tz }
    }

    /// How many buckets.
    pub fn len(&self) -> usize {
        self.edges.len() - 1
    }

    /// True when there are none (never for a valid range).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `[start, end)` of bucket `i`.
    pub fn span(&self, i: usize) -> (DateTime<Utc>, DateTime<Utc>) {
        (self.edges[i], self.edges[i + 1])
    }

    /// True when every edge lies on a 15-minute UTC boundary, so 15-minute rollup rows fall
    /// wholly inside one bucket.
    pub fn aligned_to_15m(&self) -> bool {
        self.edges.iter().all(|e| is_15m_aligned(*e))
    }
}

/// True when `t` is a whole multiple of 15 minutes since the epoch.
pub fn is_15m_aligned(t: DateTime<Utc>) -> bool {
    t.timestamp().rem_euclid(900) == 0 && t.timestamp_subsec_nanos() == 0
}

/// Start of the bucket containing `t`.
fn floor(t: DateTime<Utc>, bucket: Bucket, tz: Tz) -> DateTime<Utc> {
    let local = t.with_timezone(&tz).naive_local();
    match bucket {
        Bucket::Minutes15 | Bucket::Hour => {
            // Truncate the wall clock using the offset in force at `t`: in the repeated hour
            // of an autumn change, the wall clock alone would not say which 02:00 is meant.
            let offset = Duration::seconds(i64::from(
                tz.offset_from_utc_datetime(&t.naive_utc())
                    .fix()
                    .local_minus_utc(),
            ));
            let minute = if bucket == Bucket::Hour {
                0
            } else {
                local.minute() - local.minute() % 15
            };
            let truncated = local
                .date()
                .and_time(NaiveTime::from_hms_opt(local.hour(), minute, 0).expect("valid time"));
            DateTime::from_naive_utc_and_offset(truncated - offset, Utc)
        }
        Bucket::Day => start_of_day(local.date(), tz),
        Bucket::Week => {
            let monday = local.date()
                - Duration::days(i64::from(local.date().weekday().num_days_from_monday()));
            start_of_day(monday, tz)
        }
        Bucket::Month => start_of_day(first_of_month(local.date()), tz),
        Bucket::None => t,
    }
}

/// Start of the bucket after the one starting at `start`.
fn next(start: DateTime<Utc>, bucket: Bucket, tz: Tz) -> DateTime<Utc> {
    match bucket {
        Bucket::Minutes15 => floor(start + Duration::minutes(15), bucket, tz),
        Bucket::Hour => {
            // A one-hour step lands in the next local hour; the floor re-aligns it when the
            // offset changed by a non-whole hour (Lord Howe's 30-minute DST).
            let candidate = floor(start + Duration::hours(1), bucket, tz);
            if candidate > start {
                candidate
            } else {
                floor(start + Duration::minutes(90), bucket, tz)
            }
        }
        Bucket::Day => start_of_day(local_date(start, tz) + Duration::days(1), tz),
        Bucket::Week => start_of_day(local_date(start, tz) + Duration::weeks(1), tz),
        Bucket::Month => {
            let d = local_date(start, tz);
            let (y, m) = if d.month() == 12 {
                (d.year() + 1, 1)
            } else {
                (d.year(), d.month() + 1)
            };
            start_of_day(NaiveDate::from_ymd_opt(y, m, 1).expect("valid date"), tz)
        }
        Bucket::None => start,
    }
}

fn local_date(t: DateTime<Utc>, tz: Tz) -> NaiveDate {
    t.with_timezone(&tz).date_naive()
}

fn first_of_month(d: NaiveDate) -> NaiveDate {
    d.with_day(1).expect("day 1 exists")
}

/// The first instant of local date `d`: midnight, or, where a DST change skips midnight
/// (e.g. America/Santiago), the first wall-clock time that exists.
fn start_of_day(d: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut wall: NaiveDateTime = d.and_time(NaiveTime::MIN);
    for _ in 0..(4 * 24) {
        if let Some(t) = tz.from_local_datetime(&wall).earliest() {
            return t.with_timezone(&Utc);
        }
        wall += Duration::minutes(15);
    }
    // No zone skips a whole day (Samoa 2011 did: its 30 December never existed).
    start_of_day(d + Duration::days(1), tz)
}

/// Weekday of a local date (re-exported for labels).
pub fn weekday(t: DateTime<Utc>, tz: Tz) -> Weekday {
    local_date(t, tz).weekday()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn hours(b: &Buckets) -> Vec<i64> {
        (0..b.len())
            .map(|i| {
                let (s, e) = b.span(i);
                (e - s).num_hours()
            })
            .collect()
    }

    #[test]
    fn berlin_days_across_both_dst_changes() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let spring = Buckets::covering(
            utc("2026-03-27T23:00:00Z"),
            utc("2026-03-30T22:00:00Z"),
            Bucket::Day,
            tz,
        );
        assert_eq!(
            spring.edges[0],
            utc("2026-03-27T23:00:00Z"),
            "Saturday 00:00 CET"
        );
        assert_eq!(
            hours(&spring),
            vec![24, 23, 24],
            "Sunday 29 March has 23 hours"
        );
        assert_eq!(
            spring.edges[1],
            utc("2026-03-28T23:00:00Z"),
            "Sunday 00:00 CET"
        );
        assert_eq!(
            spring.edges[2],
            utc("2026-03-29T22:00:00Z"),
            "Monday 00:00 CEST"
        );
        let autumn = Buckets::covering(
            utc("2026-10-23T22:00:00Z"),
            utc("2026-10-26T23:00:00Z"),
            Bucket::Day,
            tz,
        );
        assert_eq!(
            hours(&autumn),
            vec![24, 25, 24],
            "Sunday 25 October has 25 hours"
        );
        assert!(spring.aligned_to_15m() && autumn.aligned_to_15m());
    }

    #[test]
    fn berlin_hours_through_the_repeated_autumn_hour() {
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let b = Buckets::covering(
            utc("2026-10-24T23:00:00Z"),
            utc("2026-10-25T03:00:00Z"),
            Bucket::Hour,
            tz,
        );
        // Local 01:00, 02:00 CEST, 02:00 CET, 03:00: four one-hour buckets, none merged.
        assert_eq!(b.len(), 4);
        assert!(hours(&b).iter().all(|h| *h == 1));
        let spring = Buckets::covering(
            utc("2026-03-29T00:00:00Z"),
            utc("2026-03-29T02:00:00Z"),
            Bucket::Hour,
            tz,
        );
        assert_eq!(
            spring.edges,
            vec![
                utc("2026-03-29T00:00:00Z"),
                utc("2026-03-29T01:00:00Z"),
                utc("2026-03-29T02:00:00Z")
            ]
        );
    }

    #[test]
    fn kathmandu_hours_start_at_quarter_past_utc() {
        let tz: Tz = "Asia/Kathmandu".parse().unwrap();
        let b = Buckets::covering(
            utc("2026-06-01T00:00:00Z"),
            utc("2026-06-01T03:00:00Z"),
            Bucket::Hour,
            tz,
        );
        assert_eq!(
            b.edges[0],
            utc("2026-05-31T23:15:00Z"),
            "05:00 local at +05:45"
        );
        assert_eq!(b.edges[1], utc("2026-06-01T00:15:00Z"));
        assert_eq!(b.len(), 4);
        assert!(b.aligned_to_15m());
        let days = Buckets::covering(
            utc("2026-06-01T00:00:00Z"),
            utc("2026-06-02T00:00:00Z"),
            Bucket::Day,
            tz,
        );
        assert_eq!(days.edges[0], utc("2026-05-31T18:15:00Z"));
    }

    #[test]
    fn weeks_start_on_monday_and_months_on_the_first() {
        let tz: Tz = "UTC".parse().unwrap();
        let w = Buckets::covering(
            utc("2026-11-18T12:00:00Z"),
            utc("2026-11-30T00:00:00Z"),
            Bucket::Week,
            tz,
        );
        assert_eq!(w.edges[0], utc("2026-11-16T00:00:00Z"));
        assert_eq!(weekday(w.edges[0], tz), Weekday::Mon);
        assert_eq!(
            w.edges,
            vec![
                utc("2026-11-16T00:00:00Z"),
                utc("2026-11-23T00:00:00Z"),
                utc("2026-11-30T00:00:00Z")
            ]
        );
        let ny: Tz = "America/New_York".parse().unwrap();
        let m = Buckets::covering(
            utc("2026-01-15T00:00:00Z"),
            utc("2026-04-01T04:00:00Z"),
            Bucket::Month,
            ny,
        );
        assert_eq!(
            m.edges,
            vec![
                utc("2026-01-01T05:00:00Z"),
                utc("2026-02-01T05:00:00Z"),
                utc("2026-03-01T05:00:00Z"),
                utc("2026-04-01T04:00:00Z"),
            ]
        );
        let leap = Buckets::covering(
            utc("2028-02-01T00:00:00Z"),
            utc("2028-03-01T00:00:00Z"),
            Bucket::Month,
            tz,
        );
        assert_eq!((leap.edges[1] - leap.edges[0]).num_days(), 29);
    }

    #[test]
    fn midnight_skipped_by_dst_starts_the_day_at_the_first_real_time() {
        // America/Santiago springs forward at 00:00 local: 2026-09-06 has no midnight.
        let tz: Tz = "America/Santiago".parse().unwrap();
        let b = Buckets::covering(
            utc("2026-09-05T12:00:00Z"),
            utc("2026-09-07T12:00:00Z"),
            Bucket::Day,
            tz,
        );
        let day = b
            .edges
            .iter()
            .find(|e| {
                e.with_timezone(&tz).date_naive() == NaiveDate::from_ymd_opt(2026, 9, 6).unwrap()
            })
            .unwrap();
        assert_eq!(
            day.with_timezone(&tz).time(),
            NaiveTime::from_hms_opt(1, 0, 0).unwrap()
        );
        assert!(hours(&b).contains(&23));
    }

    #[test]
    fn fifteen_minute_buckets_and_none() {
        let tz: Tz = "UTC".parse().unwrap();
        let b = Buckets::covering(
            utc("2026-01-01T00:07:00Z"),
            utc("2026-01-01T01:00:00Z"),
            Bucket::Minutes15,
            tz,
        );
        assert_eq!(b.edges[0], utc("2026-01-01T00:00:00Z"));
        assert_eq!(b.len(), 4);
        let whole = Buckets::covering(
            utc("2026-01-01T00:07:00Z"),
            utc("2026-01-02T00:00:00Z"),
            Bucket::None,
            tz,
        );
        assert_eq!(
            whole.edges,
            vec![utc("2026-01-01T00:07:00Z"), utc("2026-01-02T00:00:00Z")]
        );
        assert!(!whole.aligned_to_15m());
    }
}
