//! Passkeys (WebAuthn credentials): each user's random WebAuthn user handle, their
//! registered credentials (public keys, no secrets), and the state of ceremonies under way.
//! A ceremony's state is taken by one `DELETE … RETURNING`, so it finishes at most once
//! whichever replica receives the browser's answer.

use async_trait::async_trait;

use super::StoreError;

/// A registered passkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    /// Our id for it (in forms and URLs), random.
    pub id: String,
    pub user_id: String,
    /// The authenticator's credential id, base64url.
    pub credential_id: String,
    /// The credential as the WebAuthn library serialises it (public key, counter, flags).
    pub credential: String,
    /// The name the user gave it.
    pub name: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
}

/// A WebAuthn ceremony between its options and the browser's answer.
#[derive(Clone, PartialEq, Eq)]
pub struct Ceremony {
    /// What it is for (`register`, `passwordless`, `second_factor`).
    pub kind: String,
    /// The user it was started for; None for a passwordless sign-in (the passkey says who).
    pub user_id: Option<String>,
    /// The browser it was started in (the anti-forgery binding).
    pub binding: String,
    /// The library's state, JSON.
    pub state: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for Ceremony {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ceremony")
            .field("kind", &self.kind)
            .field("user_id", &self.user_id)
            .field("state", &"<challenge>")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait PasskeyStore: Send + Sync {
    /// The user's WebAuthn user handle, made from `candidate` if they had none (the first
    /// one stored wins, whatever the concurrency).
    async fn passkey_handle(
        &self,
        user_id: &str,
        candidate: &str,
        now: i64,
    ) -> Result<String, StoreError>;
    /// The user a WebAuthn user handle belongs to.
    async fn user_of_passkey_handle(&self, handle: &str) -> Result<Option<String>, StoreError>;
    /// Store a new passkey; `Conflict` when its credential id is registered already.
    async fn insert_passkey(&self, passkey: &StoredPasskey) -> Result<(), StoreError>;
    /// The user's passkeys, oldest first.
    async fn list_passkeys(&self, user_id: &str) -> Result<Vec<StoredPasskey>, StoreError>;
    /// Record a use of the user's passkey: when, and its credential as updated (its
    /// counter), when it changed. False when there is no such passkey (removed meanwhile).
    async fn passkey_used(
        &self,
        user_id: &str,
        credential_id: &str,
        credential: Option<&str>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Rename the user's passkey `id`; false when they have none by that id.
    async fn rename_passkey(&self, user_id: &str, id: &str, name: &str)
    -> Result<bool, StoreError>;
    /// Remove the user's passkey `id`; false when they have none by that id.
    async fn delete_passkey(&self, user_id: &str, id: &str) -> Result<bool, StoreError>;
    /// Remove every passkey of the user; how many there were.
    async fn delete_passkeys(&self, user_id: &str) -> Result<u64, StoreError>;
    /// Store a ceremony under the hash of its id.
    async fn put_ceremony(&self, id_hash: &[u8], ceremony: &Ceremony) -> Result<(), StoreError>;
    /// Take a ceremony: it is gone afterwards. None when unknown, taken already or expired.
    async fn take_ceremony(&self, id_hash: &[u8], now: i64)
    -> Result<Option<Ceremony>, StoreError>;
    /// Forget ceremonies that expired before `now`.
    async fn purge_ceremonies(&self, now: i64) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct PasskeyRow {
    id: String,
    user_id: String,
    credential_id: String,
    credential: String,
    name: String,
    created_at: i64,
    last_used_at: Option<i64>,
}

impl From<PasskeyRow> for StoredPasskey {
    fn from(r: PasskeyRow) -> Self {
        Self {
            id: r.id,
            user_id: r.user_id,
            credential_id: r.credential_id,
            credential: r.credential,
            name: r.name,
            created_at: r.created_at,
            last_used_at: r.last_used_at,
        }
    }
}

#[derive(sqlx::FromRow)]
pub(super) struct CeremonyRow {
    kind: String,
    user_id: Option<String>,
    binding: String,
    state: String,
    expires_at: i64,
}

impl From<CeremonyRow> for Ceremony {
    fn from(r: CeremonyRow) -> Self {
        Self {
            kind: r.kind,
            user_id: r.user_id,
            binding: r.binding,
            state: r.state,
            expires_at: r.expires_at,
        }
    }
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::PasskeyStore for $ty {
            async fn passkey_handle(&self, user_id: &str, candidate: &str, now: i64) -> Result<String, $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO passkey_users (user_id, handle, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (user_id) DO NOTHING",
                )
                .bind(user_id)
                .bind(candidate)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(sqlx::query_scalar("SELECT handle FROM passkey_users WHERE user_id = $1")
                    .bind(user_id)
                    .fetch_one(&self.writer)
                    .await?)
            }

            async fn user_of_passkey_handle(&self, handle: &str) -> Result<Option<String>, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(handle) {
                    return Ok(None);
                }
                Ok(sqlx::query_scalar("SELECT user_id FROM passkey_users WHERE handle = $1")
                    .bind(handle)
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn insert_passkey(&self, p: &$crate::store::StoredPasskey) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO passkeys (id, user_id, credential_id, credential, name, created_at, last_used_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&p.id)
                .bind(&p.user_id)
                .bind(&p.credential_id)
                .bind(&p.credential)
                .bind(&p.name)
                .bind(p.created_at)
                .bind(p.last_used_at)
                .execute(&self.writer)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "passkey"))?;
                Ok(())
            }

            async fn list_passkeys(&self, user_id: &str) -> Result<Vec<$crate::store::StoredPasskey>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::passkeys::PasskeyRow> = sqlx::query_as(
                    "SELECT id, user_id, credential_id, credential, name, created_at, last_used_at \
                     FROM passkeys WHERE user_id = $1 ORDER BY created_at, id",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn passkey_used(&self, user_id: &str, credential_id: &str, credential: Option<&str>, now: i64) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE passkeys SET last_used_at = $3, credential = COALESCE($4, credential) \
                     WHERE user_id = $1 AND credential_id = $2",
                )
                .bind(user_id)
                .bind(credential_id)
                .bind(now)
                .bind(credential)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn rename_passkey(&self, user_id: &str, id: &str, name: &str) -> Result<bool, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(id) {
                    return Ok(false);
                }
                let r = sqlx::query("UPDATE passkeys SET name = $3 WHERE user_id = $1 AND id = $2")
                    .bind(user_id)
                    .bind(id)
                    .bind(name)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_passkey(&self, user_id: &str, id: &str) -> Result<bool, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(id) {
                    return Ok(false);
                }
                let r = sqlx::query("DELETE FROM passkeys WHERE user_id = $1 AND id = $2")
                    .bind(user_id)
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_passkeys(&self, user_id: &str) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM passkeys WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }

            async fn put_ceremony(&self, id_hash: &[u8], c: &$crate::store::Ceremony) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO webauthn_ceremonies (id_hash, kind, user_id, binding, state, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(id_hash)
                .bind(&c.kind)
                .bind(&c.user_id)
                .bind(&c.binding)
                .bind(&c.state)
                .bind(c.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn take_ceremony(&self, id_hash: &[u8], now: i64) -> Result<Option<$crate::store::Ceremony>, $crate::store::StoreError> {
                let row: Option<$crate::store::passkeys::CeremonyRow> = sqlx::query_as(
                    "DELETE FROM webauthn_ceremonies WHERE id_hash = $1 \
                     RETURNING kind, user_id, binding, state, expires_at",
                )
                .bind(id_hash)
                .fetch_optional(&self.writer)
                .await?;
                Ok(row
                    .map($crate::store::Ceremony::from)
                    .filter(|c| c.expires_at > now))
            }

            async fn purge_ceremonies(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM webauthn_ceremonies WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
