//! Storage: one narrow trait per aggregate, and [`Store`] that joins them.
//!
//! Both backends run the same SQL text (see [`sql`]): times are Unix seconds, JSON is text,
//! and `$n` placeholders work in SQLite and PostgreSQL alike. What differs between them —
//! connecting, pragmas, migrations — lives in [`sqlite`] and [`postgres`], once.
//! Single-use and counting decisions are one atomic statement each, so several replicas
//! sharing one PostgreSQL decide them exactly once.

pub mod postgres;
mod sql;
mod sql_audit;
mod sql_id_jag;
mod sql_users;
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

/// Where a signing key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyStatus {
    /// Signs new tokens.
    Active,
    /// Replaced; still published until the tokens it signed have expired.
    Retired { published_until: i64 },
    /// No longer published.
    Expired,
}

impl StoredKey {
    pub fn status(&self, now: i64) -> KeyStatus {
        match (self.retired_at, self.expires_at) {
            (None, _) => KeyStatus::Active,
            (Some(_), Some(e)) if e > now => KeyStatus::Retired { published_until: e },
            (Some(_), _) => KeyStatus::Expired,
        }
    }
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
    /// Replace the encrypted private parts `(kid, private_key)` in one transaction (a
    /// key-encryption-key rotation); returns how many rows changed.
    async fn reseal_keys(&self, resealed: &[(String, Vec<u8>)]) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Count a hit in `bucket`'s fixed window and return the hits in the current window,
    /// this one included. One atomic statement, so replicas share the count.
    async fn hit(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError>;
    /// Forget windows that started before `before`.
    async fn purge_rate_limits(&self, before: i64) -> Result<u64, StoreError>;
    /// Hits in `bucket`'s current window, without counting one.
    async fn hits(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError>;
}

/// A local account. `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// argon2id, PHC string format.
    pub password_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// A signed-in browser. The cookie value is stored only as its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public id, the ID token's `sid`.
    pub sid: String,
    pub user_id: String,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
}

/// What a user allowed a client at a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub user_id: String,
    pub client_id: String,
    pub resource: String,
    /// Space-separated scopes granted.
    pub scopes: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
}

/// An issued authorization code (stored by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub code_hash: Vec<u8>,
    /// Refresh tokens issued from this code share it, so a replay can revoke them.
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: Option<String>,
    pub code_challenge: String,
    pub resources: Vec<String>,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    pub sid: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The `dpop_jkt` of the authorization request (RFC 9449 §10): the token request's
    /// proof must use this key.
    pub dpop_jkt: Option<String>,
}

/// An issued refresh token (stored by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub token_hash: Vec<u8>,
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub resources: Vec<String>,
    pub scope: String,
    pub auth_time: i64,
    pub sid: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub absolute_expires_at: i64,
    /// A public client's refresh token is bound to the DPoP key it was issued with
    /// (RFC 9449 §5): refreshing needs a proof with that key.
    pub dpop_jkt: Option<String>,
}

/// How long a revoked refresh-token family is remembered: longer than any refresh token can
/// live (`tokens.refresh_token_absolute_secs` is at most a year).
pub const REVOKED_FAMILY_MEMORY_SECS: i64 = 400 * 86_400;

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
pub trait UserStore: Send + Sync {
    /// `Conflict` when the username is taken.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
    async fn set_password(&self, username: &str, hash: &str, now: i64) -> Result<bool, StoreError>;
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert_session(&self, token_hash: &[u8], session: &Session) -> Result<(), StoreError>;
    /// The session, unless unknown or expired by `now`.
    async fn get_session(&self, token_hash: &[u8], now: i64)
    -> Result<Option<Session>, StoreError>;
    async fn delete_session(&self, token_hash: &[u8]) -> Result<(), StoreError>;
}

#[async_trait]
pub trait ConsentStore: Send + Sync {
    async fn get_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
    ) -> Result<Option<Consent>, StoreError>;
    /// Insert or replace the scopes of a consent.
    async fn save_consent(&self, consent: &Consent) -> Result<(), StoreError>;
    async fn list_consents(&self, user_id: &str) -> Result<Vec<Consent>, StoreError>;
    /// Delete the consent and, in the same transaction, revoke every refresh token the user
    /// holds for that client. False when there was no such consent.
    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn touch_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resources: &[String],
        now: i64,
    ) -> Result<(), StoreError>;
}

#[async_trait]
pub trait GrantStore: Send + Sync {
    async fn insert_code(&self, code: &AuthCode) -> Result<(), StoreError>;
    /// Spend a code: one atomic statement, so of two concurrent redemptions one wins.
    async fn redeem_code(&self, code_hash: &[u8], now: i64) -> Result<Spent<AuthCode>, StoreError>;
    async fn insert_refresh(&self, token: &RefreshToken) -> Result<(), StoreError>;
    /// Use a refresh token. With `rotate` it is spent (a second use is `Replayed`); without,
    /// its idle expiry moves to `renew_until` (capped by the absolute expiry).
    async fn use_refresh(
        &self,
        token_hash: &[u8],
        now: i64,
        rotate: bool,
        renew_until: i64,
    ) -> Result<Spent<RefreshToken>, StoreError>;
    /// A refresh token that could still be used, without using it (for introspection).
    async fn get_refresh(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<RefreshToken>, StoreError>;
    /// Revoke every refresh token of a family; returns how many.
    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<u64, StoreError>;
    /// Forget spent or expired codes and dead sessions.
    async fn purge_expired_grants(&self, now: i64) -> Result<(), StoreError>;
}

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Spend the single-use `key` (a client assertion's or DPoP proof's `jti`, namespaced by
    /// its caller): true the first time, false while an earlier use has not expired. One
    /// atomic statement, so replicas sharing a database decide it exactly once.
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, StoreError>;
    /// Forget uses that expired by `now`; returns how many.
    async fn purge_used(&self, now: i64) -> Result<u64, StoreError>;
    /// Has `key` been used and not yet expired? (Also how revoked access tokens are listed.)
    async fn is_used(&self, key: &str, now: i64) -> Result<bool, StoreError>;
}

/// May `client_id` exchange tokens for `source` into tokens for `target`, and with which
/// scopes? (RFC 8693 policy; no policy means no.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangePolicy {
    pub target: String,
    pub client_id: String,
    pub source: String,
    /// Source scope → the target scopes it may become.
    pub scope_map: std::collections::BTreeMap<String, Vec<String>>,
    pub created_at: i64,
}

#[async_trait]
pub trait ExchangePolicyStore: Send + Sync {
    /// Insert or replace the policy for (target, client, source).
    async fn save_exchange_policy(&self, policy: &ExchangePolicy) -> Result<(), StoreError>;
    async fn get_exchange_policy(
        &self,
        target: &str,
        client_id: &str,
        source: &str,
    ) -> Result<Option<ExchangePolicy>, StoreError>;
    async fn list_exchange_policies(&self) -> Result<Vec<ExchangePolicy>, StoreError>;
    async fn delete_exchange_policy(
        &self,
        target: &str,
        client_id: &str,
        source: &str,
    ) -> Result<bool, StoreError>;
}

/// ID-JAG issuing policies made with the CLI (`concierge id-jag allow`); the configuration
/// file's `id_jag.policies` count too. No policy means no ID-JAG.
#[async_trait]
pub trait IdJagPolicyStore: Send + Sync {
    /// Insert or replace the policy for (client, audience, resource), all as given.
    async fn save_id_jag_policy(
        &self,
        policy: &crate::config::IdJagPolicy,
        now: i64,
    ) -> Result<(), StoreError>;
    /// The policies of one client.
    async fn id_jag_policies_for(
        &self,
        client_id: &str,
    ) -> Result<Vec<crate::config::IdJagPolicy>, StoreError>;
    async fn list_id_jag_policies(&self) -> Result<Vec<crate::config::IdJagPolicy>, StoreError>;
    async fn delete_id_jag_policy(
        &self,
        client_id: &str,
        audience: &str,
        resource: &str,
    ) -> Result<bool, StoreError>;
}

/// A device authorization request (RFC 8628).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    pub device_code_hash: Vec<u8>,
    pub user_code: String,
    pub client_id: String,
    pub resources: Vec<String>,
    pub scope: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub user_id: Option<String>,
    pub auth_time: Option<i64>,
    pub sid: Option<String>,
    pub interval_secs: i64,
    pub last_polled_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// `Conflict` when the user code is taken (the caller draws another).
    async fn insert_device(&self, d: &DeviceCode) -> Result<(), StoreError>;
    /// A pending, unexpired request by its user code.
    async fn pending_device(
        &self,
        user_code: &str,
        now: i64,
    ) -> Result<Option<DeviceCode>, StoreError>;
    /// Record the user's decision on a pending request; false if it was no longer pending.
    async fn decide_device(
        &self,
        user_code: &str,
        approved_by: Option<(&str, i64, &str)>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The request behind a device code, unless already used.
    async fn device_by_code(
        &self,
        device_code_hash: &[u8],
    ) -> Result<Option<DeviceCode>, StoreError>;
    /// Remember a poll and the interval the next one must wait.
    async fn record_poll(
        &self,
        device_code_hash: &[u8],
        now: i64,
        interval_secs: i64,
    ) -> Result<(), StoreError>;
    /// Spend an approved request: one atomic statement, so it yields tokens once.
    async fn redeem_device(
        &self,
        device_code_hash: &[u8],
        now: i64,
    ) -> Result<Option<DeviceCode>, StoreError>;
}

/// One security event (DESIGN.md §6): what happened, to whom, from where. `detail` never holds
/// a secret or a token; it names them by `jti`, family or client instead.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Assigned by the database; 0 until stored. Newer events have larger ids.
    pub id: i64,
    /// Unix seconds.
    pub at: i64,
    /// Dotted kind, e.g. `token.issued` (see `crate::audit::Kind`).
    pub kind: String,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// The caller's address, when the event came from a request.
    pub ip: Option<String>,
    /// A JSON object with the event's particulars.
    pub detail: serde_json::Value,
}

/// A security event to append: [`AuditEvent`] before the database gives it an id, with its
/// `detail` already serialised (events are built on request paths and only written later).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEvent {
    /// Unix seconds.
    pub at: i64,
    /// Dotted kind, e.g. `token.issued` (see `crate::audit::Kind`).
    pub kind: &'static str,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    pub ip: Option<String>,
    /// The text of a JSON object with the event's particulars.
    pub detail: String,
}

/// Which audit events to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Events at or after this time.
    pub since: Option<i64>,
    /// Events before this time.
    pub until: Option<i64>,
    /// A kind (`token.issued`) or a kind's first part (`token` matches `token.*`).
    pub kind: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// Pagination cursor: only events with a smaller id.
    pub before_id: Option<i64>,
    pub limit: i64,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// Append events (their `id` is ignored), a few hundred to a statement.
    async fn append_audit(&self, events: &[NewAuditEvent]) -> Result<(), StoreError>;
    /// Events matching `q`, newest (largest id) first, at most `q.limit`.
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditEvent>, StoreError>;
    /// Delete events older than `before`; returns how many.
    async fn purge_audit(&self, before: i64) -> Result<u64, StoreError>;
}

#[async_trait]
pub trait HealthStore: Send + Sync {
    /// One round trip to the database, for readiness checks.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Everything the server stores.
pub trait Store:
    ClientStore
    + ResourceStore
    + KeyStore
    + RateLimitStore
    + ReplayStore
    + UserStore
    + SessionStore
    + ConsentStore
    + GrantStore
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
