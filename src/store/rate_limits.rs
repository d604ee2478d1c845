//! Fixed-window counters shared by every replica (sign-in throttling, registration limits,
//! guessed device codes), and the failed-sign-in records of usernames. The buckets are named
//! by `crate::oauth::authn::throttle`, which also makes every decision.

use async_trait::async_trait;

use super::StoreError;

/// A username's failed sign-ins: attempts counted since the last success, and when the last
/// one was counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub failures: i64,
    pub last_at: i64,
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
    /// Forget `bucket`'s window. Returns whether there was one.
    async fn clear_rate_limit(&self, bucket: &str) -> Result<bool, StoreError>;
    /// Forget the windows of every bucket whose name starts with `prefix`; how many.
    async fn clear_rate_limits_with_prefix(&self, prefix: &str) -> Result<u64, StoreError>;

    /// The failed-sign-in record named `bucket`, if any.
    async fn backoff(&self, bucket: &str) -> Result<Option<Backoff>, StoreError>;
    /// Replace the record named `bucket` by `next` if it still is `expected` (`None`: there
    /// is none): one atomic statement, so of concurrent swaps from one state only one wins.
    /// Returns whether this one did.
    async fn swap_backoff(
        &self,
        bucket: &str,
        expected: Option<Backoff>,
        next: Backoff,
    ) -> Result<bool, StoreError>;
    /// Delete the record named `bucket`. Returns whether there was one.
    async fn clear_backoff(&self, bucket: &str) -> Result<bool, StoreError>;
    /// Delete the records last counted before `before`.
    async fn purge_backoffs(&self, before: i64) -> Result<u64, StoreError>;
}

/// A fixed window's upsert of the bucket `$bucket` (an SQL expression), at `$2` (now) with
/// windows of `$3` seconds: a hit after the window ended starts a new one. `WHERE true`
/// keeps SQLite from reading `ON CONFLICT` as a join's constraint. Its commit does not wait
/// for the disk (`sql::not_awaited`): a window is a counter, which a crash of the database
/// may set back by the last moment's hits but never leave inconsistent, and on PostgreSQL
/// waiting for the disk was most of a registration's time. `count!(@ $bucket, $from)` puts
/// `$from` where the dialect's tail goes: a `FROM` of the rows to count (`hit_many`).
macro_rules! count {
    ($dialect:tt, $bucket:literal) => {
        $crate::store::rate_limits::count!(@ $bucket, $crate::store::sql::not_awaited!($dialect))
    };
    (@ $bucket:literal, $from:expr) => {
        concat!(
            "INSERT INTO rate_limits (bucket, window_start, hits) SELECT ",
            $bucket,
            ", $2, 1",
            $from,
            " WHERE true ON CONFLICT (bucket) DO UPDATE SET \
               hits = CASE WHEN rate_limits.window_start <= $2 - $3 THEN 1 \
                           ELSE rate_limits.hits + 1 END, \
               window_start = CASE WHEN rate_limits.window_start <= $2 - $3 THEN $2 \
                           ELSE rate_limits.window_start END"
        )
    };
}
pub(crate) use count;

/// A registration's count in the rate limits (RFC 7591 §3 leaves limits on registration to
/// the server), made by the write that stores its client
/// ([`crate::store::ClientStore::register_client`]), so that a refused registration stores
/// nothing and an admitted one waits for one write. The buckets and maxima are the
/// throttle's (`oauth::authn::throttle`):
/// - the registration counts in `again`'s window when `seen` has a live window (the address
///   registered the same metadata in it), in `first`'s when it has none; all three windows
///   are of `window_secs`, at `now`;
/// - it is admitted when the window counted holds at most its maximum (`max_again`,
///   `max_first`), this hit included ([`RegistrationCount::admits`]);
/// - an admitted one counted in `first` also counts in `seen`, so the metadata is seen from
///   then on; a refused one is not, and stays refused when sent again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationCount {
    pub seen: String,
    pub again: String,
    pub first: String,
    pub window_secs: i64,
    pub now: i64,
    pub max_again: i64,
    pub max_first: i64,
}

/// What a registration's count made: whether `seen` was live (the registration repeated
/// metadata), and the hits in the window counted, this one included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counted {
    pub repeated: bool,
    pub hits: i64,
}

impl RegistrationCount {
    /// The bucket a registration counts in.
    pub(super) fn bucket(&self, repeated: bool) -> &str {
        if repeated { &self.again } else { &self.first }
    }

    /// Does `counted` admit the registration? The one rule: PostgreSQL's statement says it
    /// again in SQL (`clients::register!`).
    pub fn admits(&self, counted: Counted) -> bool {
        counted.hits
            <= if counted.repeated {
                self.max_again
            } else {
                self.max_first
            }
    }
}

/// A hit to count in `bucket`'s window of `window_secs` at `now`
/// ([`RateLimitStore::hit`]), as a write of the group commit: what it returns is the hits in
/// the window, this one included.
pub(super) struct Hit {
    pub(super) bucket: String,
    pub(super) window_secs: i64,
    pub(super) now: i64,
}

/// SQLite's count of several hits at one time with one window, in one upsert of their
/// buckets bound as one JSON array. SQLite upserts the rows one after another, so hits on one
/// bucket (a registration's, say: its bucket is the caller's address) count one after
/// another, each returning the count it made. Those counts are handed out in the order the
/// hits came; which of concurrent hits gets which does not matter, only that each gets one.
pub(super) async fn hit_many(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    hits: &[Hit],
) -> Result<Vec<i64>, StoreError> {
    let Some(first) = hits.first() else {
        return Ok(Vec::new());
    };
    let buckets: Vec<&str> = hits.iter().map(|h| h.bucket.as_str()).collect();
    let counted: Vec<(String, i64)> = sqlx::query_as(concat!(
        count!(@ "value", " FROM jsonb_each($1)"),
        " RETURNING bucket, hits"
    ))
    .bind(super::sql::to_json(&buckets)?)
    .bind(first.now)
    .bind(first.window_secs)
    .fetch_all(on)
    .await?;
    handed_out(buckets, counted)
}

/// The counts an upsert of hits on `buckets` returned (`counted`: each row's bucket and the
/// count it made, in any order), handed to the hits in order: each the first count left of
/// its bucket.
pub(super) fn handed_out<'a>(
    buckets: impl IntoIterator<Item = &'a str>,
    mut counted: Vec<(String, i64)>,
) -> Result<Vec<i64>, StoreError> {
    buckets
        .into_iter()
        .map(|b| {
            let at = counted.iter().position(|(bucket, _)| bucket == b);
            at.map(|at| counted.remove(at).1)
                .ok_or_else(|| StoreError::Corrupt("a rate limit's count was not returned".into()))
        })
        .collect()
}

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::RateLimitStore for $ty {
            async fn hit(
                &self,
                bucket: &str,
                window_secs: i64,
                now: i64,
            ) -> Result<i64, $crate::store::StoreError> {
                self.writer
                    .write_kind::<$crate::store::rate_limits::Hit>(
                        $crate::store::rate_limits::Hit {
                            bucket: bucket.to_owned(),
                            window_secs,
                            now,
                        },
                    )
                    .await
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

            async fn clear_rate_limit(
                &self,
                bucket: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM rate_limits WHERE bucket = $1")
                    .bind(bucket)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn clear_rate_limits_with_prefix(
                &self,
                prefix: &str,
            ) -> Result<u64, $crate::store::StoreError> {
                // Not LIKE: SQLite's is case-insensitive and `_` is a wildcard in it.
                let r =
                    sqlx::query("DELETE FROM rate_limits WHERE substr(bucket, 1, length($1)) = $1")
                        .bind(prefix)
                        .execute(&self.writer)
                        .await?;
                Ok(r.rows_affected())
            }

            async fn backoff(
                &self,
                bucket: &str,
            ) -> Result<Option<$crate::store::Backoff>, $crate::store::StoreError> {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "SELECT failures, last_at FROM signin_backoffs WHERE bucket = $1",
                )
                .bind(bucket)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|(failures, last_at)| $crate::store::Backoff { failures, last_at }))
            }

            async fn swap_backoff(
                &self,
                bucket: &str,
                expected: Option<$crate::store::Backoff>,
                next: $crate::store::Backoff,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = match expected {
                    None => {
                        sqlx::query(
                            "INSERT INTO signin_backoffs (bucket, failures, last_at) \
                             VALUES ($1, $2, $3) ON CONFLICT (bucket) DO NOTHING",
                        )
                        .bind(bucket)
                        .bind(next.failures)
                        .bind(next.last_at)
                        .execute(&self.writer)
                        .await?
                    }
                    Some(e) => {
                        sqlx::query(
                            "UPDATE signin_backoffs SET failures = $2, last_at = $3 \
                             WHERE bucket = $1 AND failures = $4 AND last_at = $5",
                        )
                        .bind(bucket)
                        .bind(next.failures)
                        .bind(next.last_at)
                        .bind(e.failures)
                        .bind(e.last_at)
                        .execute(&self.writer)
                        .await?
                    }
                };
                Ok(r.rows_affected() == 1)
            }

            async fn clear_backoff(&self, bucket: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM signin_backoffs WHERE bucket = $1")
                    .bind(bucket)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() > 0)
            }

            async fn purge_backoffs(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM signin_backoffs WHERE last_at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn purge_rate_limits(
                &self,
                before: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM rate_limits WHERE window_start < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::rate_limits::Hit
        {
            type Input = Self;
            type Output = i64;

            /// Hits at different times or with different windows are counted by different
            /// statements (one statement binds one of each); hits on one bucket are not a
            /// clash: one statement counts them one after another.
            fn clash(a: &Self, b: &Self) -> bool {
                (a.now, a.window_secs) != (b.now, b.window_secs)
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                h: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<i64, $crate::store::StoreError>> {
                Box::pin(async move {
                    let (hits,): (i64,) = sqlx::query_as(concat!(
                        $crate::store::rate_limits::count!($dialect, "$1"),
                        " RETURNING hits"
                    ))
                    .bind(&h.bucket)
                    .bind(h.now)
                    .bind(h.window_secs)
                    .fetch_one(on)
                    .await?;
                    Ok(hits)
                })
            }

            $crate::store::sql::many!($dialect, $crate::store::rate_limits::hit_many);
        }
    };
}
pub(crate) use sql_impl;
