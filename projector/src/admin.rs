//! Operator commands: dead letters (list, retry, skip), rebuilding the read models, and
//! retiring an old read-model version.

use std::collections::BTreeMap;

use event_store::stored::{read_after, read_positions};
use event_store::Cursor;
use read_model::dead_letters::DeadLetter;
use read_model::shard::shard_of;
use sqlx::PgPool;

use crate::apply::{apply, Stop};
use crate::batch::DEAD_LETTER_LOCK_KEY;
use crate::error::{Error, Result};
use crate::stream::{self, group_name, stream_key, Entry};
use crate::write::{decode, write_events};
use crate::Context;

/// Dead letters still waiting (`parked`, `held`), or all of them with `all`.
pub async fn list(pool: &PgPool, all: bool) -> Result<Vec<DeadLetter>> {
    Ok(read_model::dead_letters::list(pool, all).await?)
}

/// Re-applies the parked event `id` and every event of its message held behind it, in
/// sequence order, in one transaction; marks them `resolved`. Returns how many were
/// applied. On failure nothing changes except the parked row's `attempts` and `error`.
pub async fn retry(read_db: &PgPool, events_db: &PgPool, id: i64) -> Result<usize> {
    match drain(read_db, events_db, id, false).await {
        Ok(n) => Ok(n),
        Err(e) => {
            let _ = sqlx::query(
                "UPDATE dead_letters SET attempts = attempts + 1, error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(e.to_string())
            .execute(read_db)
            .await;
            Err(e)
        }
    }
}

/// Marks the parked event `id` `skipped` (its event is never applied to this version) and
/// applies the events of its message held behind it. If one of those fails, the skip still
/// stands and that event becomes the message's parked one.
pub async fn skip(read_db: &PgPool, events_db: &PgPool, id: i64) -> Result<usize> {
    match drain(read_db, events_db, id, true).await {
        Ok(n) => Ok(n),
        Err(e @ Error::Refused(_)) => Err(e),
        Err(e) => {
            // Keep the skip; park the first held event with the error instead.
            let mut tx = read_db.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(DEAD_LETTER_LOCK_KEY)
                .execute(&mut *tx)
                .await?;
            let row: Option<(i32, String)> = sqlx::query_as(
                "UPDATE dead_letters SET state = 'skipped', resolved_at = now() \
                 WHERE id = $1 AND state = 'parked' RETURNING version, message_id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((version, message)) = row {
                sqlx::query(
                    "UPDATE dead_letters SET state = 'parked', error = $3, attempts = 1 \
                     WHERE id = (SELECT id FROM dead_letters WHERE version = $1 AND message_id = $2 \
                     AND state = 'held' ORDER BY sequence LIMIT 1)",
                )
                .bind(version)
                .bind(message)
                .bind(e.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Err(e)
        }
    }
}

async fn drain(read_db: &PgPool, events_db: &PgPool, id: i64, skip_first: bool) -> Result<usize> {
    let mut tx = read_db.begin().await?;
    // Exclusive: no batch is parking events of this message while it drains.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DEAD_LETTER_LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let row: Option<(i32, String, String)> = sqlx::query_as(
        "SELECT version, message_id, state FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((version, message, state)) = row else {
        return Err(Error::Refused(format!("no dead letter {id}")));
    };
    if state != "parked" {
        return Err(Error::Refused(format!(
            "dead letter {id} is {state}; only parked ones can be retried or skipped \
             (held ones drain with the parked event of their message)"
        )));
    }
    if skip_first {
        sqlx::query("UPDATE dead_letters SET state = 'skipped', resolved_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, global_position FROM dead_letters WHERE version = $1 AND message_id = $2 \
         AND state IN ('parked', 'held') ORDER BY sequence",
    )
    .bind(version)
    .bind(&message)
    .fetch_all(&mut *tx)
    .await?;
    let positions: Vec<i64> = rows.iter().map(|(_, p)| *p).collect();
    let ids: Vec<i64> = rows.iter().map(|(i, _)| *i).collect();
    // The event store is the source of truth: a corrected event is read afresh.
    let mut envs = read_positions(events_db, &positions).await?;
    envs.sort_by_key(|e| e.row.sequence);
    let mut decoded = Vec::with_capacity(envs.len());
    for env in &envs {
        if let Some(d) = decode(env)? {
            decoded.push(d);
        }
    }
    write_events(&mut tx, version, &decoded).await?;
    sqlx::query(
        "UPDATE dead_letters SET state = 'resolved', resolved_at = now() WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// Rows per event-store read of a rebuild.
const REBUILD_CHUNK: i64 = 20_000;
/// Events per read-model transaction of a rebuild (larger than a live batch: fewer commits).
const REBUILD_BATCH: usize = 1_000;

/// Builds a new read-model version straight from the event store (not through Redis),
/// makes it live (the running projectors pick it up and continue from its checkpoints),
/// catches it up once more, then switches queries to it atomically. The previous version
/// stays live until `retire`d. Returns the new version.
pub async fn rebuild(ctx: &Context) -> Result<i32> {
    let version: i32 = sqlx::query_scalar(
        "INSERT INTO read_model_versions (version, state) \
         SELECT coalesce(max(version), 0) + 1, 'building' FROM read_model_versions \
         RETURNING version",
    )
    .fetch_one(&ctx.read_db)
    .await?;
    tracing::info!(version, "rebuilding read models from the event store");
    let mut cursor = bulk(ctx, version, Cursor::ZERO).await?;
    sqlx::query(
        "UPDATE read_model_versions SET state = 'live', live_at = now() WHERE version = $1",
    )
    .bind(version)
    .execute(&ctx.read_db)
    .await?;
    // Whatever arrived during the bulk pass; live projectors continue from here.
    cursor = bulk(ctx, version, cursor).await?;
    sqlx::query("UPDATE read_model_active SET version = $1, switched_at = now()")
        .bind(version)
        .execute(&ctx.read_db)
        .await?;
    tracing::info!(version, %cursor, "read-model version active");
    Ok(version)
}

async fn bulk(ctx: &Context, version: i32, mut cursor: Cursor) -> Result<Cursor> {
    loop {
        let events = read_after(&ctx.events_db, cursor, REBUILD_CHUNK).await?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            return Ok(cursor);
        };
        let mut by_shard: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
        for e in events {
            by_shard
                .entry(shard_of(&e.row.aggregate_id, ctx.settings.shards))
                .or_default()
                .push(Entry::from(e));
        }
        // Shards are independent (their own checkpoints, their own messages), so they are
        // written concurrently: the database, not one connection's round trips, sets the
        // pace. Within a shard, chunks stay in order.
        let writes = by_shard.into_iter().map(|(shard, entries)| async move {
            for chunk in entries.chunks(REBUILD_BATCH) {
                match apply(ctx, version, shard, chunk).await {
                    Ok(()) => {}
                    Err(Stop::Halt { error, .. }) => return Err(error),
                    Err(Stop::Gap { .. }) => {
                        unreachable!("events read from the store carry no stream predecessor")
                    }
                }
            }
            Ok::<(), Error>(())
        });
        futures::future::try_join_all(writes).await?;
        cursor = last;
    }
}

/// Stops projecting `version` (it must not be the active one), drops its consumer groups
/// and deletes its rows.
pub async fn retire(ctx: &Context, version: i32) -> Result<()> {
    let active = read_model::versions::active(&ctx.read_db).await?;
    if active == version {
        return Err(Error::Refused(format!(
            "version {version} is active; rebuild first"
        )));
    }
    let n = sqlx::query(
        "UPDATE read_model_versions SET state = 'retired', retired_at = now() \
         WHERE version = $1 AND state <> 'retired'",
    )
    .bind(version)
    .execute(&ctx.read_db)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::Refused(format!("no live version {version}")));
    }
    let mut redis = stream::connect(&ctx.redis, std::time::Duration::from_secs(5)).await?;
    for shard in 0..ctx.settings.shards {
        stream::destroy_group(
            &mut redis,
            &stream_key(&ctx.prefix, shard),
            &group_name(version),
        )
        .await;
    }
    for table in read_model::tables::VERSIONED {
        sqlx::query(&format!("DELETE FROM {table} WHERE version = $1"))
            .bind(version)
            .execute(&ctx.read_db)
            .await?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(read_model::shard::projection_name(version))
        .execute(&ctx.read_db)
        .await?;
    Ok(())
}

/// The `projector <command>` hook of the service binary.
pub async fn command(args: Vec<String>, settings: service_kit::Settings) -> Result<(), String> {
    run_command(args, settings).await.map_err(|e| e.to_string())
}

async fn run_command(args: Vec<String>, settings: service_kit::Settings) -> Result<()> {
    let tuning =
        crate::ProjectorSettings::from_env(&settings).map_err(|e| Error::Refused(e.to_string()))?;
    let conns = service_kit::Connections::open(&settings, "projector-admin")
        .await
        .map_err(|e| Error::Refused(e.to_string()))?;
    let ctx = crate::context(&conns, &settings, tuning)?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| Error::Refused(format!("not an id: {s:?}")))
    };
    match args.as_slice() {
        ["dead-letters", "list", rest @ ..] => {
            let all = rest.contains(&"--all");
            let rows = list(&conns.read_db, all).await?;
            println!("id\tversion\tstate\tmessage_id\tsequence\tevent_type\tattempts\terror");
            for r in rows {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    r.id,
                    r.version,
                    r.state,
                    r.message_id,
                    r.sequence,
                    r.event_type,
                    r.attempts,
                    r.error.replace('\n', " ")
                );
            }
            Ok(())
        }
        ["dead-letters", "retry", n] => {
            let applied = retry(&conns.read_db, &conns.db, id(n)?).await?;
            println!("applied {applied} event(s)");
            Ok(())
        }
        ["dead-letters", "skip", n] => {
            let applied = skip(&conns.read_db, &conns.db, id(n)?).await?;
            println!("skipped; applied {applied} held event(s)");
            Ok(())
        }
        ["rebuild"] => {
            let v = rebuild(&ctx).await?;
            println!("read-model version {v} built and active");
            Ok(())
        }
        ["retire", v] => {
            let v = v
                .parse::<i32>()
                .map_err(|_| Error::Refused(format!("not a version: {v:?}")))?;
            retire(&ctx, v).await?;
            println!("read-model version {v} retired");
            Ok(())
        }
        _ => Err(Error::Refused(format!(
            "unknown command {:?}",
            args.join(" ")
        ))),
    }
}
