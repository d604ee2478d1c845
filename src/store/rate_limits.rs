//! Fixed-window counters shared by every replica (sign-in throttling, registration limits,
//! guessed device codes). The buckets are named by `crate::oauth::authn::throttle`.

use async_trait::async_trait;

use super::StoreError;

#[async_trait]
pub trait RateLimitStore: Send + Sync {
    /// Count a hit in `bucket`'s fixed window and return the hits in the current window,
    /// this one included. One atomic statement, so replicas share the count.
    async fn hit(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError>;
    /// Forget windows that started before `before`.
    async fn purge_rate_limits(&self, before: i64) -> Result<u64, StoreError>;
    /// Hits in `bucket`'s current window, without counting one.
    async fn hits(&self, bucket: &str, window_secs: i64, now: i64) -> Result<i64, StoreError>;
    /// Take one hit back from `bucket`'s current window (never below zero).
    async fn forgive(&self, bucket: &str, window_secs: i64, now: i64) -> Result<(), StoreError>;
}

macro_rules! sql_impl {
    ($ty:ty) => {
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

            async fn forgive(
                &self,
                bucket: &str,
                window_secs: i64,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE rate_limits SET hits = hits - 1 \
                     WHERE bucket = $1 AND window_start > $2 - $3 AND hits > 0",
                )
                .bind(bucket)
                .bind(now)
                .bind(window_secs)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn purge_rate_limits(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
                    .bind(before)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
