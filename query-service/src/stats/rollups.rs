//! Statistics from the rollup levels of read-model generation 2 ([`read_model::rollup`]).
//!
//! Each row is a whole group and bucket (counts, engagement and both latency sketches), so
//! rows stream into the answer's table as they arrive: a row's bucket lies inside exactly
//! one requested bucket (its level divides every edge), found by binary search over the
//! edges. Nothing but the table (bounded by the answer limits) is ever held.
//!
//! Days in a zone whose midnight is not a UTC midnight (Europe/Berlin's is 23:00 or 22:00
//! UTC) are not sums of UTC days, but every measure is a plain sum, so they are differences:
//! a Berlin day is its UTC day, less the UTC hour after 23:00, plus the UTC hour after
//! 23:00 of the day before. [`Read::DaysMovingHours`] reads one day row and the one or two
//! hours that cross per day and group, instead of 24 hour rows, and is exact for the same
//! reason the hours are.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use read_model::rollup::{Level, METRICS, STATUSES};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::engine::{
    push_channel_provider, push_rollup_tag, reports_engagement, Budget, ComputeError, Table,
    LATENCY_METRICS,
};
use super::params::{Dimension, StatsQuery};

/// How the rows of one piece of a range are read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Read {
    /// Every row of the level in the piece, each inside one requested bucket.
    Rows(Level),
    /// Every day row in the piece, counted in the bucket holding the day's start, and the
    /// listed hour rows, each in another bucket than its day's: subtracted from the day's
    /// bucket and added to its own. Exact wherever whole hours divide every edge.
    DaysMovingHours(Vec<DateTime<Utc>>),
}

/// One part of a range and how it is read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Piece {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// How its rows count.
    pub read: Read,
}

impl Piece {
    /// The finest level of the rows it reads: the one dividing its bucket edges.
    pub fn level(&self) -> Level {
        match self.read {
            Read::Rows(level) => level,
            Read::DaysMovingHours(_) => Level::Hour,
        }
    }
}

/// How `q`'s range is read: the coarsest level dividing every bucket edge inside the range
/// reads its whole buckets, and the ragged ends (a range ending "now", rounded to 15
/// minutes, say) are read at the coarsest level that divides them. Every row read then lies
/// inside one requested bucket. Where hours divide the edges but days do not, whole UTC
/// days are read as days with their crossing hours moved ([`Read::DaysMovingHours`]) when
/// that reads at most half the rows. Empty when even 15 minutes do not divide the edges.
pub fn plan(q: &StatsQuery) -> Vec<Piece> {
    let inside: Vec<DateTime<Utc>> = q
        .buckets
        .edges
        .iter()
        .copied()
        .filter(|e| *e > q.from && *e < q.to)
        .collect();
    let whole = |from: DateTime<Utc>, to: DateTime<Utc>| {
        let mut edges = inside.clone();
        edges.extend([from, to]);
        Level::coarsest_for(&edges).map(|level| Piece {
            from,
            to,
            read: Read::Rows(level),
        })
    };
    let Some(level) = Level::coarsest_for(&inside) else {
        return Vec::new();
    };
    let width = chrono::Duration::seconds(level.seconds());
    let first = level.bucket(q.from);
    let start = if first == q.from {
        first
    } else {
        first + width
    };
    let end = level.bucket(q.to);
    if start >= end {
        return whole(q.from, q.to).into_iter().collect();
    }
    let mut pieces = Vec::with_capacity(5);
    for (from, to) in [(q.from, start), (start, end), (end, q.to)] {
        if from >= to {
            continue;
        }
        match Level::coarsest_for(&[from, to]) {
            Some(l) if l.min(level) == Level::Hour && from == start => {
                pieces.extend(by_days(from, to, &q.buckets.edges));
            }
            Some(l) => pieces.push(Piece {
                from,
                to,
                read: Read::Rows(l.min(level)),
            }),
            None => return Vec::new(),
        }
    }
    pieces
}

/// The hour piece `[from, to)` read as whole UTC days with their crossing hours moved,
/// and hours at its ends, if that reads at most half the rows; else as hours.
fn by_days(from: DateTime<Utc>, to: DateTime<Utc>, edges: &[DateTime<Utc>]) -> Vec<Piece> {
    let hours = |from, to| Piece {
        from,
        to,
        read: Read::Rows(Level::Hour),
    };
    let day = chrono::Duration::days(1);
    let first = Level::Day.bucket(from);
    let start = if first == from { first } else { first + day };
    let end = Level::Day.bucket(to);
    if start >= end {
        return vec![hours(from, to)];
    }
    let days = ((end - start).num_days()) as usize;
    // Day rows plus moved hours, against 24 hour rows a day.
    let budget = days * 12 - days;
    let bucket_of = |t: DateTime<Utc>| edges.partition_point(|e| *e <= t);
    let mut moved = Vec::new();
    let mut d = start;
    while d < end {
        let home = bucket_of(d);
        for h in 1..24 {
            let t = d + chrono::Duration::hours(h);
            if bucket_of(t) != home {
                moved.push(t);
                if moved.len() > budget {
                    return vec![hours(from, to)];
                }
            }
        }
        d += day;
    }
    let mut pieces = Vec::with_capacity(3);
    if from < start {
        pieces.push(hours(from, start));
    }
    pieces.push(Piece {
        from: start,
        to: end,
        read: Read::DaysMovingHours(moved),
    });
    if end < to {
        pieces.push(hours(end, to));
    }
    pieces
}

/// The coarsest level a plan reads (what the answer reports).
pub fn level_of(plan: &[Piece]) -> Option<Level> {
    plan.iter().map(Piece::level).max()
}

/// Which of a row's arrays a statement selects: only what the answer reports is read.
#[derive(Debug, Clone, Copy)]
struct Columns {
    /// `entered`.
    counts: bool,
    /// `engaged`, `engaged_first`.
    engagement: bool,
    /// Per metric of [`METRICS`]: its sketch.
    latency: [bool; METRICS.len()],
}

impl Columns {
    fn of(q: &StatsQuery) -> Self {
        let counts = q.metrics.iter().any(|m| !m.is_latency());
        let reports = reports_engagement(q);
        let mut latency = [false; METRICS.len()];
        for (i, (name, _)) in METRICS.iter().enumerate() {
            latency[i] = reports
                && LATENCY_METRICS
                    .iter()
                    .any(|(m, n)| n == name && q.metrics.contains(m));
        }
        Self {
            counts,
            engagement: counts && reports,
            latency,
        }
    }

    /// The select list: bucket, the three dimensions, then the chosen arrays.
    fn select(&self) -> String {
        let mut cols = vec!["bucket", "channel", "provider", "tag"];
        if self.counts {
            cols.push("entered");
        }
        if self.engagement {
            cols.extend(["engaged", "engaged_first"]);
        }
        for (i, (_, sketch)) in METRICS.iter().enumerate() {
            if self.latency[i] {
                cols.push(sketch);
            }
        }
        cols.join(", ")
    }
}

/// The arrays of one row, decoded into buffers reused from row to row.
#[derive(Default)]
struct Arrays {
    entered: Vec<i64>,
    engaged: Vec<i64>,
    engaged_first: Vec<i64>,
    sketches: [Vec<(i32, i64)>; METRICS.len()],
}

impl Arrays {
    /// Decodes the arrays `columns` selected from `row`.
    fn read(&mut self, row: &PgRow, columns: &Columns) -> Result<(), sqlx::Error> {
        let mut i = 4;
        let mut next = || {
            i += 1;
            i - 1
        };
        if columns.counts {
            pg_array::read(row, next(), &mut self.entered)?;
        }
        if columns.engagement {
            pg_array::read(row, next(), &mut self.engaged)?;
            pg_array::read(row, next(), &mut self.engaged_first)?;
        }
        for m in 0..METRICS.len() {
            if columns.latency[m] {
                let column = next();
                let bytes: &[u8] = row.try_get(column)?;
                read_model::sketch::decode_into(bytes, &mut self.sketches[m]).map_err(|e| {
                    sqlx::Error::ColumnDecode {
                        index: column.to_string(),
                        source: Box::new(e),
                    }
                })?;
            }
        }
        Ok(())
    }
}

/// Computes the table of `q` for `tenant` on `version` from the rollups, piece by piece of
/// `plan`.
pub async fn compute(
    pool: &PgPool,
    q: &StatsQuery,
    tenant: Uuid,
    version: i32,
    plan: &[Piece],
) -> Result<Table, ComputeError> {
    let mut table = Table::new();
    let mut budget = Budget::new(q.buckets.len().max(1));
    let columns = Columns::of(q);
    let statuses: Vec<usize> = if q.filters.status.is_empty() {
        (0..STATUSES.len()).collect()
    } else {
        q.filters
            .status
            .iter()
            .filter_map(|s| read_model::rollup::status_index(s.as_str()))
            .collect()
    };
    let by_status = q.group_by.contains(&Dimension::Status);
    let mut arrays = Arrays::default();

    let edges = &q.buckets.edges;
    // The bucket holding `t`: the last edge at or before it.
    let bucket_of = |t: DateTime<Utc>| {
        let b = edges.partition_point(|e| *e <= t);
        (b > 0 && b < edges.len()).then(|| b - 1)
    };
    let mut add = Adder {
        q,
        columns: &columns,
        statuses: &statuses,
        by_status,
        table: &mut table,
        budget: &mut budget,
    };
    for piece in plan {
        let (level, moved) = match &piece.read {
            Read::Rows(level) => (*level, None),
            Read::DaysMovingHours(moved) => (Level::Day, Some(moved)),
        };
        let mut sql = statement(q, tenant, version, level, &columns, |sql| {
            sql.push(" AND bucket >= ").push_bind(piece.from);
            sql.push(" AND bucket < ").push_bind(piece.to);
        });
        let mut rows = sql.build().fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let Some(b) = bucket_of(row.try_get(0)?) else {
                continue;
            };
            arrays.read(&row, &columns)?;
            add.row(&row, &arrays, b, 1)?;
        }
        drop(rows);
        let Some(moved) = moved.filter(|m| !m.is_empty()) else {
            continue;
        };
        let mut sql = statement(q, tenant, version, Level::Hour, &columns, |sql| {
            sql.push(" AND bucket = ANY(")
                .push_bind(moved.clone())
                .push(")");
        });
        let mut rows = sql.build().fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let hour: DateTime<Utc> = row.try_get(0)?;
            let (Some(to), Some(from)) = (bucket_of(hour), bucket_of(Level::Day.bucket(hour)))
            else {
                continue;
            };
            arrays.read(&row, &columns)?;
            add.row(&row, &arrays, from, -1)?;
            add.row(&row, &arrays, to, 1)?;
        }
    }
    prune(&mut table, &columns);
    Ok(table)
}

/// Adds rows into the table.
struct Adder<'a> {
    q: &'a StatsQuery,
    columns: &'a Columns,
    statuses: &'a [usize],
    by_status: bool,
    table: &'a mut Table,
    budget: &'a mut Budget,
}

impl Adder<'_> {
    /// Adds `sign` times the row (its dimensions from `row`, its arrays decoded in
    /// `arrays`) to bucket `b`.
    fn row(
        &mut self,
        row: &PgRow,
        arrays: &Arrays,
        b: usize,
        sign: i64,
    ) -> Result<(), ComputeError> {
        let dims: [&str; 3] = [row.try_get(1)?, row.try_get(2)?, row.try_get(3)?];
        let value = |d: &Dimension| match d {
            Dimension::Channel => dims[0],
            Dimension::Provider => dims[1],
            Dimension::Tag => dims[2],
            Dimension::Status => "",
        };
        if self.by_status {
            // Status is the one dimension inside a row: one series per status entered.
            for &i in self.statuses {
                let n = arrays.entered.get(i).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let key = self
                    .q
                    .group_by
                    .iter()
                    .map(|d| match d {
                        Dimension::Status => STATUSES[i].to_string(),
                        d => value(d).to_string(),
                    })
                    .collect();
                self.budget
                    .series(self.table, key)?
                    .entry(b)
                    .or_default()
                    .counts[i] += sign * n;
            }
            return Ok(());
        }
        let key = self
            .q
            .group_by
            .iter()
            .map(|d| value(d).to_string())
            .collect();
        let cell = self.budget.series(self.table, key)?.entry(b).or_default();
        if self.columns.counts {
            for &i in self.statuses {
                cell.counts[i] += sign * arrays.entered.get(i).copied().unwrap_or(0);
            }
        }
        if self.columns.engagement {
            for (i, e) in cell.engagement.iter_mut().enumerate() {
                e.0 += sign * arrays.engaged.get(i).copied().unwrap_or(0);
                e.1 += sign * arrays.engaged_first.get(i).copied().unwrap_or(0);
            }
        }
        let mut added = 0;
        for m in 0..METRICS.len() {
            if self.columns.latency[m] {
                added += cell.latency[m].merge_sorted(&arrays.sketches[m], sign);
            }
        }
        self.budget.bins(added)
    }
}

/// Drops the cells that report nothing (a row whose reported measures are all zero, or
/// hours moved out of a day that leave it empty), and series left without cells: the raw
/// path never sees such rows, and answers are the same whichever path serves.
fn prune(table: &mut Table, columns: &Columns) {
    for cells in table.values_mut() {
        cells.retain(|_, c| {
            c.counts.iter().any(|n| *n != 0)
                || (columns.engagement && c.engagement.iter().any(|(t, u)| *t != 0 || *u != 0))
                || c.latency.iter().any(|s| !s.0.is_empty())
        });
    }
    table.retain(|_, cells| !cells.is_empty());
}

/// The statement reading `level`'s rows of the query's groups; `buckets` adds the bucket
/// condition.
fn statement(
    q: &StatsQuery,
    tenant: Uuid,
    version: i32,
    level: Level,
    columns: &Columns,
    buckets: impl FnOnce(&mut QueryBuilder<'static, Postgres>),
) -> QueryBuilder<'static, Postgres> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {} FROM {} WHERE version = ",
        columns.select(),
        level.table()
    ));
    sql.push_bind(version);
    sql.push(" AND tenant_id = ").push_bind(tenant);
    buckets(&mut sql);
    push_rollup_tag(&mut sql, q);
    push_channel_provider(&mut sql, q, "");
    sql
}

/// Decoding PostgreSQL's binary array format straight into a reused buffer. The rollup
/// arrays are most of what a statistics answer reads, and decoding them element by element
/// through the driver's generic path cost more than the query itself.
mod pg_array {
    use sqlx::postgres::{PgRow, PgValueFormat};
    use sqlx::{Row, ValueRef};

    /// An element type of a rollup array.
    pub trait Element:
        Sized
        + for<'r> sqlx::Decode<'r, sqlx::Postgres>
        + sqlx::Type<sqlx::Postgres>
        + sqlx::postgres::PgHasArrayType
    {
        /// Its width in the binary format.
        const WIDTH: usize;
        /// Decodes one big-endian element.
        fn from_be(bytes: &[u8]) -> Self;
    }

    impl Element for i32 {
        const WIDTH: usize = 4;
        fn from_be(bytes: &[u8]) -> Self {
            i32::from_be_bytes(bytes.try_into().expect("width checked"))
        }
    }

    impl Element for i64 {
        const WIDTH: usize = 8;
        fn from_be(bytes: &[u8]) -> Self {
            i64::from_be_bytes(bytes.try_into().expect("width checked"))
        }
    }

    fn corrupt(column: usize, why: &str) -> sqlx::Error {
        sqlx::Error::ColumnDecode {
            index: column.to_string(),
            source: format!("rollup array: {why}").into(),
        }
    }

    /// Replaces `out` with the one-dimensional array in `column` of `row` (NULL or empty:
    /// nothing). NULL elements, which the rollups never hold, are refused.
    pub fn read<T: Element>(
        row: &PgRow,
        column: usize,
        out: &mut Vec<T>,
    ) -> Result<(), sqlx::Error> {
        out.clear();
        let value = row.try_get_raw(column)?;
        if value.is_null() {
            return Ok(());
        }
        if value.format() != PgValueFormat::Binary {
            // Not what the driver asks for today; the generic path stays correct.
            *out = row.try_get::<Vec<T>, _>(column)?;
            return Ok(());
        }
        let bytes = value
            .as_bytes()
            .map_err(|e| corrupt(column, &e.to_string()))?;
        let word = |at: usize| -> Result<i32, sqlx::Error> {
            bytes
                .get(at..at + 4)
                .map(|b| i32::from_be_bytes(b.try_into().expect("4 bytes")))
                .ok_or_else(|| corrupt(column, "truncated header"))
        };
        let dims = word(0)?;
        if dims == 0 {
            return Ok(());
        }
        if dims != 1 {
            return Err(corrupt(column, "not one-dimensional"));
        }
        let len = usize::try_from(word(12)?).map_err(|_| corrupt(column, "negative length"))?;
        let mut at = 20;
        out.reserve(len);
        for _ in 0..len {
            let width = word(at)?;
            if width < 0 {
                return Err(corrupt(column, "NULL element"));
            }
            if width as usize != T::WIDTH {
                return Err(corrupt(column, "unexpected element width"));
            }
            let element = bytes
                .get(at + 4..at + 4 + T::WIDTH)
                .ok_or_else(|| corrupt(column, "truncated element"))?;
            out.push(T::from_be(element));
            at += 4 + T::WIDTH;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::params;

    fn q(from: &str, to: &str, bucket: &str, tz: &str) -> StatsQuery {
        let pairs: Vec<(String, String)> =
            [("from", from), ("to", to), ("bucket", bucket), ("tz", tz)]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
        params::parse(&pairs, Utc::now()).unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn whole_buckets_come_from_the_coarse_level_and_ragged_ends_from_finer_ones() {
        // Berlin days up to "now", rounded to 15 minutes.
        let plan = super::plan(&q(
            "2024-03-01T00:00:00Z",
            "2024-03-05T10:45:00Z",
            "day",
            "Europe/Berlin",
        ));
        assert_eq!(
            plan,
            vec![
                Piece {
                    from: at("2024-03-01T00:00:00Z"),
                    to: at("2024-03-05T00:00:00Z"),
                    // Berlin's midnight is 23:00 UTC in March: one hour a day crosses.
                    read: Read::DaysMovingHours(vec![
                        at("2024-03-01T23:00:00Z"),
                        at("2024-03-02T23:00:00Z"),
                        at("2024-03-03T23:00:00Z"),
                        at("2024-03-04T23:00:00Z"),
                    ])
                },
                Piece {
                    from: at("2024-03-05T00:00:00Z"),
                    to: at("2024-03-05T10:00:00Z"),
                    read: Read::Rows(Level::Hour)
                },
                Piece {
                    from: at("2024-03-05T10:00:00Z"),
                    to: at("2024-03-05T10:45:00Z"),
                    read: Read::Rows(Level::Quarter)
                },
            ]
        );
        assert_eq!(level_of(&plan), Some(Level::Hour));
        // UTC days: both ends ragged.
        let plan = super::plan(&q(
            "2024-03-01T06:15:00Z",
            "2024-03-05T10:45:00Z",
            "day",
            "UTC",
        ));
        let levels: Vec<Level> = plan.iter().map(Piece::level).collect();
        assert_eq!(levels, [Level::Quarter, Level::Day, Level::Quarter]);
        assert_eq!(plan[1].from, at("2024-03-02T00:00:00Z"));
        assert_eq!(plan[1].to, at("2024-03-05T00:00:00Z"));
        // Kolkata hours are half past: 15 minutes throughout.
        let plan = super::plan(&q(
            "2024-03-01T00:00:00Z",
            "2024-03-02T00:00:00Z",
            "hour",
            "Asia/Kolkata",
        ));
        assert!(
            plan.iter().all(|p| p.read == Read::Rows(Level::Quarter)),
            "{plan:?}"
        );
        // Hours in Berlin: every hour of a day is its own bucket, so hours are read.
        let plan = super::plan(&q(
            "2024-03-01T00:00:00Z",
            "2024-03-03T00:00:00Z",
            "hour",
            "Europe/Berlin",
        ));
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].read, Read::Rows(Level::Hour));
        // Berlin months across the spring DST change: day rows, and the hour before each
        // local midnight that starts a month moved into the month it starts.
        let plan = super::plan(&q(
            "2024-01-31T23:00:00Z",
            "2024-04-30T22:00:00Z",
            "month",
            "Europe/Berlin",
        ));
        let moved: Vec<DateTime<Utc>> = plan
            .iter()
            .filter_map(|p| match &p.read {
                Read::DaysMovingHours(m) => Some(m.clone()),
                Read::Rows(_) => None,
            })
            .flatten()
            .collect();
        assert_eq!(
            moved,
            [
                at("2024-02-29T23:00:00Z"),
                at("2024-03-31T22:00:00Z"),
                at("2024-03-31T23:00:00Z")
            ]
        );
        assert_eq!(level_of(&plan), Some(Level::Hour));
        // The pieces cover the range exactly.
        for w in plan.windows(2) {
            assert_eq!(w[0].to, w[1].from);
        }
    }
}
