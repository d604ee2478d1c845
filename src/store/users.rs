//! Local accounts.

use async_trait::async_trait;

use super::StoreError;

/// A local account. `Debug` leaves out the password hash.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub username: String,
    pub email: Option<String>,
    /// The address is known to be the user's (an operator said so, or the issuer that
    /// provisioned the account did). Only verified addresses link accounts.
    pub email_verified: bool,
    pub name: Option<String>,
    /// argon2id, PHC string format; `None` for an account without a password (one that
    /// signs in with other factors only).
    pub password_hash: Option<String>,
    /// When an operator disabled the account; `None` while it is enabled. A disabled user
    /// cannot sign in and nothing more is issued for them.
    pub disabled_at: Option<i64>,
    /// An operator asked them to choose a new password at their next sign-in.
    pub password_change_required: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    pub fn is_disabled(&self) -> bool {
        self.disabled_at.is_some()
    }
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("id", &self.id)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait UserStore: Send + Sync {
    /// `Conflict` when the username is taken.
    async fn insert_user(&self, user: &User) -> Result<(), StoreError>;
    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError>;
    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    /// Remove a user; their sessions, consents, codes and tokens go with them.
    async fn delete_user(&self, username: &str) -> Result<bool, StoreError>;
    /// The users whose verified email is `email` (compared without case), at most `limit`.
    async fn users_with_verified_email(
        &self,
        email: &str,
        limit: i64,
    ) -> Result<Vec<User>, StoreError>;
    /// Replace a user's email, its verified flag and name; `false` when there is no such
    /// user.
    async fn update_profile(&self, user: &User, now: i64) -> Result<bool, StoreError>;
    /// Disable (`Some(now)`) or enable (`None`) a user; `false` when there is no such user.
    /// Disabling signs them out everywhere and revokes their refresh tokens, in the same
    /// transaction.
    async fn set_disabled(
        &self,
        user_id: &str,
        at: Option<i64>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Ask the user to choose a new password at their next sign-in, signing them out
    /// everywhere and revoking their refresh tokens in the same transaction; `false` when
    /// there is no such user. (Setting a password clears the request.)
    async fn require_password_change(&self, user_id: &str, now: i64) -> Result<bool, StoreError>;
    /// Set a new password hash. In the same transaction the user is signed out everywhere
    /// and every refresh token they hold is revoked, so agents must ask again.
    async fn set_password(&self, username: &str, hash: &str, now: i64) -> Result<bool, StoreError>;
}

/// A `users` row. The column is NOT NULL (SQLite cannot relax that without rebuilding the
/// table, which would cascade to every row that references a user); an account without a
/// password stores the empty string, read back as `None`.
#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    id: String,
    username: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
    password_hash: String,
    disabled_at: Option<i64>,
    password_change_required: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<UserRow> for User {
    fn from(r: UserRow) -> Self {
        Self {
            id: r.id,
            username: r.username,
            email: r.email,
            email_verified: r.email_verified,
            name: r.name,
            password_hash: (!r.password_hash.is_empty()).then_some(r.password_hash),
            disabled_at: r.disabled_at,
            password_change_required: r.password_change_required,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

macro_rules! columns {
    () => {
        "id, username, email, email_verified, name, password_hash, disabled_at, \
         password_change_required, created_at, updated_at"
    };
}
pub(crate) use columns;

/// A look-up of a user by id ([`UserStore::get_user`]: a grant's live user, `/userinfo`, a
/// user's token introspected), as a kind of read (`Connections::read_kind`): on PostgreSQL
/// those queued at the same moment are one statement ([`look_up_many_postgres`]).
pub(super) struct LookUp(pub(super) String);

/// PostgreSQL's look-up of several users by id, each as [`LookUp`] alone: one statement, the
/// ids bound as one array and joined to the table by its primary key. One answer for each,
/// in their order.
pub(super) async fn look_up_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    look_ups: &[LookUp],
) -> Result<Vec<Option<UserRow>>, StoreError> {
    let rows = sqlx::query(LOOK_UP_MANY_POSTGRES)
        .bind(super::sql::column(look_ups, |LookUp(id)| id.as_str()))
        .fetch_all(on)
        .await?;
    super::sql::by_ordinal(look_ups.len(), rows)
}

/// [`look_up_many_postgres`]'s statement (public for the query-plan test): `$1` the ids; each
/// row says whose it is by `ordinal`, its look-up's place from 1.
pub const LOOK_UP_MANY_POSTGRES: &str = concat!(
    "SELECT l.ordinal, ",
    columns!(),
    " FROM UNNEST($1::text[]) WITH ORDINALITY AS l(wanted, ordinal) JOIN users ON users.id = l.wanted"
);

/// The statement inserting a user (`Conflict` on the username is the caller's to map).
macro_rules! insert {
    ($u:expr) => {
        sqlx::query(concat!(
            "INSERT INTO users (",
            $crate::store::users::columns!(),
            ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)"
        ))
        .bind(&$u.id)
        .bind(&$u.username)
        .bind(&$u.email)
        .bind($u.email_verified)
        .bind(&$u.name)
        .bind($u.password_hash.as_deref().unwrap_or(""))
        .bind($u.disabled_at)
        .bind($u.password_change_required)
        .bind($u.created_at)
        .bind($u.updated_at)
    };
}
pub(crate) use insert;

/// In a transaction: end every session of the user(s) `$who` selects (a condition on
/// `user_id` with `$1` bound to `$key`) and revoke their refresh tokens.
macro_rules! sign_out_everywhere {
    ($tx:expr, $who:literal, $key:expr, $now:expr) => {
        sqlx::query(concat!("DELETE FROM sessions WHERE ", $who))
            .bind($key)
            .execute($tx)
            .await?;
        $crate::store::refresh_tokens::mark_families_revoked!($tx, $who, $key, $now);
        sqlx::query(concat!(
            "UPDATE refresh_tokens SET revoked_at = $2 WHERE revoked_at IS NULL AND ",
            $who
        ))
        .bind($key)
        .bind($now)
        .execute($tx)
        .await?;
    };
}
pub(crate) use sign_out_everywhere;

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::UserStore for $ty {
            async fn insert_user(
                &self,
                u: &$crate::store::User,
            ) -> Result<(), $crate::store::StoreError> {
                $crate::store::users::insert!(u)
                    .execute(&self.writer)
                    .await
                    .map_err(|e| $crate::store::sql::conflict(e, "username"))?;
                Ok(())
            }

            async fn get_user(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::User>, $crate::store::StoreError> {
                let look_up = $crate::store::users::LookUp(id.to_owned());
                let row = self.pool.read_kind::<$crate::store::users::LookUp>(look_up).await?;
                Ok(row.map(Into::into))
            }

            async fn find_user(
                &self,
                username: &str,
            ) -> Result<Option<$crate::store::User>, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(username) {
                    return Ok(None);
                }
                let row: Option<$crate::store::users::UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::users::columns!(),
                    " FROM users WHERE username = $1"
                ))
                .bind(username)
                .fetch_optional(&self.pool)
                .await?;
                Ok(row.map(Into::into))
            }

            async fn list_users(
                &self,
            ) -> Result<Vec<$crate::store::User>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::users::UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::users::columns!(),
                    " FROM users ORDER BY username"
                ))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn users_with_verified_email(
                &self,
                email: &str,
                limit: i64,
            ) -> Result<Vec<$crate::store::User>, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(email) {
                    return Ok(Vec::new());
                }
                let rows: Vec<$crate::store::users::UserRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::users::columns!(),
                    " FROM users WHERE lower(email) = lower($1) AND email_verified \
                     ORDER BY created_at LIMIT $2"
                ))
                .bind(email)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn update_profile(
                &self,
                u: &$crate::store::User,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE users SET email = $2, email_verified = $3, name = $4, updated_at = $5 \
                     WHERE id = $1",
                )
                .bind(&u.id)
                .bind(&u.email)
                .bind(u.email_verified)
                .bind(&u.name)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_user(&self, username: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM users WHERE username = $1")
                    .bind(username)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn require_password_change(
                &self,
                user_id: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                // Retried when PostgreSQL aborts it to break a deadlock with a rotation.
                $crate::store::sql::retrying(|| async move {
                    let mut tx = self.writer.begin().await?;
                    let r = sqlx::query(
                        "UPDATE users SET password_change_required = TRUE, updated_at = $2 WHERE id = $1",
                    )
                    .bind(user_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    $crate::store::users::sign_out_everywhere!(&mut *tx, "user_id = $1", user_id, now);
                    tx.commit().await?;
                    Ok(r.rows_affected() == 1)
                })
                .await
            }

            async fn set_disabled(
                &self,
                user_id: &str,
                at: Option<i64>,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                // Retried when PostgreSQL aborts it to break a deadlock with a rotation.
                $crate::store::sql::retrying(|| async move {
                    let mut tx = self.writer.begin().await?;
                    let r =
                        sqlx::query("UPDATE users SET disabled_at = $2, updated_at = $3 WHERE id = $1")
                            .bind(user_id)
                            .bind(at)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    if at.is_some() {
                        $crate::store::users::sign_out_everywhere!(
                            &mut *tx,
                            "user_id = $1",
                            user_id,
                            now
                        );
                    }
                    tx.commit().await?;
                    Ok(r.rows_affected() == 1)
                })
                .await
            }

            async fn set_password(
                &self,
                username: &str,
                hash: &str,
                now: i64,
            ) -> Result<bool, $crate::store::StoreError> {
                // Retried when PostgreSQL aborts it to break a deadlock with a rotation.
                $crate::store::sql::retrying(|| async move {
                    let mut tx = self.writer.begin().await?;
                    let r = sqlx::query(
                        "UPDATE users SET password_hash = $2, updated_at = $3, \
                         password_change_required = FALSE WHERE username = $1",
                    )
                    .bind(username)
                    .bind(hash)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    $crate::store::users::sign_out_everywhere!(
                        &mut *tx,
                        "user_id IN (SELECT id FROM users WHERE username = $1)",
                        username,
                        now
                    );
                    tx.commit().await?;
                    Ok(r.rows_affected() == 1)
                })
                .await
            }
        }

        $crate::store::sql::read_kind!(
            $dialect,
            $crate::store::users::LookUp,
            $crate::store::users::UserRow,
            concat!("SELECT ", $crate::store::users::columns!(), " FROM users WHERE id = $1"),
            |look_up| [&look_up.0],
            $crate::store::users::look_up_many_postgres
        );
    };
}
pub(crate) use sql_impl;
