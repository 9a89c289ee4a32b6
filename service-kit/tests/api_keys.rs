//! Key lookups against a real database: valid keys and unknown ones are both remembered for
//! the cache's lifetime, so neither a busy tenant nor a client looping on a bad key costs a
//! database round trip per request.

use service_kit::auth::{hash_key, ApiKeys};
use test_support::TestDb;

#[tokio::test]
async fn unknown_and_known_keys_are_each_looked_up_once_per_cache_lifetime() {
    let db = TestDb::migrated().await;
    let pool = db.pool().await;
    let keys = ApiKeys::new(pool.clone());
    let (tenant, key) = keys.create_tenant("cached").await.unwrap();
    assert_eq!(keys.tenant_for(&key).await.unwrap(), Some(tenant));

    let made_up = format!("hrld_{}", "b".repeat(64));
    assert_eq!(keys.tenant_for(&made_up).await.unwrap(), None);
    // The made-up key appears in the database (and the real one disappears) behind the
    // cache's back: both answers stand until the cache's lifetime is over.
    sqlx::query(
        "INSERT INTO api_keys (key_hash, tenant_id, key_prefix) VALUES ($1, $2, 'hrld_bbb')",
    )
    .bind(&hash_key(&made_up)[..])
    .bind(tenant.id)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1")
        .bind(&hash_key(&key)[..])
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(keys.tenant_for(&made_up).await.unwrap(), None);
    assert_eq!(keys.tenant_for(&key).await.unwrap(), Some(tenant));

    // A new cache (a restarted replica) sees the database as it is.
    let fresh = ApiKeys::new(pool);
    assert_eq!(fresh.tenant_for(&made_up).await.unwrap(), Some(tenant));
    assert_eq!(fresh.tenant_for(&key).await.unwrap(), None);
}
