//! Backchannel authentication requests (OpenID Connect CIBA, poll mode): a client asks for a
//! user's approval, the user decides on the account area's approvals page, the client polls.
//! The `auth_req_id` is stored as its hash; `id` names the request on the user's pages.

use async_trait::async_trait;

use super::devices::DeviceApproval;
use super::{FirstRefresh, StoreError};

/// One request for a user's approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackchannelRequest {
    pub auth_req_hash: Vec<u8>,
    /// A random identifier for the user's pages (not the `auth_req_id`).
    pub id: String,
    pub client_id: String,
    /// `None` when the hint named no user: such a request never completes.
    pub user_id: Option<String>,
    pub resources: Vec<String>,
    pub scope: String,
    /// RFC 9396 `authorization_details`, validated, as JSON text.
    pub authorization_details: Option<String>,
    pub binding_message: Option<String>,
    /// `acr_values` the client asked for.
    pub acr_values: Vec<String>,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub auth_time: Option<i64>,
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub sid: Option<String>,
    pub interval_secs: i64,
    pub last_polled_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

#[async_trait]
pub trait BackchannelStore: Send + Sync {
    async fn insert_backchannel(&self, r: &BackchannelRequest) -> Result<(), StoreError>;
    /// A user's pending, unexpired requests, oldest first.
    async fn pending_backchannel_for_user(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<BackchannelRequest>, StoreError>;
    /// Record `user_id`'s decision (`None`: denied) on their pending request `id`; false if
    /// it is not theirs or no longer pending.
    async fn decide_backchannel(
        &self,
        id: &str,
        user_id: &str,
        approved_by: Option<DeviceApproval<'_>>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The request behind an `auth_req_id`, unless already used.
    async fn backchannel_by_auth_req(
        &self,
        auth_req_hash: &[u8],
    ) -> Result<Option<BackchannelRequest>, StoreError>;
    /// Remember a poll and the interval the next one must wait.
    async fn record_backchannel_poll(
        &self,
        auth_req_hash: &[u8],
        now: i64,
        interval_secs: i64,
    ) -> Result<(), StoreError>;
    /// Spend the request of `client_id` if it is approved, unspent and unexpired: one atomic
    /// statement, so it yields tokens once. `None` when any of that fails.
    ///
    /// With `refresh` (a new family's id and its first token), the same write stores that
    /// refresh token for the request's grant if it spends the request and the request
    /// carried no RFC 9396 details (they approved one action, which no refresh token may
    /// outlive).
    async fn redeem_backchannel(
        &self,
        auth_req_hash: &[u8],
        client_id: &str,
        now: i64,
        refresh: Option<(&str, &FirstRefresh)>,
    ) -> Result<Option<BackchannelRequest>, StoreError>;
    /// Delete requests (and device codes) that expired before `before`; how many.
    async fn purge_polled_requests(&self, before: i64) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct BackchannelRow {
    auth_req_hash: Vec<u8>,
    id: String,
    client_id: String,
    user_id: Option<String>,
    resources: String,
    scope: String,
    authorization_details: Option<String>,
    binding_message: Option<String>,
    acr_values: String,
    status: String,
    auth_time: Option<i64>,
    amr: String,
    acr: Option<String>,
    sid: Option<String>,
    interval_secs: i64,
    last_polled_at: Option<i64>,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<BackchannelRow> for BackchannelRequest {
    type Error = StoreError;
    fn try_from(r: BackchannelRow) -> Result<Self, StoreError> {
        Ok(Self {
            auth_req_hash: r.auth_req_hash,
            id: r.id,
            client_id: r.client_id,
            user_id: r.user_id,
            resources: super::sql::from_json(&r.resources, "approval request resources")?,
            scope: r.scope,
            authorization_details: r.authorization_details,
            binding_message: r.binding_message,
            acr_values: super::sql::words(&r.acr_values),
            status: r.status,
            auth_time: r.auth_time,
            amr: super::sql::words(&r.amr),
            acr: r.acr,
            sid: r.sid,
            interval_secs: r.interval_secs,
            last_polled_at: r.last_polled_at,
            created_at: r.created_at,
            expires_at: r.expires_at,
        })
    }
}

macro_rules! columns {
    () => {
        "auth_req_hash, id, client_id, user_id, resources, scope, authorization_details, \
         binding_message, acr_values, status, auth_time, amr, acr, sid, interval_secs, \
         last_polled_at, created_at, expires_at"
    };
}
pub(crate) use columns;

/// What makes a stored request spendable by the client `$3` at `$2`.
macro_rules! redeemable {
    () => {
        "client_id = $3 AND status = 'approved' AND used_at IS NULL AND expires_at > $2"
    };
}
pub(crate) use redeemable;

/// [`BackchannelStore::redeem_backchannel`]'s statement, `redeem!()`: the request `$1`
/// spent at `$2` if [`redeemable!`] by `$3`, returning its row.
///
/// `redeem!($dialect, $on)`: the same spend, and the refresh token of the family `$4` (`$5`
/// to `$8`, as `refresh_tokens::insert_first!`) stored for its grant unless the request
/// carried RFC 9396 details; with whether the text is a whole transaction. On PostgreSQL one
/// statement, the spend in a writing `WITH`. On SQLite, which has none, a script of two, the
/// insert first: in one transaction it sees the request as the update will; alone (on the
/// target `$on`), the script is its own transaction (`sql::one_transaction!`).
macro_rules! redeem {
    () => {
        concat!(
            "UPDATE backchannel_requests SET used_at = $2 WHERE auth_req_hash = $1 AND ",
            $crate::store::backchannel::redeemable!(),
            " RETURNING ",
            $crate::store::backchannel::columns!()
        )
    };
    ("postgres", $on:expr) => {
        (
            concat!(
                "WITH spent AS (UPDATE backchannel_requests SET used_at = $2 \
                 WHERE auth_req_hash = $1 AND ",
                $crate::store::backchannel::redeemable!(),
                " RETURNING ",
                $crate::store::backchannel::columns!(),
                "), stored AS (",
                $crate::store::refresh_tokens::insert_first!(
                    "spent", "$4", "$5", "$2", "$6", "$7", "$8"
                ),
                " FROM spent WHERE spent.authorization_details IS NULL) SELECT ",
                $crate::store::backchannel::columns!(),
                " FROM spent"
            ),
            false,
        )
    };
    ("sqlite", $on:expr) => {
        $crate::store::sql::one_transaction!(
            $on,
            concat!(
                $crate::store::refresh_tokens::insert_first!(
                    "backchannel_requests",
                    "$4",
                    "$5",
                    "$2",
                    "$6",
                    "$7",
                    "$8"
                ),
                " FROM backchannel_requests WHERE auth_req_hash = $1 AND ",
                $crate::store::backchannel::redeemable!(),
                " AND authorization_details IS NULL; ",
                $crate::store::backchannel::redeem!()
            )
        )
    };
}
pub(crate) use redeem;

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::BackchannelStore for $ty {
            async fn insert_backchannel(&self, r: &$crate::store::BackchannelRequest) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO backchannel_requests (",
                    $crate::store::backchannel::columns!(),
                    ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18)"
                ))
                .bind(&r.auth_req_hash)
                .bind(&r.id)
                .bind(&r.client_id)
                .bind(&r.user_id)
                .bind($crate::store::sql::to_json(&r.resources)?)
                .bind(&r.scope)
                .bind(&r.authorization_details)
                .bind(&r.binding_message)
                .bind(r.acr_values.join(" "))
                .bind(&r.status)
                .bind(r.auth_time)
                .bind(r.amr.join(" "))
                .bind(&r.acr)
                .bind(&r.sid)
                .bind(r.interval_secs)
                .bind(r.last_polled_at)
                .bind(r.created_at)
                .bind(r.expires_at)
                .execute(&self.writer)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "approval request"))?;
                Ok(())
            }

            async fn pending_backchannel_for_user(&self, user_id: &str, now: i64) -> Result<Vec<$crate::store::BackchannelRequest>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::backchannel::BackchannelRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::backchannel::columns!(),
                    " FROM backchannel_requests WHERE user_id = $1 AND status = 'pending' AND expires_at > $2 \
                     ORDER BY created_at, id LIMIT 50"
                ))
                .bind(user_id)
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn decide_backchannel(&self, id: &str, user_id: &str, approved_by: Option<$crate::store::DeviceApproval<'_>>, now: i64) -> Result<bool, $crate::store::StoreError> {
                let status = if approved_by.is_some() { "approved" } else { "denied" };
                let r = sqlx::query(
                    "UPDATE backchannel_requests SET status = $3, auth_time = $4, amr = $5, acr = $6, sid = $7, decided_at = $8 \
                     WHERE id = $1 AND user_id = $2 AND status = 'pending' AND expires_at > $8",
                )
                .bind(id)
                .bind(user_id)
                .bind(status)
                .bind(approved_by.map(|a| a.auth_time))
                .bind(approved_by.map(|a| a.amr.join(" ")).unwrap_or_default())
                .bind(approved_by.and_then(|a| a.acr))
                .bind(approved_by.map(|a| a.sid))
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn backchannel_by_auth_req(&self, hash: &[u8]) -> Result<Option<$crate::store::BackchannelRequest>, $crate::store::StoreError> {
                let row: Option<$crate::store::backchannel::BackchannelRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::backchannel::columns!(),
                    " FROM backchannel_requests WHERE auth_req_hash = $1 AND used_at IS NULL"
                ))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn record_backchannel_poll(&self, hash: &[u8], now: i64, interval_secs: i64) -> Result<(), $crate::store::StoreError> {
                sqlx::query("UPDATE backchannel_requests SET last_polled_at = $2, interval_secs = $3 WHERE auth_req_hash = $1")
                    .bind(hash)
                    .bind(now)
                    .bind(interval_secs)
                    .execute(&self.writer)
                    .await?;
                Ok(())
            }

            async fn redeem_backchannel(
                &self,
                hash: &[u8],
                client_id: &str,
                now: i64,
                refresh: Option<(&str, &$crate::store::FirstRefresh)>,
            ) -> Result<Option<$crate::store::BackchannelRequest>, $crate::store::StoreError> {
                let (hash, client_id) = (hash.to_vec(), client_id.to_owned());
                let refresh = refresh.map(|(family, t)| (family.to_owned(), t.clone()));
                let row = self
                    .writer
                    .write(Box::new(move |on| {
                        let (hash, client_id, refresh) = (hash.clone(), client_id.clone(), refresh.clone());
                        Box::pin(async move {
                            let (statement, script) = match refresh {
                                None => ($crate::store::backchannel::redeem!(), false),
                                Some(_) => $crate::store::backchannel::redeem!($dialect, &on),
                            };
                            let mut redeem = sqlx::query(statement).bind(hash).bind(now).bind(client_id);
                            if let Some((family, t)) = &refresh {
                                redeem = $crate::store::refresh_tokens::bind_first!(redeem.bind(family), t);
                            }
                            let rows = on.fetch_script(redeem, script).await?;
                            Ok(rows
                                .iter()
                                .map(sqlx::FromRow::from_row)
                                .next()
                                .transpose()?)
                        })
                    }))
                    .await?;
                row.map(|r: $crate::store::backchannel::BackchannelRow| r.try_into()).transpose()
            }

            async fn purge_polled_requests(&self, before: i64) -> Result<u64, $crate::store::StoreError> {
                let a = sqlx::query("DELETE FROM backchannel_requests WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                let b = sqlx::query("DELETE FROM device_codes WHERE expires_at < $1")
                    .bind(before)
                    .execute(&self.writer)
                    .await?;
                Ok(a.rows_affected() + b.rows_affected())
            }
        }
    };
}
pub(crate) use sql_impl;
