//! Device authorization requests (RFC 8628). The device code is stored as its hash; the user
//! code is short and typed by a person, so it is unique and its guessing is throttled.

use async_trait::async_trait;

use super::{FirstRefresh, StoreError};

/// A device authorization request (RFC 8628).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCode {
    pub device_code_hash: Vec<u8>,
    pub user_code: String,
    pub client_id: String,
    pub resources: Vec<String>,
    pub scope: String,
    /// `pending`, `approved` or `denied`.
    pub status: String,
    pub user_id: Option<String>,
    pub auth_time: Option<i64>,
    /// How the approving user signed in (RFC 8176 values).
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub sid: Option<String>,
    pub interval_secs: i64,
    pub last_polled_at: Option<i64>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// Who approved a device request, from their session.
#[derive(Debug, Clone, Copy)]
pub struct DeviceApproval<'a> {
    pub user_id: &'a str,
    pub auth_time: i64,
    pub amr: &'a [String],
    pub acr: Option<&'a str>,
    pub sid: &'a str,
}

#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// `Conflict` when the user code is taken (the caller draws another).
    async fn insert_device(&self, d: &DeviceCode) -> Result<(), StoreError>;
    /// A pending, unexpired request by its user code.
    async fn pending_device(
        &self,
        user_code: &str,
        now: i64,
    ) -> Result<Option<DeviceCode>, StoreError>;
    /// Record the user's decision (`None`: denied) and the scope they granted on a pending
    /// request; false if it was no longer pending.
    async fn decide_device(
        &self,
        user_code: &str,
        approved_by: Option<DeviceApproval<'_>>,
        scope: &str,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The request behind a device code, unless already used.
    async fn device_by_code(
        &self,
        device_code_hash: &[u8],
    ) -> Result<Option<DeviceCode>, StoreError>;
    /// Remember a poll and the interval the next one must wait.
    async fn record_poll(
        &self,
        device_code_hash: &[u8],
        now: i64,
        interval_secs: i64,
    ) -> Result<(), StoreError>;
    /// Spend the request of `client_id` if it is approved, unspent, unexpired and not polled
    /// again too soon (RFC 8628 §3.5: within its interval): one atomic statement, so it
    /// yields tokens once. `None` when any of that fails; [`DeviceStore::device_by_code`]
    /// then tells which.
    ///
    /// With `refresh` (a new family's id and its first token), the same write stores that
    /// refresh token for the request's grant if it spends the request, and its commit waits
    /// for the disk. Without, its commit may be deferred (`crate::store::commits`): the
    /// request's answer waits for it.
    async fn redeem_device(
        &self,
        device_code_hash: &[u8],
        client_id: &str,
        now: i64,
        refresh: Option<(&str, &FirstRefresh)>,
    ) -> Result<Option<DeviceCode>, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct DeviceRow {
    device_code_hash: Vec<u8>,
    user_code: String,
    client_id: String,
    resources: String,
    scope: String,
    status: String,
    user_id: Option<String>,
    auth_time: Option<i64>,
    amr: String,
    acr: Option<String>,
    sid: Option<String>,
    interval_secs: i64,
    last_polled_at: Option<i64>,
    created_at: i64,
    expires_at: i64,
}

impl TryFrom<DeviceRow> for DeviceCode {
    type Error = StoreError;
    fn try_from(r: DeviceRow) -> Result<Self, StoreError> {
        Ok(Self {
            device_code_hash: r.device_code_hash,
            user_code: r.user_code,
            client_id: r.client_id,
            resources: super::sql::from_json(&r.resources, "device request resources")?,
            scope: r.scope,
            status: r.status,
            user_id: r.user_id,
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

/// A device code to spend, with the refresh token to store if it is spent (its family's id
/// and the token; [`DeviceStore::redeem_device`]), as a write of the group commit: what it
/// returns is the request's row if it was spent.
pub(super) struct Redeem {
    /// The statement for one ([`redeem!`]), its commit deferred or not: chosen on the
    /// request's task, which says whether it may defer.
    pub(super) sql: &'static str,
    pub(super) hash: Vec<u8>,
    pub(super) client_id: String,
    pub(super) now: i64,
    pub(super) refresh: Option<(String, FirstRefresh)>,
}

/// What makes a stored request spendable by the client `$client` at `$now`, in [`redeem!`]
/// and [`redeem_many`]. The interval is the one `polling::check` enforces with `slow_down`.
macro_rules! redeemable {
    ($client:literal, $now:literal) => {
        concat!(
            "client_id = ",
            $client,
            " AND status = 'approved' AND used_at IS NULL AND expires_at > ",
            $now,
            " AND (last_polled_at IS NULL OR ",
            $now,
            " - last_polled_at >= interval_secs)"
        )
    };
}
pub(crate) use redeemable;

/// [`DeviceStore::redeem_device`]'s statement: the request `$1` spent at `$2` if
/// [`redeemable!`] by `$3`, returning its row; with `refresh`, also the refresh token of the
/// family `$4` (`$5` to `$8`, as `refresh_tokens::insert_first!`) stored for its grant. On
/// PostgreSQL, without `refresh`, its commit may be deferred (the spend in a `WITH`, so that
/// `sql::not_awaited!(join)` can follow the `SELECT`). On SQLite, with `refresh`, a script of
/// two (it has no writing `WITH`), the insert first: in one transaction, it sees the request
/// as the update will; alone, the script is its own transaction (`sql::one_transaction!`,
/// on the target `$on`).
macro_rules! redeem {
    ("sqlite") => {
        concat!(
            "UPDATE device_codes SET used_at = $2 WHERE device_code_hash = $1 AND ",
            $crate::store::devices::redeemable!("$3", "$2"),
            " RETURNING ",
            $crate::store::devices::columns!()
        )
    };
    ("postgres") => {
        $crate::store::commits::deferrable!(
            "postgres",
            $crate::store::devices::redeem!("postgres", with ""),
            $crate::store::sql::not_awaited!(join)
        )
    };
    // With the refresh token its commit waits for the disk: the one round trip of the
    // redemption, where a deferred commit would take a second to settle.
    ("postgres", refresh) => {
        $crate::store::devices::redeem!(
            "postgres",
            with concat!(
                ", stored AS (",
                $crate::store::refresh_tokens::insert_first!(
                    "spent", "$4", "$5", "$2", "$6", "$7", "$8"
                ),
                " FROM spent)"
            )
        )
    };
    // The spend in a `WITH`, then `$also` (more of the `WITH`), then its row.
    ("postgres", with $also:expr) => {
        concat!(
            "WITH spent AS (UPDATE device_codes SET used_at = $2 WHERE device_code_hash = $1 AND ",
            $crate::store::devices::redeemable!("$3", "$2"),
            " RETURNING ",
            $crate::store::devices::columns!(),
            ")",
            $also,
            " SELECT ",
            $crate::store::devices::columns!(),
            " FROM spent"
        )
    };
    ("sqlite", refresh) => {
        concat!(
            $crate::store::refresh_tokens::insert_first!(
                "device_codes", "$4", "$5", "$2", "$6", "$7", "$8"
            ),
            " FROM device_codes WHERE device_code_hash = $1 AND ",
            $crate::store::devices::redeemable!("$3", "$2"),
            "; ",
            $crate::store::devices::redeem!("sqlite")
        )
    };
    // The statement [`Redeem`] `$r` runs alone on `$on`, and whether it is a whole
    // transaction.
    ("postgres", $r:expr, $on:expr) => {
        ($r.sql, false)
    };
    ("sqlite", $r:expr, $on:expr) => {
        match &$r.refresh {
            None => ($r.sql, false),
            Some(_) => $crate::store::sql::one_transaction!(
                $on,
                $crate::store::devices::redeem!("sqlite", refresh)
            ),
        }
    };
}
pub(crate) use redeem;

/// SQLite's spending of several device codes, none the same, as [`Redeem`] alone is each:
/// first one `INSERT … SELECT` stores the refresh tokens of the requests about to be spent,
/// then one `UPDATE … FROM` spends them (each only if [`redeemable!`] by its own client),
/// both from the spends' JSON array (the hashes in hex) and in one script: one hand-off to
/// SQLite's thread, and in one transaction the insert sees the requests as the update does.
/// What it returns names the requests it spent, by hash.
pub(super) async fn redeem_many(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    spends: &[Redeem],
) -> Result<Vec<Option<DeviceRow>>, StoreError> {
    // The spends' columns named apart from the table's, which the statements name bare.
    macro_rules! spends {
        () => {
            "(SELECT unhex(value ->> 0) AS spent_hash, value ->> 1 AS spent_at, \
               value ->> 2 AS spent_by, value ->> 3 AS spent_family, \
               unhex(value ->> 4) AS spent_refresh, value ->> 5 AS spent_expires, \
               value ->> 6 AS spent_absolute, value ->> 7 AS spent_jkt FROM jsonb_each($1))"
        };
    }
    let spent: Vec<DeviceRow> = sqlx::query_as(concat!(
        super::refresh_tokens::insert_first!(
            "device_codes",
            "spent_family",
            "spent_refresh",
            "spent_at",
            "spent_expires",
            "spent_absolute",
            "spent_jkt"
        ),
        " FROM ",
        spends!(),
        " CROSS JOIN device_codes \
         WHERE spent_refresh IS NOT NULL AND device_code_hash = spent_hash AND ",
        redeemable!("spent_by", "spent_at"),
        "; UPDATE device_codes SET used_at = spent_at FROM ",
        spends!(),
        " WHERE device_code_hash = spent_hash AND ",
        redeemable!("spent_by", "spent_at"),
        " RETURNING ",
        columns!()
    ))
    .bind(spend_rows(spends)?)
    .fetch_all(on)
    .await?;
    Ok(by_hash(spends, spent))
}

/// PostgreSQL's spending of several device codes, as [`redeem_many`]: one statement, whose
/// `UPDATE … FROM` spends the requests [`redeemable!`] by their own clients and stores the
/// refresh token of each it spent, and whose commit waits for the disk. What it returns
/// names the requests it spent, by hash.
pub(super) async fn redeem_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    spends: &[Redeem],
) -> Result<Vec<Option<DeviceRow>>, StoreError> {
    let spent: Vec<DeviceRow> = sqlx::query_as(REDEEM_MANY_POSTGRES)
        .bind(spend_rows(spends)?)
        .fetch_all(on)
        .await?;
    Ok(by_hash(spends, spent))
}

/// [`redeem_many_postgres`]'s statement (public for the query-plan test). The spends'
/// columns are named apart from the table's, which the statement names bare.
#[doc(hidden)]
pub const REDEEM_MANY_POSTGRES: &str = concat!(
    "WITH s AS (SELECT decode(e ->> 0, 'hex') AS spent_hash, (e ->> 1)::bigint AS spent_at, \
       e ->> 2 AS spent_by, e ->> 3 AS spent_family, decode(e ->> 4, 'hex') AS spent_refresh, \
       (e ->> 5)::bigint AS spent_expires, (e ->> 6)::bigint AS spent_absolute, \
       e ->> 7 AS spent_jkt FROM jsonb_array_elements($1::jsonb) AS e), \
     spent AS (UPDATE device_codes SET used_at = spent_at FROM s \
       WHERE device_code_hash = spent_hash AND ",
    redeemable!("spent_by", "spent_at"),
    " RETURNING ",
    columns!(),
    ", spent_family, spent_refresh, spent_at, spent_expires, spent_absolute, spent_jkt), \
     stored AS (",
    super::refresh_tokens::insert_first!(
        "spent",
        "spent.spent_family",
        "spent.spent_refresh",
        "spent.spent_at",
        "spent.spent_expires",
        "spent.spent_absolute",
        "spent.spent_jkt"
    ),
    " FROM spent WHERE spent.spent_refresh IS NOT NULL) SELECT ",
    columns!(),
    " FROM spent"
);

/// A batch's spends as the JSON array its statement reads: each request's hash (in hex),
/// time and client, then the refresh token to store and its family (nulls without).
fn spend_rows(spends: &[Redeem]) -> Result<String, StoreError> {
    let rows: Vec<_> = spends
        .iter()
        .map(|r| {
            let (family, token) = r.refresh.as_ref().map(|(f, t)| (f, t)).unzip();
            serde_json::json!([
                crate::util::hex(&r.hash),
                r.now,
                r.client_id,
                family,
                token.map(|t| crate::util::hex(&t.token_hash)),
                token.map(|t| t.expires_at),
                token.map(|t| t.absolute_expires_at),
                token.and_then(|t| t.dpop_jkt.as_deref()),
            ])
        })
        .collect();
    super::sql::to_json(&rows)
}

/// One answer for each of `spends`, in their order, from the rows a batch's statement spent
/// (`RETURNING`, in no order): the row of its hash, if spent.
fn by_hash(spends: &[Redeem], spent: Vec<DeviceRow>) -> Vec<Option<DeviceRow>> {
    super::sql::by_input(
        spends,
        spent,
        |r| r.hash.as_slice(),
        |row| row.device_code_hash.as_slice(),
    )
}

macro_rules! columns {
    () => {
        "device_code_hash, user_code, client_id, resources, scope, status, user_id, auth_time, \
         amr, acr, sid, interval_secs, last_polled_at, created_at, expires_at"
    };
}
pub(crate) use columns;

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::DeviceStore for $ty {
            async fn insert_device(&self, d: &$crate::store::DeviceCode) -> Result<(), $crate::store::StoreError> {
                sqlx::query(concat!(
                    "INSERT INTO device_codes (",
                    $crate::store::devices::columns!(),
                    ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)"
                ))
                .bind(&d.device_code_hash)
                .bind(&d.user_code)
                .bind(&d.client_id)
                .bind($crate::store::sql::to_json(&d.resources)?)
                .bind(&d.scope)
                .bind(&d.status)
                .bind(&d.user_id)
                .bind(d.auth_time)
                .bind(d.amr.join(" "))
                .bind(&d.acr)
                .bind(&d.sid)
                .bind(d.interval_secs)
                .bind(d.last_polled_at)
                .bind(d.created_at)
                .bind(d.expires_at)
                .execute(&self.writer)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "user code"))?;
                Ok(())
            }

            async fn pending_device(&self, user_code: &str, now: i64) -> Result<Option<$crate::store::DeviceCode>, $crate::store::StoreError> {
                let row: Option<$crate::store::devices::DeviceRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::devices::columns!(),
                    " FROM device_codes WHERE user_code = $1 AND status = 'pending' AND expires_at > $2"
                ))
                .bind(user_code)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn decide_device(&self, user_code: &str, approved_by: Option<$crate::store::devices::DeviceApproval<'_>>, scope: &str, now: i64) -> Result<bool, $crate::store::StoreError> {
                let status = if approved_by.is_some() { "approved" } else { "denied" };
                let r = sqlx::query(
                    "UPDATE device_codes SET status = $2, user_id = $3, auth_time = $4, amr = $5, acr = $6, sid = $7, scope = $9 \
                     WHERE user_code = $1 AND status = 'pending' AND expires_at > $8",
                )
                .bind(user_code)
                .bind(status)
                .bind(approved_by.map(|a| a.user_id))
                .bind(approved_by.map(|a| a.auth_time))
                .bind(approved_by.map(|a| a.amr.join(" ")).unwrap_or_default())
                .bind(approved_by.and_then(|a| a.acr))
                .bind(approved_by.map(|a| a.sid))
                .bind(now)
                .bind(scope)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn device_by_code(&self, hash: &[u8]) -> Result<Option<$crate::store::DeviceCode>, $crate::store::StoreError> {
                let row: Option<$crate::store::devices::DeviceRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::devices::columns!(),
                    " FROM device_codes WHERE device_code_hash = $1 AND used_at IS NULL"
                ))
                .bind(hash)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn record_poll(&self, hash: &[u8], now: i64, interval_secs: i64) -> Result<(), $crate::store::StoreError> {
                let hash = hash.to_vec();
                self.writer
                    .write(Box::new(move |on| {
                        let hash = hash.clone();
                        Box::pin(async move {
                            sqlx::query("UPDATE device_codes SET last_polled_at = $2, interval_secs = $3 WHERE device_code_hash = $1")
                                .bind(hash)
                                .bind(now)
                                .bind(interval_secs)
                                .execute(on)
                                .await?;
                            Ok(())
                        })
                    }))
                    .await
            }

            async fn redeem_device(
                &self,
                hash: &[u8],
                client_id: &str,
                now: i64,
                refresh: Option<(&str, &$crate::store::FirstRefresh)>,
            ) -> Result<Option<$crate::store::DeviceCode>, $crate::store::StoreError> {
                let row = self
                    .writer
                    .write_kind::<$crate::store::devices::Redeem>($crate::store::devices::Redeem {
                        sql: match refresh {
                            None => $crate::store::devices::redeem!($dialect),
                            Some(_) => $crate::store::devices::redeem!($dialect, refresh),
                        },
                        hash: hash.to_vec(),
                        client_id: client_id.to_owned(),
                        now,
                        refresh: refresh.map(|(family, token)| (family.to_owned(), token.clone())),
                    })
                    .await?;
                row.map(TryInto::try_into).transpose()
            }
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::devices::Redeem
        {
            type Input = Self;
            type Output = Option<$crate::store::devices::DeviceRow>;

            fn clash(a: &Self, b: &Self) -> bool {
                a.hash == b.hash
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                r: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<Self::Output, $crate::store::StoreError>>
            {
                Box::pin(async move {
                    let (statement, script) = $crate::store::devices::redeem!($dialect, r, &on);
                    let mut redeem = sqlx::query(statement)
                        .bind(&r.hash)
                        .bind(r.now)
                        .bind(&r.client_id);
                    if let Some((family, t)) = &r.refresh {
                        redeem = $crate::store::refresh_tokens::bind_first!(redeem.bind(family), t);
                    }
                    let rows = on.fetch_script(redeem, script).await?;
                    Ok(rows.iter().map(sqlx::FromRow::from_row).next().transpose()?)
                })
            }

            $crate::store::sql::many!(
                $dialect,
                $crate::store::devices::redeem_many,
                $crate::store::devices::redeem_many_postgres
            );
        }
    };
}
pub(crate) use sql_impl;
