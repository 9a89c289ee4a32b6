//! Catching a shard up straight from the event store, for when Redis lost what it should
//! have delivered: a consumer group that vanished, entries trimmed or lost in a failover, a
//! stream wiped. The event store is the source of truth; the stream only carries events
//! faster. Reads go in commit-safe order from the shard's checkpoint, through the same
//! apply policy as live consumption.

use event_store::stored::read_shard_after;
use event_store::Cursor;

use crate::apply::{apply, Stop};
use crate::error::{Error, Result};
use crate::stream::Entry;
use crate::Context;

/// Applies `shard`'s events of the event store from its checkpoint up to `upto`
/// (inclusive) or, without it, up to the transaction horizon. Returns how many events it
/// read.
pub async fn catch_up(
    ctx: &Context,
    version: i32,
    shard: u32,
    upto: Option<Cursor>,
) -> Result<usize> {
    let mut read = 0usize;
    let mut previous: Option<Cursor> = None;
    loop {
        let cp = read_model::checkpoint::get(&ctx.read_db, version, shard).await?;
        if upto.is_some_and(|u| cp >= u) {
            break;
        }
        if previous == Some(cp) {
            // The last read was applied and the checkpoint did not move: every batch of a
            // retired version is skipped whole. Reading again would read the same events
            // for ever (and hold up the consumer's shutdown).
            if is_retired(ctx, version).await? {
                tracing::info!(
                    version,
                    shard,
                    "stopped catching up: the version is retired"
                );
                return Ok(read);
            }
            return Err(Error::Inconsistent(format!(
                "shard {shard}: catching up version {version} applied a read of the event \
                 store without moving its checkpoint past {cp:?}"
            )));
        }
        let events = read_shard_after(
            &ctx.events_db,
            shard,
            ctx.settings.shards,
            cp,
            upto,
            ctx.settings.batch as i64,
        )
        .await?;
        if events.is_empty() {
            if upto.is_some() {
                return Err(Error::Inconsistent(format!(
                    "shard {shard}: the stream names events the event store does not have \
                     for this shard (is HERALD_STREAM_SHARDS the same everywhere?)"
                )));
            }
            break;
        }
        read += events.len();
        let entries: Vec<Entry> = events.into_iter().map(Entry::from).collect();
        match apply(ctx, version, shard, &entries).await {
            Ok(()) => previous = Some(cp),
            Err(Stop::Halt { error, .. }) => return Err(error),
            Err(Stop::Gap { .. }) => {
                unreachable!("events read from the store carry no stream predecessor")
            }
        }
    }
    report(version, shard, read);
    Ok(read)
}

fn report(version: i32, shard: u32, read: usize) {
    if read > 0 {
        tracing::info!(
            version,
            shard,
            events = read,
            "caught up from the event store"
        );
    }
}

async fn is_retired(ctx: &Context, version: i32) -> Result<bool> {
    let state: Option<String> =
        sqlx::query_scalar("SELECT state FROM read_model_versions WHERE version = $1")
            .bind(version)
            .fetch_optional(&ctx.read_db)
            .await?;
    Ok(state.as_deref() != Some("live") && state.as_deref() != Some("building"))
}
