//! Refresh tokens, stored by hash, in families: every rotation of one grant shares a
//! `family_id`, so a replayed token can revoke them all. A rotated token records the hash of
//! its successor, so a retry within the grace window can replace that successor (the decision
//! is the caller's, see [`Rotation`]; the atomicity is this module's).

use async_trait::async_trait;

use super::{NewAuditEvent, Spent, StoreError};

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

/// A refresh token as found by its hash, whatever became of it: what a rotation decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presented {
    pub token: RefreshToken,
    /// When it was rotated away (spent), if it was.
    pub used_at: Option<i64>,
    /// Revoked itself, or its whole family is.
    pub revoked: bool,
    /// The token it was rotated into, if one is recorded and still stored.
    pub successor: Option<Successor>,
}

impl Presented {
    /// Not spent, not revoked, not expired: what the `usable!` condition says in SQL.
    pub fn usable(&self, now: i64) -> bool {
        self.used_at.is_none() && self.token.expires_at > now && self.revocable(now)
    }

    /// Its grant still lives, so revoking it ends something: not revoked, its family not
    /// revoked, and not past its absolute expiry. A token a rotation spent, or one idle past its
    /// own expiry, still names a grant whose later tokens may be live. What the `revocable!`
    /// condition says in SQL.
    pub fn revocable(&self, now: i64) -> bool {
        !self.revoked && self.token.absolute_expires_at > now
    }
}

/// What became of the token a refresh token was rotated into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Successor {
    /// Neither spent nor revoked.
    Live,
    /// Rotated in its turn: the presented token is an older ancestor.
    Spent,
    Revoked,
}

/// What a rotation does with a presented refresh token. The caller decides (a protocol
/// decision, `crate::oauth`); [`RefreshTokenStore::rotate_refresh`] applies the decision under
/// a lock on the token, so concurrent rotations of one token are decided one after the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// Spend it and store the successor.
    Rotate,
    /// It was just rotated: revoke the successor recorded then and store the new one in its
    /// place, so at most one successor of the token is ever live.
    Replace,
    /// Refused as it is; nothing is written.
    Refuse,
    /// A replay: nothing is written here (the caller revokes the family).
    Replay,
    /// Unknown, expired or revoked: nothing is written.
    Invalid,
}

#[async_trait]
pub trait RefreshTokenStore: Send + Sync {
    async fn insert_refresh(&self, token: &RefreshToken) -> Result<(), StoreError>;
    /// Use a refresh token that does not rotate (a confidential client's): its idle expiry
    /// moves to `renew_until` (capped by the absolute expiry). A spent one is `Replayed`.
    async fn use_refresh(
        &self,
        token_hash: &[u8],
        now: i64,
        renew_until: i64,
    ) -> Result<Spent<RefreshToken>, StoreError>;
    /// Rotate a refresh token in one transaction: lock it (and the successor it records),
    /// ask `decide` what to do with what is found, and apply that: for `Rotate` and
    /// `Replace`, store `successor` and record it on the token. Returns the decision; an
    /// unknown hash is `Invalid` without asking.
    async fn rotate_refresh(
        &self,
        token_hash: &[u8],
        successor: &RefreshToken,
        now: i64,
        decide: &(dyn for<'p> Fn(&'p Presented) -> Rotation + Send + Sync),
    ) -> Result<Rotation, StoreError>;
    /// Rotate the token `token_hash` if it is usable at `now` (not spent, revoked or expired,
    /// nor of a revoked family) and `by` may rotate it: mark it used with `next` recorded as
    /// its successor, and store `next` ([`NextRefresh::of`] it), atomically. This is
    /// [`RefreshTokenStore::rotate_refresh`] when the decision can only be `Rotate`, in fewer
    /// round trips (one on PostgreSQL), and without reading the token first. Returns the
    /// token as stored; `None`, with nothing changed, when it is not usable or not `by`'s:
    /// `rotate_refresh` then decides what it is.
    async fn rotate_usable(
        &self,
        token_hash: &[u8],
        by: &Rotating<'_>,
        next: &NextRefresh,
        now: i64,
    ) -> Result<Option<RefreshToken>, StoreError>;
    /// Undo [`RefreshTokenStore::rotate_usable`]'s rotation of `token_hash` into `successor`,
    /// for a rotation the request's checks refused after it: the successor (never handed
    /// out) is deleted, and the token is usable again unless it was rotated again meanwhile
    /// (a retry within the grace window replaced the successor: it stays spent).
    async fn unrotate(&self, token_hash: &[u8], successor: &[u8]) -> Result<(), StoreError>;
    /// A refresh token by its hash whatever its state, with what became of its successor
    /// (read without a lock: for checks before a rotation decides).
    async fn find_refresh(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<Presented>, StoreError>;
    /// A refresh token that could still be used, without using it (for checks before it is
    /// spent, and for introspection).
    async fn get_refresh(
        &self,
        token_hash: &[u8],
        now: i64,
    ) -> Result<Option<RefreshToken>, StoreError>;
    /// Revoke every refresh token of a family; returns how many.
    async fn revoke_family(&self, family_id: &str, now: i64) -> Result<u64, StoreError>;
    /// Revoke the family of `client_id`'s token `token_hash` while that grant lives
    /// ([`Presented::revocable`]: the token may already be spent by a rotation, RFC 7009 §2.1
    /// "other tokens based on the same authorization grant"; [`RefreshTokenStore::find_refresh`],
    /// then [`RefreshTokenStore::revoke_family`]; one statement on PostgreSQL), and append
    /// its audit `event` as [`RevokedFamily::event`] completes it, in the same write (on
    /// PostgreSQL one statement, and those queued at the same moment one statement for all,
    /// committed together: `RevokeOf`). The family and its user, or `None`
    /// when nothing was revoked and no event stored (the token is unknown, another client's,
    /// past its absolute expiry, or its family is revoked already).
    async fn revoke_family_of(
        &self,
        token_hash: &[u8],
        client_id: &str,
        now: i64,
        event: &NewAuditEvent,
    ) -> Result<Option<RevokedFamily>, StoreError>;
    /// Forget refresh tokens past their absolute expiry.
    async fn purge_refresh_tokens(&self, now: i64) -> Result<u64, StoreError>;
}

/// A family [`RefreshTokenStore::revoke_family_of`] revoked.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RevokedFamily {
    pub family_id: String,
    pub user_id: String,
}

impl RevokedFamily {
    /// `event` as [`RefreshTokenStore::revoke_family_of`] stores it for this family: the
    /// family's user as its user, and the family's id added to its detail as `family_id`.
    /// (PostgreSQL's statement says the same in SQL.)
    pub fn event(&self, event: &NewAuditEvent) -> NewAuditEvent {
        let mut detail: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&event.detail).unwrap_or_default();
        detail.insert("family_id".into(), self.family_id.as_str().into());
        NewAuditEvent {
            user_id: Some(self.user_id.clone()),
            detail: serde_json::Value::Object(detail).to_string(),
            ..event.clone()
        }
    }
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

/// A `refresh_tokens` row with what a rotation needs beyond the token.
#[derive(sqlx::FromRow)]
pub(super) struct PresentedRow {
    #[sqlx(flatten)]
    pub(super) token: RefreshRow,
    pub(super) used_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
    pub(super) successor_hash: Option<Vec<u8>>,
    /// The family is remembered as revoked (see `presented_columns!`).
    pub(super) family_revoked: bool,
}

/// The columns of a [`PresentedRow`] after the token's own, for a statement on
/// `refresh_tokens` whose `$2` is the time now: whether the family is revoked is read in the
/// same statement as the token.
macro_rules! presented_columns {
    () => {
        ", used_at, revoked_at, successor_hash, EXISTS (SELECT 1 FROM used_jtis \
         WHERE key = 'family:' || refresh_tokens.family_id AND expires_at > $2) AS family_revoked"
    };
}
pub(crate) use presented_columns;

/// The state of a successor as read: `(used_at, revoked_at)`.
pub(super) fn successor_state(row: Option<(Option<i64>, Option<i64>)>) -> Option<Successor> {
    row.map(|(used_at, revoked_at)| match (used_at, revoked_at) {
        (_, Some(_)) => Successor::Revoked,
        (Some(_), None) => Successor::Spent,
        (None, None) => Successor::Live,
    })
}

macro_rules! columns {
    () => {
        "token_hash, family_id, client_id, user_id, resources, scope, auth_time, amr, acr, sid, \
         created_at, expires_at, absolute_expires_at, dpop_jkt"
    };
}
pub(crate) use columns;

/// The first refresh token of a new grant, stored by the write that spends what the grant
/// comes from (`CodeStore::redeem_code`, `DeviceStore::redeem_device`,
/// `BackchannelStore::redeem_backchannel`): its own columns here; the others are the
/// grant's (client, user, resources, scope, how the user signed in), and it is created at
/// the redemption's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstRefresh {
    pub token_hash: Vec<u8>,
    pub expires_at: i64,
    pub absolute_expires_at: i64,
    /// The key it is bound to (a public client's DPoP key, RFC 9449 §5).
    pub dpop_jkt: Option<String>,
}

/// Who rotates a refresh token in [`RefreshTokenStore::rotate_usable`], and what the token
/// must be for them to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotating<'a> {
    /// The client the token was issued to.
    pub client_id: &'a str,
    /// The key of the request's DPoP proof, if any: a token bound to a key rotates only with
    /// a proof made with it (RFC 9449 §5).
    pub dpop_jkt: Option<&'a str>,
    /// Rotate only a token granted at most one resource: a request that names no resource can
    /// only be for that one (RFC 8707 §2.2).
    pub one_resource: bool,
}

/// The token a refresh token rotates into: its own columns; the others are its parent's
/// (the same grant), and it is created at the rotation's time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextRefresh {
    pub token_hash: Vec<u8>,
    /// Its idle expiry, when the parent's absolute expiry is not earlier.
    pub idle_until: i64,
    /// The key it is bound to (a public client's DPoP key, RFC 9449 §5).
    pub dpop_jkt: Option<String>,
}

impl NextRefresh {
    /// The token it is as `parent`'s successor, created at `now` (what
    /// [`RefreshTokenStore::rotate_usable`]'s statement stores).
    pub fn of(&self, parent: &RefreshToken, now: i64) -> RefreshToken {
        RefreshToken {
            token_hash: self.token_hash.clone(),
            created_at: now,
            expires_at: self.idle_until.min(parent.absolute_expires_at),
            dpop_jkt: self.dpop_jkt.clone(),
            ..parent.clone()
        }
    }
}

/// The insert of a [`FirstRefresh`] (`$token`, `$expires`, `$absolute`, `$jkt`, created at
/// `$now`) of the family `$family`, for the grant of the row `$grant` names (a code, a
/// device request or a backchannel request: a table, or a `WITH`'s name), up to the `FROM`
/// that names it. The statement goes on with that `FROM`, and a `WHERE` that keeps only the
/// row it spends.
macro_rules! insert_first {
    ($grant:literal, $family:literal, $token:literal, $now:literal, $expires:literal, $absolute:literal, $jkt:literal) => {
        concat!(
            "INSERT INTO refresh_tokens (",
            $crate::store::refresh_tokens::columns!(),
            ") SELECT ",
            $token,
            ", ",
            $family,
            ", ",
            $grant,
            ".client_id, ",
            $grant,
            ".user_id, ",
            $grant,
            ".resources, ",
            $grant,
            ".scope, ",
            $grant,
            ".auth_time, ",
            $grant,
            ".amr, ",
            $grant,
            ".acr, ",
            $grant,
            ".sid, ",
            $now,
            ", ",
            $expires,
            ", ",
            $absolute,
            ", ",
            $jkt
        )
    };
}
pub(crate) use insert_first;

/// `$query` with the [`FirstRefresh`] `$t`'s columns bound next, in [`insert_first!`]'s
/// order of its own: the token, its idle and absolute expiries, its key.
macro_rules! bind_first {
    ($query:expr, $t:expr) => {
        $query
            .bind(&$t.token_hash)
            .bind($t.expires_at)
            .bind($t.absolute_expires_at)
            .bind(&$t.dpop_jkt)
    };
}
pub(crate) use bind_first;

/// A usable token at `$2` (or the placeholder given): not spent, not revoked, not expired,
/// and not of a revoked family (see `revoke_family`).
macro_rules! usable {
    () => {
        $crate::store::refresh_tokens::usable!("$2")
    };
    ($now:literal) => {
        concat!(
            "used_at IS NULL AND expires_at > ",
            $now,
            " AND ",
            $crate::store::refresh_tokens::revocable!($now)
        )
    };
}
pub(crate) use usable;

/// A token whose grant still lives at `$2` (or the placeholder given; [`Presented::revocable`]):
/// not revoked, not past its absolute expiry, and not of a revoked family; it may be spent or
/// idle past `expires_at`.
macro_rules! revocable {
    () => {
        $crate::store::refresh_tokens::revocable!("$2")
    };
    ($now:literal) => {
        concat!(
            "revoked_at IS NULL AND absolute_expires_at > ",
            $now,
            " AND NOT EXISTS (SELECT 1 FROM used_jtis \
               WHERE key = 'family:' || refresh_tokens.family_id AND expires_at > ",
            $now,
            ")"
        )
    };
}
pub(crate) use revocable;

/// The insert of a refresh token, to run on a pool or in a transaction.
macro_rules! insert {
    ($t:expr) => {
        $crate::store::refresh_tokens::insert_with!(
            sqlx::query(concat!(
                "INSERT INTO refresh_tokens (",
                $crate::store::refresh_tokens::columns!(),
                ") VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)"
            )),
            $t
        )
    };
}
pub(crate) use insert;

/// `$query` with a refresh token's columns bound as `$1` to `$14`, in `columns!` order.
macro_rules! insert_with {
    ($query:expr, $t:expr) => {
        $query
            .bind(&$t.token_hash)
            .bind(&$t.family_id)
            .bind(&$t.client_id)
            .bind(&$t.user_id)
            .bind($crate::store::sql::to_json(&$t.resources)?)
            .bind(&$t.scope)
            .bind($t.auth_time)
            .bind($t.amr.join(" "))
            .bind(&$t.acr)
            .bind(&$t.sid)
            .bind($t.created_at)
            .bind($t.expires_at)
            .bind($t.absolute_expires_at)
            .bind(&$t.dpop_jkt)
    };
}
pub(crate) use insert_with;

/// In a transaction: remember as revoked (as `revoke_family` does) every family with a token
/// matching `$who` that may still be live, so a successor a concurrent rotation inserts after
/// this transaction's revocation is born dead. `$who` is a condition on `refresh_tokens` with
/// `$1` bound to `$key`, and `$4` to `$extra` when given (`$2` and `$3` are taken).
macro_rules! mark_families_revoked {
    ($tx:expr, $who:literal, $key:expr, $now:expr $(, $extra:expr)?) => {
        sqlx::query(concat!(
            "INSERT INTO used_jtis (key, expires_at) \
             SELECT DISTINCT 'family:' || family_id, $3 FROM refresh_tokens \
             WHERE absolute_expires_at > $2 AND ",
            $who,
            " ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
        ))
        .bind($key)
        .bind($now)
        .bind($now + $crate::store::REVOKED_FAMILY_MEMORY_SECS)
        $(.bind($extra))?
        .execute($tx)
        .await?;
    };
}
pub(crate) use mark_families_revoked;

/// A [`Presented`] from its row, on `$conn` (a pool, or `&mut *tx`): the state of its
/// successor is read with `$successor_sql` (`$1` the successor's hash, returning `used_at,
/// revoked_at`).
macro_rules! presented {
    ($conn:expr, $row:expr, $successor_sql:expr) => {{
        let row: $crate::store::refresh_tokens::PresentedRow = $row;
        let token: $crate::store::RefreshToken = row.token.try_into()?;
        let successor = match &row.successor_hash {
            Some(h) => $crate::store::refresh_tokens::successor_state(
                sqlx::query_as($successor_sql)
                    .bind(h)
                    .fetch_optional($conn)
                    .await?,
            ),
            None => None,
        };
        $crate::store::refresh_tokens::Presented {
            token,
            used_at: row.used_at,
            revoked: row.revoked_at.is_some() || row.family_revoked,
            successor,
        }
    }};
}
pub(crate) use presented;

/// Revoke a family in one round trip: `$1` the family, `$2` now, `$3` until when the family is
/// remembered as revoked; one row per token revoked. The family is remembered as revoked (in
/// `used_jtis`), so a token of it that is still being issued (the first redemption of a code
/// racing its replay) is born dead, and [`usable!`] refuses every token of it from then on.
///
/// PostgreSQL does both in one statement, so one commit. SQLite has no writing `WITH`: the
/// statements go to the writer's connection together, the mark first, in the group commit's
/// transaction, or alone in one of their own ([`revoke_family_script!`]).
///
/// Each row returned is `('token', family)`, for a token revoked. (A client's revocation of
/// its token's family, with its audit event, is [`RevokeOf`]'s.)
macro_rules! revoke_family {
    ("postgres") => {
        "WITH marked AS (INSERT INTO used_jtis (key, expires_at) VALUES ('family:' || $1, $3) \
           ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at), \
         revoked AS (UPDATE refresh_tokens SET revoked_at = $2 \
           WHERE family_id = $1 AND revoked_at IS NULL RETURNING family_id) \
         SELECT 'token', family_id FROM revoked"
    };
    ("sqlite") => {
        "INSERT INTO used_jtis (key, expires_at) VALUES ('family:' || $1, $3) \
           ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at; \
         UPDATE refresh_tokens SET revoked_at = $2 \
           WHERE family_id = $1 AND revoked_at IS NULL RETURNING 'token', family_id"
    };
}
pub(crate) use revoke_family;

/// [`revoke_family!`]'s statement `$sql` (PostgreSQL's, chosen by the request) for a job
/// run `$on` (a `connections::Target`), and whether it is a whole transaction, to send with
/// `Connections::transaction_script`: SQLite's script, alone, in a transaction of its own.
macro_rules! revoke_family_script {
    ("postgres", $on:expr, $sql:expr) => {
        ($sql, false)
    };
    ("sqlite", $on:expr, $sql:expr) => {
        $crate::store::sql::one_transaction!(
            $on,
            $crate::store::refresh_tokens::revoke_family!("sqlite")
        )
    };
}
pub(crate) use revoke_family_script;

/// [`RefreshTokenStore::revoke_family_of`]: a write of the group commit ([`RevokeOf`]) on the
/// writer `$writer`, of the token `$hash` by the client `$client` at `$now`, with its audit
/// event `$event`; on PostgreSQL run again when the database aborts it to break a deadlock
/// (`sql::retrying`).
macro_rules! revoke_family_of {
    ("postgres", $writer:expr, $revoker:expr) => {
        $crate::store::sql::retrying(|| {
            $writer.write_kind::<$crate::store::refresh_tokens::RevokeOf>($revoker)
        })
        .await
    };
    ("sqlite", $writer:expr, $revoker:expr) => {
        $writer
            .write_kind::<$crate::store::refresh_tokens::RevokeOf>($revoker)
            .await
    };
}
pub(crate) use revoke_family_of;

/// The conditions, beyond [`usable!`] at `$5`, on the token a [`Rotating`] may rotate (in
/// [`rotate_usable!`]'s parameters): issued to the client `$6`, bound to no key or to `$7`,
/// and granted at most one resource unless `$8` is false. `$dialect` reads the resources'
/// JSON array.
macro_rules! rotating {
    ("postgres") => {
        $crate::store::refresh_tokens::rotating!(@ "json_array_length(resources::json)", "$6", "$7", "$8", "$5")
    };
    ("sqlite") => {
        $crate::store::refresh_tokens::rotating!(@ "json_array_length(resources)", "$6", "$7", "$8", "$5")
    };
    (@ $length:literal, $client:literal, $jkt:literal, $one:literal, $now:literal) => {
        concat!(
            "client_id = ", $client,
            " AND (dpop_jkt IS NULL OR dpop_jkt = ", $jkt,
            ") AND (NOT ", $one, " OR ", $length, " <= 1) AND ",
            $crate::store::refresh_tokens::usable!($now)
        )
    };
}
pub(crate) use rotating;

/// The columns of the successor `$successor` of the token of a row `$parent` names (a
/// table or a `WITH`'s name), in [`columns!`] order, for an `INSERT … SELECT`: the
/// [`NextRefresh`] `$successor`, `$idle`, `$jkt`, created at `$now`; the rest its parent's.
macro_rules! successor_values {
    ($parent:literal, $successor:literal, $idle:literal, $jkt:literal, $now:literal) => {
        concat!(
            $successor,
            ", ",
            $parent,
            ".family_id, ",
            $parent,
            ".client_id, ",
            $parent,
            ".user_id, ",
            $parent,
            ".resources, ",
            $parent,
            ".scope, ",
            $parent,
            ".auth_time, ",
            $parent,
            ".amr, ",
            $parent,
            ".acr, ",
            $parent,
            ".sid, ",
            $now,
            ", CASE WHEN ",
            $idle,
            " < ",
            $parent,
            ".absolute_expires_at THEN ",
            $idle,
            " ELSE ",
            $parent,
            ".absolute_expires_at END, ",
            $parent,
            ".absolute_expires_at, ",
            $jkt
        )
    };
}
pub(crate) use successor_values;

/// [`RefreshTokenStore::rotate_usable`]'s statement for a job run `$on` (a
/// `connections::Target`): the token `$4`, if a [`Rotating`] may rotate it ([`rotating!`]:
/// `$5` now, `$6` the client, `$7` the request's key, `$8` one resource), marked used with
/// its successor `$1`, and the successor (`$1`, `$2` its idle expiry, `$3` its key; the
/// rest its parent's) stored, returning the token's row if it rotated; and whether it is a
/// whole transaction, to send with `Connections::transaction_script`.
///
/// PostgreSQL does both in one statement, a round trip. SQLite has no writing `WITH`: the two
/// statements sent as one script (one hand-off to the writer's thread), the insert from the
/// token only if the update recorded this successor on it (a successor's hash is new).
/// Alone, the script is its own transaction; in a group commit's batch it runs in the
/// batch's.
macro_rules! rotate_usable {
    ("postgres", $on:expr) => {
        (
            concat!(
                "WITH rotated AS (UPDATE refresh_tokens SET used_at = $5, successor_hash = $1 \
                   WHERE token_hash = $4 AND ",
                $crate::store::refresh_tokens::rotating!("postgres"),
                " RETURNING ",
                $crate::store::refresh_tokens::columns!(),
                "), stored AS (INSERT INTO refresh_tokens (",
                $crate::store::refresh_tokens::columns!(),
                ") SELECT ",
                $crate::store::refresh_tokens::successor_values!("rotated", "$1", "$2", "$3", "$5"),
                " FROM rotated) SELECT ",
                $crate::store::refresh_tokens::columns!(),
                " FROM rotated"
            ),
            false,
        )
    };
    ("sqlite", $on:expr) => {
        $crate::store::sql::one_transaction!(
            $on,
            $crate::store::refresh_tokens::rotate_usable!(sqlite_statements)
        )
    };
    (sqlite_statements) => {
        concat!(
            "UPDATE refresh_tokens SET used_at = $5, successor_hash = $1 WHERE token_hash = $4 AND ",
            $crate::store::refresh_tokens::rotating!("sqlite"),
            " RETURNING ",
            $crate::store::refresh_tokens::columns!(),
            "; INSERT INTO refresh_tokens (",
            $crate::store::refresh_tokens::columns!(),
            ") SELECT ",
            $crate::store::refresh_tokens::successor_values!("parent", "$1", "$2", "$3", "$5"),
            " FROM refresh_tokens AS parent WHERE parent.token_hash = $4 AND parent.successor_hash = $1"
        )
    };
}
pub(crate) use rotate_usable;

/// A refresh token to store, as a write of the group commit.
pub(super) struct Insert(pub(super) RefreshToken);

/// A token to rotate at `now` into `next` if it is usable and `by` may rotate it
/// ([`RefreshTokenStore::rotate_usable`]), as a write of the group commit: what it returns
/// is the token, if it rotated.
pub(super) struct Rotate {
    pub(super) hash: Vec<u8>,
    pub(super) client_id: String,
    pub(super) dpop_jkt: Option<String>,
    pub(super) one_resource: bool,
    pub(super) next: NextRefresh,
    pub(super) now: i64,
}

impl Rotate {
    pub(super) fn new(hash: &[u8], by: &Rotating<'_>, next: &NextRefresh, now: i64) -> Self {
        Self {
            hash: hash.to_vec(),
            client_id: by.client_id.to_owned(),
            dpop_jkt: by.dpop_jkt.map(str::to_owned),
            one_resource: by.one_resource,
            next: next.clone(),
            now,
        }
    }
}

/// A family to revoke at `now` with `sql` (`revoke_family!`, chosen by the request whether
/// its commit may be deferred) ([`RefreshTokenStore::revoke_family`]), as a write of the
/// group commit: what it returns is how many of its tokens it revoked.
pub(super) struct RevokeFamily {
    pub(super) sql: &'static str,
    pub(super) family_id: String,
    pub(super) now: i64,
}

/// Of `rows` (`revoke_family!`'s: `'token'`, and the family), how many are `family`'s.
pub(super) fn tokens_of(rows: &[(String, String)], family: &str) -> u64 {
    rows.iter().filter(|(_, f)| f == family).count() as u64
}

/// SQLite's revocation of several families at one time, as `revoke_family!` does one: their
/// ids bound as one JSON array, one script (one hand-off), each family's revoked tokens
/// counted from the rows returned.
pub(super) async fn revoke_families(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    families: &[RevokeFamily],
) -> Result<Vec<u64>, StoreError> {
    let Some(first) = families.first() else {
        return Ok(Vec::new());
    };
    let ids: Vec<&str> = families.iter().map(|f| f.family_id.as_str()).collect();

    // The marks, then the tokens, as `revoke_family!`.
    let revoked: Vec<(String, String)> = sqlx::query_as(
        "INSERT INTO used_jtis (key, expires_at) SELECT 'family:' || value, $3 \
           FROM jsonb_each($1) WHERE true \
           ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at; \
         UPDATE refresh_tokens SET revoked_at = $2 \
           WHERE family_id IN (SELECT value FROM jsonb_each($1)) AND revoked_at IS NULL \
           RETURNING 'token', family_id",
    )
    .bind(super::sql::to_json(&ids)?)
    .bind(first.now)
    .bind(first.now + REVOKED_FAMILY_MEMORY_SECS)
    .fetch_all(on)
    .await?;
    Ok(families
        .iter()
        .map(|f| tokens_of(&revoked, &f.family_id))
        .collect())
}

/// A look-up of a usable refresh token by its hash at `now` ([`RefreshTokenStore::get_refresh`],
/// introspection's), as a kind of read (`Connections::read_kind`): on PostgreSQL those
/// queued at the same moment are one statement ([`look_up_many_postgres`]).
pub(super) struct LookUp {
    pub(super) token_hash: Vec<u8>,
    pub(super) now: i64,
}

/// PostgreSQL's look-up of several refresh tokens, each as [`LookUp`] alone: one statement,
/// the look-ups bound as one array per column and joined to the table by its primary key.
/// One answer for each, in their order.
pub(super) async fn look_up_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    look_ups: &[LookUp],
) -> Result<Vec<Option<RefreshRow>>, StoreError> {
    use super::sql::column;
    let rows = sqlx::query(LOOK_UP_MANY_POSTGRES)
        .bind(column(look_ups, |l| l.token_hash.as_slice()))
        .bind(column(look_ups, |l| l.now))
        .fetch_all(on)
        .await?;
    super::sql::by_ordinal(look_ups.len(), rows)
}

/// [`look_up_many_postgres`]'s statement (public for the query-plan test): `$1` the hashes,
/// `$2` each one's now; each row says whose it is by `ordinal`, its look-up's place from 1.
pub const LOOK_UP_MANY_POSTGRES: &str = concat!(
    "SELECT l.ordinal, ",
    columns!(),
    " FROM UNNEST($1::bytea[], $2::bigint[]) WITH ORDINALITY AS l(hash, at, ordinal) \
     JOIN refresh_tokens ON token_hash = l.hash AND ",
    usable!("l.at")
);

/// A client's revocation of its own token's family on PostgreSQL
/// ([`RefreshTokenStore::revoke_family_of`]), as a write of the group commit: those queued at
/// the same moment run as one statement ([`revoke_families_of_postgres`]), committed by itself.
/// Its commit waits for the disk, so the request has nothing to settle after it.
pub(super) struct RevokeOf {
    pub(super) token_hash: Vec<u8>,
    pub(super) client_id: String,
    pub(super) now: i64,
    /// Its audit event, as the request recorded it; [`RevokedFamily::event`] says what is
    /// stored.
    pub(super) event: NewAuditEvent,
}

impl super::connections::Kind<sqlx::Postgres> for RevokeOf {
    type Input = Self;
    type Output = Option<RevokedFamily>;

    /// One token twice in one statement would be decided twice on one snapshot; the later
    /// waits for a statement of its own, which finds the family revoked.
    fn clash(a: &Self, b: &Self) -> bool {
        a.token_hash == b.token_hash
    }

    fn one<'c>(
        on: super::connections::Target<'c, sqlx::Postgres>,
        revoker: &'c Self,
    ) -> futures_util::future::BoxFuture<'c, Result<Self::Output, StoreError>> {
        Box::pin(async move {
            let mut revoked =
                revoke_families_of_postgres(on, std::slice::from_ref(revoker)).await?;
            Ok(revoked.pop().flatten())
        })
    }

    const GROUPED: bool = true;

    fn many<'c>(
        on: super::connections::Target<'c, sqlx::Postgres>,
        revokers: &'c [Self],
    ) -> futures_util::future::BoxFuture<'c, Result<Vec<Self::Output>, StoreError>> {
        Box::pin(revoke_families_of_postgres(on, revokers))
    }
}

/// PostgreSQL's revocation of the families of several tokens, none the same, each as
/// [`RefreshTokenStore::revoke_family_of`] says: one statement ([`REVOKE_MANY_POSTGRES`]),
/// its revokers bound as one array per column. One answer for each, in their order.
pub(super) async fn revoke_families_of_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    revokers: &[RevokeOf],
) -> Result<Vec<Option<RevokedFamily>>, StoreError> {
    use super::sql::column;
    let revoked: Vec<(Vec<u8>, String, String)> = sqlx::query_as(REVOKE_MANY_POSTGRES)
        .bind(column(revokers, |r| r.token_hash.as_slice()))
        .bind(column(revokers, |r| r.client_id.as_str()))
        .bind(column(revokers, |r| r.now))
        .bind(column(revokers, |r| r.event.at))
        .bind(column(revokers, |r| r.event.kind))
        .bind(column(revokers, |r| r.event.client_id.as_deref()))
        .bind(column(revokers, |r| r.event.ip.as_deref()))
        .bind(column(revokers, |r| r.event.detail.as_str()))
        .bind(REVOKED_FAMILY_MEMORY_SECS)
        .fetch_all(on)
        .await?;
    Ok(super::sql::by_input(
        revokers,
        revoked,
        |r| r.token_hash.as_slice(),
        |(hash, _, _)| hash.as_slice(),
    )
    .into_iter()
    .map(|row| row.map(|(_, family_id, user_id)| RevokedFamily { family_id, user_id }))
    .collect())
}

/// [`revoke_families_of_postgres`]'s statement (public for the query-plan test). Each
/// revoker (`$1`… `$8`: the token's hash, the client, now, and its event's time, kind,
/// client, address and detail) revokes the family of its token if the token is the client's
/// and [`revocable!`] then, as [`revoke_family!`] does (the family remembered as revoked
/// until now + `$9`), and its event is stored with the family's user and the family's id
/// added to its detail, as [`RevokedFamily::event`] says. It returns the token, the family
/// and its user of each family revoked.
///
/// The tokens are locked first, in the order of their hashes (`FOR UPDATE`): a concurrent
/// revocation of one waits, then finds it revoked and does nothing, so one event is stored.
/// Of two tokens of one family in the same statement, the one with the lower hash revokes
/// it, and the other gets what it would have got after it: nothing. Two statements that
/// lock each other's families' tokens deadlock, and PostgreSQL aborts one; its revocations
/// then run again alone, and are retried.
#[doc(hidden)]
pub const REVOKE_MANY_POSTGRES: &str = concat!(
    "WITH r AS (SELECT * FROM UNNEST($1::bytea[], $2::text[], $3::bigint[], $4::bigint[], \
       $5::text[], $6::text[], $7::text[], $8::text[]) \
       AS r (hash, client, at, event_at, kind, event_client, ip, detail)), \
     locked AS (SELECT refresh_tokens.token_hash, refresh_tokens.family_id, \
       refresh_tokens.user_id, r.* \
       FROM r JOIN refresh_tokens ON refresh_tokens.token_hash = r.hash \
       WHERE refresh_tokens.client_id = r.client AND ",
    revocable!("r.at"),
    " ORDER BY refresh_tokens.token_hash FOR UPDATE OF refresh_tokens), \
     target AS (SELECT DISTINCT ON (family_id) * FROM locked ORDER BY family_id, token_hash), \
     marked AS (INSERT INTO used_jtis (key, expires_at) \
       SELECT 'family:' || family_id, at + $9 FROM target \
       ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at), \
     revoked AS (UPDATE refresh_tokens SET revoked_at = target.at FROM target \
       WHERE refresh_tokens.family_id = target.family_id \
         AND refresh_tokens.revoked_at IS NULL), \
     audited AS (INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) \
       SELECT event_at, kind, event_client, user_id, ip, \
         (detail::jsonb || jsonb_build_object('family_id', family_id))::text FROM target) \
     SELECT token_hash, family_id, user_id FROM target"
);

/// The revokers' tokens in [`REVOKE_MANY_SQLITE`]: `$1`'s rows (`r`) joined to their tokens,
/// those of their client and [`revocable!`] at `$2`.
macro_rules! revokers_tokens {
    () => {
        concat!(
            " FROM jsonb_each($1) AS r JOIN refresh_tokens \
               ON refresh_tokens.token_hash = unhex(r.value ->> 0) \
             WHERE refresh_tokens.client_id = r.value ->> 1 AND ",
            revocable!("$2")
        )
    };
}

/// [`revoke_families_of_sqlite`]'s script, for `sql::one_transaction!`.
macro_rules! revoke_many_sqlite {
    () => {
        concat!(
            "SELECT 'token', r.key, refresh_tokens.family_id, refresh_tokens.user_id",
            revokers_tokens!(),
            "; INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) \
             SELECT r.value ->> 2, r.value ->> 3, r.value ->> 4, refresh_tokens.user_id, \
               r.value ->> 5, json_set(r.value ->> 6, '$.family_id', refresh_tokens.family_id)",
            revokers_tokens!(),
            " AND r.key = (SELECT min(o.key) FROM jsonb_each($1) AS o \
               JOIN refresh_tokens AS ot ON ot.token_hash = unhex(o.value ->> 0) \
               WHERE ot.family_id = refresh_tokens.family_id AND ot.client_id = o.value ->> 1 \
                 AND ot.revoked_at IS NULL AND ot.absolute_expires_at > $2) \
             ORDER BY r.key RETURNING 'event', NULL, json_extract(detail, '$.family_id'), NULL; \
             UPDATE refresh_tokens SET revoked_at = $2 \
               WHERE revoked_at IS NULL AND family_id IN (SELECT refresh_tokens.family_id",
            revokers_tokens!(),
            "); INSERT INTO used_jtis (key, expires_at) \
             SELECT DISTINCT 'family:' || refresh_tokens.family_id, $3 \
             FROM jsonb_each($1) AS r JOIN refresh_tokens \
               ON refresh_tokens.token_hash = unhex(r.value ->> 0) \
             WHERE refresh_tokens.client_id = r.value ->> 1 AND refresh_tokens.revoked_at = $2 \
             ON CONFLICT (key) DO UPDATE SET expires_at = excluded.expires_at"
        )
    };
}

impl super::connections::Kind<sqlx::Sqlite> for RevokeOf {
    type Input = Self;
    type Output = Option<RevokedFamily>;

    /// One statement binds one time; one token twice would be decided twice by it.
    fn clash(a: &Self, b: &Self) -> bool {
        a.now != b.now || a.token_hash == b.token_hash
    }

    fn one<'c>(
        on: super::connections::Target<'c, sqlx::Sqlite>,
        revoker: &'c Self,
    ) -> futures_util::future::BoxFuture<'c, Result<Self::Output, StoreError>> {
        Box::pin(async move {
            let mut revoked = revoke_families_of_sqlite(on, std::slice::from_ref(revoker)).await?;
            Ok(revoked.pop().flatten())
        })
    }

    super::sql::many!("sqlite", revoke_families_of_sqlite);
}

/// SQLite's revocation of the families of several tokens, none the same, each as
/// [`RefreshTokenStore::revoke_family_of`] says, as PostgreSQL's [`REVOKE_MANY_POSTGRES`]
/// does: one script ([`REVOKE_MANY_SQLITE`]) on the writer, which looks the tokens up
/// itself, so a revocation is one hand-off to the writing thread, not a reader's look-up
/// before it. Alone, the script is its own transaction (`sql::one_transaction!`). One answer
/// for each, in their order.
pub(super) async fn revoke_families_of_sqlite(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    revokers: &[RevokeOf],
) -> Result<Vec<Option<RevokedFamily>>, StoreError> {
    use sqlx::Row;
    let Some(first) = revokers.first() else {
        return Ok(Vec::new());
    };
    let rows: Vec<_> = revokers
        .iter()
        .map(|r| {
            let e = &r.event;
            serde_json::json!([
                crate::util::hex(&r.token_hash),
                r.client_id,
                e.at,
                e.kind,
                e.client_id,
                e.ip,
                e.detail
            ])
        })
        .collect();
    let (script, whole) = super::sql::one_transaction!(on, revoke_many_sqlite!());
    let rows = on
        .fetch_script(
            sqlx::query(script)
                .bind(super::sql::to_json(&rows)?)
                .bind(first.now)
                .bind(first.now + REVOKED_FAMILY_MEMORY_SECS),
            whole,
        )
        .await?;
    // The revocable tokens (each its revoker's place, family and user), then the families
    // whose event was stored.
    let mut found: Vec<Option<RevokedFamily>> = vec![None; revokers.len()];
    let mut audited = Vec::new();
    for row in rows {
        let family_id: String = row.try_get(2)?;
        match row.try_get::<Option<i64>, _>(1)? {
            Some(place) => {
                let user_id: String = row.try_get(3)?;
                let at = usize::try_from(place)
                    .ok()
                    .and_then(|place| found.get_mut(place))
                    .ok_or_else(|| StoreError::Corrupt("a revocation's place".into()))?;
                *at = Some(RevokedFamily { family_id, user_id });
            }
            None => audited.push(family_id),
        }
    }
    // A family was revoked by the first of its revokers in the batch, which stored its event.
    let mut answers = Vec::with_capacity(revokers.len());
    for place in 0..found.len() {
        let first_of_family = found[place].as_ref().is_some_and(|f| {
            audited.contains(&f.family_id)
                && !found[..place]
                    .iter()
                    .flatten()
                    .any(|earlier| earlier.family_id == f.family_id)
        });
        answers.push(if first_of_family {
            found[place].clone()
        } else {
            None
        });
    }
    Ok(answers)
}

/// SQLite's revocation of the families of several tokens ([`revoke_families_of_sqlite`];
/// public for the query-plan test): `$1` the revokers, each `[token hash in hex, client,
/// event time, kind, client, address, detail]`, `$2` now, `$3` until when a family is
/// remembered as revoked. In order:
/// - the revokers' tokens that are their client's and [`revocable!`], each with its place in
///   `$1`, its family and its user (`'token'` rows);
/// - for each of their families, the event of its first revoker in `$1`, with the family's
///   user and its id added to the detail, as [`RevokedFamily::event`] says (`'event'` rows,
///   the family);
/// - their families' tokens revoked (the families are read before the update changes them);
/// - the families remembered as revoked: those of the revokers' tokens revoked at `$2`.
///
/// The first three find the same tokens: nothing they write changes whether a token is
/// revocable before the update. The group commit's writes are one at a time on SQLite's one
/// writer, so no other revocation runs between the look-up and the writes.
#[doc(hidden)]
pub const REVOKE_MANY_SQLITE: &str = revoke_many_sqlite!();

/// A token's columns, in `columns!` order, as elements of a JSON row (the hash in hex).
fn json_columns(t: &RefreshToken) -> Result<[serde_json::Value; 14], StoreError> {
    Ok([
        crate::util::hex(&t.token_hash).into(),
        t.family_id.as_str().into(),
        t.client_id.as_str().into(),
        t.user_id.as_str().into(),
        super::sql::to_json(&t.resources)?.into(),
        t.scope.as_str().into(),
        t.auth_time.into(),
        t.amr.join(" ").into(),
        t.acr.as_deref().into(),
        t.sid.as_deref().into(),
        t.created_at.into(),
        t.expires_at.into(),
        t.absolute_expires_at.into(),
        t.dpop_jkt.as_deref().into(),
    ])
}

/// The columns of a token in a row of `json_columns`, as `columns!` lists them (the
/// `SELECT` list of an insert from `jsonb_each`).
macro_rules! json_values {
    () => {
        "unhex(value ->> 0), value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
         value ->> 6, value ->> 7, value ->> 8, value ->> 9, value ->> 10, value ->> 11, \
         value ->> 12, value ->> 13"
    };
}

/// SQLite's insert of several tokens: one statement, bound as one JSON array.
pub(super) async fn insert_many(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    tokens: &[Insert],
) -> Result<Vec<()>, StoreError> {
    let rows = tokens
        .iter()
        .map(|Insert(t)| json_columns(t))
        .collect::<Result<Vec<_>, _>>()?;
    sqlx::query(concat!(
        "INSERT INTO refresh_tokens (",
        columns!(),
        ") SELECT ",
        json_values!(),
        " FROM jsonb_each($1)"
    ))
    .bind(super::sql::to_json(&rows)?)
    .execute(on)
    .await?;
    Ok(vec![(); tokens.len()])
}

/// SQLite's rotation of several tokens, none the same, as [`Rotate`] alone does each: one
/// `UPDATE … FROM` their JSON array marks each one its [`Rotating`] may rotate used with
/// its successor, returning those tokens, then one `INSERT … SELECT` stores the successors
/// of those it marked (a successor's hash is new, so a token that names it as its successor
/// was marked by this update). Both in one script, one hand-off to SQLite's thread.
pub(super) async fn rotate_many(
    on: super::connections::Target<'_, sqlx::Sqlite>,
    rotations: &[Rotate],
) -> Result<Vec<Option<RefreshToken>>, StoreError> {
    let rotated: Vec<RefreshRow> = sqlx::query_as(ROTATE_MANY_SQLITE)
        .bind(rotation_rows(rotations)?)
        .fetch_all(on)
        .await?;
    in_order(rotations, rotated)
}

/// [`rotate_many`]'s script (public for the query-plan test).
#[doc(hidden)]
pub const ROTATE_MANY_SQLITE: &str = concat!(
    "UPDATE refresh_tokens SET used_at = r.now, successor_hash = r.successor \
     FROM (SELECT unhex(value ->> 0) AS successor, unhex(value ->> 3) AS hash, \
       value ->> 4 AS now, value ->> 5 AS client, value ->> 6 AS jkt, value ->> 7 AS one \
       FROM jsonb_each($1)) AS r \
     WHERE refresh_tokens.token_hash = r.hash AND ",
    rotating!(@ "json_array_length(resources)", "r.client", "r.jkt", "r.one", "r.now"),
    " RETURNING ",
    columns!(),
    "; INSERT INTO refresh_tokens (",
    columns!(),
    ") SELECT ",
    successor_values!(
        "parent",
        "unhex(j.value ->> 0)",
        "j.value ->> 1",
        "j.value ->> 2",
        "j.value ->> 4"
    ),
    " FROM jsonb_each($1) AS j JOIN refresh_tokens AS parent \
       ON parent.token_hash = unhex(j.value ->> 3) \
         AND parent.successor_hash = unhex(j.value ->> 0)"
);

/// PostgreSQL's rotation of several tokens, none the same, as [`Rotate`] alone does each
/// and in one statement as it does: the `UPDATE … FROM` their JSON array marks each one its
/// [`Rotating`] may rotate, and the successors of those it marked are inserted from what it
/// returns. A token another transaction holds is waited for, and its condition checked
/// again on the row as committed, as alone.
pub(super) async fn rotate_many_postgres(
    on: super::connections::Target<'_, sqlx::Postgres>,
    rotations: &[Rotate],
) -> Result<Vec<Option<RefreshToken>>, StoreError> {
    let rotated: Vec<RefreshRow> = sqlx::query_as(ROTATE_MANY_POSTGRES)
        .bind(rotation_rows(rotations)?)
        .fetch_all(on)
        .await?;
    in_order(rotations, rotated)
}

/// [`rotate_many_postgres`]'s statement (public for the query-plan test).
#[doc(hidden)]
pub const ROTATE_MANY_POSTGRES: &str = concat!(
    "WITH r AS (SELECT decode(e ->> 0, 'hex') AS successor, (e ->> 1)::bigint AS idle, \
       e ->> 2 AS next_jkt, decode(e ->> 3, 'hex') AS hash, (e ->> 4)::bigint AS now, \
       e ->> 5 AS client, e ->> 6 AS jkt, (e ->> 7) = '1' AS one \
       FROM jsonb_array_elements($1::jsonb) AS e), \
     rotated AS (UPDATE refresh_tokens SET used_at = r.now, successor_hash = r.successor \
       FROM r WHERE refresh_tokens.token_hash = r.hash AND ",
    rotating!(@ "json_array_length(resources::json)", "r.client", "r.jkt", "r.one", "r.now"),
    " RETURNING ",
    columns!(),
    ", r.successor, r.idle, r.next_jkt, r.now), \
     stored AS (INSERT INTO refresh_tokens (",
    columns!(),
    ") SELECT ",
    successor_values!(
        "rotated",
        "rotated.successor",
        "rotated.idle",
        "rotated.next_jkt",
        "rotated.now"
    ),
    " FROM rotated) SELECT ",
    columns!(),
    " FROM rotated"
);

/// A batch's rotations as the JSON array its statement reads: each row as
/// `rotate_usable!`'s parameters `$1`…`$8`, from 0, the hashes in hex.
fn rotation_rows(rotations: &[Rotate]) -> Result<String, StoreError> {
    let rows: Vec<serde_json::Value> = rotations
        .iter()
        .map(|r| {
            serde_json::json!([
                crate::util::hex(&r.next.token_hash),
                r.next.idle_until,
                r.next.dpop_jkt,
                crate::util::hex(&r.hash),
                r.now,
                r.client_id,
                r.dpop_jkt,
                i64::from(r.one_resource),
            ])
        })
        .collect();
    super::sql::to_json(&rows)
}

/// One answer for each of `rotations`, in their order, from the tokens a batch's statement
/// rotated (`rotated`): the token, if it rotated.
fn in_order(
    rotations: &[Rotate],
    rotated: Vec<RefreshRow>,
) -> Result<Vec<Option<RefreshToken>>, StoreError> {
    let mut rotated = rotated
        .into_iter()
        .map(RefreshToken::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rotations
        .iter()
        .map(|r| {
            let i = rotated.iter().position(|t| t.token_hash == r.hash)?;
            Some(rotated.swap_remove(i))
        })
        .collect())
}

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::RefreshTokenStore for $ty {
            async fn insert_refresh(&self, t: &$crate::store::RefreshToken) -> Result<(), $crate::store::StoreError> {
                self.writer
                    .write_kind::<$crate::store::refresh_tokens::Insert>(
                        $crate::store::refresh_tokens::Insert(t.clone()),
                    )
                    .await
            }

            async fn use_refresh(&self, token_hash: &[u8], now: i64, renew_until: i64) -> Result<$crate::store::Spent<$crate::store::RefreshToken>, $crate::store::StoreError> {
                let row: Option<$crate::store::refresh_tokens::RefreshRow> = sqlx::query_as(concat!(
                    "UPDATE refresh_tokens SET \
                       expires_at = CASE WHEN $3 < absolute_expires_at THEN $3 ELSE absolute_expires_at END \
                     WHERE token_hash = $1 AND ",
                    $crate::store::refresh_tokens::usable!(),
                    " RETURNING ",
                    $crate::store::refresh_tokens::columns!()
                ))
                .bind(token_hash)
                .bind(now)
                .bind(renew_until)
                .fetch_optional(&self.writer)
                .await?;
                if let Some(r) = row {
                    return Ok($crate::store::Spent::Fresh(r.try_into()?));
                }
                let spent: Option<(String, Option<i64>)> =
                    sqlx::query_as("SELECT family_id, used_at FROM refresh_tokens WHERE token_hash = $1")
                        .bind(token_hash)
                        .fetch_optional(&self.writer)
                        .await?;
                Ok(match spent {
                    Some((family_id, Some(_))) => $crate::store::Spent::Replayed { family_id },
                    _ => $crate::store::Spent::Invalid,
                })
            }

            async fn rotate_refresh(
                &self,
                token_hash: &[u8],
                successor: &$crate::store::RefreshToken,
                now: i64,
                decide: &(dyn for<'p> Fn(&'p $crate::store::refresh_tokens::Presented) -> $crate::store::refresh_tokens::Rotation + Send + Sync),
            ) -> Result<$crate::store::refresh_tokens::Rotation, $crate::store::StoreError> {
                // Retried when PostgreSQL aborts it to break a deadlock with a revocation.
                $crate::store::sql::retrying(|| async move {
                    use $crate::store::refresh_tokens::Rotation;
                    // The lock: an update that changes nothing still takes the row's lock
                    // (PostgreSQL) or the database's write lock (SQLite) until the transaction
                    // ends. A concurrent rotation of the same token waits here and then reads
                    // what this one wrote, so the decisions come one after the other.
                    let mut tx = self.writer.begin().await?;
                    let row: Option<$crate::store::refresh_tokens::PresentedRow> = sqlx::query_as(concat!(
                        "UPDATE refresh_tokens SET used_at = used_at WHERE token_hash = $1 RETURNING ",
                        $crate::store::refresh_tokens::columns!(),
                        $crate::store::refresh_tokens::presented_columns!()
                    ))
                    .bind(token_hash)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                    let Some(row) = row else {
                        return Ok(Rotation::Invalid);
                    };
                    let previous = row.successor_hash.clone();
                    // The successor is locked too (ancestor before descendant, as every rotation
                    // does), so it cannot be rotated between being read as live and being revoked.
                    let presented = $crate::store::refresh_tokens::presented!(
                        &mut *tx,
                        row,
                        "UPDATE refresh_tokens SET used_at = used_at WHERE token_hash = $1 \
                         RETURNING used_at, revoked_at"
                    );
                    let decision = decide(&presented);
                    match decision {
                        Rotation::Rotate => {
                            sqlx::query(
                                "UPDATE refresh_tokens SET used_at = $2, successor_hash = $3 WHERE token_hash = $1",
                            )
                            .bind(token_hash)
                            .bind(now)
                            .bind(&successor.token_hash)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Rotation::Replace => {
                            // `used_at` keeps the first rotation's time: the window does not slide.
                            sqlx::query(
                                "UPDATE refresh_tokens SET revoked_at = $2 WHERE token_hash = $1 AND revoked_at IS NULL",
                            )
                            .bind(&previous)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query("UPDATE refresh_tokens SET successor_hash = $2 WHERE token_hash = $1")
                                .bind(token_hash)
                                .bind(&successor.token_hash)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Rotation::Refuse | Rotation::Replay | Rotation::Invalid => return Ok(decision),
                    }
                    $crate::store::refresh_tokens::insert!(successor).execute(&mut *tx).await?;
                    tx.commit().await?;
                    Ok(decision)
                })
                .await
            }

            async fn rotate_usable(
                &self,
                token_hash: &[u8],
                by: &$crate::store::refresh_tokens::Rotating<'_>,
                next: &$crate::store::refresh_tokens::NextRefresh,
                now: i64,
            ) -> Result<Option<$crate::store::RefreshToken>, $crate::store::StoreError> {
                self.writer
                    .write_kind::<$crate::store::refresh_tokens::Rotate>(
                        $crate::store::refresh_tokens::Rotate::new(token_hash, by, next, now),
                    )
                    .await
            }

            async fn unrotate(&self, token_hash: &[u8], successor: &[u8]) -> Result<(), $crate::store::StoreError> {
                // Retried when PostgreSQL aborts it to break a deadlock with a revocation.
                $crate::store::sql::retrying(|| async move {
                    // The token before its successor, as every rotation locks them.
                    let mut tx = self.writer.begin().await?;
                    sqlx::query(
                        "UPDATE refresh_tokens SET used_at = NULL, successor_hash = NULL \
                         WHERE token_hash = $1 AND successor_hash = $2",
                    )
                    .bind(token_hash)
                    .bind(successor)
                    .execute(&mut *tx)
                    .await?;
                    sqlx::query("DELETE FROM refresh_tokens WHERE token_hash = $1")
                        .bind(successor)
                        .execute(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(())
                })
                .await
            }

            async fn find_refresh(&self, token_hash: &[u8], now: i64) -> Result<Option<$crate::store::refresh_tokens::Presented>, $crate::store::StoreError> {
                let row: Option<$crate::store::refresh_tokens::PresentedRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::refresh_tokens::columns!(),
                    $crate::store::refresh_tokens::presented_columns!(),
                    " FROM refresh_tokens WHERE token_hash = $1"
                ))
                .bind(token_hash)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else {
                    return Ok(None);
                };
                Ok(Some($crate::store::refresh_tokens::presented!(
                    &self.pool,
                    row,
                    "SELECT used_at, revoked_at FROM refresh_tokens WHERE token_hash = $1"
                )))
            }

            async fn get_refresh(&self, token_hash: &[u8], now: i64) -> Result<Option<$crate::store::RefreshToken>, $crate::store::StoreError> {
                let look_up = $crate::store::refresh_tokens::LookUp { token_hash: token_hash.to_vec(), now };
                self.pool
                    .read_kind::<$crate::store::refresh_tokens::LookUp>(look_up)
                    .await?
                    .map(TryInto::try_into)
                    .transpose()
            }

            async fn revoke_family(&self, family_id: &str, now: i64) -> Result<u64, $crate::store::StoreError> {
                $crate::store::sql::retrying(|| async move {
                    // Chosen here, on the request's task, which says whether it may defer.
                    let sql = $crate::store::commits::deferrable!(
                        $dialect,
                        $crate::store::refresh_tokens::revoke_family!($dialect),
                        $crate::store::sql::not_awaited!(join)
                    );
                    self.writer
                        .write_kind::<$crate::store::refresh_tokens::RevokeFamily>(
                            $crate::store::refresh_tokens::RevokeFamily {
                                sql,
                                family_id: family_id.to_owned(),
                                now,
                            },
                        )
                        .await
                })
                .await
            }

            async fn revoke_family_of(
                &self,
                token_hash: &[u8],
                client_id: &str,
                now: i64,
                event: &$crate::store::NewAuditEvent,
            ) -> Result<Option<$crate::store::RevokedFamily>, $crate::store::StoreError> {
                $crate::store::refresh_tokens::revoke_family_of!(
                    $dialect,
                    self.writer,
                    $crate::store::refresh_tokens::RevokeOf {
                        token_hash: token_hash.to_vec(),
                        client_id: client_id.to_owned(),
                        now,
                        event: event.clone(),
                    }
                )
            }

            async fn purge_refresh_tokens(&self, now: i64) -> Result<u64, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM refresh_tokens WHERE absolute_expires_at < $1")
                    .bind(now)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected())
            }
        }

        $crate::store::sql::read_kind!(
            $dialect,
            $crate::store::refresh_tokens::LookUp,
            $crate::store::refresh_tokens::RefreshRow,
            concat!(
                "SELECT ",
                $crate::store::refresh_tokens::columns!(),
                " FROM refresh_tokens WHERE token_hash = $1 AND ",
                $crate::store::refresh_tokens::usable!()
            ),
            |look_up| [&look_up.token_hash, look_up.now],
            $crate::store::refresh_tokens::look_up_many_postgres
        );

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::refresh_tokens::Insert
        {
            type Input = Self;
            type Output = ();

            fn clash(a: &Self, b: &Self) -> bool {
                a.0.token_hash == b.0.token_hash
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                $crate::store::refresh_tokens::Insert(t): &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<(), $crate::store::StoreError>> {
                Box::pin(async move {
                    $crate::store::refresh_tokens::insert!(t).execute(on).await?;
                    Ok(())
                })
            }

            $crate::store::sql::many!($dialect, $crate::store::refresh_tokens::insert_many);
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::refresh_tokens::Rotate
        {
            type Input = Self;
            type Output = Option<$crate::store::RefreshToken>;

            fn clash(a: &Self, b: &Self) -> bool {
                a.hash == b.hash
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                r: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<Option<$crate::store::RefreshToken>, $crate::store::StoreError>> {
                // PostgreSQL: the update takes the token's row lock, and a concurrent rotation
                // or revocation of it is seen when the lock is granted (the condition is
                // checked again on the row as then committed). SQLite: the transaction holds
                // the write lock.
                Box::pin(async move {
                    let (statement, script) =
                        $crate::store::refresh_tokens::rotate_usable!($dialect, &on);
                    let rotate = sqlx::query(statement)
                        .bind(&r.next.token_hash)
                        .bind(r.next.idle_until)
                        .bind(&r.next.dpop_jkt)
                        .bind(&r.hash)
                        .bind(r.now)
                        .bind(&r.client_id)
                        .bind(&r.dpop_jkt)
                        .bind(r.one_resource);
                    match on.fetch_script(rotate, script).await?.first() {
                        Some(row) => {
                            let row: $crate::store::refresh_tokens::RefreshRow =
                                sqlx::FromRow::from_row(row)?;
                            Ok(Some(row.try_into()?))
                        }
                        None => Ok(None),
                    }
                })
            }

            $crate::store::sql::many!(
                $dialect,
                $crate::store::refresh_tokens::rotate_many,
                $crate::store::refresh_tokens::rotate_many_postgres
            );
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::refresh_tokens::RevokeFamily
        {
            type Input = Self;
            type Output = u64;

            /// One statement binds one time; and a family revoked twice by one would count
            /// its tokens twice.
            fn clash(a: &Self, b: &Self) -> bool {
                a.now != b.now || a.family_id == b.family_id
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                f: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<u64, $crate::store::StoreError>> {
                Box::pin(async move {
                    let (sql, script) =
                        $crate::store::refresh_tokens::revoke_family_script!($dialect, &on, f.sql);
                    let query = sqlx::query(sql)
                        .bind(&f.family_id)
                        .bind(f.now)
                        .bind(f.now + $crate::store::REVOKED_FAMILY_MEMORY_SECS);
                    let rows = on.fetch_script(query, script).await?;
                    let revoked = rows
                        .iter()
                        .map(sqlx::FromRow::from_row)
                        .collect::<Result<Vec<(String, String)>, _>>()?;
                    Ok($crate::store::refresh_tokens::tokens_of(&revoked, &f.family_id))
                })
            }

            $crate::store::sql::many!($dialect, $crate::store::refresh_tokens::revoke_families);
        }
    };
}
pub(crate) use sql_impl;
