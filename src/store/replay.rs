//! Single-use keys: client assertion and DPoP proof `jti`s, revoked access tokens' `jti`s,
//! revoked refresh-token families. A use is one atomic statement, so replicas sharing the
//! database refuse a replay exactly once.

use async_trait::async_trait;

use super::StoreError;

#[async_trait]
pub trait ReplayStore: Send + Sync {
    /// Spend the single-use `key` (namespaced by its caller): true the first time, false
    /// while an earlier use has not expired.
    async fn use_once(&self, key: &str, expires_at: i64, now: i64) -> Result<bool, StoreError>;
    /// Forget uses that expired by `now`; returns how many.
    async fn purge_used(&self, now: i64) -> Result<u64, StoreError>;
    /// Has `key` been used and not yet expired? (Also how revoked access tokens are listed.)
    async fn is_used(&self, key: &str, now: i64) -> Result<bool, StoreError>;
}

macro_rules! sql_impl {
    ($ty:ty) => {
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
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn is_used(
                &self,
                key: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
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
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
