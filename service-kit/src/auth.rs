//! Tenants and API keys: the one place every request of every service is authenticated.
//!
//! A request carries `Authorization: Bearer <key>`; the key's SHA-256 is looked up in
//! `api_keys`, and the tenant comes from the key alone, never from the body or the path.
//! Validated keys are cached briefly so a busy service does not pay a database round trip
//! per request; revoking a key therefore takes effect within [`CACHE_TTL`].

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

/// How long a validated key is trusted without asking the database again.
pub const CACHE_TTL: Duration = Duration::from_secs(30);
/// Upper bound of cached keys; the cache is cleared when full (keys are few per tenant).
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
];

/// Validated keys: key hash → (tenant, when it was checked).
type KeyCache = Arc<RwLock<HashMap<[u8; 32], (Uuid, Instant)>>>;

/// Key lookups with a small cache.
#[derive(Clone)]
pub struct ApiKeys {
    pool: PgPool,
    cache: KeyCache,
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
        }
    }

    /// The tenant owning `key`, if the key exists and is not revoked.
    pub async fn tenant_for(&self, key: &str) -> Result<Option<Tenant>, sqlx::Error> {
        let hash = hash_key(key);
        if let Some((id, at)) = self.cache.read().expect("cache lock").get(&hash).copied() {
            if at.elapsed() < CACHE_TTL {
                return Ok(Some(Tenant { id }));
            }
        }
        let id: Option<Uuid> = sqlx::query_scalar(
            "SELECT tenant_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL",
        )
        .bind(&hash[..])
        .fetch_optional(&self.pool)
        .await?;
        let mut cache = self.cache.write().expect("cache lock");
        match id {
            Some(id) => {
                if cache.len() >= CACHE_CAPACITY {
                    cache.clear();
                }
                cache.insert(hash, (id, Instant::now()));
                Ok(Some(Tenant { id }))
            }
            None => {
                cache.remove(&hash);
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

impl<S> FromRequestParts<S> for Tenant
where
    S: HasApiKeys + Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
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
        match state.api_keys().tenant_for(key).await {
            Ok(Some(tenant)) => Ok(tenant),
            Ok(None) => Err(unauthorized("unknown or revoked API key")),
            Err(e) => Err(ApiError::unavailable(&e)),
        }
    }
}

/// `tenant create NAME` and `tenant add-key TENANT_ID`: the administrative commands every
/// service binary understands. Prints the new key once, on stdout.
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
        _ => Err(format!("unknown command {:?}", args.join(" "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
