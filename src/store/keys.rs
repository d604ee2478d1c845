//! Signing keys; the private part is encrypted by the caller (see `crate::keys::encryption`).
//! Which key signs, which are published, is decided from the stored times by
//! `crate::keys::lifecycle`; this module only stores them.

use async_trait::async_trait;

use super::StoreError;

/// A stored signing key; the private part is encrypted.
#[derive(Clone, sqlx::FromRow)]
pub struct StoredKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: String,
    pub private_key: Vec<u8>,
    /// Published from then on.
    pub created_at: i64,
    /// Signs from then on; `None`: from `created_at`.
    pub activates_at: Option<i64>,
    /// Explicitly retired (keys retired before publish-then-activate, and revoked keys).
    pub retired_at: Option<i64>,
    /// Explicitly no longer published after this.
    pub expires_at: Option<i64>,
    /// Withdrawn: never published, trusted or used again.
    pub revoked_at: Option<i64>,
    /// The active key this one replaces (one successor per key).
    pub supersedes: Option<String>,
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("activates_at", &self.activates_at)
            .field("retired_at", &self.retired_at)
            .field("expires_at", &self.expires_at)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait KeyStore: Send + Sync {
    /// Every key row, newest first.
    async fn list_keys(&self) -> Result<Vec<StoredKey>, StoreError>;
    /// Add `key`. `Conflict` when its kid exists or another key already `supersedes` the same
    /// key (a rotation raced with another one: exactly one wins).
    async fn add_key(&self, key: &StoredKey) -> Result<(), StoreError>;
    /// Revoke `kid` at `now` and, in the same transaction, add `replacement`. `false` (and
    /// nothing changed) when there is no such unrevoked key.
    async fn revoke_key(
        &self,
        kid: &str,
        now: i64,
        replacement: Option<&StoredKey>,
    ) -> Result<bool, StoreError>;
    /// Replace the encrypted private parts `(kid, private_key)` in one transaction (a
    /// key-encryption-key rotation); returns how many rows changed.
    async fn reseal_keys(&self, resealed: &[(String, Vec<u8>)]) -> Result<u64, StoreError>;
}

/// The INSERT of a key row, for a pool or a transaction.
macro_rules! insert_key {
    ($k:expr) => {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, \
             activates_at, retired_at, expires_at, revoked_at, supersedes) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind(&$k.kid)
        .bind(&$k.alg)
        .bind(&$k.public_jwk)
        .bind(&$k.private_key)
        .bind($k.created_at)
        .bind($k.activates_at)
        .bind($k.retired_at)
        .bind($k.expires_at)
        .bind($k.revoked_at)
        .bind(&$k.supersedes)
    };
}
pub(crate) use insert_key;

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $ty {
            async fn list_keys(
                &self,
            ) -> Result<Vec<$crate::store::StoredKey>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT kid, alg, public_jwk, private_key, created_at, activates_at, \
                     retired_at, expires_at, revoked_at, supersedes \
                     FROM signing_keys ORDER BY created_at DESC, kid",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn reseal_keys(
                &self,
                resealed: &[(String, Vec<u8>)],
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut changed = 0;
                for (kid, private_key) in resealed {
                    changed +=
                        sqlx::query("UPDATE signing_keys SET private_key = $2 WHERE kid = $1")
                            .bind(kid)
                            .bind(private_key)
                            .execute(&mut *tx)
                            .await?
                            .rows_affected();
                }
                tx.commit().await?;
                Ok(changed)
            }

            async fn add_key(
                &self,
                k: &$crate::store::StoredKey,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::keys::insert_key!(k)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| $crate::store::sql::conflict(e, "signing key"))?;
                Ok(())
            }

            async fn revoke_key(
                &self,
                kid: &str,
                now: i64,
                replacement: Option<&$crate::store::StoredKey>,
            ) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                // Also retired and expired, so servers of the previous release (which know
                // nothing of revoked_at) stop publishing it at their next reload too.
                let n = sqlx::query(
                    "UPDATE signing_keys SET revoked_at = $2, \
                     retired_at = COALESCE(retired_at, $2), expires_at = $2, supersedes = NULL \
                     WHERE kid = $1 AND revoked_at IS NULL",
                )
                .bind(kid)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n == 0 {
                    return Ok(false);
                }
                if let Some(k) = replacement {
                    $crate::store::keys::insert_key!(k)
                        .execute(&mut *tx)
                        .await
                        .map_err(|e| $crate::store::sql::conflict(e, "signing key"))?;
                }
                tx.commit().await?;
                Ok(true)
            }
        }
    };
}
pub(crate) use sql_impl;
