//! Read-model versions. `live` versions are projected by the running projectors; exactly
//! one version is active (read by queries); `building` is being filled by a rebuild;
//! `retired` ones are no longer projected. Switching which version queries read is one
//! UPDATE of `read_model_active`, so a query reads the active version once and uses it
//! throughout: every part of one answer comes from one version.

use sqlx::PgPool;

/// The version queries read.
pub async fn active(pool: &PgPool) -> Result<i32, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM read_model_active")
        .fetch_one(pool)
        .await
}

/// The versions the projectors keep up to date, oldest first: the live ones of this code's
/// generation or later ([`crate::rollup::GENERATION`]). A live version of an older
/// generation stays readable, as it was when this release took over, until it is retired;
/// nothing projects it, and its consumer groups no longer hold stream trimming back.
pub async fn live(pool: &PgPool) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT version FROM read_model_versions WHERE state = 'live' AND generation >= $1 \
         ORDER BY 1",
    )
    .bind(crate::rollup::GENERATION)
    .fetch_all(pool)
    .await
}

/// The generation of `version` (`None`: no such version).
pub async fn generation_of(pool: &PgPool, version: i32) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT generation FROM read_model_versions WHERE version = $1")
        .bind(version)
        .fetch_optional(pool)
        .await
}

/// Where the read models stand against the generation the schema requires
/// (`read_model_generation`, raised by migrations that change a read model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generations {
    /// The generation the schema requires.
    pub required: i32,
    /// Why it was last raised.
    pub reason: String,
    /// The active version.
    pub active: i32,
    /// The active version's generation.
    pub active_generation: i32,
    /// A version of the required generation being built or already live but not active,
    /// if any (the newest).
    pub candidate: Option<i32>,
}

impl Generations {
    /// The active version is older than the schema requires.
    pub fn behind(&self) -> bool {
        self.active_generation < self.required
    }
}

/// Reads [`Generations`].
pub async fn generations(pool: &PgPool) -> Result<Generations, sqlx::Error> {
    let (required, reason): (i32, String) =
        sqlx::query_as("SELECT required, reason FROM read_model_generation")
            .fetch_one(pool)
            .await?;
    let (active, active_generation): (i32, i32) = sqlx::query_as(
        "SELECT a.version, v.generation FROM read_model_active a \
         JOIN read_model_versions v USING (version)",
    )
    .fetch_one(pool)
    .await?;
    let candidate: Option<i32> = sqlx::query_scalar(
        "SELECT max(version) FROM read_model_versions WHERE generation = $1 \
         AND state IN ('building', 'live') AND version <> $2",
    )
    .bind(required)
    .bind(active)
    .fetch_one(pool)
    .await?;
    Ok(Generations {
        required,
        reason,
        active,
        active_generation,
        candidate,
    })
}

/// Live versions other than the active one that queries left at least `grace` ago (when
/// the active version was switched to), oldest first: the ones to retire.
pub async fn replaced_before(
    pool: &PgPool,
    grace: std::time::Duration,
) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT v.version FROM read_model_versions v, read_model_active a \
         WHERE v.state = 'live' AND v.version < a.version \
           AND a.switched_at <= now() - make_interval(secs => $1) ORDER BY 1",
    )
    .bind(grace.as_secs_f64())
    .fetch_all(pool)
    .await
}
