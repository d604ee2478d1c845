//! Refresh tokens, stored by hash, in families: every rotation of one grant shares a
//! `family_id`, so a replayed token can revoke them all.

use async_trait::async_trait;

use super::{Spent, StoreError};

/// How long a revoked refresh-token family is remembered: longer than any refresh token can
/// live (`tokens.refresh_token_absolute_secs` is at most a year).
pub const REVOKED_FAMILY_MEMORY_SECS: i64 = 400 * 86_400;

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
    /// How the user signed in for the grant (RFC 8176 values).
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub sid: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub absolute_expires_at: i64,
    /// A public client's refresh token is bound to the DPoP key it was issued with
    /// (RFC 9449 §5): refreshing needs a proof with that key.
    pub dpop_jkt: Option<String>,
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
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
    /// A refresh token that could still be used, without using it (for checks before it is
    /// spent, and for introspection).
    async fn get_refresh(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<RefreshToken>, StoreError>;
    /// Revoke every refresh token of a family; returns how many.
    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<u64, StoreError>;
    /// Forget refresh tokens past their absolute expiry.
    async fn purge_refresh_tokens(&self, now: i64) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct RefreshRow {
    token_hash: Vec<u8>,
    family_id: String,
    client_id: String,
    user_id: String,
    resources: String,
    scope: String,
    auth_time: i64,
    amr: String,
    acr: Option<String>,
    sid: Option<String>,
    created_at: i64,
    expires_at: i64,
    absolute_expires_at: i64,
    dpop_jkt: Option<String>,
}

impl TryFrom<RefreshRow> for RefreshToken {
    type Error = StoreError;
    fn try_from(r: RefreshRow) -> Result<Self, StoreError> {
        Ok(Self {
            token_hash: r.token_hash,
            family_id: r.family_id,
            client_id: r.client_id,
            user_id: r.user_id,
            resources: super::sql::from_json(&r.resources, "refresh token resources")?,
            scope: r.scope,
            auth_time: r.auth_time,
            amr: super::sql::words(&r.amr),
            acr: r.acr,
            sid: r.sid,
            created_at: r.created_at,
            expires_at: r.expires_at,
            absolute_expires_at: r.absolute_expires_at,
            dpop_jkt: r.dpop_jkt,
        })
    }
}

macro_rules! columns {
    () => {
        "token_hash, family_id, client_id, user_id, resources, scope, auth_time, amr, acr, sid, \
         created_at, expires_at, absolute_expires_at, dpop_jkt"
    };
}
pub(crate) use columns;

/// A usable token: not spent, not revoked, not expired, and not of a revoked family (see
/// `revoke_family`).
macro_rules! usable {
    () => {
        "used_at IS NULL AND revoked_at IS NULL \
         AND expires_at > $2 AND absolute_expires_at > $2 \
         AND NOT EXISTS (SELECT 1 FROM used_jtis \
           WHERE key = 'family:' || refresh_tokens.family_id AND expires_at > $2)"
    };
}
pub(crate) use usable;

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::RefreshTokenStore for $ty {
            async fn insert_refresh(&self, t: &$crate::store::RefreshToken) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO refresh_tokens (",
                    $crate::store::refresh_tokens::columns!(),
                    ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
                ))
                .bind(&t.token_hash)
                .bind(&t.family_id)
                .bind(&t.client_id)
                .bind(&t.user_id)
                .bind($crate::store::sql::to_json(&t.resources)?)
                .bind(&t.scope)
                .bind(t.auth_time)
                .bind(t.amr.join(" "))
                .bind(&t.acr)
                .bind(&t.sid)
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(t.absolute_expires_at)
                .bind(&t.dpop_jkt)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn use_refresh(&self, token_hash: &[u8], now: i64, rotate: bool, renew_until: i64) -> Result<$crate::store::Spent<$crate::store::RefreshToken>, $crate::store::StoreError> {
                let row: Option<$crate::store::refresh_tokens::RefreshRow> = sqlx::query_as(concat!(
                    "UPDATE refresh_tokens SET \
                       used_at = CASE WHEN $3 THEN $2 ELSE used_at END, \
                       expires_at = CASE WHEN $4 < absolute_expires_at THEN $4 ELSE absolute_expires_at END \
                     WHERE token_hash = $1 AND ",
                    $crate::store::refresh_tokens::usable!(),
                    " RETURNING ",
                    $crate::store::refresh_tokens::columns!()
                ))
                .bind(token_hash)
                .bind(now)
                .bind(rotate)
                .bind(renew_until)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(r) = row {
                    return Ok($crate::store::Spent::Fresh(r.try_into()?));
                }
                let spent: Option<(String, Option<i64>)> =
                    sqlx::query_as("SELECT family_id, used_at FROM refresh_tokens WHERE token_hash = $1")
                        .bind(token_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(match spent {
                    Some((family_id, Some(_))) => $crate::store::Spent::Replayed { family_id },
                    _ => $crate::store::Spent::Invalid,
                })
            }

            async fn get_refresh(&self, token_hash: &[u8], now: i64) -> Result<Option<$crate::store::RefreshToken>, $crate::store::StoreError> {
                let row: Option<$crate::store::refresh_tokens::RefreshRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::refresh_tokens::columns!(),
                    " FROM refresh_tokens WHERE token_hash = $1 AND ",
                    $crate::store::refresh_tokens::usable!()
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn revoke_family(&self, family_id: &str, now: i64) -> Result<u64, $crate::store::StoreError> {
                // The family is also remembered as revoked, so a token of it that is still being
                // issued (the first redemption of a code racing its replay) is born dead.
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL",
                )
                .bind(family_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO used_jtis (key, expires_at) VALUES ('family:' || $1, $2) \
                     ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at",
                )
                .bind(family_id)
                .bind(now + $crate::store::REVOKED_FAMILY_MEMORY_SECS)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(r.rows_affected())
            }

            async fn purge_refresh_tokens(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM refresh_tokens WHERE absolute_expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
