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
    loop {
        let cp = read_model::checkpoint::get(&ctx.read_db, version, shard).await?;
        if upto.is_some_and(|u| cp >= u) {
            break;
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
            Ok(()) => {}
            Err(Stop::Halt { error, .. }) => return Err(error),
            Err(Stop::Gap { .. }) => {
                unreachable!("events read from the store carry no stream predecessor")
            }
        }
    }
    if read > 0 {
        tracing::info!(
            version,
            shard,
            events = read,
            "caught up from the event store"
        );
    }
    Ok(read)
}
