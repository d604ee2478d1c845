//! Identities at other issuers linked to local users (`linked_identities`): who an
//! enterprise IdP's user is here. The decisions (when to link, when to provision) are in
//! `crate::oauth::authn::linking`; this is only the record.

use async_trait::async_trait;
use serde::Serialize;

use super::{StoreError, User};

/// How an identity came to name its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LinkedBy {
    /// An operator linked it (CLI or admin API).
    Operator,
    /// Its verified email address matched the user's verified address.
    Email,
    /// The user was provisioned for it on its first use.
    Provisioned,
    /// The user linked it from their account page, signed in at both.
    User,
}

impl LinkedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::Email => "email",
            Self::Provisioned => "provisioned",
            Self::User => "user",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "operator" => Ok(Self::Operator),
            "email" => Ok(Self::Email),
            "provisioned" => Ok(Self::Provisioned),
            "user" => Ok(Self::User),
            other => Err(StoreError::Corrupt(format!("linked_by {other:?}"))),
        }
    }
}

/// One (issuer, subject) naming one local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedIdentity {
    pub issuer: String,
    pub subject: String,
    pub user_id: String,
    /// The address the issuer asserted when the link was made, if any.
    pub email: Option<String>,
    pub linked_by: LinkedBy,
    pub created_at: i64,
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    /// The link of (issuer, subject), if any.
    async fn find_identity(
        &self,
        issuer: &str,
        subject: &str,
    ) -> Result<Option<LinkedIdentity>, StoreError>;
    /// Link an identity unless it is linked already; the user it names afterwards (the
    /// existing link wins a race).
    async fn link_identity(&self, link: &LinkedIdentity) -> Result<String, StoreError>;
    /// Insert `user` and link `link` to it, in one transaction. When the identity was linked
    /// meanwhile, nothing is inserted and the user it names is returned instead. `Conflict`
    /// when the username is taken.
    async fn provision_user(
        &self,
        user: &User,
        link: &LinkedIdentity,
    ) -> Result<String, StoreError>;
    /// A user's linked identities, by issuer and subject.
    async fn identities_of(&self, user_id: &str) -> Result<Vec<LinkedIdentity>, StoreError>;
    /// Remove a user's link; `false` when that user has no such link.
    async fn unlink_identity(
        &self,
        user_id: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<bool, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct IdentityRow {
    issuer: String,
    subject: String,
    user_id: String,
    email: Option<String>,
    linked_by: String,
    created_at: i64,
}

impl TryFrom<IdentityRow> for LinkedIdentity {
    type Error = StoreError;

    fn try_from(r: IdentityRow) -> Result<Self, StoreError> {
        Ok(Self {
            linked_by: LinkedBy::parse(&r.linked_by)?,
            issuer: r.issuer,
            subject: r.subject,
            user_id: r.user_id,
            email: r.email,
            created_at: r.created_at,
        })
    }
}

macro_rules! columns {
    () => {
        "issuer, subject, user_id, email, linked_by, created_at"
    };
}
pub(crate) use columns;

/// The statement linking `$l` to `$user_id` unless its identity is linked already.
macro_rules! insert {
    ($l:expr, $user_id:expr) => {
        sqlx::query(concat!(
            "INSERT INTO linked_identities (",
            $crate::store::identities::columns!(),
            ") VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (issuer, subject) DO NOTHING"
        ))
        .bind(&$l.issuer)
        .bind(&$l.subject)
        .bind($user_id)
        .bind(&$l.email)
        .bind($l.linked_by.as_str())
        .bind($l.created_at)
    };
}
pub(crate) use insert;

/// The query for the user `$l`'s identity names now.
macro_rules! linked_user {
    ($l:expr) => {
        sqlx::query_as::<_, (String,)>(
            "SELECT user_id FROM linked_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(&$l.issuer)
        .bind(&$l.subject)
    };
}
pub(crate) use linked_user;

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::IdentityStore for $ty {
            async fn find_identity(
                &self,
                issuer: &str,
                subject: &str,
            ) -> Result<Option<$crate::store::LinkedIdentity>, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(issuer)
                    || !$crate::store::sql::may_be_stored(subject)
                {
                    return Ok(None);
                }
                let row: Option<$crate::store::identities::IdentityRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::identities::columns!(),
                    " FROM linked_identities WHERE issuer = $1 AND subject = $2"
                ))
                .bind(issuer)
                .bind(subject)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn link_identity(
                &self,
                l: &$crate::store::LinkedIdentity,
            ) -> Result<String, $crate::store::StoreError> {
                $crate::store::identities::insert!(l, &l.user_id)
                    .execute(&self.writer)
                    .await?;
                $crate::store::identities::linked_user!(l)
                    .fetch_one(&self.writer)
                    .await
                    .map(|(id,)| id)
                    .map_err(Into::into)
            }

            async fn provision_user(
                &self,
                u: &$crate::store::User,
                l: &$crate::store::LinkedIdentity,
            ) -> Result<String, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                $crate::store::users::insert!(u)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::sql::conflict(e, "username"))?;
                let linked = $crate::store::identities::insert!(l, &u.id)
                    .execute(&mut *tx)
                    .await?;
                if linked.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(u.id.clone());
                }
                // Another request linked the identity first: keep its user, drop ours.
                tx.rollback().await?;
                $crate::store::identities::linked_user!(l)
                    .fetch_one(&self.writer)
                    .await
                    .map(|(id,)| id)
                    .map_err(Into::into)
            }

            async fn identities_of(
                &self,
                user_id: &str,
            ) -> Result<Vec<$crate::store::LinkedIdentity>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::identities::IdentityRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::identities::columns!(),
                    " FROM linked_identities WHERE user_id = $1 ORDER BY issuer, subject"
                ))
                .bind(user_id)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn unlink_identity(
                &self,
                user_id: &str,
                issuer: &str,
                subject: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "DELETE FROM linked_identities \
                     WHERE user_id = $1 AND issuer = $2 AND subject = $3",
                )
                .bind(user_id)
                .bind(issuer)
                .bind(subject)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_impl;
