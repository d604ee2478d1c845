//! Clients: registered dynamically (RFC 7591) or by an operator. Secrets are stored only as
//! hashes; the metadata as JSON text.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::connections::{Kind, Target};
use super::rate_limits::{Counted, RegistrationCount};
use super::{NewAuditEvent, StoreError};

/// How a client came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientKind {
    /// Registered through `POST /register` (RFC 7591).
    Dynamic,
    /// Pre-registered by an operator (CLI or admin API).
    Static,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dynamic => "dynamic",
            Self::Static => "static",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        match s {
            "dynamic" => Ok(Self::Dynamic),
            "static" => Ok(Self::Static),
            other => Err(StoreError::Corrupt(format!("client kind {other:?}"))),
        }
    }
}

/// How a client proves itself at the token endpoint (RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    /// A public client: no authentication, PKCE only.
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 client assertions signed with a key from the client's `jwks`/`jwks_uri`.
    PrivateKeyJwt,
}

impl AuthMethod {
    pub const ALL: [AuthMethod; 4] = [
        Self::None,
        Self::ClientSecretBasic,
        Self::ClientSecretPost,
        Self::PrivateKeyJwt,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "'{s}' is not supported; use one of: {}",
                    Self::ALL.map(Self::as_str).join(", ")
                )
            })
    }

    /// Does the client hold a shared secret issued by us?
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }
}

/// `web` or `native` (OpenID Connect Registration §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApplicationType {
    Web,
    Native,
}

/// Validated client metadata, as stored and as returned to the client (the checks are in
/// `crate::oauth::client_metadata`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientMetadata {
    pub redirect_uris: Vec<String>,
    pub token_endpoint_auth_method: AuthMethod,
    /// Every method the client may authenticate with, when it listed several (OpenID Connect
    /// RP Metadata Choices §2), `token_endpoint_auth_method` first; empty when it named one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_endpoint_auth_methods_supported: Vec<AuthMethod>,
    /// Grant type names as registered (`authorization_code`, or a grant's URN).
    pub grant_types: Vec<String>,
    pub response_types: Vec<String>,
    pub application_type: ApplicationType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
    /// Operator-granted: may call the introspection endpoint (a resource server). Never set
    /// by registration or metadata documents.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub may_introspect: bool,
    /// Operator-granted: may get tokens for the admin API (`concierge admin-client create`).
    /// Never set by registration or metadata documents.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    /// RFC 9449 §5.2: token requests without a DPoP proof are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dpop_bound_access_tokens: bool,
    /// OpenID Connect Dynamic Client Registration §2; here a floor for the client's sign-ins
    /// (`crate::oauth::authn::acr`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_acr_values: Vec<String>,
    /// OpenID Connect CIBA Core §4: `poll` for a client that registered the CIBA grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backchannel_token_delivery_mode: Option<String>,
}

impl ClientMetadata {
    /// Did the client register `grant_type`?
    pub fn has_grant(&self, grant_type: &str) -> bool {
        self.grant_types.iter().any(|g| g == grant_type)
    }

    /// May the client authenticate with `method`? Its registered method or one it listed;
    /// and a client that holds a secret may present it either way, in the Authorization
    /// header or the body (the MCP SDKs differ on which).
    pub fn accepts(&self, method: AuthMethod) -> bool {
        method == self.token_endpoint_auth_method
            || self.token_endpoint_auth_methods_supported.contains(&method)
            || (method.uses_secret() && self.token_endpoint_auth_method.uses_secret())
    }

    /// Can the client act without authenticating (a public client, or one that listed
    /// `none` among its methods)? Such a client's refresh tokens rotate and bind to DPoP.
    pub fn is_public(&self) -> bool {
        self.accepts(AuthMethod::None)
    }

    /// The methods the client may authenticate with, for messages.
    pub fn accepted_methods(&self) -> String {
        let mut names = vec![self.token_endpoint_auth_method.as_str()];
        if self.token_endpoint_auth_method.uses_secret() {
            names = vec!["client_secret_basic", "client_secret_post"];
        }
        for m in &self.token_endpoint_auth_methods_supported {
            if !names.contains(&m.as_str()) {
                names.push(m.as_str());
            }
        }
        names.join(" or ")
    }
}

/// A stored client. Secrets are present only as hashes.
#[derive(Clone)]
pub struct ClientRecord {
    pub client_id: String,
    pub kind: ClientKind,
    pub secret_hash: Option<Vec<u8>>,
    /// The secret being rotated out, still accepted until it expires.
    pub previous_secret: Option<PreviousSecret>,
    pub metadata: ClientMetadata,
    pub registration_token_hash: Option<Vec<u8>>,
    pub registered_from: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    /// While set, the client disappears at this time unless it is used first.
    pub expires_at: Option<i64>,
}

/// A client secret being rotated out: SHA-256 of it, and when it stops working.
#[derive(Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub hash: Vec<u8>,
    pub expires_at: i64,
}

impl std::fmt::Debug for PreviousSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreviousSecret")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl PreviousSecret {
    /// Does `secret` match it while it still works at `now`? Constant time in the bytes.
    pub fn accepts(&self, secret: &str, now: i64) -> bool {
        now < self.expires_at && crate::util::verify_secret(secret, &self.hash)
    }
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("client_id", &self.client_id)
            .field("kind", &self.kind)
            .field(
                "secret_hash",
                &self.secret_hash.as_ref().map(|_| "<redacted>"),
            )
            .field("metadata", &self.metadata)
            .field("registered_from", &self.registered_from)
            .field("created_at", &self.created_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

#[async_trait]
pub trait ClientStore: Send + Sync {
    /// Insert a new client; `Conflict` when the id is taken.
    async fn insert_client(&self, client: &ClientRecord) -> Result<(), StoreError>;
    /// Count a registration in the rate limits and, if the count admits it
    /// ([`RegistrationCount`]), insert its `client` and append its audit `event`, as one
    /// write: a refused registration stores neither, and an admitted one waits for one
    /// commit (on PostgreSQL, inside a request, the request's settle makes it durable:
    /// `commits`). Returns the count; `Conflict` when the id is taken.
    async fn register_client(
        &self,
        client: &ClientRecord,
        count: &RegistrationCount,
        event: &NewAuditEvent,
    ) -> Result<Counted, StoreError>;
    /// The client, unless it does not exist or its unused registration expired by `now`.
    async fn get_client(
        &self,
        client_id: &str,
        now: i64,
    ) -> Result<Option<ClientRecord>, StoreError>;
    /// Replace metadata, secret hash, previous secret and `updated_at`. False when there is no such client.
    async fn update_client(&self, client: &ClientRecord) -> Result<bool, StoreError>;
    async fn delete_client(&self, client_id: &str) -> Result<bool, StoreError>;
    /// Every client, including unused registrations not yet expired, oldest first.
    async fn list_clients(&self, now: i64) -> Result<Vec<ClientRecord>, StoreError>;
    /// Record a use: sets `last_used_at` and ends the unused-registration expiry.
    async fn touch_client(&self, client_id: &str, now: i64) -> Result<(), StoreError>;
    /// Delete registrations that expired unused; returns how many. One that holds a live
    /// refresh token was used after all (recording the use failed): its expiry ends instead.
    async fn delete_expired_clients(&self, now: i64) -> Result<u64, StoreError>;
}

/// A `clients` row.
#[derive(sqlx::FromRow)]
pub(super) struct ClientRow {
    client_id: String,
    kind: String,
    secret_hash: Option<Vec<u8>>,
    previous_secret_hash: Option<Vec<u8>>,
    previous_secret_expires_at: Option<i64>,
    metadata: String,
    registration_token_hash: Option<Vec<u8>>,
    registered_from: Option<String>,
    created_at: i64,
    updated_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
}

impl TryFrom<ClientRow> for ClientRecord {
    type Error = StoreError;
    fn try_from(r: ClientRow) -> Result<Self, StoreError> {
        let metadata =
            super::sql::from_json(&r.metadata, &format!("client {} metadata", r.client_id))?;
        Ok(Self {
            kind: ClientKind::parse(&r.kind)?,
            client_id: r.client_id,
            secret_hash: r.secret_hash,
            previous_secret: r
                .previous_secret_hash
                .zip(r.previous_secret_expires_at)
                .map(|(hash, expires_at)| PreviousSecret { hash, expires_at }),
            metadata,
            registration_token_hash: r.registration_token_hash,
            registered_from: r.registered_from,
            created_at: r.created_at,
            updated_at: r.updated_at,
            last_used_at: r.last_used_at,
            expires_at: r.expires_at,
        })
    }
}

/// The columns of [`ClientRow`] (a macro so `concat!` can build static SQL).
macro_rules! columns {
    () => {
        "client_id, kind, secret_hash, metadata, registration_token_hash, registered_from, \
         created_at, updated_at, last_used_at, expires_at, previous_secret_hash, \
         previous_secret_expires_at"
    };
}
pub(crate) use columns;

/// The insert of a client, its row from `$1`…`$12` (in [`columns!`]'s order): a `SELECT`
/// without `FROM`, so a deferred commit's `FROM` can follow (`commits`).
macro_rules! insert {
    () => {
        concat!(
            "INSERT INTO clients (",
            $crate::store::clients::columns!(),
            ") SELECT $1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12"
        )
    };
}
pub(crate) use insert;

/// `$query` with a client's row bound next, in [`columns!`]'s order: the client `$c` and its
/// metadata as JSON, `$metadata`.
macro_rules! bind_row {
    ($query:expr, $c:expr, $metadata:expr) => {
        $query
            .bind(&$c.client_id)
            .bind($c.kind.as_str())
            .bind(&$c.secret_hash)
            .bind($metadata)
            .bind(&$c.registration_token_hash)
            .bind(&$c.registered_from)
            .bind($c.created_at)
            .bind($c.updated_at)
            .bind($c.last_used_at)
            .bind($c.expires_at)
            .bind($c.previous_secret.as_ref().map(|p| p.hash.as_slice()))
            .bind($c.previous_secret.as_ref().map(|p| p.expires_at))
    };
}
pub(crate) use bind_row;

/// A client to store, as a write of the group commit: its statement (`insert!`, chosen by
/// the request whether its commit may be deferred), the client, and its metadata as JSON.
pub(super) struct Insert {
    pub(super) sql: &'static str,
    pub(super) client: ClientRecord,
    pub(super) metadata: String,
}

/// SQLite's insert of several clients: one statement, bound as one JSON array (the hashes in
/// hex).
pub(super) async fn insert_many(
    on: Target<'_, sqlx::Sqlite>,
    clients: &[Insert],
) -> Result<Vec<()>, StoreError> {
    insert_rows(on, clients.iter().map(|i| (&i.client, i.metadata.as_str()))).await?;
    Ok(vec![(); clients.len()])
}

/// SQLite's INSERT of the clients of a [`json_rows`] array bound as `$param`.
macro_rules! insert_json {
    ($param:literal) => {
        concat!(
            "INSERT INTO clients (",
            columns!(),
            ") SELECT value ->> 0, value ->> 1, unhex(value ->> 2), value ->> 3, \
             unhex(value ->> 4), value ->> 5, value ->> 6, value ->> 7, value ->> 8, \
             value ->> 9, unhex(value ->> 10), value ->> 11 FROM jsonb_each(",
            $param,
            ")"
        )
    };
}

/// [`insert_many`]'s statement, for clients and their metadata as JSON; none, no statement.
async fn insert_rows<'a>(
    on: Target<'_, sqlx::Sqlite>,
    clients: impl Iterator<Item = (&'a ClientRecord, &'a str)>,
) -> Result<(), StoreError> {
    let Some(rows) = json_rows(clients)? else {
        return Ok(());
    };
    sqlx::query(insert_json!("$1"))
        .bind(rows)
        .execute(on)
        .await
        .map_err(|e| super::sql::conflict(e, "client_id"))?;
    Ok(())
}

/// Clients and their metadata as one JSON array of rows, for [`insert_json!`] (the hashes
/// in hex); none, `None`.
fn json_rows<'a>(
    clients: impl Iterator<Item = (&'a ClientRecord, &'a str)>,
) -> Result<Option<String>, StoreError> {
    let hex = |hash: Option<&Vec<u8>>| hash.map(|h| crate::util::hex(h.as_slice()));
    let rows: Vec<_> = clients
        .map(|(c, metadata)| {
            serde_json::json!([
                c.client_id,
                c.kind.as_str(),
                hex(c.secret_hash.as_ref()),
                metadata,
                hex(c.registration_token_hash.as_ref()),
                c.registered_from,
                c.created_at,
                c.updated_at,
                c.last_used_at,
                c.expires_at,
                hex(c.previous_secret.as_ref().map(|p| &p.hash)),
                c.previous_secret.as_ref().map(|p| p.expires_at),
            ])
        })
        .collect();
    if rows.is_empty() {
        return Ok(None);
    }
    super::sql::to_json(&rows).map(Some)
}

/// A registration to count and, if admitted, store ([`ClientStore::register_client`]), as a
/// write of the group commit: the client, its metadata as JSON, its count, its audit event,
/// and whether its commit may skip waiting for the disk (chosen by the request:
/// `commits::defers!`).
pub(super) struct Register {
    pub(super) defer: bool,
    pub(super) client: ClientRecord,
    pub(super) metadata: String,
    pub(super) count: RegistrationCount,
    pub(super) event: NewAuditEvent,
}

impl Register {
    /// Counts at different times or with different windows are made by different
    /// statements (one statement binds one of each); one client id is stored once.
    fn clash(a: &Self, b: &Self) -> bool {
        (a.count.now, a.count.window_secs) != (b.count.now, b.count.window_secs)
            || a.client.client_id == b.client.client_id
    }
}

/// PostgreSQL's registration as one statement, from `$1`…`$25`: the count's first bucket,
/// now, the window, the seen and again buckets, the two maxima, then the client's row (in
/// [`columns!`]'s order), then its audit event's (`audit_events`' columns but the id). It
/// counts as `rate_limits::count!` does, in `again`'s window or `first`'s; admits by
/// [`RegistrationCount::admits`]'s rule, said again in SQL; and only for an admitted one
/// stores the client and its event and, when counted in `first`, counts `seen`.
/// (PostgreSQL runs every writing `WITH` of a statement, read or not.) The answer is the
/// count and whether it was `again`'s. A commit that need not wait for the disk joins the
/// last `SELECT`'s `FROM` (`sql::not_awaited!(join)`): the request then settles it, shared
/// with other requests' (`commits`), when it stored a client and its event; a refused one
/// wrote only its count, which may be lost.
macro_rules! register {
    () => {
        concat!(
            "WITH counted AS (",
            $crate::store::rate_limits::count!(@
                "CASE WHEN EXISTS (SELECT 1 FROM rate_limits AS seen \
                   WHERE seen.bucket = $4 AND seen.window_start > $2 - $3) \
                 THEN $5 ELSE $1 END",
                ""
            ),
            " RETURNING hits, bucket), \
             admitted AS (SELECT bucket FROM counted \
               WHERE hits <= CASE WHEN bucket = $5 THEN $6::bigint ELSE $7::bigint END), \
             seen_hit AS (",
            $crate::store::rate_limits::count!(@
                "$4", " FROM (SELECT 1 FROM admitted WHERE bucket = $1) AS counted_first"
            ),
            "), stored AS (INSERT INTO clients (",
            $crate::store::clients::columns!(),
            ") SELECT $8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19 FROM admitted), \
             audited AS (INSERT INTO audit_events (at, kind, client_id, user_id, ip, detail) \
               SELECT $20,$21,$22,$23,$24,$25 FROM admitted) \
             SELECT counted.hits, counted.bucket = $5 FROM counted"
        )
    };
}

impl Kind<sqlx::Postgres> for Register {
    type Input = Self;
    type Output = Counted;

    fn clash(a: &Self, b: &Self) -> bool {
        Register::clash(a, b)
    }

    fn one<'c>(
        on: Target<'c, sqlx::Postgres>,
        r: &'c Self,
    ) -> futures_util::future::BoxFuture<'c, Result<Counted, StoreError>> {
        Box::pin(async move {
            let sql = if r.defer {
                concat!(register!(), super::sql::not_awaited!(join))
            } else {
                register!()
            };
            let (c, count, e) = (&r.client, &r.count, &r.event);
            let query = sqlx::query_as(sql)
                .bind(&count.first)
                .bind(count.now)
                .bind(count.window_secs)
                .bind(&count.seen)
                .bind(&count.again)
                .bind(count.max_again)
                .bind(count.max_first);
            let (hits, repeated): (i64, bool) = bind_row!(query, c, &r.metadata)
                .bind(e.at)
                .bind(e.kind)
                .bind(&e.client_id)
                .bind(&e.user_id)
                .bind(&e.ip)
                .bind(&e.detail)
                .fetch_one(on)
                .await
                .map_err(|e| super::sql::conflict(e, "client_id"))?;
            Ok(Counted { repeated, hits })
        })
    }
}

impl Kind<sqlx::Sqlite> for Register {
    type Input = Self;
    type Output = Counted;

    fn clash(a: &Self, b: &Self) -> bool {
        Register::clash(a, b)
    }

    fn one<'c>(
        on: Target<'c, sqlx::Sqlite>,
        r: &'c Self,
    ) -> futures_util::future::BoxFuture<'c, Result<Counted, StoreError>> {
        Box::pin(async move {
            on.atomic(std::slice::from_ref(r), |on, rs| {
                Box::pin(register_many(on, rs))
            })
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("a registration was not counted".into()))
        })
    }

    fn many<'c>(
        on: Target<'c, sqlx::Sqlite>,
        inputs: &'c [Self],
    ) -> futures_util::future::BoxFuture<'c, Result<Vec<Counted>, StoreError>> {
        Box::pin(register_many(on, inputs))
    }
}

/// SQLite's registrations, a batch's at once, in its transaction, as two queries (each a
/// round trip to the writing thread, `connections::group_commit::Batch`):
/// - [`COUNT_REGISTRATIONS`]: which `seen` windows are live, then every count, each in
///   `again`'s window or `first`'s by the same test;
/// - when any is admitted, [`STORE_REGISTRATIONS`]: the admitted clients, their audit
///   events, and the `seen` hits of those admitted in `first`.
///
/// Of concurrent registrations counted in one window, those its maximum admits are stored,
/// whichever they are.
async fn register_many(
    mut on: Target<'_, sqlx::Sqlite>,
    registrations: &[Register],
) -> Result<Vec<Counted>, StoreError> {
    use futures_util::TryStreamExt;
    use sqlx::Row;

    let Some(any) = registrations.first() else {
        return Ok(Vec::new());
    };
    let (now, window_secs) = (any.count.now, any.count.window_secs);
    let buckets: Vec<[&str; 3]> = registrations
        .iter()
        .map(|r| [&*r.count.seen, &*r.count.again, &*r.count.first])
        .collect();
    let items: Vec<_> = sqlx::Executor::fetch_many(
        on.again(),
        sqlx::query(COUNT_REGISTRATIONS)
            .bind(super::sql::to_json(&buckets)?)
            .bind(now)
            .bind(window_secs),
    )
    .try_collect()
    .await?;
    // The first statement's rows (the live `seen` windows, by their place in the batch), its
    // end, then the second's (each count's bucket and hits).
    let mut repeated = vec![false; registrations.len()];
    let mut counted = Vec::with_capacity(registrations.len());
    let mut statement = 0;
    for item in items {
        match item {
            sqlx::Either::Left(_) => statement += 1,
            sqlx::Either::Right(row) if statement == 0 => {
                let at: i64 = row.try_get(0)?;
                let r = usize::try_from(at)
                    .ok()
                    .and_then(|at| repeated.get_mut(at))
                    .ok_or_else(|| StoreError::Corrupt("a registration's place".into()))?;
                *r = true;
            }
            sqlx::Either::Right(row) => counted.push((row.try_get(0)?, row.try_get(1)?)),
        }
    }
    let hits = super::rate_limits::handed_out(
        registrations
            .iter()
            .zip(&repeated)
            .map(|(r, &repeated)| r.count.bucket(repeated)),
        counted,
    )?;
    let counted: Vec<Counted> = repeated
        .into_iter()
        .zip(hits)
        .map(|(repeated, hits)| Counted { repeated, hits })
        .collect();
    let admitted = || {
        registrations
            .iter()
            .zip(&counted)
            .filter(|(r, c)| r.count.admits(**c))
    };
    let Some(clients) = json_rows(admitted().map(|(r, _)| (&r.client, r.metadata.as_str())))?
    else {
        return Ok(counted);
    };
    let newly_seen: Vec<&str> = admitted()
        .filter(|(_, c)| !c.repeated)
        .map(|(r, _)| r.count.seen.as_str())
        .collect();
    let events = super::audit::JsonRows::of(admitted().map(|(r, _)| &r.event))?;
    sqlx::query(STORE_REGISTRATIONS)
        .bind(clients)
        .bind(now)
        .bind(window_secs)
        .bind(super::sql::to_json(&newly_seen)?)
        .bind(events.text())
        .execute(on)
        .await
        .map_err(|e| super::sql::conflict(e, "client_id"))?;
    Ok(counted)
}

/// [`register_many`]'s count, from `$1`, each registration's `[seen, again, first]` buckets,
/// `$2` now and `$3` the window: the places in `$1` of those whose `seen` window is live, then
/// every hit in `again` for those, in `first` for the others, as `rate_limits::count!` counts,
/// returning each count's bucket and hits. The hits' statement reads the `seen` windows as the
/// first did: it writes only `again`'s and `first`'s buckets.
const COUNT_REGISTRATIONS: &str = concat!(
    "SELECT key FROM jsonb_each($1) WHERE EXISTS (SELECT 1 FROM rate_limits \
       WHERE bucket = value ->> 0 AND window_start > $2 - $3); ",
    super::rate_limits::count!(@
        "CASE WHEN EXISTS (SELECT 1 FROM rate_limits AS seen \
           WHERE seen.bucket = value ->> 0 AND seen.window_start > $2 - $3) \
         THEN value ->> 1 ELSE value ->> 2 END",
        " FROM jsonb_each($1)"
    ),
    " RETURNING bucket, hits"
);

/// [`register_many`]'s store of the admitted: `$1` their clients ([`json_rows`]), `$4` the
/// `seen` buckets to count (in `$2`'s window of `$3`), `$5` their audit events
/// (`audit::JsonRows`).
const STORE_REGISTRATIONS: &str = concat!(
    insert_json!("$1"),
    "; ",
    super::audit::append_json!("$5"),
    "; ",
    super::rate_limits::count!(@ "value", " FROM jsonb_each($4)")
);

macro_rules! sql_impl {
    ($ty:ty, $dialect:tt) => {
        #[async_trait::async_trait]
        impl $crate::store::ClientStore for $ty {
            async fn insert_client(
                &self,
                c: &$crate::store::ClientRecord,
            ) -> Result<(), $crate::store::StoreError> {
                // Chosen here, on the request's task, which says whether it may defer.
                let sql = $crate::store::commits::deferrable!(
                    $dialect,
                    $crate::store::clients::insert!(),
                    $crate::store::sql::not_awaited!(from)
                );
                self.writer
                    .write_kind::<$crate::store::clients::Insert>($crate::store::clients::Insert {
                        sql,
                        client: c.clone(),
                        metadata: $crate::store::sql::to_json(&c.metadata)?,
                    })
                    .await
            }

            async fn register_client(
                &self,
                c: &$crate::store::ClientRecord,
                count: &$crate::store::RegistrationCount,
                event: &$crate::store::NewAuditEvent,
            ) -> Result<$crate::store::Counted, $crate::store::StoreError> {
                // Chosen here, on the request's task, which says whether it may defer.
                let defer = $crate::store::commits::defers!($dialect);
                let counted = self
                    .writer
                    .write_kind::<$crate::store::clients::Register>(
                        $crate::store::clients::Register {
                            defer,
                            client: c.clone(),
                            metadata: $crate::store::sql::to_json(&c.metadata)?,
                            count: count.clone(),
                            event: event.clone(),
                        },
                    )
                    .await?;
                if defer && count.admits(counted) {
                    // The client's and its event's commit did not wait for the disk: the
                    // answer waits for it (`commits`). A refused registration wrote only its
                    // count, which may be lost, and its answer does not wait.
                    $crate::store::commits::may_defer();
                }
                Ok(counted)
            }

            async fn get_client(
                &self,
                client_id: &str,
                now: i64,
            ) -> Result<Option<$crate::store::ClientRecord>, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(client_id) {
                    return Ok(None);
                }
                let row: Option<$crate::store::clients::ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::clients::columns!(),
                    " FROM clients WHERE client_id = $1 \
                     AND (expires_at IS NULL OR expires_at > $2)"
                ))
                .bind(client_id)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn update_client(
                &self,
                c: &$crate::store::ClientRecord,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "UPDATE clients SET metadata = $2, secret_hash = $3, updated_at = $4, \
                     previous_secret_hash = $5, previous_secret_expires_at = $6 \
                     WHERE client_id = $1",
                )
                .bind(&c.client_id)
                .bind($crate::store::sql::to_json(&c.metadata)?)
                .bind(&c.secret_hash)
                .bind(c.updated_at)
                .bind(c.previous_secret.as_ref().map(|p| p.hash.clone()))
                .bind(c.previous_secret.as_ref().map(|p| p.expires_at))
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_client(
                &self,
                client_id: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM clients WHERE client_id = $1")
                    .bind(client_id)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn list_clients(
                &self,
                now: i64,
            ) -> Result<Vec<$crate::store::ClientRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::clients::ClientRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    $crate::store::clients::columns!(),
                    " FROM clients WHERE expires_at IS NULL OR expires_at > $1 \
                     ORDER BY created_at, client_id"
                ))
                .bind(now)
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn touch_client(
                &self,
                client_id: &str,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "UPDATE clients SET last_used_at = $2, expires_at = NULL WHERE client_id = $1",
                )
                .bind(client_id)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn delete_expired_clients(
                &self,
                now: i64,
            ) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query(
                    "UPDATE clients SET expires_at = NULL \
                     WHERE expires_at IS NOT NULL AND expires_at <= $1 \
                     AND EXISTS (SELECT 1 FROM refresh_tokens r \
                       WHERE r.client_id = clients.client_id AND r.used_at IS NULL \
                       AND r.revoked_at IS NULL AND r.expires_at > $1 \
                       AND r.absolute_expires_at > $1)",
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let r = sqlx::query(
                    "DELETE FROM clients WHERE expires_at IS NOT NULL AND expires_at <= $1",
                )
                .bind(now)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(r.rows_affected())
            }
        }

        impl $crate::store::connections::Kind<$crate::store::sql::db!($dialect)>
            for $crate::store::clients::Insert
        {
            type Input = Self;
            type Output = ();

            fn clash(a: &Self, b: &Self) -> bool {
                a.client.client_id == b.client.client_id
            }

            fn one<'c>(
                on: $crate::store::connections::Target<'c, $crate::store::sql::db!($dialect)>,
                $crate::store::clients::Insert {
                    sql,
                    client: c,
                    metadata,
                }: &'c Self,
            ) -> futures_util::future::BoxFuture<'c, Result<(), $crate::store::StoreError>> {
                Box::pin(async move {
                    $crate::store::clients::bind_row!(sqlx::query(*sql), c, metadata)
                        .execute(on)
                        .await
                        .map_err(|e| $crate::store::sql::conflict(e, "client_id"))?;
                    Ok(())
                })
            }

            $crate::store::sql::many!($dialect, $crate::store::clients::insert_many);
        }
    };
}
pub(crate) use sql_impl;
