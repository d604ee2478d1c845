//! Delegation chains: the hops a user's authority took through token exchange (RFC 8693).
//! A hop is one path, found again by where it comes from and where it goes; exchanged access
//! tokens name their hop, so cutting one (with every hop below it) makes the tokens derived
//! through it inactive at once.

use async_trait::async_trait;

use super::StoreError;

/// Who cut a hop.
pub const CUT_BY_USER: &str = "user";
/// The app at the root was disconnected.
pub const CUT_BY_APP: &str = "app";

/// Where a hop comes from and where it goes: unique per user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HopPath<'a> {
    pub user_id: &'a str,
    /// The app the user connected, and the resource its token was for.
    pub root_client_id: &'a str,
    pub root_resource: &'a str,
    /// The hop the subject token came through; empty for the first hop.
    pub parent_id: &'a str,
    /// The client that exchanged, and the resource of the new token.
    pub client_id: &'a str,
    pub resource: &'a str,
}

/// One hop of a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Delegation {
    pub id: String,
    pub user_id: String,
    pub root_client_id: String,
    pub root_resource: String,
    /// Empty for the first hop.
    pub parent_id: String,
    pub client_id: String,
    pub resource: String,
    pub created_at: i64,
    pub last_used_at: i64,
    /// When the row may be swept: after every token issued through it has expired.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
    /// [`CUT_BY_USER`] or [`CUT_BY_APP`] when revoked.
    pub cut_by: Option<String>,
}

impl Delegation {
    pub fn is_live(&self) -> bool {
        self.revoked_at.is_none()
    }
}

#[async_trait]
pub trait DelegationStore: Send + Sync {
    async fn get_delegation(&self, id: &str) -> Result<Option<Delegation>, StoreError>;
    async fn find_delegation(&self, path: &HopPath<'_>) -> Result<Option<Delegation>, StoreError>;
    /// Insert a new hop; false when its path is taken (by a concurrent exchange).
    async fn insert_delegation(&self, d: &Delegation) -> Result<bool, StoreError>;
    /// Replace the hop `old_id`, cut because its app was disconnected, by `fresh` (a new
    /// grant's chain); false when `old_id` is no longer such a hop.
    async fn renew_delegation(&self, old_id: &str, fresh: &Delegation) -> Result<bool, StoreError>;
    /// Record a use: `last_used_at`, and `expires_at` raised to at least `expires_at`.
    async fn touch_delegation(&self, id: &str, now: i64, expires_at: i64)
    -> Result<(), StoreError>;
    /// A user's hops, live and cut, oldest first.
    async fn list_delegations(&self, user_id: &str) -> Result<Vec<Delegation>, StoreError>;
    /// Cut `user_id`'s hop `id` and every hop below it; how many hops were cut (0: no such
    /// live hop of theirs).
    async fn cut_delegation(&self, user_id: &str, id: &str, now: i64) -> Result<u64, StoreError>;
    /// Delete hops whose tokens have all expired.
    async fn purge_delegations(&self, now: i64) -> Result<u64, StoreError>;
}

macro_rules! columns {
    () => {
        "id, user_id, root_client_id, root_resource, parent_id, client_id, resource, \
         created_at, last_used_at, expires_at, revoked_at, cut_by"
    };
}
pub(crate) use columns;

/// Mark the hops under the app `$client` at `$resource` of `$user` as cut by the app's
/// disconnection, in the transaction `$tx`. They are kept until the tokens issued before
/// (at most an access token's lifetime, `$keep_until`) have expired: an older token cannot
/// start a chain again.
macro_rules! cut_app_chains {
    ($tx:expr, $user:expr, $client:expr, $resource:expr, $now:expr, $keep_until:expr) => {
        sqlx::query(
            "UPDATE delegations SET revoked_at = $4, cut_by = 'app', expires_at = $5 \
             WHERE user_id = $1 AND root_client_id = $2 AND root_resource = $3",
        )
        .bind($user)
        .bind($client)
        .bind($resource)
        .bind($now)
        .bind($keep_until)
        .execute($tx)
        .await?
    };
}
pub(crate) use cut_app_chains;

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::DelegationStore for $ty {
            async fn get_delegation(&self, id: &str) -> Result<Option<$crate::store::Delegation>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::delegations::columns!(),
                    " FROM delegations WHERE id = $1"
                ))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn find_delegation(&self, p: &$crate::store::HopPath<'_>) -> Result<Option<$crate::store::Delegation>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::delegations::columns!(),
                    " FROM delegations WHERE user_id = $1 AND root_client_id = $2 AND root_resource = $3 \
                      AND parent_id = $4 AND client_id = $5 AND resource = $6"
                ))
                .bind(p.user_id)
                .bind(p.root_client_id)
                .bind(p.root_resource)
                .bind(p.parent_id)
                .bind(p.client_id)
                .bind(p.resource)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn insert_delegation(&self, d: &$crate::store::Delegation) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(concat!(
                    "INSERT INTO delegations (",
                    $crate::store::delegations::columns!(),
                    ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12) ON CONFLICT DO NOTHING"
                ))
                .bind(&d.id)
                .bind(&d.user_id)
                .bind(&d.root_client_id)
                .bind(&d.root_resource)
                .bind(&d.parent_id)
                .bind(&d.client_id)
                .bind(&d.resource)
                .bind(d.created_at)
                .bind(d.last_used_at)
                .bind(d.expires_at)
                .bind(d.revoked_at)
                .bind(&d.cut_by)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn renew_delegation(&self, old_id: &str, fresh: &$crate::store::Delegation) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE delegations SET id = $2, created_at = $3, last_used_at = $4, expires_at = $5, \
                     revoked_at = NULL, cut_by = NULL WHERE id = $1 AND cut_by = 'app'",
                )
                .bind(old_id)
                .bind(&fresh.id)
                .bind(fresh.created_at)
                .bind(fresh.last_used_at)
                .bind(fresh.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn touch_delegation(&self, id: &str, now: i64, expires_at: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE delegations SET last_used_at = $2, \
                     expires_at = CASE WHEN expires_at < $3 THEN $3 ELSE expires_at END \
                     WHERE id = $1 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(now)
                .bind(expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn list_delegations(&self, user_id: &str) -> Result<Vec<$crate::store::Delegation>, $crate::store::StoreError> {
                Ok(sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::delegations::columns!(),
                    " FROM delegations WHERE user_id = $1 ORDER BY created_at, id LIMIT 500"
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn cut_delegation(&self, user_id: &str, id: &str, now: i64) -> Result<u64, $crate::store::StoreError> {
                // The hop and everything below it. The hop itself stays until its app is
                // disconnected (or its user deleted), so the cut holds; the hops below go
                // when their tokens have expired, as no new token can come through them.
                let r = sqlx::query(
                    "WITH RECURSIVE below(id) AS ( \
                         SELECT id FROM delegations WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL \
                         UNION SELECT d.id FROM delegations d JOIN below b ON d.parent_id = b.id \
                     ) \
                     UPDATE delegations SET revoked_at = $3, cut_by = 'user', \
                     expires_at = CASE WHEN id = $1 THEN $4 ELSE expires_at END \
                     WHERE id IN (SELECT id FROM below) AND user_id = $2 AND revoked_at IS NULL",
                )
                .bind(id)
                .bind(user_id)
                .bind(now)
                .bind(i64::MAX)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected())
            }

            async fn purge_delegations(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM delegations WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
