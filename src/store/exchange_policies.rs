//! Token exchange (RFC 8693) policy: which client may exchange a token for one resource into
//! a token for another, and how scopes map. No policy means no.

use async_trait::async_trait;

use super::StoreError;

/// May `client_id` exchange tokens for `source` into tokens for `target`, and with which
/// scopes?
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangePolicy {
    pub target: String,
    pub client_id: String,
    pub source: String,
    /// Source scope → the target scopes it may become.
    pub scope_map: std::collections::BTreeMap<String, Vec<String>>,
    pub created_at: i64,
}

#[async_trait]
pub trait ExchangePolicyStore: Send + Sync {
    /// Insert or replace the policy for (target, client, source).
    async fn save_exchange_policy(&self, policy: &ExchangePolicy) -> Result<(), StoreError>;
    async fn get_exchange_policy(
        &self,
        target: &str,
        client_id: &str,
        source: &str,
    ) -> Result<Option<ExchangePolicy>, StoreError>;
    async fn list_exchange_policies(&self) -> Result<Vec<ExchangePolicy>, StoreError>;
    async fn delete_exchange_policy(
        &self,
        target: &str,
        client_id: &str,
        source: &str,
    ) -> Result<bool, StoreError>;
}

#[derive(sqlx::FromRow)]
pub(super) struct PolicyRow {
    target: String,
    client_id: String,
    source: String,
    scope_map: String,
    created_at: i64,
}

impl TryFrom<PolicyRow> for ExchangePolicy {
    type Error = StoreError;
    fn try_from(r: PolicyRow) -> Result<Self, StoreError> {
        Ok(Self {
            scope_map: super::sql::from_json(&r.scope_map, "exchange policy scope map")?,
            target: r.target,
            client_id: r.client_id,
            source: r.source,
            created_at: r.created_at,
        })
    }
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::ExchangePolicyStore for $ty {
            async fn save_exchange_policy(&self, p: &$crate::store::ExchangePolicy) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO exchange_policies (target, client_id, source, scope_map, created_at) \
                     VALUES ($1,$2,$3,$4,$5) \
                     ON CONFLICT (target, client_id, source) DO UPDATE SET scope_map = $4",
                )
                .bind(&p.target)
                .bind(&p.client_id)
                .bind(&p.source)
                .bind($crate::store::sql::to_json(&p.scope_map)?)
                .bind(p.created_at)
                .execute(&self.writer)
                .await?;
                Ok(())
            }

            async fn get_exchange_policy(&self, target: &str, client_id: &str, source: &str) -> Result<Option<$crate::store::ExchangePolicy>, $crate::store::StoreError> {
                let row: Option<$crate::store::exchange_policies::PolicyRow> = sqlx::query_as(
                    "SELECT target, client_id, source, scope_map, created_at FROM exchange_policies \
                     WHERE target = $1 AND client_id = $2 AND source = $3",
                )
                .bind(target)
                .bind(client_id)
                .bind(source)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_exchange_policies(&self) -> Result<Vec<$crate::store::ExchangePolicy>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::exchange_policies::PolicyRow> = sqlx::query_as(
                    "SELECT target, client_id, source, scope_map, created_at FROM exchange_policies \
                     ORDER BY target, client_id, source",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delete_exchange_policy(&self, target: &str, client_id: &str, source: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM exchange_policies WHERE target = $1 AND client_id = $2 AND source = $3")
                    .bind(target)
                    .bind(client_id)
                    .bind(source)
                    .execute(&self.writer)
                    .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_impl;
