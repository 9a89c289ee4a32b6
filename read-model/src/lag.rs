//! How far a read-model version trails the event store, per shard, measured cheaply
//! enough to run on every answer and every few seconds by every projector replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_store::stored::SHARD_KEY;
use event_store::Cursor;
use sqlx::PgPool;

use crate::{checkpoint, relay_position, versions};

/// Lag counts that come from a scan stop here (per shard and part): beyond it, "at least"
/// is all a gauge or a readiness answer needs to say, and the scan stays cheap. Counts the
/// relay and the checkpoints keep are exact at any size.
pub const LAG_COUNT_CAP: i64 = 100_000;

/// How far a read-model version trails the event store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lag {
    /// Per shard: events not yet applied, and the oldest one's commit time.
    pub shards: Vec<(i64, Option<DateTime<Utc>>)>,
}

impl Lag {
    /// Events not yet applied, over all shards.
    pub fn events(&self) -> i64 {
        self.shards.iter().map(|(n, _)| n).sum()
    }

    /// The oldest unapplied event's commit time.
    pub fn oldest(&self) -> Option<DateTime<Utc>> {
        self.shards.iter().filter_map(|(_, t)| *t).min()
    }

    /// Age of the oldest unapplied event at `now` (zero when caught up).
    pub fn age(&self, now: DateTime<Utc>) -> Duration {
        self.oldest()
            .map_or(Duration::ZERO, |t| (now - t).to_std().unwrap_or_default())
    }
}

/// The lag of the active read-model version.
pub async fn of_active(
    events_db: &PgPool,
    read_db: &PgPool,
    shards: u32,
) -> Result<Lag, sqlx::Error> {
    let version = versions::active(read_db).await?;
    of_version(events_db, read_db, version, shards).await
}

/// The events of the event store read-model `version` does not reflect yet, per shard.
///
/// Cheap while the projector keeps up, and independent of how far it trails:
/// * Published, not yet projected: per shard, the events between its checkpoint and the
///   relay's head of that shard. The relay counts what it published to each shard up to
///   the head and the checkpoint counts what it applied up to its cursor, so their
///   difference is the count, read without touching an event; the oldest is the shard's
///   first event past the checkpoint, one short read of the cursor index. Only a head the
///   relay has not counted yet (just after an upgrade) is counted by a scan, which stops at
///   [`LAG_COUNT_CAP`] rows.
/// * Not yet published (and not caught up from the event store either): past the relay's
///   cursor, few while the relay keeps up; that scan stops at [`LAG_COUNT_CAP`] rows.
///
/// The shard of a scanned event is read off its stored key ([`SHARD_KEY`]): nothing is
/// hashed but events older than the key.
pub async fn of_version(
    events_db: &PgPool,
    read_db: &PgPool,
    version: i32,
    shards: u32,
) -> Result<Lag, sqlx::Error> {
    let checkpoints = checkpoint::all(read_db, version, shards).await?;
    let mut heads = vec![None; shards as usize];
    for head in relay_position::heads(events_db).await? {
        if let Some(slot) = heads.get_mut(head.shard as usize) {
            *slot = Some(head);
        }
    }
    let relayed = relay_position::cursor(events_db).await?;
    let mut lag = Lag {
        shards: vec![(0, None); shards as usize],
    };
    let mut add = |shard: usize, n: i64, t: Option<DateTime<Utc>>| {
        if let Some((count, oldest)) = lag.shards.get_mut(shard) {
            *count += n;
            *oldest = match (*oldest, t) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    };

    // Published, not yet projected: (checkpoint, head] of each lagging shard.
    let mut counted = Vec::new();
    for (shard, ((cp, applied), head)) in checkpoints.iter().zip(&heads).enumerate() {
        let Some(head) = head.filter(|h| h.cursor > *cp) else {
            continue;
        };
        match head.published.map(|p| p - applied) {
            Some(n) if n >= 0 => counted.push((shard, *cp, head.cursor, n)),
            // Not counted yet (or counted by a relay that did not keep the count as this
            // one does): scan, up to the cap.
            _ => {
                let (n, oldest) = event_store::stored::tally_shard(
                    events_db,
                    shard as u32,
                    shards,
                    *cp,
                    head.cursor,
                    LAG_COUNT_CAP,
                )
                .await?;
                add(shard, n.min(LAG_COUNT_CAP), oldest);
            }
        }
    }
    if !counted.is_empty() {
        let oldest = first_past(events_db, shards, &counted).await?;
        for ((shard, _, _, n), oldest) in counted.iter().zip(oldest) {
            add(*shard, *n, oldest);
        }
    }

    // Not yet published (and not caught up from the event store either): past the relay's
    // cursor and past the shard's checkpoint. Events at or below every shard's checkpoint
    // are applied whatever the relay did (a rebuild fills a version straight from the
    // store), so the scan starts past the lowest checkpoint too.
    let lowest = checkpoints
        .iter()
        .map(|(c, _)| *c)
        .min()
        .unwrap_or(Cursor::ZERO);
    let relayed = relayed.max(lowest);
    let unpublished: Vec<(i32, i64, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
        "SELECT (shard_key % $3)::int, count(*), min(recorded_at) FROM (
           SELECT {SHARD_KEY} AS shard_key, tx_id, global_position, recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            ORDER BY tx_id, global_position
            LIMIT $4) unpublished
          WHERE (tx_id::text::bigint, global_position) >
                (($5::bigint[])[(shard_key % $3)::int + 1],
                 ($6::bigint[])[(shard_key % $3)::int + 1])
          GROUP BY 1"
    ))
    .bind(relayed.tx_id)
    .bind(relayed.global_position)
    .bind(i64::from(shards))
    .bind(LAG_COUNT_CAP)
    .bind(checkpoints.iter().map(|(c, _)| c.tx_id).collect::<Vec<_>>())
    .bind(
        checkpoints
            .iter()
            .map(|(c, _)| c.global_position)
            .collect::<Vec<_>>(),
    )
    .fetch_all(events_db)
    .await?;
    for (shard, n, oldest) in unpublished {
        if let Ok(shard) = usize::try_from(shard) {
            add(shard, n.min(LAG_COUNT_CAP), oldest);
        }
    }
    Ok(lag)
}

/// For each `(shard, after, upto, _)`, the commit time of the shard's first event in
/// `(after, upto]`, in one statement: each is the first row of its shard along the cursor
/// index past `after`, a read of about `shards` rows.
async fn first_past(
    events_db: &PgPool,
    shards: u32,
    ranges: &[(usize, Cursor, Cursor, i64)],
) -> Result<Vec<Option<DateTime<Utc>>>, sqlx::Error> {
    let column = |f: fn(&(usize, Cursor, Cursor, i64)) -> i64| -> Vec<i64> {
        ranges.iter().map(f).collect()
    };
    let rows: Vec<(i32, Option<DateTime<Utc>>)> = sqlx::query_as(&format!(
        "SELECT r.n::int, f.recorded_at
           FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], $5::bigint[], $6::bigint[])
                WITH ORDINALITY AS r(shard, tx, gp, upto_tx, upto_gp, n)
           LEFT JOIN LATERAL (
             SELECT recorded_at FROM events
              WHERE (tx_id, global_position) > (r.tx::text::xid8, r.gp)
                AND (tx_id, global_position) <= (r.upto_tx::text::xid8, r.upto_gp)
                AND {SHARD_KEY} % $1 = r.shard
              ORDER BY tx_id, global_position
              LIMIT 1) f ON true
          ORDER BY r.n"
    ))
    .bind(i64::from(shards))
    .bind(column(|r| r.0 as i64))
    .bind(column(|r| r.1.tx_id))
    .bind(column(|r| r.1.global_position))
    .bind(column(|r| r.2.tx_id))
    .bind(column(|r| r.2.global_position))
    .fetch_all(events_db)
    .await?;
    Ok(rows.into_iter().map(|(_, t)| t).collect())
}

/// Committed events after the relay's stored cursor: how many (at most
/// [`LAG_COUNT_CAP`]), and the oldest's commit time. Includes events a still-open older
/// transaction holds back behind the horizon (they wait too).
pub async fn relay(events_db: &PgPool) -> Result<(i64, Option<DateTime<Utc>>), sqlx::Error> {
    let c: Cursor = relay_position::cursor(events_db).await?;
    sqlx::query_as(
        "SELECT count(*), min(recorded_at) FROM (
           SELECT recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            ORDER BY tx_id, global_position
            LIMIT $3) unpublished",
    )
    .bind(c.tx_id)
    .bind(c.global_position)
    .bind(LAG_COUNT_CAP)
    .fetch_one(events_db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_sums_shards_and_ages_the_oldest() {
        let t = Utc::now();
        let lag = Lag {
            shards: vec![
                (2, Some(t - chrono::Duration::seconds(5))),
                (0, None),
                (1, Some(t - chrono::Duration::seconds(9))),
            ],
        };
        assert_eq!(lag.events(), 3);
        assert_eq!(lag.age(t), Duration::from_secs(9));
        assert_eq!(Lag::default().age(t), Duration::ZERO);
    }
}
