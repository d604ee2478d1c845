//! Storage: one narrow trait per aggregate, each in its own module with its records, its row
//! types and its SQL; [`Store`] joins them.
//!
//! Both backends run the same SQL text (see [`sql`]): times are Unix seconds, JSON is text,
//! and `$n` placeholders work in SQLite and PostgreSQL alike. What differs between them —
//! connecting, pragmas, migrations — lives in [`sqlite`] and [`postgres`], once.
//! Single-use and counting decisions are one atomic statement each, so several replicas
//! sharing one PostgreSQL decide them exactly once.
//!
//! The records here are plain data owned by the store. The rules about them (what a valid
//! client or resource is, what a scope means) are protocol decisions and live in
//! `crate::oauth`; this module knows nothing of them.

pub mod audit;
pub mod clients;
pub mod codes;
pub mod consents;
pub mod devices;
pub mod exchange_policies;
pub mod id_jag;
pub mod keys;
pub mod postgres;
pub mod rate_limits;
pub mod refresh_tokens;
pub mod replay;
pub mod resources;
pub mod sessions;
mod sql;
pub mod sqlite;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;

pub use audit::{AuditEvent, AuditQuery, AuditStore, NewAuditEvent};
pub use clients::{
    ApplicationType, AuthMethod, ClientKind, ClientMetadata, ClientRecord, ClientStore,
};
pub use codes::{AuthCode, CodeStore};
pub use consents::{Consent, ConsentStore};
pub use devices::{DeviceApproval, DeviceCode, DeviceStore};
pub use exchange_policies::{ExchangePolicy, ExchangePolicyStore};
pub use id_jag::{IdJagPolicy, IdJagPolicyStore, TrustedIssuer};
pub use keys::{KeyStatus, KeyStore, StoredKey};
pub use rate_limits::{Backoff, RateLimitStore};
pub use refresh_tokens::{
    Presented, REVOKED_FAMILY_MEMORY_SECS, RefreshToken, RefreshTokenStore, Rotation, Successor,
};
pub use replay::ReplayStore;
pub use resources::{ResourceRecord, ResourceStore, ScopeDef};
pub use sessions::{Session, SessionStore};
pub use users::{User, UserStore};

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

/// The outcome of spending a single-use value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spent<T> {
    /// First use: here it is.
    Fresh(T),
    /// Already spent: someone replays it. Everything of this family should be revoked.
    Replayed { family_id: String },
    /// Unknown, expired or revoked.
    Invalid,
}

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// One round trip to the database, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Everything the server stores. Code that needs one aggregate takes its trait instead.
pub trait Store:
    ClientStore
    + ResourceStore
    + KeyStore
    + RateLimitStore
    + ReplayStore
    + UserStore
    + SessionStore
    + ConsentStore
    + CodeStore
    + RefreshTokenStore
    + ExchangePolicyStore
    + IdJagPolicyStore
    + DeviceStore
    + AuditStore
    + HealthStore
{
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
