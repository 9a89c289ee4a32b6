//! The rollups of one batch: status counters, engagement counters and the latency sketch
//! per 15-minute bucket, summed in memory first so each counter row is written once per
//! batch, and only for events that were actually inserted (a redelivered event adds
//! nothing).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use domain::MessageEvent;
use read_model::sketch;
use read_model::tables::bucket_15m;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::write::{Decoded, STATS_CHUNK};

type Dims = (Uuid, DateTime<Utc>, &'static str, String, String);

/// The tag dimension values of an event: '' (all messages) plus each distinct tag.
fn tag_dims(tags: &[String]) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = tags.iter().filter(|t| !t.is_empty()).cloned().collect();
    out.insert(String::new());
    out
}

/// The latency-sketch deltas of one event: `(metric, +1 or -1, delivery time, ms)`.
///
/// Version-2 events carry the change of the message's sample (taken out, put in). A
/// version-1 event predates that: it counted one sample per event carrying a latency, in
/// the bucket of its own time, and is read the same way still, so a read model of a
/// version-1 store keeps the answers it had.
fn latency_deltas(d: &Decoded<'_>) -> Vec<(&'static str, i64, DateTime<Utc>, i64)> {
    let e = &d.event;
    let h = e.header();
    let mut out = Vec::new();
    if d.env.row.event_version == "1" {
        if let Some(v) = e.latency_ms_from_submit() {
            out.push(("submit_to_delivered", 1, h.occurred_at, v));
        }
        if let Some(v) = e.latency_ms_from_dispatch() {
            out.push(("dispatch_to_delivered", 1, h.occurred_at, v));
        }
        return out;
    }
    for (metric, change) in [
        ("submit_to_delivered", h.submit_latency),
        ("dispatch_to_delivered", h.dispatch_latency),
    ] {
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

pub(crate) async fn upsert_counters(
    conn: &mut PgConnection,
    version: i32,
    new: &[&Decoded<'_>],
) -> Result<(), sqlx::Error> {
    let mut stats: BTreeMap<(Dims, &'static str), i64> = BTreeMap::new();
    let mut engagement: BTreeMap<(Dims, &'static str), (i64, i64)> = BTreeMap::new();
    // One latency sample per delivered message, its current value, in the bucket of its
    // delivery: each event says how it changed the sample (taken out of one bin, put into
    // another), so the deltas are summed here and rows only ever move by them.
    let mut latency: BTreeMap<(Dims, &'static str, i32), i64> = BTreeMap::new();
    for d in new {
        let e = &d.event;
        let h = e.header();
        let bucket = bucket_15m(h.occurred_at);
        for tag in tag_dims(&h.tags) {
            let dims: Dims = (
                h.tenant_id,
                bucket,
                h.channel.as_str(),
                h.provider.clone(),
                tag,
            );
            if e.status_changed() {
                *stats.entry((dims.clone(), h.status.as_str())).or_default() += 1;
            }
            if let MessageEvent::EngagementRecorded(g) = e {
                let slot = engagement
                    .entry((dims.clone(), g.engagement.as_str()))
                    .or_default();
                slot.0 += 1;
                slot.1 += i64::from(g.first);
            }
            for (metric, delta, at, ms) in latency_deltas(d) {
                let dims = (
                    dims.0,
                    bucket_15m(at),
                    dims.2,
                    dims.3.clone(),
                    dims.4.clone(),
                );
                *latency
                    .entry((dims, metric, sketch::bin_of(ms)))
                    .or_default() += delta;
            }
        }
    }
    latency.retain(|_, n| *n != 0);
    let stats: Vec<_> = stats.into_iter().collect();
    for chunk in stats.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO message_stats_15m (version, tenant_id, bucket, channel, provider, tag, \
             status, entered) ",
        );
        q.push_values(chunk, |mut b, ((dims, status), n)| {
            b.push_bind(version)
                .push_bind(dims.0)
                .push_bind(dims.1)
                .push_bind(dims.2)
                .push_bind(&dims.3)
                .push_bind(&dims.4)
                .push_bind(*status)
                .push_bind(*n);
        });
        q.push(
            " ON CONFLICT (version, tenant_id, bucket, channel, provider, tag, status) \
             DO UPDATE SET entered = message_stats_15m.entered + EXCLUDED.entered",
        );
        q.build().execute(&mut *conn).await?;
    }
    let engagement: Vec<_> = engagement.into_iter().collect();
    for chunk in engagement.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO message_engagement_15m (version, tenant_id, bucket, channel, provider, \
             tag, engagement, total, unique_messages) ",
        );
        q.push_values(chunk, |mut b, ((dims, kind), (total, unique))| {
            b.push_bind(version)
                .push_bind(dims.0)
                .push_bind(dims.1)
                .push_bind(dims.2)
                .push_bind(&dims.3)
                .push_bind(&dims.4)
                .push_bind(*kind)
                .push_bind(*total)
                .push_bind(*unique);
        });
        q.push(
            " ON CONFLICT (version, tenant_id, bucket, channel, provider, tag, engagement) \
             DO UPDATE SET total = message_engagement_15m.total + EXCLUDED.total, \
             unique_messages = message_engagement_15m.unique_messages + EXCLUDED.unique_messages",
        );
        q.build().execute(&mut *conn).await?;
    }
    let latency: Vec<_> = latency.into_iter().collect();
    for chunk in latency.chunks(STATS_CHUNK) {
        let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
            "INSERT INTO message_latency_15m (version, tenant_id, bucket, channel, provider, tag, \
             metric, bin, count) ",
        );
        q.push_values(chunk, |mut b, ((dims, metric, bin), n)| {
            b.push_bind(version)
                .push_bind(dims.0)
                .push_bind(dims.1)
                .push_bind(dims.2)
                .push_bind(&dims.3)
                .push_bind(&dims.4)
                .push_bind(*metric)
                .push_bind(*bin)
                .push_bind(*n);
        });
        q.push(
            " ON CONFLICT (version, tenant_id, bucket, channel, provider, tag, metric, bin) \
             DO UPDATE SET count = message_latency_15m.count + EXCLUDED.count",
        );
        q.build().execute(&mut *conn).await?;
        // A sample that moved away leaves its bin empty: remove the row, so a read model
        // built live and one rebuilt in bigger batches hold the same rows.
        let emptied: Vec<_> = chunk.iter().filter(|(_, n)| *n < 0).collect();
        if !emptied.is_empty() {
            let mut q: QueryBuilder<Postgres> = QueryBuilder::new(
                "DELETE FROM message_latency_15m WHERE count = 0 AND \
                 (version, tenant_id, bucket, channel, provider, tag, metric, bin) IN ",
            );
            q.push_tuples(emptied, |mut b, ((dims, metric, bin), _)| {
                b.push_bind(version)
                    .push_bind(dims.0)
                    .push_bind(dims.1)
                    .push_bind(dims.2)
                    .push_bind(&dims.3)
                    .push_bind(&dims.4)
                    .push_bind(*metric)
                    .push_bind(*bin);
            });
            q.build().execute(&mut *conn).await?;
        }
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
}
