//! Protected resources (MCP servers) and the scopes they offer.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::StoreError;

// The rules for names and descriptions are the protocol's (`oauth::resource`).
/// A scope a resource offers, with the sentence the consent screen shows for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScopeDef {
    pub name: String,
    pub description: String,
}

/// A stored resource: its URI in normal form, its name and its scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub uri: String,
    pub name: String,
    pub scopes: Vec<ScopeDef>,
    pub created_at: i64,
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Insert a resource; `Conflict` when the URI is registered already.
    async fn insert_resource(&self, resource: &ResourceRecord) -> Result<(), StoreError>;
    async fn get_resource(&self, uri: &str) -> Result<Option<ResourceRecord>, StoreError>;
    async fn list_resources(&self) -> Result<Vec<ResourceRecord>, StoreError>;
    async fn delete_resource(&self, uri: &str) -> Result<bool, StoreError>;
}

/// A `resources` row.
#[derive(sqlx::FromRow)]
pub(super) struct ResourceRow {
    uri: String,
    name: String,
    scopes: String,
    created_at: i64,
}

impl TryFrom<ResourceRow> for ResourceRecord {
    type Error = StoreError;
    fn try_from(r: ResourceRow) -> Result<Self, StoreError> {
        Ok(Self {
            scopes: super::sql::from_json(&r.scopes, &format!("resource {} scopes", r.uri))?,
            uri: r.uri,
            name: r.name,
            created_at: r.created_at,
        })
    }
}

macro_rules! sql_impl {
    ($ty:ty) => {
        #[async_trait::async_trait]
        impl $crate::store::ResourceStore for $ty {
            async fn insert_resource(
                &self,
                r: &$crate::store::ResourceRecord,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query(
                    "INSERT INTO resources (uri, name, scopes, created_at) VALUES ($1,$2,$3,$4)",
                )
                .bind(&r.uri)
                .bind(&r.name)
                .bind($crate::store::sql::to_json(&r.scopes)?)
                .bind(r.created_at)
                .execute(&self.pool)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "resource"))?;
                Ok(())
            }

            async fn get_resource(
                &self,
                uri: &str,
            ) -> Result<Option<$crate::store::ResourceRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::resources::ResourceRow> = sqlx::query_as(
                    "SELECT uri, name, scopes, created_at FROM resources WHERE uri = $1",
                )
                .bind(uri)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TryInto::try_into).transpose()
            }

            async fn list_resources(
                &self,
            ) -> Result<Vec<$crate::store::ResourceRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::resources::ResourceRow> = sqlx::query_as(
                    "SELECT uri, name, scopes, created_at FROM resources ORDER BY uri",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn delete_resource(&self, uri: &str) -> Result<bool, $crate::store::StoreError> {
                let r = sqlx::query("DELETE FROM resources WHERE uri = $1")
                    .bind(uri)
                    .execute(&self.pool)
                    .await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_impl;
