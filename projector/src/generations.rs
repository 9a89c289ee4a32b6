//! Read models that follow the schema, blue/green.
//!
//! A migration that changes a read model raises the required generation
//! (`herald_read_model_changed`). Every projector checks it every
//! `HERALD_READ_MODEL_CHECK_MS`; when the active version is of an older generation, the one
//! that takes the [`RebuildLock`] builds a version of the new generation from the event
//! store while queries keep reading the old one, and switches queries over in one UPDATE
//! once the new one has caught up ([`admin::build`]). A build cut short (the process died)
//! is resumed by the next holder of the lock. Versions that queries left more than
//! `HERALD_READ_MODEL_RETIRE_AFTER_S` ago are retired: their rows deleted, their stream
//! groups dropped.

use tokio_util::sync::CancellationToken;

use crate::admin::{self, RebuildLock};
use crate::error::Result;
use crate::Context;

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    /// The version built and made active, if any.
    pub built: Option<i32>,
    /// Versions retired.
    pub retired: Vec<i32>,
}

/// Checks the generation and the grace periods every `check` until `stop`.
pub async fn run(ctx: std::sync::Arc<Context>, stop: CancellationToken) {
    let mut ticks = tokio::time::interval(ctx.settings.generation_check);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => {}
        }
        // A build runs to its end even when shutdown is asked for meanwhile: stopping it
        // half-way is safe too (it resumes), but finishing spares the rework.
        match once(&ctx).await {
            Ok(round) if round != Round::default() => {
                tracing::info!(built = ?round.built, retired = ?round.retired, "read-model versions changed")
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "keeping the read models at the schema's generation failed; will retry")
            }
        }
    }
}

/// One round: build what the schema requires, retire what queries no longer read.
pub async fn once(ctx: &Context) -> Result<Round> {
    let mut round = Round::default();
    let generations = read_model::versions::generations(&ctx.read_db).await?;
    let retirable =
        read_model::versions::replaced_before(&ctx.read_db, ctx.settings.retire_after).await?;
    if !generations.behind() && retirable.is_empty() {
        return Ok(round);
    }
    let Some(_lock) = RebuildLock::try_take(&ctx.read_db).await? else {
        // Another replica (or an operator) is at it.
        return Ok(round);
    };
    // Read again under the lock: the holder before us may have finished the work.
    let generations = read_model::versions::generations(&ctx.read_db).await?;
    if generations.behind() {
        let version = match generations.candidate {
            Some(v) => {
                tracing::info!(version = v, "resuming the build of a read-model version");
                v
            }
            None => {
                let v = admin::new_version(ctx, generations.required).await?;
                tracing::info!(
                    version = v,
                    generation = generations.required,
                    reason = %generations.reason,
                    "the schema needs a new read-model generation; building it beside the active one"
                );
                v
            }
        };
        admin::build(ctx, version).await?;
        round.built = Some(version);
    }
    for version in
        read_model::versions::replaced_before(&ctx.read_db, ctx.settings.retire_after).await?
    {
        admin::retire(ctx, version).await?;
        tracing::info!(
            version,
            "retired a read-model version queries no longer read"
        );
        round.retired.push(version);
    }
    Ok(round)
}
