//! The SQL for users, sessions, consents, codes and refresh tokens; both backends run it
//! (see `sql.rs` for the rules the statements keep to).

use super::{AuthCode, Consent, RefreshToken, StoreError, User};

pub(super) type UserRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    i64,
    i64,
);

pub(super) fn user_from_row(r: UserRow) -> User {
    User {
        id: r.0,
        username: r.1,
        email: r.2,
        name: r.3,
        password_hash: r.4,
        created_at: r.5,
        updated_at: r.6,
    }
}

pub(super) type ConsentRow = (String, String, String, String, i64, i64, Option<i64>);

pub(super) fn consent_from_row(r: ConsentRow) -> Consent {
    Consent {
        user_id: r.0,
        client_id: r.1,
        resource: r.2,
        scopes: r.3,
        created_at: r.4,
        updated_at: r.5,
        last_used_at: r.6,
    }
}

pub(super) fn resources_json(r: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(r).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn resources_from(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("resources: {e}")))
}

pub(super) type CodeRow = (
    Vec<u8>,
    String,
    String,
    String,
    Option<String>,
    String,
    String,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
    i64,
);

pub(super) fn code_from_row(r: CodeRow) -> Result<AuthCode, StoreError> {
    Ok(AuthCode {
        code_hash: r.0,
        family_id: r.1,
        client_id: r.2,
        user_id: r.3,
        redirect_uri: r.4,
        code_challenge: r.5,
        resources: resources_from(&r.6)?,
        scope: r.7,
        nonce: r.8,
        auth_time: r.9,
        sid: r.10,
        created_at: r.11,
        expires_at: r.12,
    })
}

pub(super) type RefreshRow = (
    Vec<u8>,
    String,
    String,
    String,
    String,
    String,
    i64,
    Option<String>,
    i64,
    i64,
    i64,
);

pub(super) fn refresh_from_row(r: RefreshRow) -> Result<RefreshToken, StoreError> {
    Ok(RefreshToken {
        token_hash: r.0,
        family_id: r.1,
        client_id: r.2,
        user_id: r.3,
        resources: resources_from(&r.4)?,
        scope: r.5,
        auth_time: r.6,
        sid: r.7,
        created_at: r.8,
        expires_at: r.9,
        absolute_expires_at: r.10,
    })
}

pub(super) type PolicyRow = (String, String, String, String, i64);

pub(super) fn policy_from_row(r: PolicyRow) -> Result<super::ExchangePolicy, StoreError> {
    Ok(super::ExchangePolicy {
        scope_map: serde_json::from_str(&r.3)
            .map_err(|e| StoreError::Corrupt(format!("exchange policy scope map: {e}")))?,
        target: r.0,
        client_id: r.1,
        source: r.2,
        created_at: r.4,
    })
}

pub(super) type DeviceRow = (
    Vec<u8>,
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
    i64,
    Option<i64>,
    i64,
    i64,
);

pub(super) fn device_from_row(r: DeviceRow) -> Result<super::DeviceCode, StoreError> {
    Ok(super::DeviceCode {
        device_code_hash: r.0,
        user_code: r.1,
        client_id: r.2,
        resources: resources_from(&r.3)?,
        scope: r.4,
        status: r.5,
        user_id: r.6,
        auth_time: r.7,
        sid: r.8,
        interval_secs: r.9,
        last_polled_at: r.10,
        created_at: r.11,
        expires_at: r.12,
    })
}

/// The device columns in `DeviceRow` order.
macro_rules! device_columns {
    () => {
        "device_code_hash, user_code, client_id, resources, scope, status, user_id, auth_time, sid, \
         interval_secs, last_polled_at, created_at, expires_at"
    };
}
pub(crate) use device_columns;

macro_rules! sql_user_store {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::DeviceStore for $ty {
            async fn insert_device(&self, d: &$crate::store::DeviceCode) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO device_codes (",
                    $crate::store::sql_users::device_columns!(),
                    ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)"
                ))
                .bind(&d.device_code_hash)
                .bind(&d.user_code)
                .bind(&d.client_id)
                .bind($crate::store::sql_users::resources_json(&d.resources)?)
                .bind(&d.scope)
                .bind(&d.status)
                .bind(&d.user_id)
                .bind(d.auth_time)
                .bind(&d.sid)
                .bind(d.interval_secs)
                .bind(d.last_polled_at)
                .bind(d.created_at)
                .bind(d.expires_at)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "user code"))?;
                Ok(())
            }

            async fn pending_device(&self, user_code: &str, now: i64) -> Result<Option<$crate::store::DeviceCode>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::DeviceRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql_users::device_columns!(),
                    " FROM device_codes WHERE user_code = $1 AND status = 'pending' AND expires_at > $2"
                ))
                .bind(user_code)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::sql_users::device_from_row).transpose()
            }

            async fn decide_device(&self, user_code: &str, approved_by: Option<(&str, i64, &str)>, now: i64) -> Result<bool, $crate::store::StoreError> {
                let (status, user, auth_time, sid) = match approved_by {
                    Some((u, t, s)) => ("approved", Some(u), Some(t), Some(s)),
                    None => ("denied", None, None, None),
                };
                let r = sqlx::query(
                    "UPDATE device_codes SET status = $2, user_id = $3, auth_time = $4, sid = $5 \
                     WHERE user_code = $1 AND status = 'pending' AND expires_at > $6",
                )
                .bind(user_code)
                .bind(status)
                .bind(user)
                .bind(auth_time)
                .bind(sid)
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn device_by_code(&self, hash: &[u8]) -> Result<Option<$crate::store::DeviceCode>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::DeviceRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::sql_users::device_columns!(),
                    " FROM device_codes WHERE device_code_hash = $1 AND used_at IS NULL"
                ))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::sql_users::device_from_row).transpose()
            }

            async fn record_poll(&self, hash: &[u8], now: i64, interval_secs: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE device_codes SET last_polled_at = $2, interval_secs = $3 WHERE device_code_hash = $1")
                    .bind(hash)
                    .bind(now)
                    .bind(interval_secs)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn redeem_device(&self, hash: &[u8], now: i64) -> Result<Option<$crate::store::DeviceCode>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::DeviceRow> = sqlx::query_as(concat!(
                    "UPDATE device_codes SET used_at = $2 \
                     WHERE device_code_hash = $1 AND status = 'approved' AND used_at IS NULL AND expires_at > $2 \
                     RETURNING ",
                    $crate::store::sql_users::device_columns!()
                ))
                .bind(hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::sql_users::device_from_row).transpose()
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ExchangePolicyStore for $ty {
            async fn save_exchange_policy(&self, p: &$crate::store::ExchangePolicy) -> Result<(), $crate::store::StoreError> {
                let map = serde_json::to_string(&p.scope_map)
                    .map_err(|e| $crate::store::StoreError::Corrupt(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO exchange_policies (target, client_id, source, scope_map, created_at) \
                     VALUES ($1,$2,$3,$4,$5) \
                     ON CONFLICT (target, client_id, source) DO UPDATE SET scope_map = $4",
                )
                .bind(&p.target)
                .bind(&p.client_id)
                .bind(&p.source)
                .bind(map)
                .bind(p.created_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_exchange_policy(&self, target: &str, client_id: &str, source: &str) -> Result<Option<$crate::store::ExchangePolicy>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::PolicyRow> = sqlx::query_as(
                    "SELECT target, client_id, source, scope_map, created_at FROM exchange_policies \
                     WHERE target = $1 AND client_id = $2 AND source = $3",
                )
                .bind(target)
                .bind(client_id)
                .bind(source)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::sql_users::policy_from_row).transpose()
            }

            async fn list_exchange_policies(&self) -> Result<Vec<$crate::store::ExchangePolicy>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql_users::PolicyRow> = sqlx::query_as(
                    "SELECT target, client_id, source, scope_map, created_at FROM exchange_policies \
                     ORDER BY target, client_id, source",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map($crate::store::sql_users::policy_from_row).collect()
            }

            async fn delete_exchange_policy(&self, target: &str, client_id: &str, source: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM exchange_policies WHERE target = $1 AND client_id = $2 AND source = $3")
                    .bind(target)
                    .bind(client_id)
                    .bind(source)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::UserStore for $ty {
            async fn insert_user(&self, u: &$crate::store::User) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO users (id, username, email, name, password_hash, created_at, updated_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7)",
                )
                .bind(&u.id)
                .bind(&u.username)
                .bind(&u.email)
                .bind(&u.name)
                .bind(&u.password_hash)
                .bind(u.created_at)
                .bind(u.updated_at)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "username"))?;
                Ok(())
            }

            async fn get_user(&self, id: &str) -> Result<Option<$crate::store::User>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::UserRow> = sqlx::query_as(
                    "SELECT id, username, email, name, password_hash, created_at, updated_at FROM users WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map($crate::store::sql_users::user_from_row))
            }

            async fn find_user(&self, username: &str) -> Result<Option<$crate::store::User>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::UserRow> = sqlx::query_as(
                    "SELECT id, username, email, name, password_hash, created_at, updated_at FROM users WHERE username = $1",
                )
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map($crate::store::sql_users::user_from_row))
            }

            async fn list_users(&self) -> Result<Vec<$crate::store::User>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql_users::UserRow> = sqlx::query_as(
                    "SELECT id, username, email, name, password_hash, created_at, updated_at FROM users ORDER BY username",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map($crate::store::sql_users::user_from_row).collect())
            }

            async fn delete_user(&self, username: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM users WHERE username = $1")
                    .bind(username)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn set_password(&self, username: &str, hash: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("UPDATE users SET password_hash = $2, updated_at = $3 WHERE username = $1")
                    .bind(username)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                // A new password signs the user out everywhere.
                sqlx::query("DELETE FROM sessions WHERE user_id IN (SELECT id FROM users WHERE username = $1)")
                    .bind(username)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected() == 1)
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::SessionStore for $ty {
            async fn insert_session(&self, token_hash: &[u8], s: &$crate::store::Session) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO sessions (token_hash, sid, user_id, auth_time, created_at, expires_at) \
                     VALUES ($1,$2,$3,$4,$5,$6)",
                )
                .bind(token_hash)
                .bind(&s.sid)
                .bind(&s.user_id)
                .bind(s.auth_time)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn get_session(&self, token_hash: &[u8], now: i64) -> Result<Option<$crate::store::Session>, $crate::store::StoreError> {
                let row: Option<(String, String, i64, i64, i64)> = sqlx::query_as(
                    "SELECT sid, user_id, auth_time, created_at, expires_at FROM sessions \
                     WHERE token_hash = $1 AND expires_at > $2",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(|r| $crate::store::Session {
                    sid: r.0,
                    user_id: r.1,
                    auth_time: r.2,
                    created_at: r.3,
                    expires_at: r.4,
                }))
            }

            async fn delete_session(&self, token_hash: &[u8]) -> Result<(), $crate::store::StoreError> {
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::ConsentStore for $ty {
            async fn get_consent(&self, user_id: &str, client_id: &str, resource: &str) -> Result<Option<$crate::store::Consent>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::ConsentRow> = sqlx::query_as(
                    "SELECT user_id, client_id, resource, scopes, created_at, updated_at, last_used_at \
                     FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3",
                )
                .bind(user_id)
                .bind(client_id)
                .bind(resource)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map($crate::store::sql_users::consent_from_row))
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
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn list_consents(&self, user_id: &str) -> Result<Vec<$crate::store::Consent>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sql_users::ConsentRow> = sqlx::query_as(
                    "SELECT user_id, client_id, resource, scopes, created_at, updated_at, last_used_at \
                     FROM consents WHERE user_id = $1 ORDER BY created_at, client_id, resource",
                )
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map($crate::store::sql_users::consent_from_row).collect())
            }

            async fn revoke_consent(&self, user_id: &str, client_id: &str, resource: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.pool.begin().await?;
                let r = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2 AND resource = $3")
                    .bind(user_id)
                    .bind(client_id)
                    .bind(resource)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "UPDATE refresh_tokens SET revoked_at = $3 \
                     WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
                )
                .bind(user_id)
                .bind(client_id)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(r.rows_affected() > 0)
            }

            async fn touch_consent(&self, user_id: &str, client_id: &str, resources: &[String], now: i64) -> Result<(), $crate::store::StoreError> {
                for resource in resources {
                    sqlx::query(
                        "UPDATE consents SET last_used_at = $4 WHERE user_id = $1 AND client_id = $2 AND resource = $3",
                    )
                    .bind(user_id)
                    .bind(client_id)
                    .bind(resource)
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                }
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::GrantStore for $ty {
            async fn insert_code(&self, c: &$crate::store::AuthCode) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO auth_codes (code_hash, family_id, client_id, user_id, redirect_uri, \
                     code_challenge, resources, scope, nonce, auth_time, sid, created_at, expires_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
                )
                .bind(&c.code_hash)
                .bind(&c.family_id)
                .bind(&c.client_id)
                .bind(&c.user_id)
                .bind(&c.redirect_uri)
                .bind(&c.code_challenge)
                .bind($crate::store::sql_users::resources_json(&c.resources)?)
                .bind(&c.scope)
                .bind(&c.nonce)
                .bind(c.auth_time)
                .bind(&c.sid)
                .bind(c.created_at)
                .bind(c.expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn redeem_code(&self, code_hash: &[u8], now: i64) -> Result<$crate::store::Spent<$crate::store::AuthCode>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::CodeRow> = sqlx::query_as(
                    "UPDATE auth_codes SET used_at = $2 \
                     WHERE code_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                     RETURNING code_hash, family_id, client_id, user_id, redirect_uri, code_challenge, \
                     resources, scope, nonce, auth_time, sid, created_at, expires_at",
                )
                .bind(code_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(r) = row {
                    return Ok($crate::store::Spent::Fresh($crate::store::sql_users::code_from_row(r)?));
                }
                let spent: Option<(String, Option<i64>)> =
                    sqlx::query_as("SELECT family_id, used_at FROM auth_codes WHERE code_hash = $1")
                        .bind(code_hash)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(match spent {
                    Some((family_id, Some(_))) => $crate::store::Spent::Replayed { family_id },
                    _ => $crate::store::Spent::Invalid,
                })
            }

            async fn insert_refresh(&self, t: &$crate::store::RefreshToken) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO refresh_tokens (token_hash, family_id, client_id, user_id, resources, scope, \
                     auth_time, sid, created_at, expires_at, absolute_expires_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                )
                .bind(&t.token_hash)
                .bind(&t.family_id)
                .bind(&t.client_id)
                .bind(&t.user_id)
                .bind($crate::store::sql_users::resources_json(&t.resources)?)
                .bind(&t.scope)
                .bind(t.auth_time)
                .bind(&t.sid)
                .bind(t.created_at)
                .bind(t.expires_at)
                .bind(t.absolute_expires_at)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn use_refresh(&self, token_hash: &[u8], now: i64, rotate: bool, renew_until: i64) -> Result<$crate::store::Spent<$crate::store::RefreshToken>, $crate::store::StoreError> {
                let row: Option<$crate::store::sql_users::RefreshRow> = sqlx::query_as(
                    "UPDATE refresh_tokens SET \
                       used_at = CASE WHEN $3 THEN $2 ELSE used_at END, \
                       expires_at = CASE WHEN $4 < absolute_expires_at THEN $4 ELSE absolute_expires_at END \
                     WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL \
                       AND expires_at > $2 AND absolute_expires_at > $2 \
                       AND NOT EXISTS (SELECT 1 FROM used_jtis \
                         WHERE key = 'family:' || refresh_tokens.family_id AND expires_at > $2) \
                     RETURNING token_hash, family_id, client_id, user_id, resources, scope, auth_time, sid, \
                       created_at, expires_at, absolute_expires_at",
                )
                .bind(token_hash)
                .bind(now)
                .bind(rotate)
                .bind(renew_until)
                .fetch_optional(&self.pool)
                .await?;
                if let Some(r) = row {
                    return Ok($crate::store::Spent::Fresh($crate::store::sql_users::refresh_from_row(r)?));
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
                let row: Option<$crate::store::sql_users::RefreshRow> = sqlx::query_as(
                    "SELECT token_hash, family_id, client_id, user_id, resources, scope, auth_time, sid, \
                       created_at, expires_at, absolute_expires_at FROM refresh_tokens \
                     WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL \
                       AND expires_at > $2 AND absolute_expires_at > $2 \
                       AND NOT EXISTS (SELECT 1 FROM used_jtis \
                         WHERE key = 'family:' || refresh_tokens.family_id AND expires_at > $2)",
                )
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map($crate::store::sql_users::refresh_from_row).transpose()
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

            async fn purge_expired_grants(&self, now: i64) -> Result<(), $crate::store::StoreError> {
                // Spent codes are kept a day to recognise replays; then forgotten.
                sqlx::query("DELETE FROM auth_codes WHERE expires_at < $1")
                    .bind(now - 86_400)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                sqlx::query("DELETE FROM refresh_tokens WHERE absolute_expires_at < $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }
        }
    };
}
pub(crate) use sql_user_store;
