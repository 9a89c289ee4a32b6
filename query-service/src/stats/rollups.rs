//! Statistics from the rollup levels of read-model generation 2 ([`read_model::rollup`]).
//!
//! One statement per answer reads the rows of the chosen level in the range; each row is a
//! whole group and bucket (counts, engagement and both latency sketches), so the rows
//! stream into the answer's table as they arrive: a row's bucket lies inside exactly one
//! requested bucket (the level divides every edge), found by binary search over the edges.
//! Nothing but the table (bounded by the answer limits) is ever held.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use read_model::rollup::{Level, ENGAGEMENTS, METRICS, STATUSES};
use sqlx::{PgPool, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use super::engine::{reports_engagement, Budget, Cell, ComputeError, Table};
use super::params::{Dimension, Metric, StatsQuery};

/// The level that answers `q`: the coarsest whose edges include every bucket edge of `q`
/// (in its zone), `None` when even 15 minutes do not.
pub fn level_for(q: &StatsQuery) -> Option<Level> {
    let mut edges = q.buckets.edges.clone();
    edges.push(q.from);
    edges.push(q.to);
    Level::coarsest_for(&edges)
}

/// One rollup row as read.
struct RowData {
    bucket: DateTime<Utc>,
    channel: String,
    provider: String,
    tag: String,
    entered: Vec<i64>,
    engaged: Vec<i64>,
    engaged_first: Vec<i64>,
    sketches: [(Vec<i32>, Vec<i64>); 2],
}

impl RowData {
    fn of(row: &sqlx::postgres::PgRow) -> Result<Self, sqlx::Error> {
        Ok(Self {
            bucket: row.try_get(0)?,
            channel: row.try_get(1)?,
            provider: row.try_get(2)?,
            tag: row.try_get(3)?,
            entered: row.try_get(4)?,
            engaged: row.try_get(5)?,
            engaged_first: row.try_get(6)?,
            sketches: [
                (row.try_get(7)?, row.try_get(8)?),
                (row.try_get(9)?, row.try_get(10)?),
            ],
        })
    }

    fn value(&self, d: Dimension) -> &str {
        match d {
            Dimension::Channel => &self.channel,
            Dimension::Provider => &self.provider,
            Dimension::Tag => &self.tag,
            Dimension::Status => unreachable!("status is not a column of the rollups"),
        }
    }
}

/// Computes the table of `q` for `tenant` on `version` from rollup `level`.
pub async fn compute(
    pool: &PgPool,
    q: &StatsQuery,
    tenant: Uuid,
    version: i32,
    level: Level,
) -> Result<Table, ComputeError> {
    let mut table = Table::new();
    let mut budget = Budget::new(q.buckets.len().max(1));
    let wants_counts = q.metrics.iter().any(|m| !m.is_latency());
    let with_engagement = reports_engagement(q) && wants_counts;
    let metrics: Vec<(usize, &str)> = METRICS
        .iter()
        .enumerate()
        .filter(|(_, (name, _, _))| {
            q.metrics
                .iter()
                .any(|m| m.is_latency() && latency_name(*m) == Some(*name))
        })
        .map(|(i, (name, _, _))| (i, *name))
        .collect();
    let with_latency = !metrics.is_empty() && reports_engagement(q);
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

    let mut sql = statement(q, tenant, version, level);
    let mut rows = sql.build().fetch(pool);
    let edges = &q.buckets.edges;
    while let Some(row) = rows.try_next().await? {
        let r = RowData::of(&row)?;
        // The bucket holding this row: the last edge at or before its start.
        let b = edges.partition_point(|e| *e <= r.bucket);
        if b == 0 || b >= edges.len() {
            continue;
        }
        let b = b - 1;
        let key_with = |status: Option<&str>| -> Vec<String> {
            q.group_by
                .iter()
                .map(|d| match d {
                    Dimension::Status => status.unwrap_or_default().to_string(),
                    d => r.value(*d).to_string(),
                })
                .collect()
        };
        if wants_counts {
            for &i in &statuses {
                let n = r.entered.get(i).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let status = STATUSES[i];
                let key = key_with(by_status.then_some(status));
                *budget
                    .series(&mut table, key)?
                    .entry(b)
                    .or_default()
                    .counts
                    .entry(status.to_string())
                    .or_default() += n;
            }
        }
        if by_status {
            continue;
        }
        if with_engagement {
            for (i, kind) in ENGAGEMENTS.iter().enumerate() {
                let total = r.engaged.get(i).copied().unwrap_or(0);
                let unique = r.engaged_first.get(i).copied().unwrap_or(0);
                if total == 0 && unique == 0 {
                    continue;
                }
                let e = cell(&mut budget, &mut table, key_with(None), b)?
                    .engagement
                    .entry(kind.to_string())
                    .or_default();
                e.0 += total;
                e.1 += unique;
            }
        }
        if with_latency {
            for (i, name) in &metrics {
                let (bins, counts) = &r.sketches[*i];
                if bins.is_empty() {
                    continue;
                }
                let target = cell(&mut budget, &mut table, key_with(None), b)?
                    .latency
                    .entry(name.to_string())
                    .or_default();
                let mut added = 0;
                for (bin, n) in bins.iter().zip(counts) {
                    if *n == 0 {
                        continue;
                    }
                    if !target.contains_key(bin) {
                        added += 1;
                    }
                    *target.entry(*bin).or_default() += n;
                }
                for _ in 0..added {
                    budget.bin()?;
                }
            }
        }
    }
    Ok(table)
}

fn cell<'t>(
    budget: &mut Budget,
    table: &'t mut Table,
    key: Vec<String>,
    bucket: usize,
) -> Result<&'t mut Cell, ComputeError> {
    Ok(budget.series(table, key)?.entry(bucket).or_default())
}

fn latency_name(m: Metric) -> Option<&'static str> {
    match m {
        Metric::LatencySubmitToDelivered => Some("submit_to_delivered"),
        Metric::LatencyDispatchToDelivered => Some("dispatch_to_delivered"),
        _ => None,
    }
}

fn statement(
    q: &StatsQuery,
    tenant: Uuid,
    version: i32,
    level: Level,
) -> QueryBuilder<'static, Postgres> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT bucket, channel, provider, tag, entered, engaged, engaged_first, submit_bins, \
         submit_counts, dispatch_bins, dispatch_counts FROM {} WHERE version = ",
        level.table()
    ));
    sql.push_bind(version);
    sql.push(" AND tenant_id = ").push_bind(tenant);
    sql.push(" AND bucket >= ").push_bind(q.from);
    sql.push(" AND bucket < ").push_bind(q.to);
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
    if !q.filters.channel.is_empty() {
        let v: Vec<String> = q
            .filters
            .channel
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        sql.push(" AND channel = ANY(").push_bind(v).push(")");
    }
    if !q.filters.provider.is_empty() {
        sql.push(" AND provider = ANY(")
            .push_bind(q.filters.provider.clone())
            .push(")");
    }
    sql
}
