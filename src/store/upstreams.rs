//! Upstream identity providers ("Sign in with …"): the record an operator writes, in the
//! configuration file's `[[upstream]]` tables or with `concierge idp add` (stored here, its
//! client secret sealed by the caller). How a sign-in through one runs is in
//! `crate::oauth::upstream`.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// What protocol a provider speaks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamKind {
    /// Any OpenID Connect provider: discovery at its issuer, an ID token validated with
    /// `state`, `nonce` and PKCE.
    #[default]
    Oidc,
    /// GitHub (or GitHub Enterprise Server): OAuth 2.0 with PKCE and `state`, the user from
    /// `GET /user` and the verified primary address from `GET /user/emails`.
    Github,
}

impl UpstreamKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Oidc => "oidc",
            Self::Github => "github",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "oidc" => Some(Self::Oidc),
            "github" => Some(Self::Github),
            _ => None,
        }
    }
}

/// One upstream provider. `client_secret` is plain only in the configuration file; the
/// stored record keeps it sealed ([`StoredUpstream`]).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamProvider {
    /// Our name for it, in its URLs (`/signin/upstream/<id>`): lowercase letters, digits
    /// and `-`, at most 32.
    pub id: String,
    /// The label of its button ("Sign in with <name>").
    pub name: String,
    /// `oidc` (default) or `github`.
    #[serde(default)]
    pub kind: UpstreamKind,
    /// OpenID Connect: the provider's issuer identifier (discovery and the ID token's
    /// `iss`). GitHub: the identities' issuer, default `https://github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Our client id at the provider. Its redirect URI there is
    /// `<issuer>/signin/upstream/<id>/callback`.
    pub client_id: String,
    /// Our client secret at the provider (`client_secret_basic`); none for a public
    /// client, which relies on PKCE alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The scopes asked for. Default: `openid email profile` (OpenID Connect; `openid` is
    /// always added), `read:user user:email` (GitHub).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Link a provider user without a linked account to the one local account with the same
    /// verified email address. Off by default: turn it on only for a provider that vouches
    /// for its users' addresses.
    #[serde(default)]
    pub link_by_email: bool,
    /// Provision an account (without a password) for a provider user who has none. On by
    /// default; off, such a sign-in is refused until the user links the identity from their
    /// account page, or an operator links it.
    #[serde(default = "yes")]
    pub provision: bool,
    /// GitHub Enterprise Server (or a stand-in): where to send the browser. Default
    /// `https://github.com/login/oauth/authorize`. Ignored for OpenID Connect (discovery
    /// says).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_endpoint: Option<String>,
    /// GitHub: where to redeem the code. Default
    /// `https://github.com/login/oauth/access_token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint: Option<String>,
    /// GitHub: the REST API's base. Default `https://api.github.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userinfo_endpoint: Option<String>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for UpstreamProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamProvider")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<secret>"),
            )
            .finish_non_exhaustive()
    }
}

impl UpstreamProvider {
    /// The shape every provider must have, wherever it was written.
    pub fn check(&self) -> Result<(), String> {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 32
            && self
                .id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !id_ok {
            return Err(format!(
                "upstream id {:?}: lowercase letters, digits and '-', at most 32",
                self.id
            ));
        }
        if self.name.trim().is_empty() || self.name.chars().count() > 60 {
            return Err(format!(
                "upstream {}: a name of 1 to 60 characters",
                self.id
            ));
        }
        if self.client_id.is_empty() {
            return Err(format!("upstream {}: client_id is empty", self.id));
        }
        if self.kind == UpstreamKind::Oidc && self.issuer.is_none() {
            return Err(format!(
                "upstream {}: an OpenID Connect provider needs its issuer",
                self.id
            ));
        }
        for (what, u) in [
            ("issuer", &self.issuer),
            ("authorization_endpoint", &self.authorization_endpoint),
            ("token_endpoint", &self.token_endpoint),
            ("userinfo_endpoint", &self.userinfo_endpoint),
        ] {
            if let Some(u) = u {
                let parsed = url::Url::parse(u)
                    .map_err(|e| format!("upstream {}: {what} {u:?}: {e}", self.id))?;
                if !matches!(parsed.scheme(), "https" | "http") || parsed.fragment().is_some() {
                    return Err(format!(
                        "upstream {}: {what} {u:?} must be an https URL without a fragment",
                        self.id
                    ));
                }
            }
        }
        if let Some(s) = self.scopes.iter().find(|s| s.is_empty() || s.contains(' ')) {
            return Err(format!("upstream {}: scope {s:?}", self.id));
        }
        Ok(())
    }
}

/// A provider added with the CLI: its record (without the secret in clear), the secret
/// sealed under the key-encryption key, and when it was added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredUpstream {
    pub provider: UpstreamProvider,
    pub secret_sealed: Option<Vec<u8>>,
    pub created_at: i64,
}

#[async_trait]
pub trait UpstreamStore: Send + Sync {
    /// Every stored provider, by id.
    async fn list_upstreams(&self) -> Result<Vec<StoredUpstream>, StoreError>;
    /// One stored provider.
    async fn get_upstream(&self, id: &str) -> Result<Option<StoredUpstream>, StoreError>;
    /// Add a provider; `Conflict` when its id is taken.
    async fn insert_upstream(&self, u: &StoredUpstream) -> Result<(), StoreError>;
    /// Remove a provider; `false` when there was none. Identities linked through it stay
    /// (their issuer names them), so adding it again signs the same users in.
    async fn delete_upstream(&self, id: &str) -> Result<bool, StoreError>;
    /// Replace sealed secrets (`keys rekey`); how many rows changed.
    async fn reseal_upstream_secrets(
        &self,
        sealed: &[(String, Vec<u8>)],
    ) -> Result<u64, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct UpstreamRow {
    id: String,
    name: String,
    kind: String,
    issuer: Option<String>,
    client_id: String,
    client_secret_sealed: Option<Vec<u8>>,
    scopes: String,
    link_by_email: bool,
    provision: bool,
    authorization_endpoint: Option<String>,
    token_endpoint: Option<String>,
    userinfo_endpoint: Option<String>,
    created_at: i64,
}

impl TryFrom<UpstreamRow> for StoredUpstream {
    type Error = StoreError;

    fn try_from(r: UpstreamRow) -> Result<Self, StoreError> {
        let kind = UpstreamKind::parse(&r.kind)
            .ok_or_else(|| StoreError::Corrupt(format!("upstream kind {:?}", r.kind)))?;
        Ok(Self {
            provider: UpstreamProvider {
                id: r.id,
                name: r.name,
                kind,
                issuer: r.issuer,
                client_id: r.client_id,
                client_secret: None,
                scopes: r.scopes.split_whitespace().map(str::to_string).collect(),
                link_by_email: r.link_by_email,
                provision: r.provision,
                authorization_endpoint: r.authorization_endpoint,
                token_endpoint: r.token_endpoint,
                userinfo_endpoint: r.userinfo_endpoint,
            },
            secret_sealed: r.client_secret_sealed,
            created_at: r.created_at,
        })
    }
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::UpstreamStore for $ty {
            async fn list_upstreams(&self) -> Result<Vec<$crate::store::StoredUpstream>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::upstreams::UpstreamRow> = sqlx::query_as(
                    "SELECT id, name, kind, issuer, client_id, client_secret_sealed, scopes, link_by_email, \
                     provision, authorization_endpoint, token_endpoint, userinfo_endpoint, created_at \
                     FROM upstream_providers ORDER BY id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn get_upstream(&self, id: &str) -> Result<Option<$crate::store::StoredUpstream>, $crate::store::StoreError> {
                if !$crate::store::sql::may_be_stored(id) {
                    return Ok(None);
                }
                let row: Option<$crate::store::upstreams::UpstreamRow> = sqlx::query_as(
                    "SELECT id, name, kind, issuer, client_id, client_secret_sealed, scopes, link_by_email, \
                     provision, authorization_endpoint, token_endpoint, userinfo_endpoint, created_at \
                     FROM upstream_providers WHERE id = $1",
                )
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn insert_upstream(&self, u: &$crate::store::StoredUpstream) -> Result<(), $crate::store::StoreError> {
                let p = &u.provider;
                sqlx::query(
                    "INSERT INTO upstream_providers (id, name, kind, issuer, client_id, client_secret_sealed, \
                     scopes, link_by_email, provision, authorization_endpoint, token_endpoint, \
                     userinfo_endpoint, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                )
                .bind(&p.id)
                .bind(&p.name)
                .bind(p.kind.as_str())
                .bind(&p.issuer)
                .bind(&p.client_id)
                .bind(&u.secret_sealed)
                .bind(p.scopes.join(" "))
                .bind(p.link_by_email)
                .bind(p.provision)
                .bind(&p.authorization_endpoint)
                .bind(&p.token_endpoint)
                .bind(&p.userinfo_endpoint)
                .bind(u.created_at)
                .execute(&self.writer)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "upstream provider"))?;
                Ok(())
            }

            async fn delete_upstream(&self, id: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM upstream_providers WHERE id = $1")
                    .bind(id)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn reseal_upstream_secrets(&self, sealed: &[(String, Vec<u8>)]) -> Result<u64, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                let mut n = 0;
                for (id, s) in sealed {
                    n += sqlx::query("UPDATE upstream_providers SET client_secret_sealed = $2 WHERE id = $1")
                        .bind(id)
                        .bind(s)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                }
                tx.commit().await?;
                Ok(n)
            }
        }
    };
}
pub(crate) use sql_impl;
