//! The SQL both backends run, written once.
//!
//! `sql_store!(Type, "name")` implements every store trait for a type with a `pool` field (an sqlx pool)
//! field. The statements use only what SQLite (3.35+) and PostgreSQL share: `$n`
//! placeholders, `ON CONFLICT … DO UPDATE`, `RETURNING`, BIGINT times and TEXT JSON.

use crate::oauth::client_metadata::ClientMetadata;
use crate::oauth::resource::{Resource, ScopeDef};

use super::{ClientKind, ClientRecord, StoreError, StoredKey};

pub(super) type ClientRow = (
    String,
    String,
    Option<Vec<u8>>,
    String,
    Option<Vec<u8>>,
    Option<String>,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
);

/// The client columns in `ClientRow` order (a macro so `concat!` can build static SQL).
macro_rules! client_columns {
    () => {
        "client_id, kind, secret_hash, metadata, registration_token_hash, registered_from, \
         created_at, updated_at, last_used_at, expires_at"
    };
}
pub(crate) use client_columns;

pub(super) fn client_from_row(r: ClientRow) -> Result<ClientRecord, StoreError> {
    let metadata: ClientMetadata = serde_json::from_str(&r.3)
        .map_err(|e| StoreError::Corrupt(format!("client {} metadata: {e}", r.0)))?;
    Ok(ClientRecord {
        kind: ClientKind::parse(&r.1)?,
        client_id: r.0,
        secret_hash: r.2,
        metadata,
        registration_token_hash: r.4,
        registered_from: r.5,
        created_at: r.6,
        updated_at: r.7,
        last_used_at: r.8,
        expires_at: r.9,
    })
}

pub(super) fn metadata_json(c: &ClientRecord) -> Result<String, StoreError> {
    serde_json::to_string(&c.metadata).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) type ResourceRow = (String, String, String, i64);

pub(super) fn resource_from_row(r: ResourceRow) -> Result<Resource, StoreError> {
    let scopes: Vec<ScopeDef> = serde_json::from_str(&r.2)
        .map_err(|e| StoreError::Corrupt(format!("resource {} scopes: {e}", r.0)))?;
    Resource::from_stored(r.0, r.1, scopes, r.3).map_err(StoreError::Corrupt)
}

pub(super) type KeyRow = (
    String,
    String,
    String,
    Vec<u8>,
    i64,
    Option<i64>,
    Option<i64>,
);

pub(super) fn key_from_row(r: KeyRow) -> StoredKey {
    StoredKey {
        kid: r.0,
        alg: r.1,
        public_jwk: r.2,
        private_key: r.3,
        created_at: r.4,
        retired_at: r.5,
        expires_at: r.6,
    }
}

/// Map a unique-constraint violation to `Conflict(what)`.
pub(super) fn conflict(e: sqlx::Error, what: &str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            StoreError::Conflict(what.to_string())
        }
        _ => StoreError::Database(e),
    }
}

macro_rules! sql_store {
    ($ty:ty, $name:literal) => {
        #[async_trait::async_trait]
        impl $crate::store::ClientStore for $ty {
            async fn insert_client(
                &self,
                c: &$crate::store::ClientRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO clients (client_id, kind, secret_hash, metadata, \
                     registration_token_hash, registered_from, created_at, updated_at, \
                     last_used_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
                )
                .bind(&c.client_id)
                .bind(c.kind.as_str())
                .bind(&c.secret_hash)
                .bind($crate::store::sql::metadata_json(c)?)
                .bind(&c.registration_token_hash)
                .bind(&c.registered_from)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(c.last_used_at)
                .bind(c.expires_at)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "client_id"))?;
                Ok(())
            }

            async fn get_client(
                &self,
                client_id: &str,
                now: i64,
            ) -> Result<Option<$crate::store::ClientRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql::ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql::client_columns!(),
                    " FROM clients WHERE client_id = $1 \
                     AND (expires_at IS NULL OR expires_at > $2)"
                ))
                    .bind(client_id)
                    .bind(now)
                    .fetch_optional(&self.pool)
                    .await?;
                row.map($crate::store::sql::client_from_row).transpose()
            }

            async fn update_client(
                &self,
                c: &$crate::store::ClientRecord,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE clients SET metadata = $2, secret_hash = $3, updated_at = $4 \
                     WHERE client_id = $1",
                )
                .bind(&c.client_id)
                .bind($crate::store::sql::metadata_json(c)?)
                .bind(&c.secret_hash)
                .bind(c.updated_at)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_client(
                &self,
                client_id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn list_clients(
                &self,
                now: i64,
            ) -> Result<Vec<$crate::store::ClientRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql::client_columns!(),
                    " FROM clients WHERE expires_at IS NULL OR expires_at > $1 \
                     ORDER BY created_at, client_id"
                ))
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map($crate::store::sql::client_from_row)
                    .collect()
            }

            async fn touch_client(
                &self,
                client_id: &str,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE clients SET last_used_at = $2, expires_at = NULL WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_expired_clients(
                &self,
                now: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM clients WHERE expires_at IS NOT NULL AND expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ResourceStore for $ty {
            async fn insert_resource(
                &self,
                r: &$crate::oauth::resource::Resource,
            ) -> Result<(), $crate::store::StoreError> {
                let scopes = serde_json::to_string(&r.scopes)
                    .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO resources (uri, name, scopes, created_at) VALUES ($1,$2,$3,$4)",
                )
                .bind(r.uri.as_str())
                .bind(&r.name)
                .bind(scopes)
                .bind(r.created_at)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "resource"))?;
                Ok(())
            }

            async fn get_resource(
                &self,
                uri: &str,
            ) -> Result<Option<$crate::oauth::resource::Resource>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql::ResourceRow> = sqlx::query_as(
                    "SELECT uri, name, scopes, created_at FROM resources WHERE uri = $1",
                )
                .bind(uri)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::sql::resource_from_row).transpose()
            }

            async fn list_resources(
                &self,
            ) -> Result<Vec<$crate::oauth::resource::Resource>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::ResourceRow> = sqlx::query_as(
                    "SELECT uri, name, scopes, created_at FROM resources ORDER BY uri",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map($crate::store::sql::resource_from_row)
                    .collect()
            }

            async fn delete_resource(&self, uri: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM resources WHERE uri = $1")
                    .bind(uri)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $ty {
            async fn list_keys(
                &self,
            ) -> Result<Vec<$crate::store::StoredKey>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql::KeyRow> = sqlx::query_as(
                    "SELECT kid, alg, public_jwk, private_key, created_at, retired_at, expires_at \
                     FROM signing_keys ORDER BY created_at DESC, kid",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map($crate::store::sql::key_from_row).collect())
            }

            async fn rotate_key(
                &self,
                k: &$crate::store::StoredKey,
                now: i64,
                retired_expire_at: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE signing_keys SET retired_at = $2, expires_at = $3 \
                     WHERE alg = $1 AND retired_at IS NULL",
                )
                .bind(&k.alg)
                .bind(now)
                .bind(retired_expire_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, \
                     retired_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.public_jwk)
                .bind(&k.private_key)
                .bind(k.created_at)
                .bind(k.retired_at)
                .bind(k.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "signing key"))?;
                tx.commit().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::RateLimitStore for $ty {
            async fn hit(
                &self,
                bucket: &str,
                window_secs: i64,
                now: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                // A fixed window: a hit after the window ended starts a new one.
                let (hits,): (i64,) = sqlx::query_as(
                    "INSERT INTO rate_limits (bucket, window_start, hits) VALUES ($1, $2, 1) \
                     ON CONFLICT (bucket) DO UPDATE SET \
                       hits = CASE WHEN rate_limits.window_start <= $2 - $3 THEN 1 \
                                   ELSE rate_limits.hits + 1 END, \
                       window_start = CASE WHEN rate_limits.window_start <= $2 - $3 THEN $2 \
                                   ELSE rate_limits.window_start END \
                     RETURNING hits",
                )
                .bind(bucket)
                .bind(now)
                .bind(window_secs)
                .fetch_one(&self.pool)
                .await?;
                Ok(hits)
            }

            async fn hits(
                &self,
                bucket: &str,
                window_secs: i64,
                now: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT hits FROM rate_limits WHERE bucket = $1 AND window_start > $2 - $3",
                )
                .bind(bucket)
                .bind(now)
                .bind(window_secs)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|r| r.0).unwrap_or(0))
            }

            async fn purge_rate_limits(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ReplayStore for $ty {
            async fn use_once(
                &self,
                key: &str,
                expires_at: i64,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                // A row left by a use that expired (not swept yet) does not block a new one.
                let r = sqlx::query(
                    "INSERT INTO used_jtis (key, expires_at) VALUES ($1, $2) \
                     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE used_jtis.expires_at <= $3",
                )
                .bind(key)
                .bind(expires_at)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn is_used(&self, key: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                let row: Option<(i64,)> = sqlx::query_as(
                    "SELECT expires_at FROM used_jtis WHERE key = $1 AND expires_at > $2",
                )
                .bind(key)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.is_some())
            }

            async fn purge_used(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM used_jtis WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::HealthStore for $ty {
            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(&self.pool).await?;
                Ok(())
            }
        }

        impl $crate::store::Store for $ty {
            fn backend(&self) -> &'static str {
                $name
            }
        }
    };
}
pub(crate) use sql_store;
