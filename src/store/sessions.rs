//! Signed-in browsers. The cookie value is stored only as its hash.

use async_trait::async_trait;

use super::StoreError;
use super::consents::Allowed;
use super::users::{User, UserRow};

/// A signed-in browser: who, when, and how they proved it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public id, the ID token's `sid`.
    pub sid: String,
    pub user_id: String,
    pub auth_time: i64,
    /// Authentication methods used (RFC 8176 values, e.g. `pwd`).
    pub amr: Vec<String>,
    /// The authentication context class reached, if any.
    pub acr: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A live session as a page or an authorization request needs it: the session, its user,
/// and what the user allowed the client asked about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedIn {
    pub session: Session,
    pub user: User,
    /// Each resource's consent of the user to the client named in the read; empty when none
    /// was named.
    pub allowed: Vec<Allowed>,
}

#[async_trait]
pub trait SessionStore: Send + Sync {
    async fn insert_session(&self, token_hash: &[u8], session: &Session) -> Result<(), StoreError>;
    /// The session, its user and what the user allowed `client_id` (nothing when `None`),
    /// unless the session is unknown or expired by `now`: one read, since whoever presents
    /// a session is looked up next, and an authorization request then asks what its client
    /// may already do (a user disabled is the caller's to refuse).
    async fn get_signed_in(
        &self,
        token_hash: &[u8],
        now: i64,
        client_id: Option<&str>,
    ) -> Result<Option<SignedIn>, StoreError>;
    async fn delete_session(&self, token_hash: &[u8]) -> Result<(), StoreError>;
    /// A user's live sessions at `now`, newest first.
    async fn list_user_sessions(&self, user_id: &str, now: i64)
    -> Result<Vec<Session>, StoreError>;
    /// End the user's session `sid`; false when they have none by that id (another user's
    /// session is never ended).
    async fn delete_user_session(&self, user_id: &str, sid: &str) -> Result<bool, StoreError>;
    /// End every session of the user but `keep_sid`; how many ended.
    async fn delete_other_sessions(&self, user_id: &str, keep_sid: &str)
    -> Result<u64, StoreError>;
    /// Forget sessions that expired by `now`.
    async fn purge_sessions(&self, now: i64) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct SessionRow {
    sid: String,
    user_id: String,
    auth_time: i64,
    amr: String,
    acr: Option<String>,
    created_at: i64,
    expires_at: i64,
}

impl From<SessionRow> for Session {
    fn from(r: SessionRow) -> Self {
        Self {
            sid: r.sid,
            user_id: r.user_id,
            auth_time: r.auth_time,
            amr: super::sql::words(&r.amr),
            acr: r.acr,
            created_at: r.created_at,
            expires_at: r.expires_at,
        }
    }
}

/// A session joined with its user and the user's consents to one client. The session's
/// columns are renamed in the statement ([`signed_in!`]): both tables have a `created_at`.
#[derive(sqlx::FromRow)]
pub(super) struct SignedInRow {
    sid: String,
    auth_time: i64,
    amr: String,
    acr: Option<String>,
    session_created_at: i64,
    session_expires_at: i64,
    /// [`Allowed`] as a JSON array.
    allowed: String,
    #[sqlx(flatten)]
    user: UserRow,
}

impl TryFrom<SignedInRow> for SignedIn {
    type Error = StoreError;

    fn try_from(r: SignedInRow) -> Result<Self, StoreError> {
        let user = User::from(r.user);
        let session = Session {
            sid: r.sid,
            user_id: user.id.clone(),
            auth_time: r.auth_time,
            amr: super::sql::words(&r.amr),
            acr: r.acr,
            created_at: r.session_created_at,
            expires_at: r.session_expires_at,
        };
        Ok(Self {
            session,
            user,
            allowed: super::sql::from_json(&r.allowed, "a session's consents")?,
        })
    }
}

/// The statement reading a live session by its hash (`$1`) at `$2`, with its user and the
/// user's consents to client `$3` (or the three expressions given): the session by its
/// primary key, in a subquery that renames its columns, the user by theirs, the consents by
/// the first two columns of theirs.
macro_rules! signed_in {
    ($dialect:tt) => {
        $crate::store::sessions::signed_in!($dialect, "$1", "$2", "$3")
    };
    ($dialect:tt, $hash:literal, $now:literal, $client:literal) => {
        concat!(
            "SELECT s.sid, s.auth_time, s.amr, s.acr, s.session_created_at, s.session_expires_at, ",
            $crate::store::consents::allowed_json!($dialect, "s.session_user_id", $client),
            " AS allowed, ",
            $crate::store::users::columns!(),
            " FROM (SELECT user_id AS session_user_id, sid, auth_time, amr, acr, \
             created_at AS session_created_at, expires_at AS session_expires_at \
             FROM sessions WHERE token_hash = ",
            $hash,
            " AND expires_at > ",
            $now,
            ") s JOIN users ON users.id = s.session_user_id"
        )
    };
}
pub(crate) use signed_in;

/// A look-up of a live session with its user and consents ([`SessionStore::get_signed_in`]),
/// as a kind of read (`Connections::read_kind`): on PostgreSQL those queued at the same
/// moment are one statement ([`look_up_many_postgres`]).
pub(super) struct LookUp {
    pub(super) token_hash: Vec<u8>,
    pub(super) now: i64,
    pub(super) client_id: Option<String>,
}

/// PostgreSQL's look-up of several sessions, each as [`LookUp`] alone: one statement, the
/// look-ups bound as one array per column, each read by [`signed_in!`] beside it
/// (`LATERAL`). One answer for each, in their order.
pub(super) async fn look_up_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    look_ups: &[LookUp],
) -> Result<Vec<Option<SignedInRow>>, StoreError> {
    use super::sql::column;
    let rows = sqlx::query(LOOK_UP_MANY_POSTGRES)
        .bind(column(look_ups, |l| l.token_hash.as_slice()))
        .bind(column(look_ups, |l| l.now))
        .bind(column(look_ups, |l| l.client_id.as_deref()))
        .fetch_all(on)
        .await?;
    super::sql::by_ordinal(look_ups.len(), rows)
}

/// [`look_up_many_postgres`]'s statement (public for the query-plan test): `$1` the
/// sessions' hashes, `$2` each one's now, `$3` each one's client; each row says whose it is
/// by `ordinal`, its look-up's place from 1.
pub const LOOK_UP_MANY_POSTGRES: &str = concat!(
    "SELECT l.ordinal, r.* \
     FROM UNNEST($1::bytea[], $2::bigint[], $3::text[]) WITH ORDINALITY AS l(hash, at, client_id, ordinal) \
     CROSS JOIN LATERAL (",
    signed_in!("postgres", "l.hash", "l.at", "l.client_id"),
    ") r"
);

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::SessionStore for $ty {
            async fn insert_session(&self, token_hash: &[u8], s: &$crate::store::Session) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO sessions (token_hash, sid, user_id, auth_time, amr, acr, created_at, expires_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                )
                .bind(token_hash)
                .bind(&s.sid)
                .bind(&s.user_id)
                .bind(s.auth_time)
                .bind(s.amr.join(" "))
                .bind(&s.acr)
                .bind(s.created_at)
                .bind(s.expires_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_signed_in(
                &self,
                token_hash: &[u8],
                now: i64,
                client_id: Option<&str>,
            ) -> Result<Option<$crate::store::SignedIn>, $crate::store::StoreError> {
                let look_up = $crate::store::sessions::LookUp {
                    token_hash: token_hash.to_vec(),
                    now,
                    client_id: client_id.map(str::to_owned),
                };
                self.pool
                    .read_kind::<$crate::store::sessions::LookUp>(look_up)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn delete_session(&self, token_hash: &[u8]) -> Result<(), $crate::store::StoreError> {
                sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn list_user_sessions(&self, user_id: &str, now: i64) -> Result<Vec<$crate::store::Session>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::sessions::SessionRow> = sqlx::query_as(
                    "SELECT sid, user_id, auth_time, amr, acr, created_at, expires_at FROM sessions \
                     WHERE user_id = $1 AND expires_at > $2 ORDER BY created_at DESC, sid",
                )
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }
            async fn delete_user_session(&self, user_id: &str, sid: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND sid = $2")
                    .bind(user_id)
                    .bind(sid)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() > 0)
            }
            async fn delete_other_sessions(&self, user_id: &str, keep_sid: &str) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND sid <> $2")
                    .bind(user_id)
                    .bind(keep_sid)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
            async fn purge_sessions(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        $crate::store::sql::read_kind!(
            $dialect,
            $crate::store::sessions::LookUp,
            $crate::store::sessions::SignedInRow,
            $crate::store::sessions::signed_in!($dialect),
            |look_up| [&look_up.token_hash, look_up.now, &look_up.client_id],
            $crate::store::sessions::look_up_many_postgres
        );
    };
}
pub(crate) use sql_impl;
