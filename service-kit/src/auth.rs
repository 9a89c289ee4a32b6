//! Tenants and API keys: the one place every request of every service is authenticated.
//!
//! A request carries `Authorization: Bearer <key>`; the key's SHA-256 is looked up in
//! `api_keys`, and the tenant comes from the key alone, never from the body or the path.
//! Validated keys are cached briefly so a busy service does not pay a database round trip
//! per request; revoking a key therefore takes effect within [`CACHE_TTL`]. Unknown keys are
//! remembered as briefly, so a client sending a revoked key in a loop does not cost a round
//! trip per request either. The tenant's own
//! quota ([`crate::quota`]) is read with its key, in the same statement, and cached with it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use uuid::Uuid;

use crate::http_error::ApiError;
use crate::quota::Overrides;

/// How long a validated key is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Upper bound of cached keys; the cache is cleared when full (keys are few per tenant).
/// Unknown keys have a cache of their own with the same bound, so a flood of made-up keys
/// can clear only that one, never the valid keys'.
const CACHE_CAPACITY: usize = 10_000;
/// Every key starts with this, so a leaked key is recognisable in logs and scanners.
pub const KEY_PREFIX: &str = "hrld_";

/// The authenticated tenant of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tenant {
    /// The tenant's id.
    pub id: Uuid,
}

/// Why a tenant could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TenantError {
    /// The name is empty, too long, or taken.
    #[error("invalid tenant name: {0}")]
    InvalidName(String),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What authentication relies on in the schema, checked after every migration run.
pub const REQUIRED: &[migrations::Requirement] = &[
    migrations::Requirement::Table {
        name: "tenants",
        columns: &["id", "name"],
    },
    migrations::Requirement::Table {
        name: "api_keys",
        columns: &["key_hash", "tenant_id", "key_prefix", "revoked_at"],
    },
    migrations::Requirement::Index {
        table: "api_keys",
        name: "api_keys_pkey",
    },
    // Every quota column, named once in `quota::NAMES`; the key is the primary key.
    migrations::Requirement::Table {
        name: "tenant_quotas",
        columns: &crate::quota::NAMES,
    },
    migrations::Requirement::Index {
        table: "tenant_quotas",
        name: "tenant_quotas_pkey",
    },
];

/// Validated keys: key hash → (tenant, its own quota, when it was checked).
type KeyCache = Arc<RwLock<HashMap<[u8; 32], (Uuid, Overrides, Instant)>>>;
/// Keys found unknown or revoked: key hash → when that was checked. A client retrying with
/// a revoked key then costs one database lookup per [`CACHE_TTL`], not one per request.
type UnknownCache = Arc<RwLock<HashMap<[u8; 32], Instant>>>;

/// The row of a key lookup: the tenant and its own quota, one array element per quota in
/// the order of [`crate::quota::NAMES`], NULL where it keeps the default.
#[derive(sqlx::FromRow)]
struct KeyRow {
    tenant_id: Uuid,
    own: Vec<Option<i32>>,
}

/// `ARRAY[q.<quota>, ...]::int[] AS own`: every quota column of `tenant_quotas q`, in the
/// order of [`crate::quota::NAMES`].
fn own_quota() -> String {
    let columns: Vec<String> = crate::quota::NAMES
        .iter()
        .map(|n| format!("q.{n}"))
        .collect();
    format!("ARRAY[{}]::int[] AS own", columns.join(", "))
}

/// The key lookup: the key's tenant and its own quota (`$1` the key's hash).
static LOOKUP: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT k.tenant_id, {} \
         FROM api_keys k LEFT JOIN tenant_quotas q ON q.tenant_id = k.tenant_id \
         WHERE k.key_hash = $1 AND k.revoked_at IS NULL",
        own_quota()
    )
});

/// A tenant's own quota, by its id (`$1`); no row when no tenant has the id.
static QUOTA_OF: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT t.id AS tenant_id, {} \
         FROM tenants t LEFT JOIN tenant_quotas q ON q.tenant_id = t.id WHERE t.id = $1",
        own_quota()
    )
});

/// The upsert of a tenant's own quota: `$1` the tenant, `$2` the values as an array in the
/// order of [`crate::quota::NAMES`].
static SET_QUOTA: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let names = crate::quota::NAMES;
    let values: Vec<String> = (1..=names.len()).map(|i| format!("v[{i}]")).collect();
    let updates: Vec<String> = names
        .iter()
        .map(|n| format!("{n} = EXCLUDED.{n}"))
        .collect();
    format!(
        "INSERT INTO tenant_quotas (tenant_id, {}) SELECT $1, {} FROM (SELECT $2::int[] AS v) s \
         ON CONFLICT (tenant_id) DO UPDATE SET {}, updated_at = now()",
        names.join(", "),
        values.join(", "),
        updates.join(", ")
    )
});

impl KeyRow {
    fn overrides(&self) -> Overrides {
        let mut own = Overrides::default();
        for (name, value) in crate::quota::NAMES.iter().zip(&self.own) {
            // The table's checks keep every value positive.
            own.set(name, value.and_then(|v| u32::try_from(v).ok()));
        }
        own
    }
}

/// Key lookups with a small cache.
#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
    cache: KeyCache,
    unknown: UnknownCache,
}

/// Services whose router state can authenticate requests.
pub trait HasApiKeys {
    /// The key store.
    fn api_keys(&self) -> &ApiKeys;
}

impl HasApiKeys for ApiKeys {
    fn api_keys(&self) -> &ApiKeys {
        self
    }
}

impl<T: HasApiKeys> HasApiKeys for Arc<T> {
    fn api_keys(&self) -> &ApiKeys {
        (**self).api_keys()
    }
}

impl ApiKeys {
    /// Keys stored in `pool`'s database.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::new(RwLock::new(HashMap::new())),
            unknown: Arc::new(RwLock::new(HashMap::new())),
        }
    }

    /// The tenant owning `key`, if the key exists and is not revoked.
    pub async fn tenant_for(&self, key: &str) -> Result<Option<Tenant>, sqlx::Error> {
        Ok(self.lookup(key).await?.map(|(tenant, _)| tenant))
    }

    /// The tenant owning `key` and its own quota, if the key exists and is not revoked.
    pub async fn lookup(&self, key: &str) -> Result<Option<(Tenant, Overrides)>, sqlx::Error> {
        let hash = hash_key(key);
        if let Some((id, own, at)) = self.cache.read().expect("cache lock").get(&hash).copied() {
            if at.elapsed() < CACHE_TTL {
                return Ok(Some((Tenant { id }, own)));
            }
        }
        if let Some(at) = self.unknown.read().expect("cache lock").get(&hash) {
            if at.elapsed() < CACHE_TTL {
                return Ok(None);
            }
        }
        let row: Option<KeyRow> = sqlx::query_as(&LOOKUP)
            .bind(&hash[..])
            .fetch_optional(&self.pool)
            .await?;
        let mut cache = self.cache.write().expect("cache lock");
        match row {
            Some(row) => {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                let own = row.overrides();
                cache.insert(hash, (row.tenant_id, own, Instant::now()));
                Ok(Some((Tenant { id: row.tenant_id }, own)))
            }
            None => {
                cache.remove(&hash);
                drop(cache);
                let mut unknown = self.unknown.write().expect("cache lock");
                if unknown.len() >= CACHE_CAPACITY {
                    unknown.clear();
                }
                unknown.insert(hash, Instant::now());
                Ok(None)
            }
        }
    }

    /// Creates a tenant called `name` with one new key; returns the tenant and the key,
    /// which is not stored and cannot be shown again.
    pub async fn create_tenant(&self, name: &str) -> Result<(Tenant, String), TenantError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(TenantError::InvalidName(
                "must be 1 to 200 characters".into(),
            ));
        }
        let id = Uuid::new_v4();
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if inserted.rows_affected() == 0 {
            return Err(TenantError::InvalidName(format!(
                "a tenant called {name:?} exists"
            )));
        }
        let key = self.insert_key(&mut tx, id).await?;
        tx.commit().await?;
        Ok((Tenant { id }, key))
    }

    /// Adds a new key to an existing tenant.
    pub async fn add_key(&self, tenant: Uuid) -> Result<String, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let key = self.insert_key(&mut tx, tenant).await?;
        tx.commit().await?;
        Ok(key)
    }

    /// The tenant's own quota, or `None` when no tenant has this id.
    pub async fn quota_of(&self, tenant: Uuid) -> Result<Option<Overrides>, sqlx::Error> {
        let row: Option<KeyRow> = sqlx::query_as(&QUOTA_OF)
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.overrides()))
    }

    /// Replaces the tenant's own quota with `own` (no row at all when it sets nothing).
    pub async fn set_quota(&self, tenant: Uuid, own: &Overrides) -> Result<(), sqlx::Error> {
        if *own == Overrides::default() {
            sqlx::query("DELETE FROM tenant_quotas WHERE tenant_id = $1")
                .bind(tenant)
                .execute(&self.pool)
                .await?;
            return Ok(());
        }
        let values: Vec<Option<i32>> = crate::quota::NAMES
            .iter()
            .map(|name| own.get(name).map(|n| n as i32))
            .collect();
        sqlx::query(&SET_QUOTA)
            .bind(tenant)
            .bind(values)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn insert_key(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        tenant: Uuid,
    ) -> Result<String, sqlx::Error> {
        // Two v4 UUIDs: 244 random bits from the OS generator, without another dependency.
        let key = format!(
            "{KEY_PREFIX}{}{}",
            Uuid::new_v4().simple(),
            Uuid::new_v4().simple()
        );
        sqlx::query("INSERT INTO api_keys (key_hash, tenant_id, key_prefix) VALUES ($1, $2, $3)")
            .bind(&hash_key(&key)[..])
            .bind(tenant)
            .bind(&key[..KEY_PREFIX.len() + 8])
            .execute(&mut **tx)
            .await?;
        Ok(key)
    }
}

/// SHA-256 of a key.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// The key of an `Authorization: Bearer <key>` value. The scheme name is case-insensitive
/// (RFC 9110, section 11.1): `Bearer`, `bearer` and `BEARER` are one scheme.
pub fn bearer_key(value: &str) -> Option<&str> {
    let (scheme, key) = value.trim().split_once(char::is_whitespace)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(key.trim()).filter(|k| !k.is_empty())
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).with_field("Authorization")
}

/// The tenant of a request and its own quota, from its `Authorization: Bearer` key: 401 for
/// a missing, malformed, unknown or revoked key, 503 when the keys cannot be read.
pub async fn authenticate(
    headers: &axum::http::HeaderMap,
    keys: &ApiKeys,
) -> Result<(Tenant, Overrides), ApiError> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <api key>"))?;
    let value = header
        .to_str()
        .map_err(|_| unauthorized("Authorization header is not text"))?;
    let key = bearer_key(value)
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <api key>"))?;
    if key.len() > 200 {
        return Err(unauthorized("unknown or revoked API key"));
    }
    match keys.lookup(key).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(unauthorized("unknown or revoked API key")),
        Err(e) => Err(ApiError::unavailable(&e)),
    }
}

impl<S> FromRequestParts<S> for Tenant
where
    S: HasApiKeys + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Behind `quota::admit` the request is authenticated already.
        if let Some(tenant) = parts.extensions.get::<Tenant>() {
            return Ok(*tenant);
        }
        authenticate(&parts.headers, state.api_keys())
            .await
            .map(|(tenant, _)| tenant)
    }
}

/// `tenant create NAME`, `tenant add-key TENANT_ID` and `tenant quota TENANT_ID
/// [NAME=VALUE|NAME=default|reset]...`: the administrative commands every service binary
/// understands. A new key is printed once, on stdout; `quota` prints the tenant's limits
/// after any change, each marked `own` or `default`.
pub async fn tenant_command(args: &[String], settings: &crate::Settings) -> Result<(), String> {
    crate::connections::migrate(settings, "command-service")
        .await
        .map_err(|e| e.to_string())?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&settings.database_url)
        .await
        .map_err(|e| format!("cannot connect to the database: {e}"))?;
    let keys = ApiKeys::new(pool);
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["tenant", "create", name] => {
            let (tenant, key) = keys.create_tenant(name).await.map_err(|e| e.to_string())?;
            println!("tenant_id={}\napi_key={key}", tenant.id);
            eprintln!("Keep the key: it is stored only as a hash and cannot be shown again.");
            Ok(())
        }
        ["tenant", "add-key", id] => {
            let id: Uuid = id
                .parse()
                .map_err(|_| format!("{id:?} is not a tenant id"))?;
            let key = keys.add_key(id).await.map_err(|e| e.to_string())?;
            println!("api_key={key}");
            Ok(())
        }
        ["tenant", "quota", id, changes @ ..] => {
            let id: Uuid = id
                .parse()
                .map_err(|_| format!("{id:?} is not a tenant id"))?;
            let mut own = keys
                .quota_of(id)
                .await
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("no tenant has the id {id}"))?;
            if !changes.is_empty() {
                own = apply_quota_changes(own, changes)?;
                keys.set_quota(id, &own).await.map_err(|e| e.to_string())?;
                eprintln!(
                    "Saved. Every replica applies it within {} s (its key cache).",
                    CACHE_TTL.as_secs()
                );
            }
            let limits = settings.quota.with(&own);
            for name in crate::quota::NAMES {
                let source = if own.get(name).is_some() {
                    "own"
                } else {
                    "default"
                };
                println!("{name}={} ({source})", limits.get(name).unwrap_or_default());
            }
            Ok(())
        }
        _ => Err(format!("unknown command {:?}", args.join(" "))),
    }
}

/// `own` with the command line's `NAME=VALUE`, `NAME=default` and `reset` applied in order.
pub fn apply_quota_changes(mut own: Overrides, changes: &[&str]) -> Result<Overrides, String> {
    for change in changes {
        if *change == "reset" {
            own = Overrides::default();
            continue;
        }
        let (name, value) = change
            .split_once('=')
            .ok_or_else(|| format!("{change:?}: expected NAME=VALUE, NAME=default or reset"))?;
        let value = match value {
            "default" => None,
            v => Some(
                v.parse::<u32>()
                    .ok()
                    .filter(|n| (1..=crate::quota::MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        format!(
                            "{change:?}: a quota is a whole number from 1 to {}",
                            crate::quota::MAX_LIMIT
                        )
                    })?,
            ),
        };
        if !own.set(name, value) {
            return Err(format!(
                "{name:?} is not a quota; the quotas are {}",
                crate::quota::NAMES.join(", ")
            ));
        }
    }
    Ok(own)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_changes_set_clear_and_reset_in_order() {
        let own = apply_quota_changes(
            Overrides::default(),
            &[
                "requests_per_second=50",
                "request_burst=80",
                "request_burst=default",
            ],
        )
        .unwrap();
        assert_eq!(own.requests_per_second, Some(50));
        assert_eq!(own.request_burst, None);
        let own = apply_quota_changes(own, &["reset", "concurrent_queries=1"]).unwrap();
        assert_eq!(
            own,
            Overrides {
                concurrent_queries: Some(1),
                ..Overrides::default()
            }
        );
        for bad in [
            "requests_per_second",
            "requests=5",
            "request_burst=0",
            "request_burst=x",
        ] {
            assert!(
                apply_quota_changes(Overrides::default(), &[bad]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_bearer_scheme_matches_in_any_case() {
        for value in [
            "Bearer k1",
            "bearer k1",
            "BEARER k1",
            "bEaReR   k1 ",
            "Bearer\tk1",
        ] {
            assert_eq!(bearer_key(value), Some("k1"), "{value:?}");
        }
        for value in ["Basic k1", "Bearer", "Bearer   ", "Bearerk1", "k1", ""] {
            assert_eq!(bearer_key(value), None, "{value:?}");
        }
    }
}
