//! How far the relay has published: its cursor (the last event published) and, per shard,
//! the last event published to that shard. Each stream entry names its predecessor in the
//! shard, so a consumer can tell when Redis lost entries; the heads, and how many events
//! each shard was published up to its head, let a lag measurement skip shards that are
//! caught up and count the others' lag without reading their events.

use std::collections::BTreeMap;

use event_store::Cursor;
use sqlx::PgPool;

/// The relay's name in `relay_checkpoint` and `relay_shard_heads`.
pub const RELAY_NAME: &str = "relay";

/// The relay's stored progress.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayPosition {
    /// The last event published.
    pub cursor: Cursor,
    /// Per shard, the last event published to it.
    pub heads: BTreeMap<u32, Cursor>,
    /// Per shard, the furthest event published to it and how many of the shard's events lie
    /// at or below that one. A projection checkpoint counts the same way, so the difference
    /// is what a read model lacks of what was published.
    pub published: BTreeMap<u32, (Cursor, i64)>,
}

impl RelayPosition {
    /// Records the event at `cursor` as published to `shard`: its new head, counted once.
    /// An event at or below the furthest one counted (published again after the cursor was
    /// set back) is not counted twice.
    pub fn publish(&mut self, shard: u32, cursor: Cursor) {
        self.heads.insert(shard, cursor);
        let (furthest, count) = self.published.entry(shard).or_insert((Cursor::ZERO, 0));
        if cursor > *furthest {
            *furthest = cursor;
            *count += 1;
        }
    }

    /// How many events of `shard` lie at or below its head, where known.
    pub fn published_at_head(&self, shard: u32) -> Option<i64> {
        let head = self.heads.get(&shard)?;
        self.published
            .get(&shard)
            .filter(|(furthest, _)| furthest == head)
            .map(|(_, n)| *n)
    }
}

/// A shard's relay head as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The shard.
    pub shard: u32,
    /// The last event published to it.
    pub cursor: Cursor,
    /// Events published to it up to `cursor`; `None` where not counted yet (a head stored
    /// before the count existed, or moved by a relay that does not keep it).
    pub published: Option<i64>,
}

/// The relay's cursor (zero before its first publish).
pub async fn cursor(pool: &PgPool) -> Result<Cursor, sqlx::Error> {
    let cursor: Option<(i64, i64)> =
        sqlx::query_as("SELECT tx_id, global_position FROM relay_checkpoint WHERE relay = $1")
            .bind(RELAY_NAME)
            .fetch_optional(pool)
            .await?;
    Ok(cursor.map_or(Cursor::ZERO, |(a, b)| Cursor::new(a, b)))
}

/// Every shard's head with its count.
pub async fn heads(pool: &PgPool) -> Result<Vec<Head>, sqlx::Error> {
    let rows: Vec<(i32, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position, published FROM relay_shard_heads \
         WHERE relay = $1",
    )
    .bind(RELAY_NAME)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, tx, gp, published)| {
            Some(Head {
                shard: u32::try_from(s).ok()?,
                cursor: Cursor::new(tx, gp),
                published,
            })
        })
        .collect())
}

/// How many events the relay has published to shards `0..shards` up to their heads, if
/// every head is counted: about the size of the store, read without scanning it.
pub async fn published_total(pool: &PgPool, shards: u32) -> Result<Option<i64>, sqlx::Error> {
    let (total, uncounted): (Option<i64>, i64) = sqlx::query_as(
        "SELECT sum(published)::bigint, count(*) FILTER (WHERE published IS NULL) \
         FROM relay_shard_heads WHERE relay = $1 AND shard < $2",
    )
    .bind(RELAY_NAME)
    .bind(shards as i32)
    .fetch_one(pool)
    .await?;
    Ok(total.filter(|_| uncounted == 0))
}

/// The stored progress of a relay publishing to `shards` shards. A head stored without its
/// count (an upgraded store, or a head moved by an older relay) is counted here, once
/// ([`count_upto`]).
pub async fn load(
    events_db: &PgPool,
    read_db: &PgPool,
    shards: u32,
) -> Result<RelayPosition, sqlx::Error> {
    let mut position = RelayPosition {
        cursor: cursor(events_db).await?,
        ..RelayPosition::default()
    };
    for head in heads(events_db).await? {
        let published = match head.published {
            Some(n) => n,
            None => count_upto(events_db, read_db, head.shard, shards, head.cursor).await?,
        };
        position.heads.insert(head.shard, head.cursor);
        position
            .published
            .insert(head.shard, (head.cursor, published));
    }
    Ok(position)
}

/// The events of `shard` (of `shards`) at or below `head`. A live read-model version's
/// checkpoint of the shard counts the same events up to its cursor, so the count starts
/// from the furthest such checkpoint at or below the head and reads only the events
/// between the two (none when the projector had caught up); from the start of the store
/// when there is none.
async fn count_upto(
    events_db: &PgPool,
    read_db: &PgPool,
    shard: u32,
    shards: u32,
    head: Cursor,
) -> Result<i64, sqlx::Error> {
    let live: Vec<String> = crate::versions::live(read_db)
        .await?
        .into_iter()
        .map(crate::shard::projection_name)
        .collect();
    let below: Option<(i64, i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_position, events FROM projection_checkpoints \
         WHERE projection = ANY($1) AND shard = $2 AND (tx_id, global_position) <= ($3, $4) \
         ORDER BY tx_id DESC, global_position DESC LIMIT 1",
    )
    .bind(&live)
    .bind(shard as i32)
    .bind(head.tx_id)
    .bind(head.global_position)
    .fetch_optional(read_db)
    .await?;
    let (from, counted) = below.map_or((Cursor::ZERO, 0), |(tx, gp, n)| (Cursor::new(tx, gp), n));
    tracing::info!(shard, %head, checkpoint = %from, "counting the events published to a shard");
    let (between, _) =
        event_store::stored::tally_shard(events_db, shard, shards, from, head, i64::MAX).await?;
    Ok(counted + between)
}

/// Stores `position` in one transaction. Positions only move forward: a stale relay
/// (one that lost its leadership without knowing) can never move them back.
pub async fn store(pool: &PgPool, position: &RelayPosition) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO relay_checkpoint (relay, tx_id, global_position) VALUES ($1, $2, $3) \
         ON CONFLICT (relay) DO UPDATE SET tx_id = EXCLUDED.tx_id, \
         global_position = EXCLUDED.global_position, updated_at = now() \
         WHERE (relay_checkpoint.tx_id, relay_checkpoint.global_position) \
             < (EXCLUDED.tx_id, EXCLUDED.global_position)",
    )
    .bind(RELAY_NAME)
    .bind(position.cursor.tx_id)
    .bind(position.cursor.global_position)
    .execute(&mut *tx)
    .await?;
    let shards: Vec<i32> = position.heads.keys().map(|s| *s as i32).collect();
    let txs: Vec<i64> = position.heads.values().map(|c| c.tx_id).collect();
    let gps: Vec<i64> = position.heads.values().map(|c| c.global_position).collect();
    // A head below the furthest counted event (published again after the cursor was set
    // back) goes without a count; it is below the stored head, so it updates nothing.
    let published: Vec<Option<i64>> = position
        .heads
        .keys()
        .map(|s| position.published_at_head(*s))
        .collect();
    sqlx::query(
        "INSERT INTO relay_shard_heads (relay, shard, tx_id, global_position, published) \
         SELECT $1, * FROM unnest($2::int[], $3::bigint[], $4::bigint[], $5::bigint[]) \
         ON CONFLICT (relay, shard) DO UPDATE SET \
         tx_id = EXCLUDED.tx_id, global_position = EXCLUDED.global_position, \
         published = EXCLUDED.published \
         WHERE (relay_shard_heads.tx_id, relay_shard_heads.global_position) \
             < (EXCLUDED.tx_id, EXCLUDED.global_position)",
    )
    .bind(RELAY_NAME)
    .bind(&shards)
    .bind(&txs)
    .bind(&gps)
    .bind(&published)
    .execute(&mut *tx)
    .await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_is_counted_once_even_when_published_again() {
        let mut p = RelayPosition::default();
        p.publish(0, Cursor::new(1, 1));
        p.publish(0, Cursor::new(1, 3));
        p.publish(1, Cursor::new(1, 2));
        assert_eq!(p.published_at_head(0), Some(2));
        assert_eq!(p.published_at_head(1), Some(1));
        assert_eq!(p.published_at_head(2), None);
        // The cursor was set back: the same events go out again.
        p.publish(0, Cursor::new(1, 1));
        assert_eq!(p.published_at_head(0), None, "a head below the count");
        p.publish(0, Cursor::new(1, 3));
        assert_eq!(p.published_at_head(0), Some(2));
        p.publish(0, Cursor::new(2, 4));
        assert_eq!(p.published_at_head(0), Some(3));
    }
}
