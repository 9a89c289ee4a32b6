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

/// Assembles the answer from `table`; `overall` is the ungrouped cell when it had to be
/// computed separately (grouping by tag counts a message once per tag).
pub fn assemble(
    q: &StatsQuery,
    table: Table,
    overall: Option<Cell>,
    source: Source,
    freshness: Freshness,
    now: DateTime<Utc>,
    with_engagement: bool,
) -> StatsAnswer {
    let mut table = table;
    if table.is_empty() && q.group_by.is_empty() {
        table.insert(Vec::new(), BTreeMap::new());
    }
    let mut overall_cell = Cell::default();
    let mut series = Vec::with_capacity(table.len());
    for (key, cells) in table {
        let mut total = Cell::default();
        let mut buckets = Vec::with_capacity(q.buckets.len());
        for i in 0..q.buckets.len() {
            let (start, end) = q.buckets.span(i);
            let cell = cells.get(&i);
            if let Some(c) = cell {
                total.merge(c);
            }
            let measures = match (cell, q.fill) {
                (Some(c), _) => measures(q, c, false, with_engagement),
                (None, Fill::None) => continue,
                (None, Fill::Zero) => measures(q, &Cell::default(), false, with_engagement),
                (None, Fill::Null) => measures(q, &Cell::default(), true, with_engagement),
            };
            buckets.push(BucketAnswer {
                start: start.with_timezone(&q.tz).to_rfc3339(),
                end: end.with_timezone(&q.tz).to_rfc3339(),
                seconds: (end - start).num_seconds(),
                partial: start < q.from || end > q.to,
                measures,
            });
        }
        overall_cell.merge(&total);
        series.push(Series {
            key: q
                .group_by
                .iter()
                .map(|d| d.as_str().to_string())
                .zip(key)
                .collect(),
            buckets,
            totals: measures(q, &total, false, with_engagement),
        });
    }
    let overall_cell = overall.unwrap_or(overall_cell);
    StatsAnswer {
        from: q.from,
        to: q.to,
        bucket: q.bucket.as_str().to_string(),
        tz: q.tz.name().to_string(),
        group_by: q.group_by.iter().map(|d| d.as_str().to_string()).collect(),
        source,
        level: None,
        definitions: DEFINITIONS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        series,
        totals: measures(q, &overall_cell, false, with_engagement),
        freshness,
        newest_bucket_open: q.buckets.edges.last().is_some_and(|end| *end > now),
    }
}

fn measures(q: &StatsQuery, c: &Cell, null: bool, with_engagement: bool) -> Measures {
    let count = |s: &str| c.count(s);
    let value = |v: i64| if null { None } else { Some(v) };
    let mut m = Measures::default();
    if q.metrics.contains(&Metric::Counts) {
        m.counts = Some(
            COUNTED_STATUSES
                .iter()
                .map(|s| (Name::Borrowed(s.as_str()), value(count(s.as_str()))))
                .collect(),
        );
        if with_engagement {
            m.engagement = Some(
                ENGAGEMENTS
                    .iter()
                    .zip(c.engagement)
                    .map(|(k, (t, u))| {
                        (
                            Name::Borrowed(k),
                            EngagementCount {
                                total: value(t),
                                unique: value(u),
                            },
                        )
                    })
                    .collect(),
            );
        }
    }
    let outcomes = ["delivered", "bounced", "failed", "dropped", "expired"]
        .iter()
        .map(|s| count(s))
        .sum::<i64>();
    let delivered = count("delivered");
    let unique = |k: &str| read_model::rollup::engagement_index(k).map_or(0, |i| c.engagement[i].1);
    let ratio = |n: i64, d: i64| {
        if null || d == 0 {
            None
        } else {
            Some(n as f64 / d as f64)
        }
    };
    let mut rates = BTreeMap::new();
    if q.metrics.contains(&Metric::DeliveryRate) {
        rates.insert(Name::Borrowed("delivery_rate"), ratio(delivered, outcomes));
    }
    if q.metrics.contains(&Metric::BounceRate) {
        rates.insert(
            Name::Borrowed("bounce_rate"),
            ratio(count("bounced"), outcomes),
        );
    }
    if with_engagement && q.metrics.contains(&Metric::OpenRate) {
        rates.insert(
            Name::Borrowed("open_rate"),
            ratio(unique("opened"), delivered),
        );
    }
    if with_engagement && q.metrics.contains(&Metric::ClickRate) {
        rates.insert(
            Name::Borrowed("click_rate"),
            ratio(unique("clicked"), delivered),
        );
    }
    if !rates.is_empty() {
        m.rates = Some(rates);
    }
    if with_engagement {
        let mut latency = BTreeMap::new();
        for ((metric, name), sketch) in LATENCY_METRICS.iter().zip(&c.latency) {
            if !q.metrics.contains(metric) {
                continue;
            }
            let bins = &sketch.0;
            let samples = sketch.samples();
            let pct = |p: f64| {
                if null {
                    None
                } else {
                    sketch::quantile(bins, p)
                }
            };
            latency.insert(
                Name::Borrowed(name),
                Percentiles {
                    p50: pct(0.50),
                    p95: pct(0.95),
                    p99: pct(0.99),
                    samples: value(samples),
                },
            );
        }
        if !latency.is_empty() {
            m.latency = Some(latency);
        }
    }
    m
}
