//! Operator commands: dead letters, rebuild, retiring a read-model version.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::consumer::{apply_from_store, Context};
use crate::envelope::{read_after, read_positions};
use crate::project::{decode, write_events, DEAD_LETTER_LOCK_KEY};
use crate::shard::{group_name, shard_of, stream_key};

/// One row of `dead_letters`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadLetter {
    /// Its id (what `retry` and `skip` take).
    pub id: i64,
    /// Read-model version.
    pub version: i32,
    /// Shard.
    pub shard: i32,
    /// The message (aggregate id).
    pub message_id: String,
    /// The event's sequence.
    pub sequence: i64,
    /// `events.global_position`.
    pub global_position: i64,
    /// The event type.
    pub event_type: String,
    /// `parked`, `held`, `skipped` or `resolved`.
    pub state: String,
    /// Why it was parked.
    pub error: String,
    /// Failed attempts.
    pub attempts: i32,
}

/// Dead letters still waiting (`parked`, `held`), or all of them with `all`.
pub async fn list(pool: &PgPool, all: bool) -> Result<Vec<DeadLetter>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, version, shard, message_id, sequence, global_position, event_type, state, \
         error, attempts FROM dead_letters \
         WHERE $1 OR state IN ('parked', 'held') ORDER BY version, message_id, sequence",
    )
    .bind(all)
    .fetch_all(pool)
    .await
}

/// Re-applies the parked event `id` and every event of its message held behind it, in
/// sequence order, in one transaction; marks them `resolved`. Returns how many were
/// applied. On failure nothing changes except the parked row's `attempts` and `error`.
pub async fn retry(read_db: &PgPool, events_db: &PgPool, id: i64) -> Result<usize, String> {
    match drain(read_db, events_db, id, false).await {
        Ok(n) => Ok(n),
        Err(e) => {
            let _ = sqlx::query(
                "UPDATE dead_letters SET attempts = attempts + 1, error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(&e)
            .execute(read_db)
            .await;
            Err(e)
        }
    }
}

/// Marks the parked event `id` `skipped` (its event is never applied to this version) and
/// applies the events of its message held behind it. If one of those fails, the skip still
/// stands and that event becomes the message's parked one.
pub async fn skip(read_db: &PgPool, events_db: &PgPool, id: i64) -> Result<usize, String> {
    match drain(read_db, events_db, id, true).await {
        Ok(n) => Ok(n),
        Err(e) => {
            // Keep the skip; park the first held event with the error instead.
            let mut tx = read_db.begin().await.map_err(|e| e.to_string())?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(DEAD_LETTER_LOCK_KEY)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            let row: Option<(i32, String)> = sqlx::query_as(
                "UPDATE dead_letters SET state = 'skipped', resolved_at = now() \
                 WHERE id = $1 AND state = 'parked' RETURNING version, message_id",
            )
            .bind(id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
            if let Some((version, message)) = row {
                sqlx::query(
                    "UPDATE dead_letters SET state = 'parked', error = $3, attempts = 1 \
                     WHERE id = (SELECT id FROM dead_letters WHERE version = $1 AND message_id = $2 \
                     AND state = 'held' ORDER BY sequence LIMIT 1)",
                )
                .bind(version)
                .bind(message)
                .bind(&e)
                .execute(&mut *tx)
                .await
                .map_err(|e| e.to_string())?;
            }
            tx.commit().await.map_err(|e| e.to_string())?;
            Err(e)
        }
    }
}

async fn drain(
    read_db: &PgPool,
    events_db: &PgPool,
    id: i64,
    skip_first: bool,
) -> Result<usize, String> {
    let err = |e: sqlx::Error| e.to_string();
    let mut tx = read_db.begin().await.map_err(err)?;
    // Exclusive: no batch is parking events of this message while it drains.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(DEAD_LETTER_LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    let row: Option<(i32, String, String)> = sqlx::query_as(
        "SELECT version, message_id, state FROM dead_letters WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .map_err(err)?;
    let Some((version, message, state)) = row else {
        return Err(format!("no dead letter {id}"));
    };
    if state != "parked" {
        return Err(format!(
            "dead letter {id} is {state}; only parked ones can be retried or skipped \
             (held ones drain with the parked event of their message)"
        ));
    }
    if skip_first {
        sqlx::query("UPDATE dead_letters SET state = 'skipped', resolved_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err)?;
    }
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT id, global_position FROM dead_letters WHERE version = $1 AND message_id = $2 \
         AND state IN ('parked', 'held') ORDER BY sequence",
    )
    .bind(version)
    .bind(&message)
    .fetch_all(&mut *tx)
    .await
    .map_err(err)?;
    let positions: Vec<i64> = rows.iter().map(|(_, p)| *p).collect();
    let ids: Vec<i64> = rows.iter().map(|(i, _)| *i).collect();
    // The event store is the source of truth: a corrected event is read afresh.
    let envs = read_positions(events_db, &positions).await.map_err(err)?;
    let mut envs = envs;
    envs.sort_by_key(|e| e.sequence);
    let mut decoded = Vec::with_capacity(envs.len());
    for env in &envs {
        if let Some(d) = decode(env)? {
            decoded.push(d);
        }
    }
    write_events(&mut tx, version, &decoded)
        .await
        .map_err(|e| format!("applying: {e}"))?;
    sqlx::query(
        "UPDATE dead_letters SET state = 'resolved', resolved_at = now() WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&mut *tx)
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)?;
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
pub async fn rebuild(ctx: &Context) -> Result<i32, String> {
    let err = |e: sqlx::Error| e.to_string();
    let version: i32 = sqlx::query_scalar(
        "INSERT INTO read_model_versions (version, state) \
         SELECT coalesce(max(version), 0) + 1, 'building' FROM read_model_versions \
         RETURNING version",
    )
    .fetch_one(&ctx.read_db)
    .await
    .map_err(err)?;
    tracing::info!(version, "rebuilding read models from the event store");
    let mut cursor = bulk(ctx, version, crate::shard::Cursor::ZERO).await?;
    sqlx::query(
        "UPDATE read_model_versions SET state = 'live', live_at = now() WHERE version = $1",
    )
    .bind(version)
    .execute(&ctx.read_db)
    .await
    .map_err(err)?;
    // Whatever arrived during the bulk pass; live projectors continue from here.
    cursor = bulk(ctx, version, cursor).await?;
    let mut tx = ctx.read_db.begin().await.map_err(err)?;
    sqlx::query("UPDATE read_model_active SET version = $1, switched_at = now()")
        .bind(version)
        .execute(&mut *tx)
        .await
        .map_err(err)?;
    tx.commit().await.map_err(err)?;
    tracing::info!(version, %cursor, "read-model version active");
    Ok(version)
}

async fn bulk(
    ctx: &Context,
    version: i32,
    mut cursor: crate::shard::Cursor,
) -> Result<crate::shard::Cursor, String> {
    loop {
        let events = read_after(&ctx.events_db, cursor, REBUILD_CHUNK)
            .await
            .map_err(|e| e.to_string())?;
        let Some(last) = events.last().map(|e| e.cursor) else {
            return Ok(cursor);
        };
        let mut by_shard: BTreeMap<u32, Vec<_>> = BTreeMap::new();
        for e in events {
            by_shard
                .entry(shard_of(&e.aggregate_id, ctx.settings.shards))
                .or_default()
                .push(e);
        }
        // Shards are independent (their own checkpoints, their own messages), so they are
        // written concurrently: the database, not one connection's round trips, sets the
        // pace. Within a shard, chunks stay in order.
        let writes = by_shard.into_iter().map(|(shard, events)| async move {
            for chunk in events.chunks(REBUILD_BATCH) {
                apply_from_store(ctx, version, shard, chunk).await?;
            }
            Ok::<(), String>(())
        });
        futures::future::try_join_all(writes).await?;
        cursor = last;
    }
}

/// Stops projecting `version` (it must not be the active one), drops its consumer groups
/// and deletes its rows.
pub async fn retire(ctx: &Context, version: i32) -> Result<(), String> {
    let err = |e: sqlx::Error| e.to_string();
    let active: i32 = sqlx::query_scalar("SELECT version FROM read_model_active")
        .fetch_one(&ctx.read_db)
        .await
        .map_err(err)?;
    if active == version {
        return Err(format!("version {version} is active; rebuild first"));
    }
    let n = sqlx::query(
        "UPDATE read_model_versions SET state = 'retired', retired_at = now() \
         WHERE version = $1 AND state <> 'retired'",
    )
    .bind(version)
    .execute(&ctx.read_db)
    .await
    .map_err(err)?
    .rows_affected();
    if n == 0 {
        return Err(format!("no live version {version}"));
    }
    let mut redis = ctx
        .redis
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| e.to_string())?;
    for shard in 0..ctx.settings.shards {
        let _: Result<redis::Value, _> = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream_key(&ctx.prefix, shard))
            .arg(group_name(version))
            .query_async(&mut redis)
            .await;
    }
    for table in [
        "message_events",
        "messages",
        "message_stats_15m",
        "message_engagement_15m",
        "message_latency_15m",
        "dead_letters",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE version = $1"))
            .bind(version)
            .execute(&ctx.read_db)
            .await
            .map_err(err)?;
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
        .bind(crate::shard::projection_name(version))
        .execute(&ctx.read_db)
        .await
        .map_err(err)?;
    Ok(())
}

/// The `projector <command>` hook of the service binary.
pub async fn command(args: Vec<String>, settings: service_kit::Settings) -> Result<(), String> {
    let tuning = crate::ProjectorSettings::from_env().map_err(|e| e.to_string())?;
    let conns = service_kit::Connections::open(&settings, "projector-admin")
        .await
        .map_err(|e| e.to_string())?;
    let ctx = crate::context(&conns, &settings, tuning);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let id = |s: &str| s.parse::<i64>().map_err(|_| format!("not an id: {s:?}"));
    match args.as_slice() {
        ["dead-letters", "list", rest @ ..] => {
            let all = rest.contains(&"--all");
            let rows = list(&conns.read_db, all).await.map_err(|e| e.to_string())?;
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
                .map_err(|_| format!("not a version: {v:?}"))?;
            retire(&ctx, v).await?;
            println!("read-model version {v} retired");
            Ok(())
        }
        _ => Err(format!("unknown command {:?}", args.join(" "))),
    }
}
