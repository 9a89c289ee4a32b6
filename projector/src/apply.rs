//! The one apply policy: how a run of entries of one shard reaches the read models,
//! whether it came from a stream (live), from the event store (catch-up) or from a rebuild.
//!
//! 1. The whole run in one transaction ([`crate::batch::apply`]): the common case.
//! 2. If that fails because of an event (its [`crate::Error::fault`] is poison), the run is
//!    applied event by event, so every event before the bad one lands.
//! 3. A failing event is retried, with a growing pause, until it has failed
//!    `HERALD_PROJECTOR_MAX_FAILURES` times; then it is parked as a dead letter (the
//!    checkpoint moves past it, its message's later events wait behind it) and the run
//!    goes on.
//!
//! A failure that is not the events' fault (the database or Redis away, a transaction
//! that lost a race) stops the run at once and counts against no event: the caller tries
//! the rest later. A stream gap (Redis lost entries) stops it too: the caller catches the
//! shard up from the event store and continues.

use std::time::Duration;

use event_store::Cursor;

use crate::batch::{self, BatchError};
use crate::error::Error;
use crate::stream::Entry;
use crate::Context;

/// Why a run stopped before its end; `settled` entries from its front are done (applied,
/// skipped as already applied, held, or parked).
#[derive(Debug)]
pub enum Stop {
    /// The stream lost entries before `entries[settled]`: catch up to `upto`, then apply
    /// the rest.
    Gap {
        /// Entries done.
        settled: usize,
        /// The last missing cursor.
        upto: Cursor,
    },
    /// Not the events' fault (or the stream and the store disagree): apply the rest later.
    Halt {
        /// Entries done.
        settled: usize,
        /// What stopped it.
        error: Error,
    },
}

/// Applies `entries` of `shard` (in cursor order) to `version`; `Ok` when all of them are
/// settled.
pub async fn apply(ctx: &Context, version: i32, shard: u32, entries: &[Entry]) -> Result<(), Stop> {
    if entries.is_empty() {
        return Ok(());
    }
    let metrics = Some(ctx.metrics.as_ref());
    match batch::apply(&ctx.read_db, version, shard, entries, metrics).await {
        Ok(_) => return Ok(()),
        Err(BatchError::Gap { upto }) => return Err(Stop::Gap { settled: 0, upto }),
        Err(BatchError::Failed(error)) if error.fault().is_retryable() => {
            return Err(Stop::Halt { settled: 0, error })
        }
        Err(BatchError::Failed(error)) => {
            tracing::warn!(version, shard, %error, "batch failed; applying its events one by one");
        }
    }
    for (i, entry) in entries.iter().enumerate() {
        let mut failures = 0;
        loop {
            match batch::apply(
                &ctx.read_db,
                version,
                shard,
                std::slice::from_ref(entry),
                metrics,
            )
            .await
            {
                Ok(_) => break,
                Err(BatchError::Gap { upto }) => return Err(Stop::Gap { settled: i, upto }),
                Err(BatchError::Failed(error)) if error.fault().is_retryable() => {
                    return Err(Stop::Halt { settled: i, error })
                }
                Err(BatchError::Failed(error)) => {
                    failures += 1;
                    if failures >= ctx.settings.max_failures {
                        park(ctx, version, shard, entry, &error, failures)
                            .await
                            .map_err(|error| Stop::Halt { settled: i, error })?;
                        break;
                    }
                    tracing::warn!(version, shard, event = %entry.event.cursor, attempt = failures, %error, "event failed");
                    tokio::time::sleep(Duration::from_millis(50 * u64::from(failures))).await;
                }
            }
        }
    }
    Ok(())
}

async fn park(
    ctx: &Context,
    version: i32,
    shard: u32,
    entry: &Entry,
    error: &Error,
    failures: u32,
) -> Result<(), Error> {
    tracing::error!(version, shard, event = %entry.event.cursor, %error, "parking poison event");
    if batch::park(
        &ctx.read_db,
        version,
        shard,
        entry,
        &error.to_string(),
        failures,
    )
    .await?
    {
        ctx.metrics.dead_letters_total.inc();
    }
    Ok(())
}
