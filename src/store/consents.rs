//! What each user allowed each client at each resource.
//!
//! Always keyed by user *and* client: one user's decision never reaches another user of the
//! same (metadata-document) client_id.

use async_trait::async_trait;

use super::StoreError;

/// What a user allowed a client at a resource.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

/// What a user allowed a client at one resource, as the signed-in read carries it
/// ([`SessionStore::get_signed_in`](super::SessionStore::get_signed_in)).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct Allowed {
    pub resource: String,
    /// Space-separated scopes granted.
    pub scopes: String,
}

/// A subquery: the JSON array of what user `$user` allowed client `$client` (objects with
/// `resource` and `scopes`, as [`Allowed`]), `[]` for nothing or a `NULL` client. By the
/// consents' primary key, whose first two columns these are.
macro_rules! allowed_json {
    ("sqlite", $user:literal, $client:literal) => {
        concat!(
            "(SELECT json_group_array(json_object('resource', resource, 'scopes', scopes)) \
             FROM consents WHERE user_id = ",
            $user,
            " AND client_id = ",
            $client,
            ")"
        )
    };
    ("postgres", $user:literal, $client:literal) => {
        concat!(
            "(SELECT coalesce(json_agg(json_build_object('resource', resource, 'scopes', scopes)), \
             '[]')::text FROM consents WHERE user_id = ",
            $user,
            " AND client_id = ",
            $client,
            ")"
        )
    };
}
pub(crate) use allowed_json;

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
    /// holds for that client and cut the delegation chains that start from it. False when
    /// there was no such consent.
    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resource: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Record that the client used the consents at `now`: kept to the minute (a use within a
    /// minute of the last recorded one writes nothing).
    async fn touch_consent(
        &self,
        user_id: &str,
        client_id: &str,
        resources: &[String],
        now: i64,
    ) -> Result<(), StoreError>;
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::ConsentStore for $ty {
            async fn get_consent(&self, user_id: &str, client_id: &str, resource: &str) -> Result<Option<$crate::store::Consent>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT user_id, client_id, resource, scopes, created_at, updated_at, last_used_at \
                     FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3",
                )
                .bind(user_id)
                .bind(client_id)
                .bind(resource)
                .fetch_optional(&self.pool)
                .await?)
            }

            async fn save_consent(&self, c: &$crate::store::Consent) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO consents (user_id, client_id, resource, scopes, created_at, updated_at, last_used_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7) \
                     ON CONFLICT (user_id, client_id, resource) DO UPDATE SET scopes = $4, updated_at = $6",
                )
                .bind(&c.user_id)
                .bind(&c.client_id)
                .bind(&c.resource)
                .bind(&c.scopes)
                .bind(c.created_at)
                .bind(c.updated_at)
                .bind(c.last_used_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn list_consents(&self, user_id: &str) -> Result<Vec<$crate::store::Consent>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT user_id, client_id, resource, scopes, created_at, updated_at, last_used_at \
                     FROM consents WHERE user_id = $1 ORDER BY created_at, client_id, resource",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?)
            }

            async fn revoke_consent(&self, user_id: &str, client_id: &str, resource: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                $crate::store::sql::retrying(|| async move {
                    let mut tx = self.writer.begin().await?;
                    let r = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3")
                        .bind(user_id)
                        .bind(client_id)
                        .bind(resource)
                        .execute(&mut *tx)
                        .await?;
                    // The families are remembered as revoked too: a rotation running now
                    // inserts a successor this update cannot see, and it is born dead.
                    $crate::store::refresh_tokens::mark_families_revoked!(
                        &mut *tx,
                        "user_id = $1 AND client_id = $4",
                        user_id,
                        now,
                        client_id
                    );
                    sqlx::query(
                        "UPDATE refresh_tokens SET revoked_at = $3 \
                         WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
                    )
                    .bind(user_id)
                    .bind(client_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    // The chains through this app end with it (issue 14.5): tokens derived
                    // through them turn inactive, and no older token starts them again.
                    $crate::store::delegations::cut_app_chains!(
                        &mut *tx,
                        user_id,
                        client_id,
                        resource,
                        now,
                        now + $crate::store::REVOKED_FAMILY_MEMORY_SECS
                    );
                    tx.commit().await?;
                    Ok(r.rows_affected() > 0)
                })
                .await
            }

            async fn touch_consent(&self, user_id: &str, client_id: &str, resources: &[String], now: i64) -> Result<(), $crate::store::StoreError> {
                for resource in resources {
                    // At most once a minute: a busy agent's every refresh would otherwise
                    // rewrite the row (a page written per request) for a time shown to the
                    // minute. PostgreSQL writes no new row version, SQLite no page, when
                    // nothing matches.
                    sqlx::query(
                        "UPDATE consents SET last_used_at = $4 WHERE user_id = $1 AND client_id = $2 AND resource = $3 \
                         AND (last_used_at IS NULL OR last_used_at <= $4 - 60)",
                    )
                    .bind(user_id)
                    .bind(client_id)
                    .bind(resource)
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                }
                Ok(())
            }
        }
    };
}
pub(crate) use sql_impl;
