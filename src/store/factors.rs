//! Second sign-in factors: a user's authenticator app (TOTP, RFC 6238) and recovery codes.
//! The TOTP secret is stored sealed with the key-encryption key (sealing is the caller's);
//! recovery codes only as hashes. Spending a code is one atomic statement each.

use async_trait::async_trait;

use super::StoreError;

/// A user's authenticator: the sealed secret and where its enrollment and use stand.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpFactor {
    pub user_id: String,
    pub secret_sealed: Vec<u8>,
    pub created_at: i64,
    /// None while enrollment waits for its first code: such a factor never signs anyone in.
    pub confirmed_at: Option<i64>,
    /// The last RFC 6238 time step accepted; only a later one is accepted next.
    pub last_step: i64,
}

impl std::fmt::Debug for TotpFactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpFactor")
            .field("user_id", &self.user_id)
            .field("secret_sealed", &"<sealed>")
            .field("created_at", &self.created_at)
            .field("confirmed_at", &self.confirmed_at)
            .field("last_step", &self.last_step)
            .finish()
    }
}

#[async_trait]
pub trait FactorStore: Send + Sync {
    /// Store a new, unconfirmed secret for `user_id`, replacing an unconfirmed one. False when
    /// the user has a confirmed authenticator (it must be removed first).
    async fn put_pending_totp(
        &self,
        user_id: &str,
        secret_sealed: &[u8],
        now: i64,
    ) -> Result<bool, StoreError>;
    async fn get_totp(&self, user_id: &str) -> Result<Option<TotpFactor>, StoreError>;
    /// Confirm the pending authenticator with the step of its first code and store the
    /// recovery codes' hashes (replacing any), at once. False when there is no pending one
    /// (already confirmed, or removed meanwhile) or the step was already used.
    async fn confirm_totp(
        &self,
        user_id: &str,
        step: i64,
        recovery_hashes: &[Vec<u8>],
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Accept `step` for the confirmed authenticator if it is later than the last accepted
    /// one: true exactly once per step, whatever the concurrency.
    async fn spend_totp_step(&self, user_id: &str, step: i64) -> Result<bool, StoreError>;
    /// Replace the user's recovery codes with these hashes (the old ones stop working).
    async fn replace_recovery_codes(
        &self,
        user_id: &str,
        hashes: &[Vec<u8>],
        now: i64,
    ) -> Result<(), StoreError>;
    /// Spend an unused recovery code: true exactly once.
    async fn spend_recovery_code(
        &self,
        user_id: &str,
        hash: &[u8],
        now: i64,
    ) -> Result<bool, StoreError>;
    /// How many unused recovery codes the user has.
    async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, StoreError>;
    /// Forget the user's authenticator and recovery codes; true when there was anything.
    async fn delete_factors(&self, user_id: &str) -> Result<bool, StoreError>;
    /// Every stored authenticator secret, sealed: (user id, sealed secret). For `keys rekey`.
    async fn list_sealed_totp(&self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Store secrets sealed again under a new key-encryption key, each only if its row
    /// still holds `old` (a secret replaced meanwhile is left alone); how many were.
    async fn reseal_totp(&self, resealed: &[(String, Vec<u8>, Vec<u8>)])
    -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct TotpRow {
    user_id: String,
    secret_sealed: Vec<u8>,
    created_at: i64,
    confirmed_at: Option<i64>,
    last_step: i64,
}

impl From<TotpRow> for TotpFactor {
    fn from(r: TotpRow) -> Self {
        Self {
            user_id: r.user_id,
            secret_sealed: r.secret_sealed,
            created_at: r.created_at,
            confirmed_at: r.confirmed_at,
            last_step: r.last_step,
        }
    }
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::FactorStore for $ty {
            async fn put_pending_totp(&self, user_id: &str, secret_sealed: &[u8], now: i64) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "INSERT INTO totp_factors (user_id, secret_sealed, created_at, confirmed_at, last_step) \
                     VALUES ($1, $2, $3, NULL, 0) \
                     ON CONFLICT (user_id) DO UPDATE SET secret_sealed = excluded.secret_sealed, \
                     created_at = excluded.created_at, last_step = 0 \
                     WHERE totp_factors.confirmed_at IS NULL",
                )
                .bind(user_id)
                .bind(secret_sealed)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn get_totp(&self, user_id: &str) -> Result<Option<$crate::store::TotpFactor>, $crate::store::StoreError> {
                let row: Option<$crate::store::factors::TotpRow> = sqlx::query_as(
                    "SELECT user_id, secret_sealed, created_at, confirmed_at, last_step \
                     FROM totp_factors WHERE user_id = $1",
                )
                .bind(user_id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn confirm_totp(&self, user_id: &str, step: i64, recovery_hashes: &[Vec<u8>], now: i64) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                let r = sqlx::query(
                    "UPDATE totp_factors SET confirmed_at = $2, last_step = $3 \
                     WHERE user_id = $1 AND confirmed_at IS NULL AND last_step < $3",
                )
                .bind(user_id)
                .bind(now)
                .bind(step)
                .execute(&mut *tx)
                .await?;
                if r.rows_affected() != 1 {
                    return Ok(false);
                }
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                for hash in recovery_hashes {
                    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
                        .bind(user_id)
                        .bind(hash)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn spend_totp_step(&self, user_id: &str, step: i64) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE totp_factors SET last_step = $2 \
                     WHERE user_id = $1 AND confirmed_at IS NOT NULL AND last_step < $2",
                )
                .bind(user_id)
                .bind(step)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn replace_recovery_codes(&self, user_id: &str, hashes: &[Vec<u8>], now: i64) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                for hash in hashes {
                    sqlx::query("INSERT INTO recovery_codes (user_id, code_hash, created_at) VALUES ($1, $2, $3)")
                        .bind(user_id)
                        .bind(hash)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn spend_recovery_code(&self, user_id: &str, hash: &[u8], now: i64) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE recovery_codes SET used_at = $3 \
                     WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL",
                )
                .bind(user_id)
                .bind(hash)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn recovery_codes_left(&self, user_id: &str) -> Result<i64, $crate::store::StoreError> {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM recovery_codes WHERE user_id = $1 AND used_at IS NULL",
                )
                .bind(user_id)
                .fetch_one(&self.pool)
                .await?;
                Ok(n)
            }

            async fn delete_factors(&self, user_id: &str) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                let a = sqlx::query("DELETE FROM totp_factors WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                let b = sqlx::query("DELETE FROM recovery_codes WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(a.rows_affected() + b.rows_affected() > 0)
            }

            async fn list_sealed_totp(&self) -> Result<Vec<(String, Vec<u8>)>, $crate::store::StoreError> {
                Ok(sqlx::query_as("SELECT user_id, secret_sealed FROM totp_factors ORDER BY user_id")
                    .fetch_all(&self.pool)
                    .await?)
            }

            async fn reseal_totp(&self, resealed: &[(String, Vec<u8>, Vec<u8>)]) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut n = 0;
                for (user_id, old, new) in resealed {
                    n += sqlx::query(
                        "UPDATE totp_factors SET secret_sealed = $3 WHERE user_id = $1 AND secret_sealed = $2",
                    )
                    .bind(user_id)
                    .bind(old)
                    .bind(new)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                }
                tx.commit().await?;
                Ok(n)
            }
        }
    };
}
pub(crate) use sql_impl;
