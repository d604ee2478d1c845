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
pub mod backchannel;
pub mod clients;
pub mod codes;
pub mod commits;
mod connections;
pub mod consents;
pub mod delegations;
pub mod devices;
pub mod exchange_policies;
pub mod factors;
pub mod id_jag;
pub mod identities;
pub mod keys;
pub mod passkeys;
pub mod postgres;
pub mod rate_limits;
pub mod refresh_tokens;
pub mod replay;
pub mod resources;
pub mod sessions;
mod sql;
pub mod sqlite;
pub mod transfer;
pub mod upstreams;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;

pub use audit::{AuditEvent, AuditQuery, AuditStore, NewAuditEvent};
pub use backchannel::{BackchannelRequest, BackchannelStore};
pub use clients::{
    ApplicationType, AuthMethod, ClientKind, ClientMetadata, ClientRecord, ClientStore,
    PreviousSecret,
};
pub use codes::{AuthCode, CodeStore, Redeemer};
pub use commits::CommitStore;
pub use consents::{Allowed, Consent, ConsentStore};
pub use delegations::{Delegation, DelegationStore, HopPath};
pub use devices::{DeviceApproval, DeviceCode, DeviceStore};
pub use exchange_policies::{ExchangePolicy, ExchangePolicyStore};
pub use factors::{FactorStore, TotpFactor};
pub use id_jag::{IdJagPolicy, IdJagPolicyStore, TrustedIssuer};
pub use identities::{IdentityStore, LinkedBy, LinkedIdentity};
pub use keys::{KeyStore, StoredKey};
pub use passkeys::{Ceremony, PasskeyStore, StoredPasskey};
pub use rate_limits::{Backoff, Counted, RateLimitStore, RegistrationCount};
pub use refresh_tokens::{
    FirstRefresh, NextRefresh, Presented, REVOKED_FAMILY_MEMORY_SECS, RefreshToken,
    RefreshTokenStore, RevokedFamily, Rotating, Rotation, Successor,
};
pub use replay::ReplayStore;
pub use resources::{DetailsTypeDef, ResourceRecord, ResourceStore, ScopeDef, ToolDef};
pub use sessions::{Session, SessionStore, SignedIn};
pub use transfer::TransferStore;
pub use upstreams::{StoredUpstream, UpstreamKind, UpstreamProvider, UpstreamStore};
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
    /// An import's target holds data already (the tables named, with their row counts).
    #[error("the database is not empty: it has rows in {0}")]
    NotEmpty(String),
    #[error("unsupported database URL {0:?}: use sqlite://… or postgres://…")]
    UnsupportedUrl(String),
    #[error(
        "there is no database at {0}: start the server once (`concierge serve`) or create it \
         with `concierge migrate`, or point --config/--data-dir/--database-url at the \
         server's"
    )]
    Missing(String),
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
    /// The database connections now, for the metrics.
    fn pool_stats(&self) -> PoolStats;
}

/// The database connections' state: PostgreSQL's connections, or SQLite's readers and its
/// writer, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open, idle or in use.
    pub open: u32,
    pub idle: u32,
    /// The most it opens.
    pub max: u32,
}

/// Everything the server stores. Code that needs one aggregate takes its trait instead.
pub trait Store:
    ClientStore
    + CommitStore
    + ResourceStore
    + KeyStore
    + RateLimitStore
    + ReplayStore
    + UserStore
    + IdentityStore
    + SessionStore
    + FactorStore
    + PasskeyStore
    + UpstreamStore
    + ConsentStore
    + DelegationStore
    + CodeStore
    + RefreshTokenStore
    + ExchangePolicyStore
    + IdJagPolicyStore
    + DeviceStore
    + BackchannelStore
    + AuditStore
    + TransferStore
    + HealthStore
{
    /// `sqlite` or `postgres`, for logs.
    fn backend(&self) -> &'static str;
}

/// How to open a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Open {
    /// Create it if missing (SQLite) and bring its schema up to date: the server, and
    /// `concierge migrate`.
    Migrate,
    /// Only a database that exists, with its schema as it is: the other CLI commands, so a
    /// mistyped path is an error rather than a new empty database, and a newer CLI never
    /// upgrades a production schema behind the servers' backs.
    Existing,
}

/// Where a database's schema stands against this binary's migrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schema {
    /// Migrations applied, by version.
    pub applied: Vec<i64>,
    /// This binary's migrations not applied yet (`version_description`).
    pub pending: Vec<String>,
    /// Applied migrations this binary does not know (`version_description`): the database
    /// is newer. Under the expand-then-contract rule (UPGRADE.md) this binary still runs on
    /// it.
    pub unknown: Vec<String>,
}

/// `0022_description`, as migrations are named on disk.
fn migration_name(version: i64, description: &str) -> String {
    format!("{version:04}_{}", description.replace(' ', "_"))
}

impl Schema {
    fn compare(migrator: &sqlx::migrate::Migrator, applied: Vec<(i64, String)>) -> Self {
        let pending = migrator
            .iter()
            .filter(|m| !applied.iter().any(|(v, _)| *v == m.version))
            .map(|m| migration_name(m.version, &m.description))
            .collect();
        let unknown = applied
            .iter()
            .filter(|(v, _)| !migrator.iter().any(|m| m.version == *v))
            .map(|(v, d)| migration_name(*v, d))
            .collect();
        Self {
            applied: applied.into_iter().map(|(v, _)| v).collect(),
            pending,
            unknown,
        }
    }

    /// The newest migration applied, 0 for none.
    pub fn latest(&self) -> i64 {
        self.applied.iter().copied().max().unwrap_or(0)
    }
}

/// The newest migration this binary has (the same number for both backends).
pub fn latest_migration() -> i64 {
    sqlite::latest_migration().max(postgres::latest_migration())
}

/// Open the database named by `url`, creating it (SQLite) and applying migrations.
pub async fn connect(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open(url, Open::Migrate).await.map(|(store, _)| store)
}

/// Open the database named by `url` as `how` says; with where its schema stands.
pub async fn open(url: &str, how: Open) -> Result<(Arc<dyn Store>, Schema), StoreError> {
    if url.starts_with("sqlite:") {
        let (store, schema) = sqlite::SqliteStore::open(url, how).await?;
        Ok((Arc::new(store), schema))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let (store, schema) = postgres::PgStore::open(url, how).await?;
        Ok((Arc::new(store), schema))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}
