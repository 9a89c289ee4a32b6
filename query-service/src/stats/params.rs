//! Parameters of the statistics endpoint: parsed, validated and whitelisted before any SQL
//! is built. The GET query string and the POST JSON body become the same list of
//! `(name, value)` pairs and go through one validator, so both forms behave identically.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, DurationRound, Utc};
use chrono_tz::Tz;
use domain::{Channel, MessageStatus};
use service_kit::consistency::ConsistencyToken;

use super::buckets::{Bucket, Buckets};

/// Longest range one query may cover.
pub const MAX_RANGE_DAYS: i64 = 400;
/// Most buckets one answer may hold.
pub const MAX_BUCKETS: usize = 10_000;
/// Most cells (series × buckets) one answer may hold: what bounds the size of an answer
/// and the memory it takes to compute.
pub const MAX_CELLS: usize = 20_000;
/// Most latency-sketch bins one answer may hold across its cells (each distinct latency
/// bin of each cell and metric is one).
pub const MAX_LATENCY_BINS: usize = 1_000_000;
/// Most `group_by` dimensions.
pub const MAX_GROUP_BY: usize = 3;
/// Most values of one filter.
pub const MAX_FILTER_VALUES: usize = 50;
/// Longest read-your-writes wait a client may ask for.
pub const MAX_WAIT_MS: u64 = 10_000;

/// A dimension series can be split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dimension {
    /// email, sms, push.
    Channel,
    /// The provider name.
    Provider,
    /// The status events moved messages into.
    Status,
    /// A message tag (a message with several tags counts once under each).
    Tag,
}

impl Dimension {
    /// Wire name, also the output key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Channel => "channel",
            Self::Provider => "provider",
            Self::Status => "status",
            Self::Tag => "tag",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "channel" => Self::Channel,
            "provider" => Self::Provider,
            "status" => Self::Status,
            "tag" => Self::Tag,
            _ => return None,
        })
    }
}

/// A metric an answer can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Metric {
    /// Counts of messages entering each status, and engagement counts.
    Counts,
    /// delivered / outcomes.
    DeliveryRate,
    /// bounced / outcomes.
    BounceRate,
    /// unique opens / delivered.
    OpenRate,
    /// unique clicks / delivered.
    ClickRate,
    /// p50/p95/p99 from submit to delivered.
    LatencySubmitToDelivered,
    /// p50/p95/p99 from dispatch to delivered.
    LatencyDispatchToDelivered,
}

impl Metric {
    /// Names accepted in `metrics`, including the group aliases `rates` and `latency`.
    pub const NAMES: &'static str = "counts, delivery_rate, bounce_rate, open_rate, click_rate, rates, latency_submit_to_delivered, latency_dispatch_to_delivered, latency";

    fn parse(s: &str) -> Option<Vec<Self>> {
        Some(match s {
            "counts" => vec![Self::Counts],
            "delivery_rate" => vec![Self::DeliveryRate],
            "bounce_rate" => vec![Self::BounceRate],
            "open_rate" => vec![Self::OpenRate],
            "click_rate" => vec![Self::ClickRate],
            "rates" => vec![
                Self::DeliveryRate,
                Self::BounceRate,
                Self::OpenRate,
                Self::ClickRate,
            ],
            "latency_submit_to_delivered" => vec![Self::LatencySubmitToDelivered],
            "latency_dispatch_to_delivered" => vec![Self::LatencyDispatchToDelivered],
            "latency" => vec![
                Self::LatencySubmitToDelivered,
                Self::LatencyDispatchToDelivered,
            ],
            _ => return None,
        })
    }

    /// True for the latency percentiles.
    pub fn is_latency(self) -> bool {
        matches!(
            self,
            Self::LatencySubmitToDelivered | Self::LatencyDispatchToDelivered
        )
    }
}

/// What an empty bucket shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Zero counts (rates and percentiles stay null: they have no denominator).
    Zero,
    /// Every value null.
    Null,
    /// Empty buckets are left out.
    None,
}

/// Filters: each a set of allowed values (empty = any).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// Channels a message must be on (any of them).
    pub channel: Vec<Channel>,
    /// Providers a message must be sent by (any of them).
    pub provider: Vec<String>,
    /// Tags (a message matches when it has any of them).
    pub tag: Vec<String>,
    /// Statuses entered.
    pub status: Vec<MessageStatus>,
}

/// A validated statistics query.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// Range start (inclusive).
    pub from: DateTime<Utc>,
    /// Range end (exclusive).
    pub to: DateTime<Utc>,
    /// Bucket width.
    pub bucket: Bucket,
    /// Zone the buckets are local to.
    pub tz: Tz,
    /// The buckets.
    pub buckets: Buckets,
    /// Series dimensions, in request order.
    pub group_by: Vec<Dimension>,
    /// Which messages count.
    pub filters: Filters,
    /// Metrics asked for.
    pub metrics: BTreeSet<Metric>,
    /// Empty-bucket handling.
    pub fill: Fill,
    /// Read-your-writes token.
    pub consistency_token: Option<ConsistencyToken>,
    /// How long to wait for the token, in milliseconds.
    pub wait_ms: u64,
}

/// A parameter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    /// The parameter's name.
    pub param: String,
    /// What is wrong and what is accepted.
    pub message: String,
}

fn bad(param: &str, message: impl Into<String>) -> ParamError {
    ParamError {
        param: param.to_string(),
        message: message.into(),
    }
}

/// Every parameter name the endpoint accepts, besides the `source` override.
pub const KNOWN: &[&str] = &[
    "from",
    "to",
    "bucket",
    "tz",
    "group_by",
    "channel",
    "provider",
    "tag",
    "status",
    "metrics",
    "fill",
    "consistency_token",
    "wait_ms",
];

/// Validates `pairs` (repeated names and comma-separated values both mean lists), with
/// `now` for the default range.
pub fn parse(pairs: &[(String, String)], now: DateTime<Utc>) -> Result<StatsQuery, ParamError> {
    for (name, _) in pairs {
        if !KNOWN.contains(&name.as_str()) {
            return Err(bad(
                name,
                format!("unknown parameter; known: {}", KNOWN.join(", ")),
            ));
        }
    }
    let single = |name: &str| -> Result<Option<&str>, ParamError> {
        let mut values = pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str());
        let first = values.next();
        if values.next().is_some() {
            return Err(bad(name, "given more than once"));
        }
        Ok(first.map(str::trim))
    };
    let list = |name: &str| -> Vec<String> {
        pairs
            .iter()
            .filter(|(n, _)| n == name)
            .flat_map(|(_, v)| v.split(','))
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect()
    };

    let time = |name: &str| -> Result<Option<DateTime<Utc>>, ParamError> {
        single(name)?
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| {
                        bad(
                            name,
                            "expected an RFC 3339 time with offset, e.g. 2026-11-21T00:00:00Z",
                        )
                    })
            })
            .transpose()
    };
    let to = match time("to")? {
        Some(t) => t,
        // Rounded up to a rollup boundary: the future holds no data, and an aligned end
        // keeps the query on the 15-minute rollup.
        None => ceil_15m(now),
    };
    let from = time("from")?.unwrap_or(to - Duration::hours(24));
    if from >= to {
        return Err(bad(
            "to",
            "must be after from (the range is half-open: [from, to))",
        ));
    }
    if to - from > Duration::days(MAX_RANGE_DAYS) {
        return Err(bad(
            "from",
            format!("the range may span at most {MAX_RANGE_DAYS} days"),
        ));
    }

    let bucket = match single("bucket")? {
        None => Bucket::Hour,
        Some(v) => Bucket::parse(v)
            .ok_or_else(|| bad("bucket", format!("expected one of {}", Bucket::NAMES)))?,
    };
    let tz: Tz = match single("tz")? {
        None => Tz::UTC,
        Some(v) => v
            .parse()
            .map_err(|_| bad("tz", "expected an IANA zone name, e.g. Europe/Berlin"))?,
    };
    let buckets = Buckets::covering(from, to, bucket, tz);
    if buckets.len() > MAX_BUCKETS {
        return Err(bad(
            "bucket",
            format!(
                "{} buckets requested, at most {MAX_BUCKETS}: widen the bucket or narrow the range",
                buckets.len()
            ),
        ));
    }

    let mut group_by = Vec::new();
    for v in list("group_by") {
        let d = Dimension::parse(&v).ok_or_else(|| {
            bad(
                "group_by",
                "expected up to three of channel, provider, status, tag",
            )
        })?;
        if group_by.contains(&d) {
            return Err(bad("group_by", format!("{v} given twice")));
        }
        group_by.push(d);
    }
    if group_by.len() > MAX_GROUP_BY {
        return Err(bad(
            "group_by",
            format!("at most {MAX_GROUP_BY} dimensions"),
        ));
    }

    let filters = Filters {
        channel: parse_each(
            &list("channel"),
            "channel",
            |v| v.parse::<Channel>().ok(),
            "email, sms, push",
        )?,
        provider: parse_each(
            &list("provider"),
            "provider",
            |v| {
                domain::validate::validate_provider(v)
                    .ok()
                    .map(|_| v.to_string())
            },
            "provider names ([a-z0-9_-], 1 to 64)",
        )?,
        tag: parse_each(
            &list("tag"),
            "tag",
            |v| {
                domain::validate::validate_tags(&[v.to_string()])
                    .ok()
                    .map(|_| v.to_string())
            },
            "tags ([A-Za-z0-9_.:-], 1 to 64)",
        )?,
        status: parse_each(
            &list("status"),
            "status",
            |v| v.parse::<MessageStatus>().ok(),
            "a message status, e.g. delivered",
        )?,
    };

    let mut metrics = BTreeSet::new();
    let asked = list("metrics");
    let asked = if asked.is_empty() {
        vec!["counts".to_string(), "rates".to_string()]
    } else {
        asked
    };
    for v in asked {
        metrics.extend(
            Metric::parse(&v)
                .ok_or_else(|| bad("metrics", format!("expected any of {}", Metric::NAMES)))?,
        );
    }

    let fill = match single("fill")? {
        None | Some("zero") => Fill::Zero,
        Some("null") => Fill::Null,
        Some("none") => Fill::None,
        Some(_) => return Err(bad("fill", "expected zero, null or none")),
    };
    let consistency_token = single("consistency_token")?
        .map(|v| {
            v.parse::<ConsistencyToken>()
                .map_err(|e| bad("consistency_token", e.to_string()))
        })
        .transpose()?;
    let wait_ms = match single("wait_ms")? {
        None => 2_000,
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|w| *w <= MAX_WAIT_MS)
            .ok_or_else(|| bad("wait_ms", format!("expected 0 to {MAX_WAIT_MS}")))?,
    };

    Ok(StatsQuery {
        from,
        to,
        bucket,
        tz,
        buckets,
        group_by,
        filters,
        metrics,
        fill,
        consistency_token,
        wait_ms,
    })
}

fn parse_each<T>(
    values: &[String],
    param: &str,
    f: impl Fn(&str) -> Option<T>,
    expected: &str,
) -> Result<Vec<T>, ParamError> {
    if values.len() > MAX_FILTER_VALUES {
        return Err(bad(param, format!("at most {MAX_FILTER_VALUES} values")));
    }
    values
        .iter()
        .map(|v| f(v).ok_or_else(|| bad(param, format!("{v:?} is not valid; expected {expected}"))))
        .collect()
}

/// The next 15-minute boundary at or after `t`.
pub fn ceil_15m(t: DateTime<Utc>) -> DateTime<Utc> {
    let floor = t.duration_trunc(Duration::minutes(15)).expect("in range");
    if floor == t {
        t
    } else {
        floor + Duration::minutes(15)
    }
}

/// The JSON body of `POST /v1/stats/messages:query` as the same pairs a query string gives:
/// arrays become repeated names, scalars their text.
pub fn pairs_from_json(body: &serde_json::Value) -> Result<Vec<(String, String)>, ParamError> {
    let object = body
        .as_object()
        .ok_or_else(|| bad("body", "expected a JSON object"))?;
    let mut pairs = Vec::new();
    for (name, value) in object {
        let scalar = |v: &serde_json::Value| -> Result<String, ParamError> {
            match v {
                serde_json::Value::String(s) => Ok(s.clone()),
                serde_json::Value::Number(n) => Ok(n.to_string()),
                _ => Err(bad(
                    name,
                    "expected a string, a number, or an array of them",
                )),
            }
        };
        match value {
            serde_json::Value::Array(items) => {
                for item in items {
                    pairs.push((name.clone(), scalar(item)?));
                }
            }
            serde_json::Value::Null => {}
            other => pairs.push((name.clone(), scalar(other)?)),
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(pairs: &[(&str, &str)]) -> Result<StatsQuery, ParamError> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        parse(&pairs, "2026-11-21T10:07:00Z".parse().unwrap())
    }

    #[test]
    fn defaults_cover_the_last_day_in_hours_ending_on_a_rollup_boundary() {
        let q = p(&[]).unwrap();
        assert_eq!(
            q.to,
            "2026-11-21T10:15:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(q.to - q.from, Duration::hours(24));
        assert_eq!(q.bucket, Bucket::Hour);
        assert_eq!(q.tz, Tz::UTC);
        assert_eq!(q.fill, Fill::Zero);
        assert!(q.metrics.contains(&Metric::Counts) && q.metrics.contains(&Metric::DeliveryRate));
        assert!(!q.metrics.contains(&Metric::LatencySubmitToDelivered));
    }

    #[test]
    fn lists_take_commas_and_repeats() {
        let q = p(&[
            ("group_by", "channel,tag"),
            ("channel", "email"),
            ("channel", "sms"),
            ("metrics", "latency"),
        ])
        .unwrap();
        assert_eq!(q.group_by, vec![Dimension::Channel, Dimension::Tag]);
        assert_eq!(q.filters.channel, vec![Channel::Email, Channel::Sms]);
        assert_eq!(q.metrics.len(), 2);
        assert!(q.metrics.iter().all(|m| m.is_latency()));
    }

    #[test]
    fn every_bad_parameter_is_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("from", "yesterday")], "from"),
            (&[("to", "2026-11-21")], "to"),
            (
                &[
                    ("from", "2026-11-21T00:00:00Z"),
                    ("to", "2026-11-20T00:00:00Z"),
                ],
                "to",
            ),
            (
                &[
                    ("from", "2024-01-01T00:00:00Z"),
                    ("to", "2026-01-01T00:00:00Z"),
                ],
                "from",
            ),
            (&[("bucket", "fortnight")], "bucket"),
            (&[("bucket", "hour"), ("bucket", "day")], "bucket"),
            (&[("tz", "Mars/Olympus")], "tz"),
            (&[("tz", "'; DROP TABLE events; --")], "tz"),
            (&[("group_by", "recipient")], "group_by"),
            (&[("group_by", "channel,channel")], "group_by"),
            (&[("group_by", "channel,provider,status,tag")], "group_by"),
            (&[("channel", "fax")], "channel"),
            (&[("provider", "Robert'); DROP TABLE--")], "provider"),
            (&[("tag", "a b")], "tag"),
            (&[("status", "happy")], "status"),
            (&[("metrics", "revenue")], "metrics"),
            (&[("fill", "previous")], "fill"),
            (&[("consistency_token", "abc")], "consistency_token"),
            (&[("wait_ms", "999999")], "wait_ms"),
            (&[("limit", "10")], "limit"),
            (
                &[
                    ("from", "2026-01-01T00:00:00Z"),
                    ("to", "2026-12-01T00:00:00Z"),
                    ("bucket", "15m"),
                ],
                "bucket",
            ),
        ];
        for (pairs, param) in cases {
            let err = p(pairs).unwrap_err();
            assert_eq!(err.param, *param, "{pairs:?}: {err}");
            assert!(!err.message.is_empty());
        }
    }

    #[test]
    fn json_bodies_become_the_same_pairs() {
        let body = serde_json::json!({"group_by": ["channel", "provider"], "bucket": "day", "wait_ms": 10, "tag": null});
        let pairs = pairs_from_json(&body).unwrap();
        let q = parse(&pairs, Utc::now()).unwrap();
        assert_eq!(q.group_by, vec![Dimension::Channel, Dimension::Provider]);
        assert_eq!(q.bucket, Bucket::Day);
        assert_eq!(q.wait_ms, 10);
        assert_eq!(
            pairs_from_json(&serde_json::json!({"bucket": {"x": 1}}))
                .unwrap_err()
                .param,
            "bucket"
        );
        assert_eq!(
            pairs_from_json(&serde_json::json!([1])).unwrap_err().param,
            "body"
        );
    }
}
