//! Turning a computed table into the answer: buckets labelled in the requested zone, empty
//! buckets filled as asked, rates with their stated denominators, percentiles from merged
//! sketches, totals per series and overall.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::MessageStatus;
use read_model::sketch;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct, Serializer};
use serde::{Deserialize, Serialize};

use super::engine::{Cell, Source, Table, LATENCY_METRICS};
use super::params::{Fill, Metric, StatsQuery};
use read_model::Freshness;

/// Statuses a message can enter, in lifecycle order (the keys of `counts`).
pub const COUNTED_STATUSES: [MessageStatus; 10] = [
    MessageStatus::Scheduled,
    MessageStatus::Queued,
    MessageStatus::Cancelled,
    MessageStatus::Dispatched,
    MessageStatus::Deferred,
    MessageStatus::Delivered,
    MessageStatus::Bounced,
    MessageStatus::Failed,
    MessageStatus::Dropped,
    MessageStatus::Expired,
];

/// Engagement kinds (the keys of `engagement`), in the order cells store them.
pub use read_model::rollup::ENGAGEMENTS;

/// What each rate divides by, stated in every answer.
pub const DEFINITIONS: [(&str, &str); 6] = [
    ("counts", "messages entering each status in the bucket, by the provider's occurred_at"),
    ("delivery_rate", "delivered / (delivered + bounced + failed + dropped + expired); null when the denominator is 0"),
    ("bounce_rate", "bounced / (delivered + bounced + failed + dropped + expired); null when the denominator is 0"),
    ("open_rate", "unique opened / delivered; null when delivered is 0"),
    ("click_rate", "unique clicked / delivered; null when delivered is 0"),
    ("latency", "milliseconds, p50/p95/p99 within 1% relative error (log-bucket sketch); one sample per delivered message, its current latency, in the bucket of its delivery; null without samples"),
];

/// Counts of engagement of one kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EngagementCount {
    /// Every report.
    pub total: Option<i64>,
    /// Messages engaged for the first time.
    pub unique: Option<i64>,
}

/// Percentiles of one latency metric.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Percentiles {
    /// Median, ms.
    pub p50: Option<f64>,
    /// 95th percentile, ms.
    pub p95: Option<f64>,
    /// 99th percentile, ms.
    pub p99: Option<f64>,
    /// Samples behind them.
    pub samples: Option<i64>,
}

/// A key of the measure maps: the names are fixed, so an answer of thousands of buckets
/// borrows them instead of allocating each one per bucket.
pub type Name = std::borrow::Cow<'static, str>;

/// The measures of one bucket, or of a total.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Measures {
    /// Status → messages entering it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counts: Option<BTreeMap<Name, Option<i64>>>,
    /// Engagement kind → counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engagement: Option<BTreeMap<Name, EngagementCount>>,
    /// Rate name → value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rates: Option<BTreeMap<Name, Option<f64>>>,
    /// Latency metric → percentiles.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<BTreeMap<Name, Percentiles>>,
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BucketAnswer {
    /// Start, in the requested zone.
    pub start: String,
    /// End (exclusive), in the requested zone.
    pub end: String,
    /// Length in seconds: a DST day is 82,800 or 90,000.
    pub seconds: i64,
    /// True when the bucket extends beyond [from, to) and only part of it is counted.
    pub partial: bool,
    /// The measures.
    #[serde(flatten)]
    pub measures: Measures,
}

/// One series: a combination of `group_by` values.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Series {
    /// Dimension → value.
    pub key: BTreeMap<String, String>,
    /// Buckets in time order.
    pub buckets: Vec<BucketAnswer>,
    /// The series over the whole range.
    pub totals: Measures,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StatsAnswer {
    /// Range start.
    pub from: DateTime<Utc>,
    /// Range end (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub bucket: String,
    /// The IANA zone the buckets are local to.
    pub tz: String,
    /// The dimensions each series is split by, in request order.
    pub group_by: Vec<String>,
    /// Rollup or raw.
    pub source: Source,
    /// The rollup level that answered (`15m`, `1h`, `1d`); absent for raw answers.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub level: Option<String>,
    /// What each measure means.
    pub definitions: BTreeMap<String, String>,
    /// The series.
    pub series: Vec<Series>,
    /// Everything matching the filters, over the whole range.
    pub totals: Measures,
    /// How current this is.
    pub freshness: Freshness,
    /// Whether the newest bucket is still open (its end is in the future).
    pub newest_bucket_open: bool,
}

/// Everything an answer is made of, borrowed from the request: [`assemble`] turns it
/// into the typed [`StatsAnswer`], [`write`] into the same JSON without building that first.
pub struct Parts<'a> {
    /// The query.
    pub q: &'a StatsQuery,
    /// The computed table.
    pub table: &'a Table,
    /// The ungrouped cell when it had to be computed separately (grouping by tag counts a
    /// message once per tag); otherwise the series totals are summed.
    pub overall: Option<&'a Cell>,
    /// Where the numbers came from.
    pub source: Source,
    /// The rollup level that answered.
    pub level: Option<&'a str>,
    /// How current it is.
    pub freshness: &'a Freshness,
    /// When it was computed.
    pub now: DateTime<Utc>,
    /// Whether engagement and latency are reported ([`super::engine::reports_engagement`]).
    pub with_engagement: bool,
}

impl Parts<'_> {
    /// The series in answer order (an ungrouped answer always has one), each with its
    /// total; and the overall total.
    fn series(&self) -> (Vec<SeriesParts<'_>>, Cell) {
        let mut out = Vec::with_capacity(self.table.len().max(1));
        let mut overall = Cell::default();
        for (key, cells) in self.table {
            let mut total = Cell::default();
            for c in cells.values() {
                total.merge(c);
            }
            overall.merge(&total);
            out.push((key.as_slice(), Some(cells), total));
        }
        if out.is_empty() && self.q.group_by.is_empty() {
            out.push((&[][..], None, Cell::default()));
        }
        (out, self.overall.cloned().unwrap_or(overall))
    }

    /// The figures of bucket `i` of a series, or none when it is left out.
    fn bucket(&self, cell: Option<&Cell>) -> Option<Figures> {
        let figures = |c: &Cell, null| Figures::of(self.q, c, null, self.with_engagement);
        match (cell, self.q.fill) {
            (Some(c), _) => Some(figures(c, false)),
            (None, Fill::None) => None,
            (None, Fill::Zero) => Some(figures(&Cell::default(), false)),
            (None, Fill::Null) => Some(figures(&Cell::default(), true)),
        }
    }
}

/// Bucket index → cell, of one series.
type Cells = BTreeMap<usize, Cell>;

/// A series: its key, its cells (none for the empty series of an ungrouped answer without
/// data), its total.
type SeriesParts<'a> = (&'a [String], Option<&'a Cells>, Cell);

/// Assembles the typed answer.
pub fn assemble(parts: &Parts<'_>) -> StatsAnswer {
    let q = parts.q;
    let (all, overall) = parts.series();
    let series = all
        .into_iter()
        .map(|(key, cells, total)| Series {
            key: q
                .group_by
                .iter()
                .map(|d| d.as_str().to_string())
                .zip(key.iter().cloned())
                .collect(),
            buckets: (0..q.buckets.len())
                .filter_map(|i| {
                    let figures = parts.bucket(cells.and_then(|c| c.get(&i)))?;
                    let Frame {
                        start,
                        end,
                        seconds,
                        partial,
                    } = Frame::of(q, i);
                    Some(BucketAnswer {
                        start,
                        end,
                        seconds,
                        partial,
                        measures: Measures::from(&figures),
                    })
                })
                .collect(),
            totals: Measures::from(&Figures::of(q, &total, false, parts.with_engagement)),
        })
        .collect();
    StatsAnswer {
        from: q.from,
        to: q.to,
        bucket: q.bucket.as_str().to_string(),
        tz: q.tz.name().to_string(),
        group_by: q.group_by.iter().map(|d| d.as_str().to_string()).collect(),
        source: parts.source,
        level: parts.level.map(str::to_string),
        definitions: DEFINITIONS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        series,
        totals: Measures::from(&Figures::of(q, &overall, false, parts.with_engagement)),
        freshness: parts.freshness.clone(),
        newest_bucket_open: q.buckets.edges.last().is_some_and(|end| *end > parts.now),
    }
}

/// The answer as JSON: the bytes `serde_json::to_vec(&assemble(parts))` gives, written
/// straight from the table. An answer of thousands of buckets would otherwise build a map
/// per measure per bucket only to serialize and drop it.
pub fn write(parts: &Parts<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let (series, overall) = parts.series();
    let cells: usize = series
        .iter()
        .map(|(_, c, _)| c.map_or(0, |c| c.len()))
        .sum();
    // About 400 bytes a bucket with every count; growing from there is cheap.
    let mut out = Vec::with_capacity(4096 + cells * 400);
    serde_json::to_writer(
        &mut out,
        &AnswerView {
            parts,
            series,
            overall,
        },
    )?;
    Ok(out)
}

/// The measures of one cell, in fixed arrays: what [`Measures`] holds in maps.
struct Figures {
    /// Per [`COUNTED_STATUSES`].
    counts: Option<[Option<i64>; COUNTED_STATUSES.len()]>,
    /// Per [`ENGAGEMENTS`]: (total, unique).
    engagement: Option<[(Option<i64>, Option<i64>); ENGAGEMENTS.len()]>,
    /// Per [`RATES`]: absent (not asked) or the value.
    rates: [Option<Option<f64>>; RATES.len()],
    /// Per [`LATENCY_METRICS`]: absent or the percentiles.
    latency: [Option<Percentiles>; LATENCY_METRICS.len()],
}

/// The rates, in the order [`Figures`] holds them.
const RATES: [&str; 4] = ["delivery_rate", "bounce_rate", "open_rate", "click_rate"];

/// Indices of `names` in the order a `BTreeMap` keyed by them iterates.
fn sorted<const N: usize>(names: [&str; N]) -> [usize; N] {
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by_key(|i| names[*i]);
    order
}

static COUNT_ORDER: std::sync::LazyLock<[usize; COUNTED_STATUSES.len()]> =
    std::sync::LazyLock::new(|| sorted(COUNTED_STATUSES.map(|s| s.as_str())));
static ENGAGEMENT_ORDER: std::sync::LazyLock<[usize; ENGAGEMENTS.len()]> =
    std::sync::LazyLock::new(|| sorted(ENGAGEMENTS));
static RATE_ORDER: std::sync::LazyLock<[usize; RATES.len()]> =
    std::sync::LazyLock::new(|| sorted(RATES));
static LATENCY_ORDER: std::sync::LazyLock<[usize; LATENCY_METRICS.len()]> =
    std::sync::LazyLock::new(|| sorted(LATENCY_METRICS.map(|(_, n)| n)));

impl Figures {
    fn of(q: &StatsQuery, c: &Cell, null: bool, with_engagement: bool) -> Self {
        let count = |s: &str| c.count(s);
        let value = |v: i64| if null { None } else { Some(v) };
        let counts = q
            .metrics
            .contains(&Metric::Counts)
            .then(|| COUNTED_STATUSES.map(|s| value(count(s.as_str()))));
        let engagement = (with_engagement && counts.is_some())
            .then(|| c.engagement.map(|(t, u)| (value(t), value(u))));
        let outcomes = ["delivered", "bounced", "failed", "dropped", "expired"]
            .iter()
            .map(|s| count(s))
            .sum::<i64>();
        let delivered = count("delivered");
        let unique =
            |k: &str| read_model::rollup::engagement_index(k).map_or(0, |i| c.engagement[i].1);
        let ratio = |n: i64, d: i64| {
            if null || d == 0 {
                None
            } else {
                Some(n as f64 / d as f64)
            }
        };
        let asked = |m: Metric, engagement: bool| {
            q.metrics.contains(&m) && (!engagement || with_engagement)
        };
        let rates = [
            asked(Metric::DeliveryRate, false).then(|| ratio(delivered, outcomes)),
            asked(Metric::BounceRate, false).then(|| ratio(count("bounced"), outcomes)),
            asked(Metric::OpenRate, true).then(|| ratio(unique("opened"), delivered)),
            asked(Metric::ClickRate, true).then(|| ratio(unique("clicked"), delivered)),
        ];
        let latency = std::array::from_fn(|m| {
            let (metric, _) = LATENCY_METRICS[m];
            if !with_engagement || !q.metrics.contains(&metric) {
                return None;
            }
            let sketch = &c.latency[m];
            let [p50, p95, p99] = if null {
                [None; 3]
            } else {
                sketch::quantiles_of_sorted(&sketch.0, [0.50, 0.95, 0.99])
            };
            Some(Percentiles {
                p50,
                p95,
                p99,
                samples: value(sketch.samples()),
            })
        });
        Self {
            counts,
            engagement,
            rates,
            latency,
        }
    }

    /// Writes the measures as entries of `map` (a bucket's measures are flattened into it).
    fn entries<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        if let Some(counts) = &self.counts {
            map.serialize_entry(
                "counts",
                &Ordered(COUNT_ORDER.map(|i| (COUNTED_STATUSES[i].as_str(), counts[i]))),
            )?;
        }
        if let Some(engagement) = &self.engagement {
            map.serialize_entry(
                "engagement",
                &Ordered(ENGAGEMENT_ORDER.map(|i| {
                    let (total, unique) = engagement[i];
                    (ENGAGEMENTS[i], EngagementCount { total, unique })
                })),
            )?;
        }
        if self.rates.iter().any(Option::is_some) {
            let rates: Vec<(&str, Option<f64>)> = RATE_ORDER
                .iter()
                .filter_map(|i| self.rates[*i].map(|r| (RATES[*i], r)))
                .collect();
            map.serialize_entry("rates", &Ordered(rates))?;
        }
        if self.latency.iter().any(Option::is_some) {
            let latency: Vec<(&str, &Percentiles)> = LATENCY_ORDER
                .iter()
                .filter_map(|i| {
                    self.latency[*i]
                        .as_ref()
                        .map(|p| (LATENCY_METRICS[*i].1, p))
                })
                .collect();
            map.serialize_entry("latency", &Ordered(latency))?;
        }
        Ok(())
    }
}

impl From<&Figures> for Measures {
    fn from(f: &Figures) -> Self {
        Self {
            counts: f.counts.map(|counts| {
                COUNTED_STATUSES
                    .iter()
                    .zip(counts)
                    .map(|(s, n)| (Name::Borrowed(s.as_str()), n))
                    .collect()
            }),
            engagement: f.engagement.map(|engagement| {
                ENGAGEMENTS
                    .iter()
                    .zip(engagement)
                    .map(|(k, (total, unique))| {
                        (Name::Borrowed(*k), EngagementCount { total, unique })
                    })
                    .collect()
            }),
            rates: f.rates.iter().any(Option::is_some).then(|| {
                RATES
                    .iter()
                    .zip(f.rates)
                    .filter_map(|(k, r)| r.map(|r| (Name::Borrowed(*k), r)))
                    .collect()
            }),
            latency: f.latency.iter().any(Option::is_some).then(|| {
                LATENCY_METRICS
                    .iter()
                    .zip(&f.latency)
                    .filter_map(|((_, k), p)| p.clone().map(|p| (Name::Borrowed(*k), p)))
                    .collect()
            }),
        }
    }
}

impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.entries(&mut map)?;
        map.end()
    }
}

/// Pairs written as a JSON object in the order given.
struct Ordered<I>(I);

impl<I, K, V> Serialize for Ordered<I>
where
    for<'i> &'i I: IntoIterator<Item = &'i (K, V)>,
    K: Serialize,
    V: Serialize,
{
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map((&self.0).into_iter().map(|(k, v)| (k, v)))
    }
}

/// The whole answer, written from its parts.
struct AnswerView<'a> {
    parts: &'a Parts<'a>,
    series: Vec<SeriesParts<'a>>,
    overall: Cell,
}

impl Serialize for AnswerView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.parts;
        let q = p.q;
        let mut s = serializer.serialize_struct("StatsAnswer", 13)?;
        s.serialize_field("from", &q.from)?;
        s.serialize_field("to", &q.to)?;
        s.serialize_field("bucket", q.bucket.as_str())?;
        s.serialize_field("tz", q.tz.name())?;
        s.serialize_field(
            "group_by",
            &q.group_by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        )?;
        s.serialize_field("source", &p.source)?;
        if let Some(level) = p.level {
            s.serialize_field("level", level)?;
        } else {
            s.skip_field("level")?;
        }
        let definitions: BTreeMap<&str, &str> = DEFINITIONS.iter().copied().collect();
        s.serialize_field("definitions", &definitions)?;
        s.serialize_field("series", &SeriesList(self))?;
        s.serialize_field(
            "totals",
            &Figures::of(q, &self.overall, false, p.with_engagement),
        )?;
        s.serialize_field("freshness", p.freshness)?;
        s.serialize_field(
            "newest_bucket_open",
            &q.buckets.edges.last().is_some_and(|end| *end > p.now),
        )?;
        s.end()
    }
}

struct SeriesList<'a>(&'a AnswerView<'a>);

impl Serialize for SeriesList<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let view = self.0;
        let mut seq = serializer.serialize_seq(Some(view.series.len()))?;
        for (key, cells, total) in &view.series {
            seq.serialize_element(&SeriesView {
                parts: view.parts,
                key,
                cells: *cells,
                total,
            })?;
        }
        seq.end()
    }
}

struct SeriesView<'a> {
    parts: &'a Parts<'a>,
    key: &'a [String],
    cells: Option<&'a Cells>,
    total: &'a Cell,
}

impl Serialize for SeriesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let q = self.parts.q;
        let key: BTreeMap<&str, &str> = q
            .group_by
            .iter()
            .map(|d| d.as_str())
            .zip(self.key.iter().map(String::as_str))
            .collect();
        let mut s = serializer.serialize_struct("Series", 3)?;
        s.serialize_field("key", &key)?;
        s.serialize_field("buckets", &BucketsView(self))?;
        s.serialize_field(
            "totals",
            &Figures::of(q, self.total, false, self.parts.with_engagement),
        )?;
        s.end()
    }
}

struct BucketsView<'a>(&'a SeriesView<'a>);

impl Serialize for BucketsView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let series = self.0;
        let q = series.parts.q;
        let mut seq = serializer.serialize_seq(None)?;
        for i in 0..q.buckets.len() {
            let Some(figures) = series.parts.bucket(series.cells.and_then(|c| c.get(&i))) else {
                continue;
            };
            seq.serialize_element(&BucketView {
                frame: Frame::of(q, i),
                figures,
            })?;
        }
        seq.end()
    }
}

/// Where bucket `i` lies, as an answer shows it.
struct Frame {
    start: String,
    end: String,
    seconds: i64,
    partial: bool,
}

impl Frame {
    fn of(q: &StatsQuery, i: usize) -> Self {
        let (start, end) = q.buckets.span(i);
        Self {
            start: start.with_timezone(&q.tz).to_rfc3339(),
            end: end.with_timezone(&q.tz).to_rfc3339(),
            seconds: (end - start).num_seconds(),
            partial: start < q.from || end > q.to,
        }
    }
}

struct BucketView {
    frame: Frame,
    figures: Figures,
}

impl Serialize for BucketView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        let f = &self.frame;
        map.serialize_entry("start", &f.start)?;
        map.serialize_entry("end", &f.end)?;
        map.serialize_entry("seconds", &f.seconds)?;
        map.serialize_entry("partial", &f.partial)?;
        self.figures.entries(&mut map)?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::params;

    fn query(pairs: &[(&str, &str)]) -> StatsQuery {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        params::parse(&pairs, Utc::now()).unwrap()
    }

    /// A table with counts, engagement and sketches in some buckets of each series, and
    /// gaps for the fill modes to fill.
    fn table(q: &StatsQuery, series: &[&[&str]]) -> Table {
        let mut t = Table::new();
        for (s, key) in series.iter().enumerate() {
            let cells = t
                .entry(key.iter().map(|k| k.to_string()).collect())
                .or_default();
            for b in (s % 2..q.buckets.len()).step_by(2) {
                let c = cells.entry(b).or_default();
                for (i, n) in c.counts.iter_mut().enumerate() {
                    *n = ((i + 1) * (b + 3) * (s + 1)) as i64 % 17;
                }
                c.engagement[0] = (b as i64 + 2, 1);
                c.engagement[2] = (3, s as i64);
                for (m, sketch) in c.latency.iter_mut().enumerate() {
                    for bin in [sketch::ZERO_BIN, 100 + m as i32, 230, 400 + b as i32] {
                        sketch.add(bin, (b + s + 1) as i64);
                    }
                }
            }
        }
        t
    }

    #[test]
    fn the_written_answer_is_byte_for_byte_the_serialized_typed_one() {
        let freshness = Freshness {
            as_of: Utc::now(),
            lag_events: 3,
            lag_seconds: 0.25,
            parked_events: 1,
            consistent: Some(true),
        };
        let range = [
            ("from", "2024-03-30T00:00:00Z"),
            ("to", "2024-04-01T06:00:00Z"),
        ];
        type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a [&'a str]>);
        let cases: Vec<Case> = vec![
            (vec![("bucket", "hour")], vec![&[]]),
            (vec![("bucket", "hour")], vec![]),
            (
                vec![
                    ("bucket", "day"),
                    ("tz", "Europe/Berlin"),
                    ("metrics", "counts,rates,latency"),
                    ("fill", "zero"),
                ],
                vec![&[]],
            ),
            (
                vec![
                    ("bucket", "day"),
                    ("group_by", "channel,tag"),
                    ("metrics", "counts,rates,latency"),
                    ("fill", "null"),
                ],
                vec![&["email", "promo"], &["sms", ""], &["push", "welcome"]],
            ),
            (
                vec![
                    ("bucket", "hour"),
                    ("group_by", "status"),
                    ("metrics", "counts,rates"),
                ],
                vec![&["delivered"], &["bounced"]],
            ),
            (
                vec![
                    ("bucket", "15m"),
                    ("tz", "Asia/Kolkata"),
                    ("metrics", "latency"),
                    ("channel", "email"),
                ],
                vec![&[]],
            ),
        ];
        for (params, series) in cases {
            let mut pairs = range.to_vec();
            pairs.extend(params.iter().copied());
            let q = query(&pairs);
            let table = table(&q, &series);
            let overall = Cell::default();
            for (overall, level) in [(None, Some("1h")), (Some(&overall), None)] {
                let parts = Parts {
                    q: &q,
                    table: &table,
                    overall,
                    source: Source::Rollup,
                    level,
                    freshness: &freshness,
                    now: Utc::now(),
                    with_engagement: super::super::engine::reports_engagement(&q),
                };
                let typed = serde_json::to_vec(&assemble(&parts)).unwrap();
                let written = write(&parts).unwrap();
                assert_eq!(
                    String::from_utf8(written).unwrap(),
                    String::from_utf8(typed).unwrap(),
                    "{pairs:?}"
                );
            }
        }
    }
}
