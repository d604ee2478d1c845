//! ID-JAG issuing policies made with the CLI (`concierge id-jag allow`); the configuration
//! file's `id_jag.policies` use the same record. No policy means no ID-JAG.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

/// One client's permission to obtain ID-JAGs for one resource at one authorization server
/// (the checks are in `crate::oauth::id_jag`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IdJagPolicy {
    /// Our client that asks (its ID token must be the subject token).
    pub client_id: String,
    /// The target authorization server's issuer: the `audience` parameter and the ID-JAG's
    /// `aud`.
    pub audience: String,
    /// The resource (MCP server) at that authorization server: the `resource` parameter and
    /// claim.
    pub resource: String,
    /// The client's id at the target authorization server: the ID-JAG's `client_id`.
    pub target_client_id: String,
    /// The scopes the ID-JAG may carry; a request may ask for fewer.
    pub scopes: Vec<String>,
}

/// An IdP whose ID-JAGs we accept. Exactly one of `jwks_uri` and `jwks`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The IdP's issuer identifier, compared with the ID-JAG's `iss`.
    pub issuer: String,
    /// Where the IdP publishes its keys; fetched under the metadata-document rules (https,
    /// or loopback with `cimd.allow_loopback`), cached 5 minutes, refetched on an unknown
    /// `kid` at most every 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    /// The IdP's JWK Set inline (in the configuration file, as a table:
    /// `jwks = { keys = [ { kty = "EC", … } ] }`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub jwks: Option<serde_json::Value>,
    /// Link an IdP user who has no linked account here to the one local account whose
    /// verified email is the one the ID-JAG asserts (`email`, with `email_verified` not
    /// `false`). Off by default: turn it on only for an IdP that vouches for its users'
    /// addresses, such as an enterprise directory.
    #[serde(default)]
    pub link_by_email: bool,
    /// Provision a local account (without a password) for an IdP user who has none, on
    /// their first ID-JAG. On by default; when off, such ID-JAGs are refused until an
    /// operator links the user (`concierge user link`).
    #[serde(default = "yes")]
    pub provision: bool,
}

fn yes() -> bool {
    true
}

impl TrustedIssuer {
    /// The shape every trusted issuer must have, wherever it was written: an absolute
    /// issuer URL and exactly one of a `jwks_uri` URL and an inline JWK Set with keys.
    pub fn check(&self) -> Result<(), String> {
        url::Url::parse(&self.issuer).map_err(|e| format!("issuer {:?}: {e}", self.issuer))?;
        match (&self.jwks_uri, &self.jwks) {
            (Some(uri), None) => {
                url::Url::parse(uri).map_err(|e| format!("jwks_uri {uri:?}: {e}"))?;
            }
            (None, Some(jwks)) => {
                if jwks
                    .get("keys")
                    .and_then(serde_json::Value::as_array)
                    .is_none_or(Vec::is_empty)
                {
                    return Err("jwks must be a JWK Set with at least one key".into());
                }
            }
            _ => return Err("set exactly one of jwks_uri and jwks".into()),
        }
        Ok(())
    }
}

#[async_trait]
pub trait IdJagPolicyStore: Send + Sync {
    /// Trust an IdP (insert or replace by issuer).
    async fn save_trusted_issuer(&self, t: &TrustedIssuer, now: i64) -> Result<(), StoreError>;
    async fn list_trusted_issuers(&self) -> Result<Vec<TrustedIssuer>, StoreError>;
    async fn delete_trusted_issuer(&self, issuer: &str) -> Result<bool, StoreError>;
    /// Insert or replace the policy for (client, audience, resource), all as given.
    async fn save_id_jag_policy(&self, policy: &IdJagPolicy, now: i64) -> Result<(), StoreError>;
    /// The policies of one client.
    async fn id_jag_policies_for(&self, client_id: &str) -> Result<Vec<IdJagPolicy>, StoreError>;
    async fn list_id_jag_policies(&self) -> Result<Vec<IdJagPolicy>, StoreError>;
    async fn delete_id_jag_policy(
        &self,
        client_id: &str,
        audience: &str,
        resource: &str,
    ) -> Result<bool, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct IdJagPolicyRow {
    client_id: String,
    audience: String,
    resource: String,
    target_client_id: String,
    scopes: String,
}

impl From<IdJagPolicyRow> for IdJagPolicy {
    fn from(r: IdJagPolicyRow) -> Self {
        Self {
            client_id: r.client_id,
            audience: r.audience,
            resource: r.resource,
            target_client_id: r.target_client_id,
            scopes: super::sql::words(&r.scopes),
        }
    }
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::IdJagPolicyStore for $ty {
            async fn save_id_jag_policy(
                &self,
                p: &$crate::store::IdJagPolicy,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO id_jag_policies \
                     (client_id, audience, resource, target_client_id, scopes, created_at) \
                     VALUES ($1,$2,$3,$4,$5,$6) \
                     ON CONFLICT (client_id, audience, resource) \
                     DO UPDATE SET target_client_id = $4, scopes = $5",
                )
                .bind(&p.client_id)
                .bind(&p.audience)
                .bind(&p.resource)
                .bind(&p.target_client_id)
                .bind(p.scopes.join(" "))
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn id_jag_policies_for(
                &self,
                client_id: &str,
            ) -> Result<Vec<$crate::store::IdJagPolicy>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::id_jag::IdJagPolicyRow> = sqlx::query_as(
                    "SELECT client_id, audience, resource, target_client_id, scopes \
                     FROM id_jag_policies WHERE client_id = $1 ORDER BY audience, resource",
                )
                .bind(client_id)
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn list_id_jag_policies(
                &self,
            ) -> Result<Vec<$crate::store::IdJagPolicy>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::id_jag::IdJagPolicyRow> = sqlx::query_as(
                    "SELECT client_id, audience, resource, target_client_id, scopes \
                     FROM id_jag_policies ORDER BY client_id, audience, resource",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(Into::into).collect())
            }

            async fn save_trusted_issuer(
                &self,
                t: &$crate::store::TrustedIssuer,
                now: i64,
            ) -> Result<(), $crate::store::StoreError> {
                let jwks = t
                    .jwks
                    .as_ref()
                    .map($crate::store::sql::to_json)
                    .transpose()?;
                sqlx::query(
                    "INSERT INTO id_jag_trusted_issuers \
                     (issuer, jwks_uri, jwks, link_by_email, provision, created_at) \
                     VALUES ($1,$2,$3,$4,$5,$6) \
                     ON CONFLICT (issuer) DO UPDATE \
                     SET jwks_uri = $2, jwks = $3, link_by_email = $4, provision = $5",
                )
                .bind(&t.issuer)
                .bind(&t.jwks_uri)
                .bind(jwks)
                .bind(t.link_by_email)
                .bind(t.provision)
                .bind(now)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn list_trusted_issuers(
                &self,
            ) -> Result<Vec<$crate::store::TrustedIssuer>, $crate::store::StoreError> {
                type Row = (String, Option<String>, Option<String>, bool, bool);
                let rows: Vec<Row> = sqlx::query_as(
                    "SELECT issuer, jwks_uri, jwks, link_by_email, provision \
                     FROM id_jag_trusted_issuers ORDER BY issuer",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter()
                    .map(|(issuer, jwks_uri, jwks, link_by_email, provision)| {
                        let jwks = jwks
                            .map(|j| {
                                $crate::store::sql::from_json(&j, &format!("issuer {issuer} jwks"))
                            })
                            .transpose()?;
                        Ok($crate::store::TrustedIssuer {
                            issuer,
                            jwks_uri,
                            jwks,
                            link_by_email,
                            provision,
                        })
                    })
                    .collect()
            }

            async fn delete_trusted_issuer(
                &self,
                issuer: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM id_jag_trusted_issuers WHERE issuer = $1")
                    .bind(issuer)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }

            async fn delete_id_jag_policy(
                &self,
                client_id: &str,
                audience: &str,
                resource: &str,
            ) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query(
                    "DELETE FROM id_jag_policies \
                     WHERE client_id = $1 AND audience = $2 AND resource = $3",
                )
                .bind(client_id)
                .bind(audience)
                .bind(resource)
                .execute(&self.writer)
                .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_impl;
