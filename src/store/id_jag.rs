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

#[async_trait]
pub trait IdJagPolicyStore: Send + Sync {
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
                .execute(&self.pool)
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
                .execute(&self.pool)
                .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_impl;
