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
    /// The resource's tools this scope lets an agent use (MCP tool names), shown on the
    /// consent and connected-apps pages. Stored inside the scopes' JSON, so earlier releases
    /// read the record and ignore them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDef>,
}

/// A tool of a resource (an MCP tool), with the sentence users see for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ToolDef {
    pub name: String,
    pub description: String,
}

/// An authorization details type a resource accepts (RFC 9396): its `type` value, the
/// fields a detail may carry (a subset of JSON Schema, `oauth::details_type`), and the
/// sentence users see, `{field}` standing for a field's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DetailsTypeDef {
    #[serde(rename = "type")]
    pub name: String,
    /// `{"type": "object", "properties": {…}, "required": […]}`.
    #[schema(value_type = Object)]
    pub schema: serde_json::Value,
    /// E.g. `Share the note “{note}” with {with}`.
    pub sentence: String,
}

/// A stored resource: its URI in normal form, its name and its scopes, and other URIs
/// (normalised) that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRecord {
    pub uri: String,
    pub name: String,
    pub scopes: Vec<ScopeDef>,
    pub aliases: Vec<String>,
    /// `ES256` or `RS256`.
    pub access_token_alg: String,
    /// `off`, `optional` or `required`.
    pub dpop: String,
    /// The `acr` every sign-in for it must reach, beyond the server's policy.
    pub required_acr: Option<String>,
    /// RFC 9396 types it accepts besides the built-in ones.
    pub details_types: Vec<DetailsTypeDef>,
    pub created_at: i64,
}

#[async_trait]
pub trait ResourceStore: Send + Sync {
    /// Insert a resource with its aliases; `Conflict` when the URI or an alias is taken.
    async fn insert_resource(&self, resource: &ResourceRecord) -> Result<(), StoreError>;
    /// The resource registered under exactly `uri` (not an alias).
    async fn get_resource(&self, uri: &str) -> Result<Option<ResourceRecord>, StoreError>;
    /// The URI of the resource `alias` names, if it is an alias.
    async fn resource_for_alias(&self, alias: &str) -> Result<Option<String>, StoreError>;
    async fn list_resources(&self) -> Result<Vec<ResourceRecord>, StoreError>;
    /// Replace a resource's name, scopes and token settings (not its URI or aliases);
    /// `false` when there is no such resource.
    async fn update_resource(&self, resource: &ResourceRecord) -> Result<bool, StoreError>;
    /// Delete a resource and its aliases.
    async fn delete_resource(&self, uri: &str) -> Result<bool, StoreError>;
}

/// A `resources` row.
#[derive(sqlx::FromRow)]
pub(super) struct ResourceRow {
    pub(super) uri: String,
    name: String,
    scopes: String,
    access_token_alg: String,
    dpop: String,
    required_acr: Option<String>,
    details_types: String,
    created_at: i64,
}

impl ResourceRow {
    pub(super) fn into_record(self, aliases: Vec<String>) -> Result<ResourceRecord, StoreError> {
        Ok(ResourceRecord {
            scopes: super::sql::from_json(&self.scopes, &format!("resource {} scopes", self.uri))?,
            details_types: super::sql::from_json(
                &self.details_types,
                &format!("resource {} details types", self.uri),
            )?,
            uri: self.uri,
            name: self.name,
            aliases,
            access_token_alg: self.access_token_alg,
            dpop: self.dpop,
            required_acr: self.required_acr,
            created_at: self.created_at,
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
                let mut tx = self.writer.begin().await?;
                sqlx::query(
                    "INSERT INTO resources (uri, name, scopes, access_token_alg, dpop, created_at, \
                     required_acr, details_types) VALUES ($1,$2,$3,$4,$5,$6,$7,$8)",
                )
                .bind(&r.uri)
                .bind(&r.name)
                .bind($crate::store::sql::to_json(&r.scopes)?)
                .bind(&r.access_token_alg)
                .bind(&r.dpop)
                .bind(r.created_at)
                .bind(&r.required_acr)
                .bind($crate::store::sql::to_json(&r.details_types)?)
                .execute(&mut *tx)
                .await
                .map_err(|e| $crate::store::sql::conflict(e, "resource"))?;
                for alias in &r.aliases {
                    sqlx::query(
                        "INSERT INTO resource_aliases (alias, uri, created_at) VALUES ($1,$2,$3)",
                    )
                    .bind(alias)
                    .bind(&r.uri)
                    .bind(r.created_at)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| $crate::store::sql::conflict(e, "resource alias"))?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn update_resource(
                &self,
                r: &$crate::store::ResourceRecord,
            ) -> Result<bool, $crate::store::StoreError> {
                let done = sqlx::query(
                    "UPDATE resources SET name = $2, scopes = $3, access_token_alg = $4, dpop = $5, \
                     required_acr = $6, details_types = $7 WHERE uri = $1",
                )
                .bind(&r.uri)
                .bind(&r.name)
                .bind($crate::store::sql::to_json(&r.scopes)?)
                .bind(&r.access_token_alg)
                .bind(&r.dpop)
                .bind(&r.required_acr)
                .bind($crate::store::sql::to_json(&r.details_types)?)
                .execute(&self.writer)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_resource(
                &self,
                uri: &str,
            ) -> Result<Option<$crate::store::ResourceRecord>, $crate::store::StoreError> {
                let row: Option<$crate::store::resources::ResourceRow> = sqlx::query_as(
                    "SELECT uri, name, scopes, access_token_alg, dpop, required_acr, details_types, created_at FROM resources WHERE uri = $1",
                )
                .bind(uri)
                .fetch_optional(&self.pool)
                .await?;
                let Some(row) = row else { return Ok(None) };
                let aliases: Vec<(String,)> = sqlx::query_as(
                    "SELECT alias FROM resource_aliases WHERE uri = $1 ORDER BY alias",
                )
                .bind(uri)
                .fetch_all(&self.pool)
                .await?;
                row.into_record(aliases.into_iter().map(|(a,)| a).collect())
                    .map(Some)
            }

            async fn resource_for_alias(
                &self,
                alias: &str,
            ) -> Result<Option<String>, $crate::store::StoreError> {
                let row: Option<(String,)> =
                    sqlx::query_as("SELECT uri FROM resource_aliases WHERE alias = $1")
                        .bind(alias)
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(row.map(|(u,)| u))
            }

            async fn list_resources(
                &self,
            ) -> Result<Vec<$crate::store::ResourceRecord>, $crate::store::StoreError> {
                let rows: Vec<$crate::store::resources::ResourceRow> = sqlx::query_as(
                    "SELECT uri, name, scopes, access_token_alg, dpop, required_acr, details_types, created_at FROM resources ORDER BY uri",
                )
                .fetch_all(&self.pool)
                .await?;
                let aliases: Vec<(String, String)> =
                    sqlx::query_as("SELECT uri, alias FROM resource_aliases ORDER BY alias")
                        .fetch_all(&self.pool)
                        .await?;
                let mut by_uri: std::collections::HashMap<String, Vec<String>> =
                    std::collections::HashMap::new();
                for (uri, alias) in aliases {
                    by_uri.entry(uri).or_default().push(alias);
                }
                rows.into_iter()
                    .map(|r| {
                        let mine = by_uri.remove(&r.uri).unwrap_or_default();
                        r.into_record(mine)
                    })
                    .collect()
            }

            async fn delete_resource(&self, uri: &str) -> Result<bool, $crate::store::StoreError> {
                let mut tx = self.writer.begin().await?;
                sqlx::query("DELETE FROM resource_aliases WHERE uri = $1")
                    .bind(uri)
                    .execute(&mut *tx)
                    .await?;
                let r = sqlx::query("DELETE FROM resources WHERE uri = $1")
                    .bind(uri)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(r.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use sql_impl;
