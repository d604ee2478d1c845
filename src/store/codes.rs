//! Authorization codes, stored by hash and spent once.

use async_trait::async_trait;

use super::{FirstRefresh, Spent, StoreError};

/// An issued authorization code (stored by hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthCode {
    pub code_hash: Vec<u8>,
    /// Refresh tokens issued from this code share it, so a replay can revoke them.
    pub family_id: String,
    pub client_id: String,
    pub user_id: String,
    pub redirect_uri: Option<String>,
    pub code_challenge: String,
    pub resources: Vec<String>,
    pub scope: String,
    pub nonce: Option<String>,
    pub auth_time: i64,
    /// How the user signed in (RFC 8176 values).
    pub amr: Vec<String>,
    pub acr: Option<String>,
    pub sid: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    /// The `dpop_jkt` of the authorization request (RFC 9449 §10): the token request's
    /// proof must use this key.
    pub dpop_jkt: Option<String>,
    /// RFC 9396 `authorization_details` the user approved, validated, as JSON text.
    pub authorization_details: Option<String>,
}

/// What the code was issued for, as the token request presents it. A code is spent only by
/// a request that matches all of it.
#[derive(Debug, Clone, Copy)]
pub struct Redeemer<'a> {
    pub client_id: &'a str,
    /// The `redirect_uri` sent, if any: it must equal the one the authorization request
    /// sent, if that one did.
    pub redirect_uri: Option<&'a str>,
    /// The S256 challenge of the `code_verifier` sent: it must equal the code's.
    pub code_challenge: &'a str,
    /// The DPoP key of the request: it must be the code's, if the code is bound to one.
    pub dpop_jkt: Option<&'a str>,
}

#[async_trait]
pub trait CodeStore: Send + Sync {
    /// Store an issued code. On PostgreSQL its commit need not wait for the disk, and is not
    /// settled: it stands against a crash of this server, and a crash of the database that
    /// loses it fails closed (`codes::insert_many_postgres`).
    async fn insert_code(&self, code: &AuthCode) -> Result<(), StoreError>;
    /// A code as it stands, without spending it: `Fresh` while it may still be redeemed,
    /// `Replayed` once spent. (What explains a refused [`CodeStore::redeem_code`].)
    async fn peek_code(&self, code_hash: &[u8], now: i64) -> Result<Spent<AuthCode>, StoreError>;
    /// Spend a code that is live and matches `by`, of a user who exists and is not disabled:
    /// one atomic write, so of two concurrent redemptions one wins. `None` when nothing was
    /// spent: the code is unknown, expired, spent, or issued for something else
    /// ([`CodeStore::peek_code`] tells which), or its user is disabled.
    ///
    /// With `refresh`, the same write stores that refresh token, in the code's family, if
    /// it spends the code and the code carries no RFC 9396 details (no refresh token
    /// outlives those), and its commit waits for the disk. Without, its commit need not
    /// wait (`sql::not_awaited`; on PostgreSQL, a batch of redemptions committed together
    /// waits anyway): the caller makes it durable with
    /// [`CommitStore::settle`](crate::store::CommitStore::settle) before it answers.
    async fn redeem_code(
        &self,
        code_hash: &[u8],
        by: &Redeemer<'_>,
        now: i64,
        refresh: Option<&FirstRefresh>,
    ) -> Result<Option<AuthCode>, StoreError>;
    /// Forget codes that expired a day ago (kept that long to recognise replays).
    async fn purge_codes(&self, now: i64) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct CodeRow {
    code_hash: Vec<u8>,
    pub(super) family_id: String,
    client_id: String,
    user_id: String,
    redirect_uri: Option<String>,
    code_challenge: String,
    resources: String,
    scope: String,
    nonce: Option<String>,
    auth_time: i64,
    amr: String,
    acr: Option<String>,
    sid: Option<String>,
    created_at: i64,
    pub(super) expires_at: i64,
    dpop_jkt: Option<String>,
    authorization_details: Option<String>,
}

impl TryFrom<CodeRow> for AuthCode {
    type Error = StoreError;
    fn try_from(r: CodeRow) -> Result<Self, StoreError> {
        Ok(Self {
            code_hash: r.code_hash,
            family_id: r.family_id,
            client_id: r.client_id,
            user_id: r.user_id,
            redirect_uri: r.redirect_uri,
            code_challenge: r.code_challenge,
            resources: super::sql::from_json(&r.resources, "code resources")?,
            scope: r.scope,
            nonce: r.nonce,
            auth_time: r.auth_time,
            amr: super::sql::words(&r.amr),
            acr: r.acr,
            sid: r.sid,
            created_at: r.created_at,
            expires_at: r.expires_at,
            dpop_jkt: r.dpop_jkt,
            authorization_details: r.authorization_details,
        })
    }
}

/// A code row with whether it was spent.
#[derive(sqlx::FromRow)]
pub(super) struct PeekRow {
    pub(super) used_at: Option<i64>,
    #[sqlx(flatten)]
    pub(super) code: CodeRow,
}

/// A code to store, as a write of the group commit: the code, and its resources as JSON.
pub(super) struct Insert(pub(super) AuthCode, pub(super) String);

/// A code to spend at `now` if the redeemer matches it, with the refresh token to store if
/// it is spent ([`CodeStore::redeem_code`]), as a write of the group commit: what it returns
/// is the code's row if it was spent.
pub(super) struct Redeem {
    pub(super) hash: Vec<u8>,
    pub(super) client_id: String,
    pub(super) redirect_uri: Option<String>,
    pub(super) challenge: String,
    pub(super) dpop_jkt: Option<String>,
    pub(super) now: i64,
    pub(super) refresh: Option<FirstRefresh>,
}

/// What makes the code `$hash` spendable at `$now` by the redeemer `$client`, `$redirect`,
/// `$challenge` (the verifier's) and `$jkt` ([`Redeemer`]), in every statement that spends
/// one or stores the refresh token of one spent. Its user must exist and not be disabled
/// (one search by the users' key): a code approved just before its user was disabled is not
/// spent, and the grant need not read the user again.
macro_rules! redeemable {
    ($hash:literal, $now:literal, $client:literal, $redirect:literal, $challenge:literal, $jkt:literal) => {
        concat!(
            "auth_codes.code_hash = ",
            $hash,
            " AND auth_codes.used_at IS NULL AND auth_codes.expires_at > ",
            $now,
            " AND auth_codes.client_id = ",
            $client,
            " AND (auth_codes.redirect_uri IS NULL OR auth_codes.redirect_uri = ",
            $redirect,
            ") AND auth_codes.code_challenge = ",
            $challenge,
            " AND (auth_codes.dpop_jkt IS NULL OR auth_codes.dpop_jkt = ",
            $jkt,
            ") AND EXISTS (SELECT 1 FROM users WHERE users.id = auth_codes.user_id \
               AND users.disabled_at IS NULL)"
        )
    };
}
pub(crate) use redeemable;

/// [`Redeem`]'s statement alone: the code `$1` spent at `$2` if [`redeemable!`] by `$3` to
/// `$6`, returning its row; with `refresh`, also the refresh token (`$7` to `$10`) stored
/// for it, and then the statement and whether it is a whole transaction
/// (`sql::one_transaction!`, on the target `$on`). PostgreSQL: one statement, whose commit
/// waits for the disk only when it stores a refresh token. SQLite: with `refresh`, a script
/// of two (it has no writing `WITH`), the insert first: it sees the code as the update will,
/// in one transaction.
macro_rules! redeem {
    ("postgres", spend) => {
        concat!(
            "UPDATE auth_codes SET used_at = $2",
            $crate::store::sql::not_awaited!("postgres"),
            " WHERE ",
            $crate::store::codes::redeemable!("$1", "$2", "$3", "$4", "$5", "$6"),
            " RETURNING ",
            $crate::store::codes::columns!()
        )
    };
    ("postgres", refresh, $on:expr) => {
        (
            concat!(
                "WITH spent AS (UPDATE auth_codes SET used_at = $2 WHERE ",
                $crate::store::codes::redeemable!("$1", "$2", "$3", "$4", "$5", "$6"),
                " RETURNING ",
                $crate::store::codes::columns!(),
                "), stored AS (",
                $crate::store::refresh_tokens::insert_first!(
                    "spent",
                    "spent.family_id",
                    "$7",
                    "$2",
                    "$8",
                    "$9",
                    "$10"
                ),
                " FROM spent WHERE spent.authorization_details IS NULL) SELECT ",
                $crate::store::codes::columns!(),
                " FROM spent"
            ),
            false,
        )
    };
    ("sqlite", spend) => {
        concat!(
            "UPDATE auth_codes SET used_at = $2 WHERE ",
            $crate::store::codes::redeemable!("$1", "$2", "$3", "$4", "$5", "$6"),
            " RETURNING ",
            $crate::store::codes::columns!()
        )
    };
    ("sqlite", refresh, $on:expr) => {
        $crate::store::sql::one_transaction!(
            $on,
            concat!(
                $crate::store::refresh_tokens::insert_first!(
                    "auth_codes",
                    "auth_codes.family_id",
                    "$7",
                    "$2",
                    "$8",
                    "$9",
                    "$10"
                ),
                " FROM auth_codes WHERE auth_codes.authorization_details IS NULL AND ",
                $crate::store::codes::redeemable!("$1", "$2", "$3", "$4", "$5", "$6"),
                "; ",
                $crate::store::codes::redeem!("sqlite", spend)
            )
        )
    };
}
pub(crate) use redeem;

/// SQLite's insert of several codes: one statement, the codes bound as one JSON array (the
/// hashes in hex), so it has one shape whatever their number.
pub(super) async fn insert_many(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    codes: &[Insert],
) -> Result<Vec<()>, StoreError> {
    sqlx::query(concat!(
        "INSERT INTO auth_codes (",
        columns!(),
        ") SELECT unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
         value ->> 5, value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, \
         value ->> 11, value ->> 12, value ->> 13, value ->> 14, value ->> 15, value ->> 16 \
         FROM jsonb_each($1)"
    ))
    .bind(code_rows(codes)?)
    .execute(on)
    .await?;
    Ok(vec![(); codes.len()])
}

/// PostgreSQL's insert of several codes, as [`insert_many`]: one statement, committed by
/// itself (a batch of the group commit, `Kind::GROUPED`).
///
/// Committed by itself, its commit does not wait for the disk (`sql::not_awaited`), and
/// nothing settles it before the code is answered. A code is a one-use credential of a
/// minute, and losing one fails closed: its redemption is refused (`invalid_grant`) and the
/// agent asks again. The commit stands in PostgreSQL the moment it returns, so a crash of
/// this server or of any replica loses no code it answered (issue 17.4); only a crash of
/// PostgreSQL itself within its WAL writer's delay (at most three `wal_writer_delay`s) can,
/// as a crash of the machine can lose SQLite's last commits (`synchronous = NORMAL`). The
/// flush it saves was what PostgreSQL's signed-in `/authorize` waited for
/// (`bench/README.md`, "A code's storage without waiting for the disk on PostgreSQL").
/// In a batch of other kinds' writes it commits with their transaction, whose commit waits
/// (`sql::when_alone!`). A code stored alone (a batch of one, the `Kind`'s `one`) commits
/// as this does.
pub(super) async fn insert_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    codes: &[Insert],
) -> Result<Vec<()>, StoreError> {
    macro_rules! insert {
        ($from:expr) => {
            concat!(
                "INSERT INTO auth_codes (",
                columns!(),
                ") SELECT decode(e ->> 0, 'hex'), e ->> 1, e ->> 2, e ->> 3, e ->> 4, e ->> 5, \
                 e ->> 6, e ->> 7, e ->> 8, (e ->> 9)::bigint, e ->> 10, e ->> 11, e ->> 12, \
                 (e ->> 13)::bigint, (e ->> 14)::bigint, e ->> 15, e ->> 16 \
                 FROM jsonb_array_elements($1::jsonb) AS e",
                $from
            )
        };
    }
    let statement = super::sql::when_alone!(&on, insert, super::sql::not_awaited!(join));
    sqlx::query(statement)
        .bind(code_rows(codes)?)
        .execute(on)
        .await?;
    Ok(vec![(); codes.len()])
}

/// A batch's codes as the JSON array its statement reads: each code's columns, in
/// [`columns!`] order, the hash in hex.
fn code_rows(codes: &[Insert]) -> Result<String, StoreError> {
    let rows: Vec<_> = codes
        .iter()
        .map(|Insert(c, resources)| {
            serde_json::json!([
                crate::util::hex(&c.code_hash),
                c.family_id,
                c.client_id,
                c.user_id,
                c.redirect_uri,
                c.code_challenge,
                resources,
                c.scope,
                c.nonce,
                c.auth_time,
                c.amr.join(" "),
                c.acr,
                c.sid,
                c.created_at,
                c.expires_at,
                c.dpop_jkt,
                c.authorization_details,
            ])
        })
        .collect();
    super::sql::to_json(&rows)
}

/// SQLite's spending of several codes, none the same, as [`Redeem`] alone is each: first one
/// `INSERT … SELECT` stores the refresh tokens of the codes about to be spent, then one
/// `UPDATE … FROM` spends them, both from the redeemers' JSON array and in one script (one
/// hand-off to SQLite's thread; in one transaction, the insert sees the codes as the update
/// does). What it returns names the codes it spent, by hash.
pub(super) async fn redeem_many(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    spends: &[Redeem],
) -> Result<Vec<Option<CodeRow>>, StoreError> {
    macro_rules! redeemers {
        () => {
            "(SELECT unhex(value ->> 0) AS hash, value ->> 1 AS now, value ->> 2 AS client_id, \
               value ->> 3 AS redirect_uri, value ->> 4 AS challenge, value ->> 5 AS dpop_jkt, \
               unhex(value ->> 6) AS refresh_hash, value ->> 7 AS refresh_expires, \
               value ->> 8 AS refresh_absolute, value ->> 9 AS refresh_jkt \
               FROM jsonb_each($1)) AS r"
        };
    }
    // What makes a code spendable by its redeemer.
    macro_rules! spendable {
        () => {
            redeemable!(
                "r.hash",
                "r.now",
                "r.client_id",
                "r.redirect_uri",
                "r.challenge",
                "r.dpop_jkt"
            )
        };
    }
    let spent: Vec<CodeRow> = sqlx::query_as(concat!(
        super::refresh_tokens::insert_first!(
            "auth_codes",
            "auth_codes.family_id",
            "r.refresh_hash",
            "r.now",
            "r.refresh_expires",
            "r.refresh_absolute",
            "r.refresh_jkt"
        ),
        " FROM ",
        redeemers!(),
        " CROSS JOIN auth_codes \
         WHERE r.refresh_hash IS NOT NULL AND auth_codes.authorization_details IS NULL AND ",
        spendable!(),
        "; UPDATE auth_codes SET used_at = r.now FROM ",
        redeemers!(),
        " WHERE ",
        spendable!(),
        " RETURNING ",
        columns!()
    ))
    .bind(redeemer_rows(spends)?)
    .fetch_all(on)
    .await?;
    Ok(by_hash(spends, spent))
}

/// PostgreSQL's spending of several codes, none the same, as [`Redeem`] alone is each: one
/// statement, whose `UPDATE … FROM` spends the codes its redeemers' JSON array names and
/// stores the refresh token of each code it spent (from the spent row, so no other), and
/// whose commit waits for the disk. What it returns names the codes it spent, by hash.
pub(super) async fn redeem_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    spends: &[Redeem],
) -> Result<Vec<Option<CodeRow>>, StoreError> {
    let spent: Vec<CodeRow> = sqlx::query_as(REDEEM_MANY_POSTGRES)
        .bind(redeemer_rows(spends)?)
        .fetch_all(on)
        .await?;
    Ok(by_hash(spends, spent))
}

/// [`redeem_many_postgres`]'s statement (public for the query-plan test). The redeemers'
/// columns are named apart from the code's, which `RETURNING` names bare.
#[doc(hidden)]
pub const REDEEM_MANY_POSTGRES: &str = concat!(
    "WITH r AS (SELECT decode(e ->> 0, 'hex') AS hash, (e ->> 1)::bigint AS at, \
       e ->> 2 AS client, e ->> 3 AS redirect, e ->> 4 AS challenge, e ->> 5 AS jkt, \
       decode(e ->> 6, 'hex') AS refresh, (e ->> 7)::bigint AS refresh_idle, \
       (e ->> 8)::bigint AS refresh_absolute, e ->> 9 AS refresh_jkt \
       FROM jsonb_array_elements($1::jsonb) AS e), \
     spent AS (UPDATE auth_codes SET used_at = r.at FROM r WHERE ",
    redeemable!(
        "r.hash",
        "r.at",
        "r.client",
        "r.redirect",
        "r.challenge",
        "r.jkt"
    ),
    " RETURNING ",
    columns!(),
    ", r.refresh, r.at, r.refresh_idle, r.refresh_absolute, r.refresh_jkt), \
     stored AS (",
    super::refresh_tokens::insert_first!(
        "spent",
        "spent.family_id",
        "spent.refresh",
        "spent.at",
        "spent.refresh_idle",
        "spent.refresh_absolute",
        "spent.refresh_jkt"
    ),
    " FROM spent WHERE spent.refresh IS NOT NULL AND spent.authorization_details IS NULL) \
     SELECT ",
    columns!(),
    " FROM spent"
);

/// A batch's redemptions as the JSON array its statement reads: each redeemer, then the
/// refresh token to store (nulls without), the hashes in hex.
fn redeemer_rows(spends: &[Redeem]) -> Result<String, StoreError> {
    let rows: Vec<_> = spends
        .iter()
        .map(|r| {
            let refresh = r.refresh.as_ref();
            serde_json::json!([
                crate::util::hex(&r.hash),
                r.now,
                r.client_id,
                r.redirect_uri,
                r.challenge,
                r.dpop_jkt,
                refresh.map(|t| crate::util::hex(&t.token_hash)),
                refresh.map(|t| t.expires_at),
                refresh.map(|t| t.absolute_expires_at),
                refresh.and_then(|t| t.dpop_jkt.as_deref()),
            ])
        })
        .collect();
    super::sql::to_json(&rows)
}

/// One answer for each of `spends`, in their order, from the rows a batch's statement spent
/// (`RETURNING`, in no order): the row of its hash, if spent.
fn by_hash(spends: &[Redeem], spent: Vec<CodeRow>) -> Vec<Option<CodeRow>> {
    super::sql::by_input(
        spends,
        spent,
        |r| r.hash.as_slice(),
        |row| row.code_hash.as_slice(),
    )
}

macro_rules! columns {
    () => {
        "code_hash, family_id, client_id, user_id, redirect_uri, code_challenge, resources, \
         scope, nonce, auth_time, amr, acr, sid, created_at, expires_at, dpop_jkt, \
         authorization_details"
    };
}
pub(crate) use columns;

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::CodeStore for $ty {
            async fn insert_code(
                &self,
                c: &$crate::store::AuthCode,
            ) -> Result<(), $crate::store::StoreError> {
                let resources = $crate::store::sql::to_json(&c.resources)?;
                self.writer
                    .write_kind::<$crate::store::codes::Insert>($crate::store::codes::Insert(
                        c.clone(),
                        resources,
                    ))
                    .await
            }

            async fn peek_code(
                &self,
                code_hash: &[u8],
                now: i64,
            ) -> Result<$crate::store::Spent<$crate::store::AuthCode>, $crate::store::StoreError>
            {
                let found: Option<$crate::store::codes::PeekRow> = sqlx::query_as(concat!(
                    "SELECT used_at, ",
                    $crate::store::codes::columns!(),
                    " FROM auth_codes WHERE code_hash = $1"
                ))
                .bind(code_hash)
                .fetch_optional(&self.pool)
                .await?;
                Ok(match found {
                    Some(p) if p.used_at.is_some() => $crate::store::Spent::Replayed {
                        family_id: p.code.family_id.clone(),
                    },
                    Some(p) if p.code.expires_at > now => {
                        $crate::store::Spent::Fresh(p.code.try_into()?)
                    }
                    _ => $crate::store::Spent::Invalid,
                })
            }

            async fn redeem_code(
                &self,
                code_hash: &[u8],
                by: &$crate::store::Redeemer<'_>,
                now: i64,
                refresh: Option<&$crate::store::FirstRefresh>,
            ) -> Result<Option<$crate::store::AuthCode>, $crate::store::StoreError> {
                // The grant's checks, in the statement that spends: a redemption is one
                // write, with its refresh token, and a refused one writes nothing.
                let row = self
                    .writer
                    .write_kind::<$crate::store::codes::Redeem>($crate::store::codes::Redeem {
                        hash: code_hash.to_vec(),
                        client_id: by.client_id.to_owned(),
                        redirect_uri: by.redirect_uri.map(str::to_owned),
                        challenge: by.code_challenge.to_owned(),
                        dpop_jkt: by.dpop_jkt.map(str::to_owned),
                        now,
                        refresh: refresh.cloned(),
                    })
                    .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn purge_codes(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM auth_codes WHERE expires_at < $1")
                    .bind(now - 86_400)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::codes::Insert
        {
            type Input = Self;
            type Output = ();

            fn clash(a: &Self, b: &Self) -> bool {
                a.0.code_hash == b.0.code_hash
            }

            // A new row under a random hash: no other write takes its key.
            const TAKES_NO_LOCK: bool = true;

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                $crate::store::codes::Insert(c, resources): &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<(), $crate::store::StoreError>> {
                macro_rules! insert {
                    ($from:expr) => {
                        concat!(
                            "INSERT INTO auth_codes (",
                            $crate::store::codes::columns!(),
                            ") SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17",
                            $from
                        )
                    };
                }
                // As `insert_many_postgres`: alone, its commit need not wait for the disk.
                let statement = $crate::store::sql::when_alone!(
                    &on,
                    insert,
                    $crate::store::sql::not_awaited!($dialect)
                );
                Box::pin(async move {
                    sqlx::query(statement)
                    .bind(&c.code_hash)
                    .bind(&c.family_id)
                    .bind(&c.client_id)
                    .bind(&c.user_id)
                    .bind(&c.redirect_uri)
                    .bind(&c.code_challenge)
                    .bind(resources)
                    .bind(&c.scope)
                    .bind(&c.nonce)
                    .bind(c.auth_time)
                    .bind(c.amr.join(" "))
                    .bind(&c.acr)
                    .bind(&c.sid)
                    .bind(c.created_at)
                    .bind(c.expires_at)
                    .bind(&c.dpop_jkt)
                    .bind(&c.authorization_details)
                    .execute(on)
                    .await?;
                    Ok(())
                })
            }

            $crate::store::sql::many!(
                $dialect,
                $crate::store::codes::insert_many,
                $crate::store::codes::insert_many_postgres
            );
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::codes::Redeem
        {
            type Input = Self;
            type Output = Option<$crate::store::codes::CodeRow>;

            fn clash(a: &Self, b: &Self) -> bool {
                a.hash == b.hash
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                r: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<Self::Output, $crate::store::StoreError>>
            {
                Box::pin(async move {
                    let (statement, script) = match &r.refresh {
                        None => ($crate::store::codes::redeem!($dialect, spend), false),
                        Some(_) => $crate::store::codes::redeem!($dialect, refresh, &on),
                    };
                    let mut redeem = sqlx::query(statement)
                        .bind(&r.hash)
                        .bind(r.now)
                        .bind(&r.client_id)
                        .bind(&r.redirect_uri)
                        .bind(&r.challenge)
                        .bind(&r.dpop_jkt);
                    if let Some(t) = &r.refresh {
                        redeem = $crate::store::refresh_tokens::bind_first!(redeem, t);
                    }
                    let rows = on.fetch_script(redeem, script).await?;
                    Ok(rows.iter().map(sqlx::FromRow::from_row).next().transpose()?)
                })
            }

            $crate::store::sql::many!(
                $dialect,
                $crate::store::codes::redeem_many,
                $crate::store::codes::redeem_many_postgres
            );
        }
    };
}
pub(crate) use sql_impl;
