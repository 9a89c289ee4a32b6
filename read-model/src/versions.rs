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

/// The versions the projectors keep up to date, oldest first.
pub async fn live(pool: &PgPool) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT version FROM read_model_versions WHERE state = 'live' ORDER BY 1")
        .fetch_all(pool)
        .await
}
