//! How far a read-model version trails the event store, per shard, measured cheaply
//! enough to run on every answer and every few seconds by every projector replica.

use std::time::Duration;

use chrono::{DateTime, Utc};
use event_store::Cursor;
use sqlx::PgPool;

use crate::{checkpoint, relay_position, versions};

/// Lag counts stop here (per shard and part): beyond it, "at least" is all a gauge or a
/// readiness answer needs to say, and the measurement stays cheap.
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
/// Cheap while the projector keeps up: per shard, the events published but not yet
/// projected lie between its checkpoint and the relay's head of that shard (a shard whose
/// checkpoint reached its head costs no scan), and the events not yet published lie past
/// the relay's cursor (few while the relay keeps up). Both scans run on the cursor index
/// and stop at [`LAG_COUNT_CAP`] rows.
pub async fn of_version(
    events_db: &PgPool,
    read_db: &PgPool,
    version: i32,
    shards: u32,
) -> Result<Lag, sqlx::Error> {
    let checkpoints = checkpoint::all(read_db, version, shards).await?;
    let heads = checkpoint::per_shard(&relay_position::head_rows(events_db).await?, shards);
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
    for (shard, (cp, head)) in checkpoints.iter().zip(&heads).enumerate() {
        if cp >= head {
            continue;
        }
        let (n, oldest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
            "SELECT count(*), min(recorded_at) FROM (
               SELECT recorded_at FROM events
                WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
                  AND (tx_id, global_position) <= ($3::bigint::text::xid8, $4)
                  AND herald_shard(aggregate_id, $5) = $6
                ORDER BY tx_id, global_position
                LIMIT $7) lagging",
        )
        .bind(cp.tx_id)
        .bind(cp.global_position)
        .bind(head.tx_id)
        .bind(head.global_position)
        .bind(shards as i32)
        .bind(shard as i32)
        .bind(LAG_COUNT_CAP)
        .fetch_one(events_db)
        .await?;
        add(shard, n, oldest);
    }

    // Not yet published (and not caught up from the event store either): past the relay's
    // cursor and past the shard's checkpoint. Events at or below every shard's checkpoint
    // are applied whatever the relay did (a rebuild fills a version straight from the
    // store), so the scan starts past the lowest checkpoint too.
    let lowest = checkpoints.iter().copied().min().unwrap_or(Cursor::ZERO);
    let relayed = relayed.max(lowest);
    let unpublished: Vec<(i32, i64, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT herald_shard(aggregate_id, $3), count(*), min(recorded_at) FROM (
           SELECT aggregate_id, tx_id, global_position, recorded_at FROM events
            WHERE (tx_id, global_position) > ($1::bigint::text::xid8, $2)
            ORDER BY tx_id, global_position
            LIMIT $4) unpublished
          WHERE (tx_id::text::bigint, global_position) >
                (($5::bigint[])[herald_shard(aggregate_id, $3) + 1],
                 ($6::bigint[])[herald_shard(aggregate_id, $3) + 1])
          GROUP BY 1",
    )
    .bind(relayed.tx_id)
    .bind(relayed.global_position)
    .bind(shards as i32)
    .bind(LAG_COUNT_CAP)
    .bind(checkpoints.iter().map(|c| c.tx_id).collect::<Vec<_>>())
    .bind(
        checkpoints
            .iter()
            .map(|c| c.global_position)
            .collect::<Vec<_>>(),
    )
    .fetch_all(events_db)
    .await?;
    for (shard, n, oldest) in unpublished {
        if let Ok(shard) = usize::try_from(shard) {
            add(shard, n, oldest);
        }
    }
    for (count, _) in &mut lag.shards {
        *count = (*count).min(LAG_COUNT_CAP);
    }
    Ok(lag)
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
