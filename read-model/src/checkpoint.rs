//! Per `(read-model version, shard)`: the cursor of the last event of that shard applied,
//! advanced in the same transaction as the rows it covers, so an event is applied exactly
//! once whatever crashes.

use event_store::Cursor;
use sqlx::{PgConnection, PgPool};

use crate::shard::projection_name;

/// Ensures the checkpoint row exists and locks it for this transaction; returns it.
pub async fn lock(
    conn: &mut PgConnection,
    version: i32,
    shard: u32,
) -> Result<Cursor, sqlx::Error> {
    // One statement: creates the row if missing, locks it (DO UPDATE takes the row lock,
    // like FOR UPDATE) and returns the current cursor.
    let (tx_id, gp): (i64, i64) = sqlx::query_as(
        "INSERT INTO projection_checkpoints (projection, shard) VALUES ($1, $2) \
         ON CONFLICT (projection, shard) DO UPDATE SET projection = EXCLUDED.projection \
         RETURNING tx_id, global_position",
    )
    .bind(projection_name(version))
    .bind(shard as i32)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Cursor::new(tx_id, gp))
}

/// The checkpoint of `(version, shard)` (zero when none yet).
pub async fn get(pool: &PgPool, version: i32, shard: u32) -> Result<Cursor, sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT tx_id, global_position FROM projection_checkpoints \
         WHERE projection = $1 AND shard = $2",
    )
    .bind(projection_name(version))
    .bind(shard as i32)
    .fetch_optional(pool)
    .await?;
    Ok(row.map_or(Cursor::ZERO, |(a, b)| Cursor::new(a, b)))
}

/// Every shard's checkpoint of `version` with the events it has applied up to its cursor
/// (the shard's events at or below it), indexed by shard (zero where none yet).
pub async fn all(
    pool: &PgPool,
    version: i32,
    shards: u32,
) -> Result<Vec<(Cursor, i64)>, sqlx::Error> {
    let rows: Vec<(i32, i64, i64, i64)> = sqlx::query_as(
        "SELECT shard, tx_id, global_position, events FROM projection_checkpoints \
         WHERE projection = $1",
    )
    .bind(projection_name(version))
    .fetch_all(pool)
    .await?;
    Ok(per_shard(&rows, shards))
}

/// `(shard, tx_id, global_position, events)` rows as a counted cursor per shard (zero where
/// absent; rows of shards beyond `shards` are ignored).
pub fn per_shard(rows: &[(i32, i64, i64, i64)], shards: u32) -> Vec<(Cursor, i64)> {
    let mut out = vec![(Cursor::ZERO, 0); shards as usize];
    for (shard, tx, pos, events) in rows {
        if let Some(slot) = usize::try_from(*shard).ok().and_then(|i| out.get_mut(i)) {
            *slot = (Cursor::new(*tx, *pos), *events);
        }
    }
    out
}

/// Moves the locked checkpoint of `(version, shard)` to `to`, counting `events` more
/// applied.
pub async fn advance(
    conn: &mut PgConnection,
    version: i32,
    shard: u32,
    to: Cursor,
    events: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE projection_checkpoints SET tx_id = $3, global_position = $4, \
         events = events + $5, updated_at = now() WHERE projection = $1 AND shard = $2",
    )
    .bind(projection_name(version))
    .bind(shard as i32)
    .bind(to.tx_id)
    .bind(to.global_position)
    .bind(events)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_land_on_their_shard_and_the_rest_are_zero() {
        let rows = [(2, 10, 7, 5), (0, 3, 1, 2), (9, 1, 1, 1)];
        assert_eq!(
            per_shard(&rows, 4),
            vec![
                (Cursor::new(3, 1), 2),
                (Cursor::ZERO, 0),
                (Cursor::new(10, 7), 5),
                (Cursor::ZERO, 0)
            ]
        );
    }
}
