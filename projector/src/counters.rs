//! The rollups of one batch ([`read_model::rollup`]): every measure of a group and bucket
//! in one row, at the three levels, summed in memory first so each row is written once per
//! batch and level, and only for events that were actually inserted (a redelivered event
//! adds nothing).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use domain::MessageEvent;
use read_model::rollup::{self, Level, ENGAGEMENTS, STATUSES};
use read_model::sketch;
use sqlx::{PgConnection, Postgres, QueryBuilder, Row};
use uuid::Uuid;

use crate::write::{Decoded, STATS_CHUNK};

/// A group and bucket of one level.
type Key = (Level, Uuid, DateTime<Utc>, &'static str, String, String);

/// What a batch adds to one rollup row.
#[derive(Default)]
struct Delta {
    entered: [i64; STATUSES.len()],
    engaged: [i64; ENGAGEMENTS.len()],
    engaged_first: [i64; ENGAGEMENTS.len()],
    /// Per metric (submit, dispatch): bin → samples added (negative: taken out).
    sketches: [BTreeMap<i32, i64>; 2],
}

impl Delta {
    fn is_zero(&self) -> bool {
        self.entered.iter().all(|n| *n == 0)
            && self.engaged.iter().all(|n| *n == 0)
            && self.engaged_first.iter().all(|n| *n == 0)
            && self.sketches.iter().all(|s| s.values().all(|n| *n == 0))
    }

    /// Whether this delta takes something out (a latency sample that moved), which can
    /// leave the row empty.
    fn takes_out(&self) -> bool {
        self.sketches.iter().any(|s| s.values().any(|n| *n < 0))
    }

    /// What the batch adds to sketch `metric`, bins ascending, without zero counts.
    fn pairs(&self, metric: usize) -> Vec<(i32, i64)> {
        self.sketches[metric]
            .iter()
            .filter(|(_, n)| **n != 0)
            .map(|(b, n)| (*b, *n))
            .collect()
    }
}

/// The tag values of an event: '' (all messages) plus each distinct tag.
fn tag_dims(tags: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = tags.iter().filter(|t| !t.is_empty()).cloned().collect();
    out.insert(String::new());
    out
}

/// The latency-sketch deltas of one event: `(metric index, +1 or -1, delivery time, ms)`.
///
/// Version-2 events carry the change of the message's sample (taken out, put in). A
/// version-1 event predates that: it counted one sample per event carrying a latency, in
/// the bucket of its own time, and is read the same way still, so a read model of a
/// version-1 store keeps the answers it had.
fn latency_deltas(d: &Decoded<'_>) -> Vec<(usize, i64, DateTime<Utc>, i64)> {
    let e = &d.event;
    let h = e.header();
    let mut out = Vec::new();
    if d.env.row.event_version == "1" {
        if let Some(v) = e.latency_ms_from_submit() {
            out.push((0, 1, h.occurred_at, v));
        }
        if let Some(v) = e.latency_ms_from_dispatch() {
            out.push((1, 1, h.occurred_at, v));
        }
        return out;
    }
    for (metric, change) in [(0, h.submit_latency), (1, h.dispatch_latency)] {
        let Some(change) = change else { continue };
        if let Some(b) = change.before {
            out.push((metric, -1, b.delivered_at, b.ms));
        }
        if let Some(a) = change.after {
            out.push((metric, 1, a.delivered_at, a.ms));
        }
    }
    out
}

/// Rollup deltas summed in memory until written: each row is written once however many
/// events of the batch (or of a rebuild's window of many reads) fall in it.
#[derive(Default)]
pub(crate) struct Rollups {
    rows: HashMap<Key, Delta>,
    /// Sketch bins held over all rows: what the memory of a window grows with.
    bins: usize,
}

impl Rollups {
    /// Sketch bins held: a rebuild writes its window when they pass its bound.
    pub(crate) fn bins(&self) -> usize {
        self.bins
    }

    /// Adds what the newly inserted events `new` count, at every level.
    pub(crate) fn add(&mut self, new: &[&Decoded<'_>]) {
        for d in new {
            self.add_event(d);
        }
    }

    fn add_event(&mut self, d: &Decoded<'_>) {
        let e = &d.event;
        let h = e.header();
        let entered = if e.status_changed() {
            rollup::status_index(h.status.as_str())
        } else {
            None
        };
        let engagement = match e {
            MessageEvent::EngagementRecorded(g) => {
                rollup::engagement_index(g.engagement.as_str()).map(|i| (i, g.first))
            }
            _ => None,
        };
        let latency = latency_deltas(d);
        for tag in tag_dims(&h.tags) {
            for level in Level::ALL {
                let key = |at: DateTime<Utc>| -> Key {
                    (
                        level,
                        h.tenant_id,
                        level.bucket(at),
                        h.channel.as_str(),
                        h.provider.clone(),
                        tag.clone(),
                    )
                };
                if entered.is_some() || engagement.is_some() {
                    let row = self.rows.entry(key(h.occurred_at)).or_default();
                    if let Some(i) = entered {
                        row.entered[i] += 1;
                    }
                    if let Some((i, first)) = engagement {
                        row.engaged[i] += 1;
                        row.engaged_first[i] += i64::from(first);
                    }
                }
                for (metric, delta, at, ms) in &latency {
                    let bins = &mut self.rows.entry(key(*at)).or_default().sketches[*metric];
                    let before = bins.len();
                    *bins.entry(sketch::bin_of(*ms)).or_default() += delta;
                    self.bins += bins.len() - before;
                }
            }
        }
    }

    /// Writes the held deltas into the rollups of `version`, every level.
    pub(crate) async fn write(
        self,
        conn: &mut PgConnection,
        version: i32,
    ) -> Result<(), sqlx::Error> {
        let mut rows = self.rows;
        rows.retain(|_, d| !d.is_zero());
        // One order for every transaction: finest level first, then by key. Concurrent batches
        // (other shards, other replicas) share the coarse rows (a day of a group is one row),
        // and taking row locks in one global order makes them wait for each other instead of
        // deadlocking; the coarsest rows, the hottest, are locked last, just before commit.
        let mut rows: Vec<(Key, Delta)> = rows.into_iter().collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        for level in Level::ALL {
            let start = rows.partition_point(|(k, _)| k.0 < level);
            let end = rows.partition_point(|(k, _)| k.0 <= level);
            for chunk in rows[start..end].chunks(STATS_CHUNK) {
                upsert(conn, version, level, chunk).await?;
            }
        }
        Ok(())
    }
}

/// Binds one rollup row in [`rollup::COLUMNS`] order: its key, the delta's counters, and
/// the given stored sketches.
fn push_row(
    mut b: sqlx::query_builder::Separated<'_, '_, Postgres, &'static str>,
    version: i32,
    (_, tenant, bucket, channel, provider, tag): &Key,
    delta: &Delta,
    submit: Vec<u8>,
    dispatch: Vec<u8>,
) {
    b.push_bind(version)
        .push_bind(*tenant)
        .push_bind(*bucket)
        .push_bind(*channel)
        .push_bind(provider.clone())
        .push_bind(tag.clone())
        .push_bind(delta.entered.to_vec())
        .push_bind(delta.engaged.to_vec())
        .push_bind(delta.engaged_first.to_vec())
        .push_bind(submit)
        .push_bind(dispatch);
}

/// The stored form of a sketch the projector computed. Its bins come from
/// `sketch::bin_of`, which the layout holds, so a refusal means a bug, reported as the
/// batch's failure rather than stored.
fn stored_sketch(pairs: &[(i32, i64)]) -> Result<Vec<u8>, sqlx::Error> {
    sketch::encoded(pairs).map_err(|e| sqlx::Error::Encode(Box::new(e)))
}

/// The key columns of a rollup row after the version.
const KEY: &str = "tenant_id, bucket, channel, provider, tag";

/// Writes one chunk of one level's rows: counts are added in SQL; sketches are merged here.
///
/// The first statement inserts each row, or adds its counts to the stored row and locks
/// it, and returns what the row holds; the stored sketches of rows that existed are merged
/// with the batch's in memory and written back by a second statement, while the lock is
/// held. Summing sketches in SQL meant unpacking and re-aggregating every bin of every
/// touched row in each batch, the cost of the write; in memory it is one linear pass.
async fn upsert(
    conn: &mut PgConnection,
    version: i32,
    level: Level,
    chunk: &[(Key, Delta)],
) -> Result<(), sqlx::Error> {
    let table = level.table();
    let deltas: Vec<[Vec<(i32, i64)>; 2]> = chunk
        .iter()
        .map(|(_, d)| [0, 1].map(|m| d.pairs(m)))
        .collect();
    let stored_deltas: Vec<[Vec<u8>; 2]> = deltas
        .iter()
        .map(|[s, d]| Ok([stored_sketch(s)?, stored_sketch(d)?]))
        .collect::<Result<_, sqlx::Error>>()?;
    let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "INSERT INTO {table} AS t (version, {}) ",
        rollup::COLUMNS
    ));
    q.push_values(chunk.iter().zip(stored_deltas), |b, ((key, d), [s, d2])| {
        push_row(b, version, key, d, s, d2);
    });
    q.push(format!(
        " ON CONFLICT (version, {KEY}) DO UPDATE SET \
         entered = herald_add(t.entered, EXCLUDED.entered), \
         engaged = herald_add(t.engaged, EXCLUDED.engaged), \
         engaged_first = herald_add(t.engaged_first, EXCLUDED.engaged_first) \
         RETURNING (xmax = 0) AS inserted, {KEY}, entered, engaged, engaged_first, \
         submit_sketch, dispatch_sketch"
    ));
    let stored = q.build().fetch_all(&mut *conn).await?;
    let at: HashMap<(Uuid, DateTime<Utc>, &str, &str, &str), usize> = chunk
        .iter()
        .enumerate()
        .map(|(i, ((_, tenant, bucket, channel, provider, tag), _))| {
            (
                (*tenant, *bucket, *channel, provider.as_str(), tag.as_str()),
                i,
            )
        })
        .collect();
    // (chunk index, merged sketches) of stored rows the batch adds samples to.
    let mut merged: Vec<(usize, [Vec<u8>; 2])> = Vec::new();
    let mut emptied: Vec<usize> = Vec::new();
    let mut pairs = Vec::new();
    for row in &stored {
        let i = *at
            .get(&(
                row.try_get("tenant_id")?,
                row.try_get("bucket")?,
                row.try_get("channel")?,
                row.try_get("provider")?,
                row.try_get("tag")?,
            ))
            .ok_or_else(|| {
                sqlx::Error::Protocol("an upsert returned a row it was not given".into())
            })?;
        let inserted: bool = row.try_get("inserted")?;
        let sketches = if inserted || deltas[i].iter().all(Vec::is_empty) {
            None
        } else {
            let mut out: [Vec<u8>; 2] = Default::default();
            for (m, column) in ["submit_sketch", "dispatch_sketch"].into_iter().enumerate() {
                sketch::decode_into(row.try_get(column)?, &mut pairs).map_err(|e| {
                    sqlx::Error::ColumnDecode {
                        index: column.into(),
                        source: Box::new(e),
                    }
                })?;
                out[m] = stored_sketch(&sketch::add(&pairs, &deltas[i][m]))?;
            }
            Some(out)
        };
        if chunk[i].1.takes_out() {
            let zero = |column: &str| -> Result<bool, sqlx::Error> {
                Ok(row.try_get::<Vec<i64>, _>(column)?.iter().all(|n| *n == 0))
            };
            let empty_sketches = match &sketches {
                Some(s) => s.iter().all(Vec::is_empty),
                None => {
                    deltas[i].iter().all(Vec::is_empty) && {
                        let s: Vec<u8> = row.try_get("submit_sketch")?;
                        let d: Vec<u8> = row.try_get("dispatch_sketch")?;
                        s.is_empty() && d.is_empty()
                    }
                }
            };
            if empty_sketches && zero("entered")? && zero("engaged")? && zero("engaged_first")? {
                emptied.push(i);
            }
        }
        if let Some(s) = sketches {
            merged.push((i, s));
        }
    }
    if !merged.is_empty() {
        // The rows exist and this transaction holds their locks: every row takes the
        // conflict path, which sets the merged sketches and nothing else.
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "INSERT INTO {table} AS t (version, {}) ",
            rollup::COLUMNS
        ));
        q.push_values(&merged, |b, (i, [s, d])| {
            let (key, delta) = &chunk[*i];
            push_row(b, version, key, delta, s.clone(), d.clone());
        });
        q.push(format!(
            " ON CONFLICT (version, {KEY}) DO UPDATE SET \
             submit_sketch = EXCLUDED.submit_sketch, dispatch_sketch = EXCLUDED.dispatch_sketch"
        ));
        q.build().execute(&mut *conn).await?;
    }
    // A sample that moved away can leave a row with nothing in it: remove it, so a read
    // model built live and one rebuilt in bigger batches hold the same rows.
    if !emptied.is_empty() {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(format!(
            "DELETE FROM {table} WHERE submit_sketch = '' AND dispatch_sketch = '' \
             AND 0 = ALL(entered) AND 0 = ALL(engaged) AND 0 = ALL(engaged_first) \
             AND (version, {KEY}) IN "
        ));
        q.push_tuples(emptied, |mut b, i| {
            let ((_, tenant, bucket, channel, provider, tag), _) = &chunk[i];
            b.push_bind(version)
                .push_bind(*tenant)
                .push_bind(*bucket)
                .push_bind(*channel)
                .push_bind(provider.clone())
                .push_bind(tag.clone());
        });
        q.build().execute(&mut *conn).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_counts_once_overall_and_once_per_distinct_tag() {
        let dims = tag_dims(&["a".into(), "b".into(), "a".into(), String::new()]);
        assert_eq!(
            dims.into_iter().collect::<Vec<_>>(),
            vec![String::new(), "a".to_string(), "b".to_string()]
        );
    }

    #[test]
    fn a_delta_that_only_moves_a_sample_is_not_zero_until_it_cancels_out() {
        let mut d = Delta::default();
        d.sketches[0].insert(5, 1);
        d.sketches[0].insert(7, -1);
        assert!(!d.is_zero() && d.takes_out());
        assert_eq!(d.pairs(0), vec![(5, 1), (7, -1)]);
        d.sketches[0].insert(7, 0);
        d.sketches[0].insert(5, 0);
        assert!(d.is_zero());
    }
}
