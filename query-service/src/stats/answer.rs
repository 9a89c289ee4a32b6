//! Turning a computed table into the answer: buckets labelled in the requested zone, empty
//! buckets filled as asked, rates with their stated denominators, percentiles from merged
//! sketches, totals per series and overall.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use domain::MessageStatus;
use read_model::sketch;
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
/// straight from the table. The structure is written here, its fixed names escaped once;
/// every value goes through serde_json, so numbers and strings come out exactly as it
/// formats them. Building the typed answer first meant a map per measure per bucket, only
/// to serialize and drop it, and escaping each fixed name again in every bucket.
pub fn write(parts: &Parts<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let q = parts.q;
    let (series, overall) = parts.series();
    let cells: usize = series
        .iter()
        .map(|(_, c, _)| c.map_or(0, |c| c.len()))
        .sum();
    // About 400 bytes a bucket with every count; growing from there is cheap.
    let mut out = Vec::with_capacity(4096 + cells * 400);
    let w = &mut out;
    w.extend_from_slice(b"{\"from\":");
    value(w, &q.from)?;
    w.extend_from_slice(b",\"to\":");
    value(w, &q.to)?;
    w.extend_from_slice(b",\"bucket\":");
    value(w, q.bucket.as_str())?;
    w.extend_from_slice(b",\"tz\":");
    value(w, q.tz.name())?;
    w.extend_from_slice(b",\"group_by\":");
    value(
        w,
        &q.group_by.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
    )?;
    w.extend_from_slice(b",\"source\":");
    value(w, &parts.source)?;
    if let Some(level) = parts.level {
        w.extend_from_slice(b",\"level\":");
        value(w, level)?;
    }
    w.extend_from_slice(b",\"definitions\":");
    value(w, &DEFINITIONS.iter().copied().collect::<BTreeMap<_, _>>())?;
    w.extend_from_slice(b",\"series\":[");
    // Where each bucket lies, written once for all the series that show it.
    let mut frames: Vec<Option<Vec<u8>>> = vec![None; q.buckets.len()];
    for (n, (key, cells, total)) in series.iter().enumerate() {
        if n > 0 {
            w.push(b',');
        }
        w.extend_from_slice(b"{\"key\":");
        let key: BTreeMap<&str, &str> = q
            .group_by
            .iter()
            .map(|d| d.as_str())
            .zip(key.iter().map(String::as_str))
            .collect();
        value(w, &key)?;
        w.extend_from_slice(b",\"buckets\":[");
        let mut first = true;
        for (i, frame) in frames.iter_mut().enumerate() {
            let Some(figures) = parts.bucket(cells.and_then(|c| c.get(&i))) else {
                continue;
            };
            if !first {
                w.push(b',');
            }
            first = false;
            let frame = match frame {
                Some(f) => f,
                None => frame.insert(Frame::of(q, i).opening()?),
            };
            w.extend_from_slice(frame);
            figures.entries(w, false)?;
            w.push(b'}');
        }
        w.extend_from_slice(b"],\"totals\":");
        Figures::of(q, total, false, parts.with_engagement).object(w)?;
        w.push(b'}');
    }
    w.extend_from_slice(b"],\"totals\":");
    Figures::of(q, &overall, false, parts.with_engagement).object(w)?;
    w.extend_from_slice(b",\"freshness\":");
    value(w, parts.freshness)?;
    w.extend_from_slice(b",\"newest_bucket_open\":");
    value(
        w,
        &q.buckets.edges.last().is_some_and(|end| *end > parts.now),
    )?;
    w.push(b'}');
    Ok(out)
}

/// Appends `v` as serde_json writes it.
fn value<T: Serialize + ?Sized>(w: &mut Vec<u8>, v: &T) -> Result<(), serde_json::Error> {
    serde_json::to_writer(w, v)
}

/// Appends a count, or `null`.
fn count(w: &mut Vec<u8>, n: Option<i64>) -> Result<(), serde_json::Error> {
    match n {
        Some(n) => value(w, &n),
        None => {
            w.extend_from_slice(b"null");
            Ok(())
        }
    }
}

/// `"name":` for each of `names`, escaped as serde_json escapes it.
fn keys<const N: usize>(names: [&str; N]) -> [Vec<u8>; N] {
    names.map(|name| {
        let mut key = serde_json::to_vec(name).expect("a string serializes");
        key.push(b':');
        key
    })
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
/// Where each of [`COUNTED_STATUSES`] is in a cell's counts.
static COUNT_INDEX: std::sync::LazyLock<[Option<usize>; COUNTED_STATUSES.len()]> =
    std::sync::LazyLock::new(|| {
        COUNTED_STATUSES.map(|s| read_model::rollup::status_index(s.as_str()))
    });
/// The count names in [`COUNT_ORDER`], as written.
static COUNT_KEYS: std::sync::LazyLock<[Vec<u8>; COUNTED_STATUSES.len()]> =
    std::sync::LazyLock::new(|| keys(COUNT_ORDER.map(|i| COUNTED_STATUSES[i].as_str())));
/// The engagement names in [`ENGAGEMENT_ORDER`], as written.
static ENGAGEMENT_KEYS: std::sync::LazyLock<[Vec<u8>; ENGAGEMENTS.len()]> =
    std::sync::LazyLock::new(|| keys(ENGAGEMENT_ORDER.map(|i| ENGAGEMENTS[i])));
/// The rate names, as written, in [`RATES`] order.
static RATE_KEYS: std::sync::LazyLock<[Vec<u8>; RATES.len()]> =
    std::sync::LazyLock::new(|| keys(RATES));
/// The latency metric names, as written, in [`LATENCY_METRICS`] order.
static LATENCY_KEYS: std::sync::LazyLock<[Vec<u8>; LATENCY_METRICS.len()]> =
    std::sync::LazyLock::new(|| keys(LATENCY_METRICS.map(|(_, n)| n)));

impl Figures {
    fn of(q: &StatsQuery, c: &Cell, null: bool, with_engagement: bool) -> Self {
        // By status, not by name: this runs for every bucket of every series.
        let counted: [i64; COUNTED_STATUSES.len()] =
            COUNT_INDEX.map(|i| i.map_or(0, |i| c.counts[i]));
        let count = |s: MessageStatus| {
            COUNTED_STATUSES
                .iter()
                .position(|x| *x == s)
                .map_or(0, |i| counted[i])
        };
        let value = |v: i64| if null { None } else { Some(v) };
        let counts = q
            .metrics
            .contains(&Metric::Counts)
            .then(|| counted.map(value));
        let engagement = (with_engagement && counts.is_some())
            .then(|| c.engagement.map(|(t, u)| (value(t), value(u))));
        let outcomes = [
            MessageStatus::Delivered,
            MessageStatus::Bounced,
            MessageStatus::Failed,
            MessageStatus::Dropped,
            MessageStatus::Expired,
        ]
        .map(count)
        .iter()
        .sum::<i64>();
        let delivered = count(MessageStatus::Delivered);
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
            asked(Metric::BounceRate, false)
                .then(|| ratio(count(MessageStatus::Bounced), outcomes)),
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

    /// Appends the measures as the entries of an object, each after a comma unless
    /// `first` (a bucket's measures follow its frame, a total's open its object).
    fn entries(&self, w: &mut Vec<u8>, mut first: bool) -> Result<(), serde_json::Error> {
        let mut open = |w: &mut Vec<u8>, name: &[u8]| {
            if !first {
                w.push(b',');
            }
            first = false;
            w.extend_from_slice(name);
        };
        if let Some(counts) = &self.counts {
            open(w, b"\"counts\":{");
            for (n, i) in COUNT_ORDER.iter().enumerate() {
                if n > 0 {
                    w.push(b',');
                }
                w.extend_from_slice(&COUNT_KEYS[n]);
                count(w, counts[*i])?;
            }
            w.push(b'}');
        }
        if let Some(engagement) = &self.engagement {
            open(w, b"\"engagement\":{");
            for (n, i) in ENGAGEMENT_ORDER.iter().enumerate() {
                if n > 0 {
                    w.push(b',');
                }
                let (total, unique) = engagement[*i];
                w.extend_from_slice(&ENGAGEMENT_KEYS[n]);
                w.extend_from_slice(b"{\"total\":");
                count(w, total)?;
                w.extend_from_slice(b",\"unique\":");
                count(w, unique)?;
                w.push(b'}');
            }
            w.push(b'}');
        }
        if self.rates.iter().any(Option::is_some) {
            open(w, b"\"rates\":{");
            let mut any = false;
            for i in RATE_ORDER.iter() {
                let Some(rate) = self.rates[*i] else { continue };
                if any {
                    w.push(b',');
                }
                any = true;
                w.extend_from_slice(&RATE_KEYS[*i]);
                value(w, &rate)?;
            }
            w.push(b'}');
        }
        if self.latency.iter().any(Option::is_some) {
            open(w, b"\"latency\":{");
            let mut any = false;
            for i in LATENCY_ORDER.iter() {
                let Some(p) = &self.latency[*i] else { continue };
                if any {
                    w.push(b',');
                }
                any = true;
                w.extend_from_slice(&LATENCY_KEYS[*i]);
                value(w, p)?;
            }
            w.push(b'}');
        }
        Ok(())
    }

    /// Appends the measures as an object of their own.
    fn object(&self, w: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        w.push(b'{');
        self.entries(w, true)?;
        w.push(b'}');
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

    /// The bucket's object up to its measures: `{"start":…,"end":…,"seconds":…,"partial":…`.
    fn opening(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut w = Vec::with_capacity(96);
        w.extend_from_slice(b"{\"start\":");
        value(&mut w, &self.start)?;
        w.extend_from_slice(b",\"end\":");
        value(&mut w, &self.end)?;
        w.extend_from_slice(b",\"seconds\":");
        value(&mut w, &self.seconds)?;
        w.extend_from_slice(b",\"partial\":");
        value(&mut w, &self.partial)?;
        Ok(w)
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
            // Latency has no status: grouped by status, nothing is reported ({} measures).
            (
                vec![
                    ("bucket", "day"),
                    ("group_by", "status"),
                    ("metrics", "latency"),
                ],
                vec![&["delivered"]],
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
