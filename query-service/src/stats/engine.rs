//! Computing statistics from the raw event hypertable (and from the 15-minute rollups of
//! read-model generation 1, which versions built before generation 2 still have): one SQL
//! shape per measure, producing the rows one assembler turns into the answer. Generation-2
//! rollups are read by [`super::rollups`]. SQL text is built only from whitelisted pieces (the column of a [`Dimension`]);
//! every value is a bound parameter.
//!
//! Rows are assigned to local-calendar buckets with `width_bucket(time, edges)`, the edges
//! coming from [`super::buckets`]. On the rollup, a row's 15-minute bucket lies wholly
//! inside one local bucket whenever the edges are 15-minute aligned, which is why both
//! paths agree exactly.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use read_model::rollup::{engagement_index, status_index, ENGAGEMENTS, STATUSES};
use read_model::sketch;
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::buckets::is_15m_aligned;
use super::params::{Dimension, Metric, StatsQuery, MAX_CELLS, MAX_LATENCY_BINS};

/// Why a table was not computed.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The answer would hold more than [`MAX_CELLS`] (series × buckets); `series` is how
    /// many series were seen before stopping.
    #[error("at least {series} series × {buckets} buckets exceed {MAX_CELLS} cells")]
    TooManyCells {
        /// Series seen so far (a lower bound).
        series: usize,
        /// Buckets per series.
        buckets: usize,
    },
    /// The latency sketches of the answer would hold more than [`MAX_LATENCY_BINS`] bins.
    #[error("latency sketches exceed {MAX_LATENCY_BINS} bins")]
    TooDetailed,
}

/// Keeps a table within the answer bounds while rows stream in.
pub(crate) struct Budget {
    buckets: usize,
    bins: usize,
}

impl Budget {
    /// A budget for answers of `buckets` buckets per series.
    pub(crate) fn new(buckets: usize) -> Self {
        Self { buckets, bins: 0 }
    }

    pub(crate) fn series<'t>(
        &mut self,
        table: &'t mut Table,
        key: Vec<String>,
    ) -> Result<&'t mut BTreeMap<usize, Cell>, ComputeError> {
        if !table.contains_key(&key) {
            let series = table.len() + 1;
            if series.saturating_mul(self.buckets) > MAX_CELLS {
                return Err(ComputeError::TooManyCells {
                    series,
                    buckets: self.buckets,
                });
            }
        }
        Ok(table.entry(key).or_default())
    }

    pub(crate) fn bin(&mut self) -> Result<(), ComputeError> {
        self.bins(1)
    }

    pub(crate) fn bins(&mut self, added: usize) -> Result<(), ComputeError> {
        self.bins += added;
        if self.bins > MAX_LATENCY_BINS {
            return Err(ComputeError::TooDetailed);
        }
        Ok(())
    }
}

/// Where the numbers come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The rollups: the levels of [`super::rollups`] (generation 2), or the 15-minute
    /// tables of generation 1 (`message_stats_15m`, ...) for a version built before them.
    Rollup,
    /// `message_events`.
    Raw,
}

/// The latency metrics and their stored names.
pub const LATENCY_METRICS: [(Metric, &str); 2] = [
    (Metric::LatencySubmitToDelivered, "submit_to_delivered"),
    (Metric::LatencyDispatchToDelivered, "dispatch_to_delivered"),
];

/// Whether the rollup can answer `q` exactly, and if not, why.
pub fn rollup_refusal(q: &StatsQuery) -> Option<&'static str> {
    if !q.buckets.aligned_to_15m() || !is_15m_aligned(q.from) || !is_15m_aligned(q.to) {
        return Some("from, to and every bucket edge must fall on 15-minute UTC boundaries");
    }
    if q.filters.tag.len() > 1 && !q.group_by.contains(&Dimension::Tag) {
        // The rollup counts a message once per tag; several tags would count it twice.
        return Some("a filter on several tags without grouping by tag needs per-message data");
    }
    None
}

/// Bins below this are merged in a dense array ([`Sketch::merge_sorted`]); every
/// latency's bin is (`read_model::sketch::bin_of` gives at most 2,184 for the longest).
const DENSE_BINS: usize = 4096;

/// The dense array of [`Sketch::merge_sorted`] and which of its bins a merge touched, so
/// that reading them back costs the bins held, not the width of the array.
struct Scratch {
    counts: Vec<i64>,
    held: [u64; DENSE_BINS / 64],
}

thread_local! {
    /// All zeros between merges.
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::new(Scratch {
        counts: vec![0; DENSE_BINS],
        held: [0; DENSE_BINS / 64],
    });
}

/// A latency sketch: `(bin, samples)` sorted by bin, without empty bins. Kept sorted as
/// stored sketches are, so that its ends bound its bins and it reads out in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sketch(pub Vec<(i32, i64)>);

impl Sketch {
    /// Adds `samples` to `bin`; true when the bin is new.
    pub fn add(&mut self, bin: i32, samples: i64) -> bool {
        match self.0.binary_search_by_key(&bin, |(b, _)| *b) {
            Ok(i) => {
                self.0[i].1 += samples;
                false
            }
            Err(i) => {
                self.0.insert(i, (bin, samples));
                true
            }
        }
    }

    /// Adds the pairs of `other` (sorted by bin), each count times `sign` (-1 subtracts);
    /// returns how many bins are new. Bins left with no samples are dropped.
    ///
    /// Merging is most of the time of an answer with latency over many rows, and a
    /// comparison merge of two sketches of a few hundred bins mispredicts a branch at
    /// nearly every step. So where every bin is a latency's (below [`DENSE_BINS`]), the
    /// counts are added in a dense array indexed by bin, reused from merge to merge, and
    /// read back in order: a few straight passes. Other bins take [`Self::merge_by_order`].
    pub fn merge_sorted(&mut self, other: &[(i32, i64)], sign: i64) -> usize {
        // Both are sorted with the zero bin first, so their ends say where all bins lie.
        let dense = |pairs: &[(i32, i64)]| {
            let mut bins = pairs.iter().map(|(b, _)| *b);
            let first = bins.find(|b| *b != sketch::ZERO_BIN);
            let last = bins.next_back().or(first);
            first.is_none_or(|b| b >= 0) && last.is_none_or(|b| b < DENSE_BINS as i32)
        };
        if self.0.is_empty() {
            self.0.extend(
                other
                    .iter()
                    .filter(|(_, n)| *n != 0)
                    .map(|&(b, n)| (b, sign * n)),
            );
            return self.0.len();
        }
        if !dense(other) || !dense(&self.0) {
            return self.merge_by_order(other, sign);
        }
        SCRATCH.with_borrow_mut(|Scratch { counts, held }| {
            let mine = &mut self.0;
            let (mut zero, mut had_zero) = (0, false);
            let hold = |b: usize, held: &mut [u64; DENSE_BINS / 64]| {
                let (word, bit) = (b / 64, 1u64 << (b % 64));
                let new = held[word] & bit == 0;
                held[word] |= bit;
                new
            };
            for &(b, n) in mine.iter() {
                if b == sketch::ZERO_BIN {
                    (zero, had_zero) = (n, true);
                } else {
                    counts[b as usize] = n;
                    hold(b as usize, held);
                }
            }
            let mut new = 0;
            for &(b, n) in other {
                if n == 0 {
                    continue;
                }
                if b == sketch::ZERO_BIN {
                    new += usize::from(zero == 0 && !had_zero);
                    zero += sign * n;
                } else {
                    new += usize::from(hold(b as usize, held));
                    counts[b as usize] += sign * n;
                }
            }
            mine.clear();
            if zero != 0 {
                mine.push((sketch::ZERO_BIN, zero));
            }
            // Read the held bins back in order, leaving the scratch all zeros.
            for (w, word) in held.iter_mut().enumerate() {
                while *word != 0 {
                    let b = w * 64 + word.trailing_zeros() as usize;
                    *word &= *word - 1;
                    let n = std::mem::take(&mut counts[b]);
                    if n != 0 {
                        mine.push((b as i32, n));
                    }
                }
            }
            new
        })
    }

    /// [`Self::merge_sorted`] by comparing bins in order: one forward pass adds to the bins
    /// the sketch has and counts the ones it lacks; when there are any, the sketch grows by
    /// that many and one backward pass moves its bins up and drops the new ones into place.
    fn merge_by_order(&mut self, other: &[(i32, i64)], sign: i64) -> usize {
        let mine = &mut self.0;
        let (mut i, mut new, mut emptied) = (0, 0, false);
        for &(bin, n) in other {
            if n == 0 {
                continue;
            }
            while i < mine.len() && mine[i].0 < bin {
                i += 1;
            }
            match mine.get_mut(i) {
                Some((b, m)) if *b == bin => {
                    *m += sign * n;
                    // Emptied by a subtraction (see `rollups::Read::DaysMovingHours`).
                    emptied |= *m == 0;
                    i += 1;
                }
                _ => new += 1,
            }
        }
        if new > 0 {
            let old = mine.len();
            mine.resize(old + new, (0, 0));
            // `k` counts the old bins not yet moved, `w` the slots not yet written.
            let (mut k, mut w) = (old, old + new);
            for &(bin, n) in other.iter().rev() {
                if n == 0 {
                    continue;
                }
                while k > 0 && mine[k - 1].0 > bin {
                    w -= 1;
                    mine[w] = mine[k - 1];
                    k -= 1;
                }
                if k > 0 && mine[k - 1].0 == bin {
                    // Added in the first pass.
                    w -= 1;
                    mine[w] = mine[k - 1];
                    k -= 1;
                } else {
                    w -= 1;
                    mine[w] = (bin, sign * n);
                }
                if w == k {
                    break;
                }
            }
        }
        if emptied {
            mine.retain(|(_, n)| *n != 0);
        }
        new
    }

    /// Samples in the sketch.
    pub fn samples(&self) -> i64 {
        self.0.iter().map(|(_, n)| n).sum()
    }
}

/// Measures of one (series, bucket) cell, in the storage order of [`read_model::rollup`]:
/// counts by [`STATUSES`], engagement by [`ENGAGEMENTS`], sketches by [`LATENCY_METRICS`].
/// Fixed arrays, so that adding a stored row is index arithmetic, not map lookups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    /// Messages entering each status.
    pub counts: [i64; STATUSES.len()],
    /// Engagement (total, unique messages) of each kind.
    pub engagement: [(i64, i64); ENGAGEMENTS.len()],
    /// One sketch per latency metric.
    pub latency: [Sketch; LATENCY_METRICS.len()],
}

impl Cell {
    /// Adds `other` into `self` (counters and sketches merge by addition).
    pub fn merge(&mut self, other: &Cell) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for (a, b) in self.engagement.iter_mut().zip(other.engagement) {
            a.0 += b.0;
            a.1 += b.1;
        }
        for (a, b) in self.latency.iter_mut().zip(&other.latency) {
            a.merge_sorted(&b.0, 1);
        }
    }
}

/// Series key (values in `group_by` order) → bucket index → cell.
pub type Table = BTreeMap<Vec<String>, BTreeMap<usize, Cell>>;

/// True when engagement and latency are reported: they have no status, so grouping or
/// filtering by status applies to status counts only and leaves them out.
pub fn reports_engagement(q: &StatsQuery) -> bool {
    !q.group_by.contains(&Dimension::Status) && q.filters.status.is_empty()
}

/// Computes the table of `q` for `tenant` on read-model `version` from `source`, streaming
/// the rows and stopping as soon as the answer would outgrow its bounds.
pub async fn compute(
    pool: &PgPool,
    q: &StatsQuery,
    tenant: Uuid,
    version: i32,
    source: Source,
) -> Result<Table, ComputeError> {
    let mut table = Table::new();
    let mut budget = Budget::new(q.buckets.len().max(1));
    let wants_counts = q.metrics.iter().any(|m| !m.is_latency());
    if wants_counts {
        let mut sql = statement(q, tenant, version, source, Measure::Counts);
        let mut rows = sql.build().fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let (b, key, rest) = split(&row, q, 1)?;
            let n: i64 = row.try_get(row.len() - 1)?;
            let Some(i) = status_index(&rest[0]) else {
                continue;
            };
            budget.series(&mut table, key)?.entry(b).or_default().counts[i] += n;
        }
    }
    if reports_engagement(q) && wants_counts {
        let mut sql = statement(q, tenant, version, source, Measure::Engagement);
        let mut rows = sql.build().fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let (b, key, rest) = split(&row, q, 1)?;
            let total: i64 = row.try_get(row.len() - 2)?;
            let unique: i64 = row.try_get(row.len() - 1)?;
            let Some(i) = engagement_index(&rest[0]) else {
                continue;
            };
            let e = &mut budget
                .series(&mut table, key)?
                .entry(b)
                .or_default()
                .engagement[i];
            e.0 += total;
            e.1 += unique;
        }
    }
    let metrics: Vec<&str> = LATENCY_METRICS
        .iter()
        .filter(|(m, _)| q.metrics.contains(m))
        .map(|(_, n)| *n)
        .collect();
    if !metrics.is_empty() && reports_engagement(q) {
        let mut sql = statement(q, tenant, version, source, Measure::Latency(&metrics));
        let mut rows = sql.build().fetch(pool);
        while let Some(row) = rows.try_next().await? {
            let (b, key, rest) = split(&row, q, 1)?;
            let Some(metric) = LATENCY_METRICS.iter().position(|(_, n)| *n == rest[0]) else {
                continue;
            };
            let count: i64 = row.try_get(row.len() - 1)?;
            let bin = match source {
                Source::Rollup => row.try_get::<i32, _>(row.len() - 2)?,
                // Raw rows carry the latency itself; binning here with the sketch's one
                // definition is what makes both paths identical.
                Source::Raw => sketch::bin_of(row.try_get::<i64, _>(row.len() - 2)?),
            };
            let sketch = &mut budget
                .series(&mut table, key)?
                .entry(b)
                .or_default()
                .latency[metric];
            if sketch.add(bin, count) {
                budget.bin()?;
            }
        }
    }
    Ok(table)
}

#[derive(Clone, Copy)]
enum Measure<'a> {
    Counts,
    Engagement,
    Latency(&'a [&'a str]),
}

/// Bucket index (0-based), series key, then `extra` more text columns.
fn split(
    row: &sqlx::postgres::PgRow,
    q: &StatsQuery,
    extra: usize,
) -> Result<(usize, Vec<String>, Vec<String>), sqlx::Error> {
    let b: i32 = row.try_get(0)?;
    let dims = q.group_by.len();
    let mut key = Vec::with_capacity(dims);
    for i in 0..dims {
        key.push(row.try_get::<String, _>(1 + i)?);
    }
    let mut rest = Vec::with_capacity(extra);
    for i in 0..extra {
        rest.push(row.try_get::<String, _>(1 + dims + i)?);
    }
    // width_bucket is 1-based; the WHERE clause keeps rows inside the edges.
    Ok(((b - 1).max(0) as usize, key, rest))
}

/// The column holding `d` in `source`'s table.
fn column(d: Dimension, source: Source) -> &'static str {
    match (d, source) {
        (Dimension::Channel, _) => "channel",
        (Dimension::Provider, _) => "provider",
        (Dimension::Status, _) => "status",
        (Dimension::Tag, Source::Rollup) => "tag",
        (Dimension::Tag, Source::Raw) => "tg.tag",
    }
}

/// The statement for one measure; the caller streams its rows (`build().fetch(pool)`).
fn statement(
    q: &StatsQuery,
    tenant: Uuid,
    version: i32,
    source: Source,
    measure: Measure<'_>,
) -> QueryBuilder<'static, Postgres> {
    let edges: Vec<DateTime<Utc>> = q.buckets.edges.clone();
    let grouped_by_tag = q.group_by.contains(&Dimension::Tag);
    let dims: Vec<&str> = q.group_by.iter().map(|d| column(*d, source)).collect();
    // The time a row counts at: its 15-minute bucket on the rollup; on the raw path the
    // event's time, except for latency, which is per message (the current sample of each
    // delivered message, at its delivery time: see `domain::rules::rule_latency_sample`).
    let time = match (source, measure) {
        (Source::Rollup, _) => "bucket",
        (Source::Raw, Measure::Latency(_)) => "e.delivered_at",
        (Source::Raw, _) => "e.occurred_at",
    };
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new("SELECT width_bucket(");
    sql.push(time);
    sql.push(", ")
        .push_bind(edges)
        .push("::timestamptz[])::int AS b");
    for d in &dims {
        sql.push(", ").push(*d);
    }
    match (measure, source) {
        (Measure::Counts, Source::Rollup) => sql.push(", status, sum(entered)::bigint FROM message_stats_15m"),
        (Measure::Counts, Source::Raw) => sql.push(", e.status, count(*)::bigint FROM message_events e"),
        (Measure::Engagement, Source::Rollup) => sql.push(", engagement, sum(total)::bigint, sum(unique_messages)::bigint FROM message_engagement_15m"),
        (Measure::Engagement, Source::Raw) => sql.push(", e.engagement, count(*)::bigint, (count(*) FILTER (WHERE e.engagement_first))::bigint FROM message_events e"),
        (Measure::Latency(_), Source::Rollup) => sql.push(", metric, bin, sum(count)::bigint FROM message_latency_15m"),
        (Measure::Latency(_), Source::Raw) => sql.push(", m.metric, m.value, count(*)::bigint FROM messages e CROSS JOIN LATERAL (VALUES ('submit_to_delivered', e.latency_ms_from_submit), ('dispatch_to_delivered', e.latency_ms_from_dispatch)) AS m(metric, value)"),
    };
    if source == Source::Raw && grouped_by_tag {
        // A message counts once under each distinct tag, as the rollup counts it.
        sql.push(" CROSS JOIN LATERAL (SELECT DISTINCT t AS tag FROM unnest(e.tags) AS u(t) WHERE t <> '') tg");
    }
    let p = match source {
        Source::Rollup => "",
        Source::Raw => "e.",
    };
    sql.push(format!(" WHERE {p}version = ")).push_bind(version);
    sql.push(format!(" AND {p}tenant_id = ")).push_bind(tenant);
    sql.push(format!(" AND {time} >= ")).push_bind(q.from);
    sql.push(format!(" AND {time} < ")).push_bind(q.to);
    match source {
        Source::Rollup => push_rollup_tag(&mut sql, q),
        Source::Raw => {
            if !q.filters.tag.is_empty() {
                if grouped_by_tag {
                    sql.push(" AND tg.tag = ANY(")
                        .push_bind(q.filters.tag.clone())
                        .push(")");
                } else {
                    sql.push(" AND e.tags && ").push_bind(q.filters.tag.clone());
                }
            }
        }
    }
    push_channel_provider(&mut sql, q, p);
    let statuses: Vec<String> = q
        .filters
        .status
        .iter()
        .map(|s| s.as_str().to_string())
        .collect();
    let last_cols = match (measure, source) {
        (Measure::Counts, Source::Rollup) => {
            if !statuses.is_empty() {
                sql.push(" AND status = ANY(").push_bind(statuses).push(")");
            }
            vec!["status"]
        }
        (Measure::Counts, Source::Raw) => {
            sql.push(" AND e.status_changed");
            if !statuses.is_empty() {
                sql.push(" AND e.status = ANY(")
                    .push_bind(statuses)
                    .push(")");
            }
            vec!["e.status"]
        }
        (Measure::Engagement, Source::Rollup) => vec!["engagement"],
        (Measure::Engagement, Source::Raw) => {
            sql.push(" AND e.engagement IS NOT NULL");
            vec!["e.engagement"]
        }
        (Measure::Latency(metrics), Source::Rollup) => {
            let m: Vec<String> = metrics.iter().map(|s| s.to_string()).collect();
            sql.push(" AND metric = ANY(").push_bind(m).push(")");
            vec!["metric", "bin"]
        }
        (Measure::Latency(metrics), Source::Raw) => {
            let m: Vec<String> = metrics.iter().map(|s| s.to_string()).collect();
            sql.push(" AND e.status = 'delivered' AND m.value IS NOT NULL AND m.metric = ANY(")
                .push_bind(m)
                .push(")");
            vec!["m.metric", "m.value"]
        }
    };
    sql.push(" GROUP BY b");
    for d in dims.iter().chain(last_cols.iter()) {
        sql.push(", ").push(*d);
    }
    sql
}

/// The tag condition on a rollup table: per-tag rows when grouping by tag (filtered to the
/// requested tags), the one requested tag's rows, or the untagged totals row (tag `''`).
pub(crate) fn push_rollup_tag(sql: &mut QueryBuilder<'static, Postgres>, q: &StatsQuery) {
    if q.group_by.contains(&Dimension::Tag) {
        sql.push(" AND tag <> ''");
        if !q.filters.tag.is_empty() {
            sql.push(" AND tag = ANY(")
                .push_bind(q.filters.tag.clone())
                .push(")");
        }
    } else if let [only] = q.filters.tag.as_slice() {
        sql.push(" AND tag = ").push_bind(only.clone());
    } else {
        sql.push(" AND tag = ''");
    }
}

/// The channel and provider filters, on columns prefixed by `prefix` (`e.` or nothing).
pub(crate) fn push_channel_provider(
    sql: &mut QueryBuilder<'static, Postgres>,
    q: &StatsQuery,
    prefix: &str,
) {
    if !q.filters.channel.is_empty() {
        let v: Vec<String> = q
            .filters
            .channel
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        sql.push(format!(" AND {prefix}channel = ANY("))
            .push_bind(v)
            .push(")");
    }
    if !q.filters.provider.is_empty() {
        sql.push(format!(" AND {prefix}provider = ANY("))
            .push_bind(q.filters.provider.clone())
            .push(")");
    }
}

#[cfg(test)]
mod tests {
    use super::Sketch;
    use std::collections::BTreeMap;

    /// A small deterministic generator (xorshift), so the cases are the same every run.
    fn next(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn sorted(state: &mut u64, bins: u64, fill: u64) -> Vec<(i32, i64)> {
        let mut out = Vec::new();
        for b in 0..bins as i32 {
            if next(state) % 100 < fill {
                out.push((b, (next(state) % 5) as i64));
            }
        }
        out
    }

    #[test]
    fn merging_equals_adding_bin_by_bin_whatever_the_overlap_and_sign() {
        let mut state = 0x9e37_79b9_7f4a_7c15;
        for case in 0..2_000 {
            let (bins, fill) = (1 + next(&mut state) % 40, next(&mut state) % 101);
            let mine = sorted(&mut state, bins, fill);
            // Mostly within what is there (the in-place path), sometimes beyond it.
            let theirs = if case % 3 == 0 {
                sorted(&mut state, bins + 5, fill)
            } else {
                let mut picked = Vec::new();
                for (b, _) in &mine {
                    if next(&mut state).is_multiple_of(2) {
                        picked.push((*b, (next(&mut state) % 4) as i64));
                    }
                }
                picked
            };
            let sign = if case % 4 == 1 { -1 } else { 1 };
            let mut want: BTreeMap<i32, i64> =
                mine.iter().copied().filter(|(_, n)| *n != 0).collect();
            let before = want.len();
            for (b, n) in &theirs {
                if *n != 0 {
                    *want.entry(*b).or_default() += sign * n;
                }
            }
            let new = theirs
                .iter()
                .filter(|(b, n)| *n != 0 && !mine.iter().any(|(m, k)| m == b && *k != 0))
                .count();
            want.retain(|_, n| *n != 0);
            let want: Vec<(i32, i64)> = want.into_iter().collect();
            let mut sketch = Sketch(mine.iter().copied().filter(|(_, n)| *n != 0).collect());
            let added = sketch.merge_sorted(&theirs, sign);
            assert_eq!(sketch.0, want, "case {case}");
            assert_eq!(added, new, "case {case}: {before} bins before");
            // Bins beyond any latency's take the merge by order, and the zero bin (the
            // first of `sorted`'s, moved to i32::MIN) its own slot: the same sums.
            for shift in [
                |b: i32| b + 100_000,
                |b: i32| if b == 0 { i32::MIN } else { b },
            ] {
                let moved = |p: &[(i32, i64)]| -> Vec<(i32, i64)> {
                    p.iter().map(|&(b, n)| (shift(b), n)).collect()
                };
                let mut sketch =
                    Sketch(moved(&mine).into_iter().filter(|(_, n)| *n != 0).collect());
                let added = sketch.merge_sorted(&moved(&theirs), sign);
                assert_eq!(sketch.0, moved(&want), "case {case}, bins moved");
                assert_eq!(added, new, "case {case}, bins moved");
            }
        }
    }
}
