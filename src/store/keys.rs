//! Signing keys; the private part is encrypted by the caller (see `crate::keys::encryption`).

use async_trait::async_trait;

use super::StoreError;

/// A stored signing key; the private part is encrypted.
#[derive(Clone, sqlx::FromRow)]
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

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::KeyStore for $ty {
            async fn list_keys(
                &self,
            ) -> Result<Vec<$crate::store::StoredKey>, $crate::store::StoreError> {
                Ok(sqlx::query_as(
                    "SELECT kid, alg, public_jwk, private_key, created_at, retired_at, expires_at \
                     FROM signing_keys ORDER BY created_at DESC, kid",
                )
                .fetch_all(&self.pool)
                .await?)
            }

            async fn reseal_keys(
                &self,
                resealed: &[(String, Vec<u8>)],
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
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

            async fn rotate_key(
                &self,
                k: &$crate::store::StoredKey,
                now: i64,
                retired_expire_at: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "UPDATE signing_keys SET retired_at = $2, expires_at = $3 \
                     WHERE alg = $1 AND retired_at IS NULL",
                )
                .bind(&k.alg)
                .bind(now)
                .bind(retired_expire_at)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO signing_keys (kid, alg, public_jwk, private_key, created_at, \
                     retired_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
                )
                .bind(&k.kid)
                .bind(&k.alg)
                .bind(&k.public_jwk)
                .bind(&k.private_key)
                .bind(k.created_at)
                .bind(k.retired_at)
                .bind(k.expires_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "signing key"))?;
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use sql_impl;
