//! Storage: one narrow trait per aggregate, and [`Store`] that joins them.
//!
//! Both backends run the same SQL text (see [`sql`]): times are Unix seconds, JSON is text,
//! and `$n` placeholders work in SQLite and PostgreSQL alike. What differs between them —
//! connecting, pragmas, migrations — lives in [`sqlite`] and [`postgres`], once.
//! Single-use and counting decisions are one atomic statement each, so several replicas
//! sharing one PostgreSQL decide them exactly once.

pub mod postgres;
mod sql;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::oauth::client_metadata::ClientMetadata;
use crate::oauth::resource::Resource;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0} already exists")]
    Conflict(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
}

/// How a client came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Registered through `POST /register` (RFC 7591).
    Dynamic,
    /// Pre-registered by an operator (CLI or admin API).
    Static,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::Static => "static",
        }
    }
    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "dynamic" => Ok(Self::Dynamic),
            "static" => Ok(Self::Static),
            other => Err(StoreError::Corrupt(format!("client kind {other:?}"))),
        }
    }
}

/// A stored client. Secrets are present only as hashes.
#[derive(Clone)]
pub struct ClientRecord {
    pub client_id: String,
    pub kind: ClientKind,
    pub secret_hash: Option<Vec<u8>>,
    pub metadata: ClientMetadata,
    pub registration_token_hash: Option<Vec<u8>>,
    pub registered_from: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    /// While set, the client disappears at this time unless it is used first.
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("kind", &self.kind)
            .field(
                "secret_hash",
                &self.secret_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("metadata", &self.metadata)
            .field("registered_from", &self.registered_from)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A stored signing key; the private part is encrypted (see `keys::encryption`).
#[derive(Clone)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: String,
    pub private_key: Vec<u8>,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub expires_at: Option<i64>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Insert a new client; `Conflict` when the id is taken.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// The client, unless it does not exist or its unused registration expired by `now`.
    async fn get_client(
        &self,
        client_id: &str,
        now: i64,
    ) -> Result<Option<ClientRecord>, StoreError>;
    /// Replace metadata, secret hash and `updated_at`. False when there is no such client.
    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError>;
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError>;
    /// Every client, including unused registrations not yet expired, oldest first.
    async fn list_clients(&self, now: i64) -> Result<Vec<ClientRecord>, StoreError>;
    /// Record a use: sets `last_used_at` and ends the unused-registration expiry.
    async fn touch_client(&self, client_id: &str, now: i64) -> Result<(), StoreError>;
    /// Delete registrations that expired unused; returns how many.
    async fn delete_expired_clients(&self, now: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Insert a resource; `Conflict` when the URI is registered already.
    async fn insert_resource(&self, resource: &Resource) -> Result<(), StoreError>;
    async fn get_resource(&self, uri: &str) -> Result<Option<Resource>, StoreError>;
    async fn list_resources(&self) -> Result<Vec<Resource>, StoreError>;
    async fn delete_resource(&self, uri: &str) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key row, newest first.
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Add `key` as active for its algorithm; in the same transaction retire the keys that
    /// were active for that algorithm, keeping them published until `retired_expire_at`.
    async fn rotate_key(
        &self,
        key: &StoredKey,
        now: i64,
        retired_expire_at: i64,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Count a hit in `bucket`'s fixed window and return the hits in the current window,
    /// this one included. One atomic statement, so replicas share the count.
    async fn hit(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError>;
    /// Forget windows that started before `before`.
    async fn purge_rate_limits(&self, before: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Spend the single-use `key` (a client assertion's or DPoP proof's `jti`, namespaced by
    /// its caller): true the first time, false while an earlier use has not expired. One
    /// atomic statement, so replicas sharing a database decide it exactly once.
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, StoreError>;
    /// Forget uses that expired by `now`; returns how many.
    async fn purge_used(&self, now: i64) -> Result<u64, StoreError>;
}

/// Everything the server stores.
pub trait Store: ClientStore + ResourceStore + KeyStore + RateLimitStore + ReplayStore {
    /// `sqlite` or `postgres`, for logs.
    fn backend(&self) -> &'static str;
}

/// Open the database named by `url`, creating it (SQLite) and applying migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::connect(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
