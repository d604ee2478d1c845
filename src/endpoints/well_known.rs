//! `GET /.well-known/oauth-authorization-server` (RFC 8414 §3) and
//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery §4), in the root and
//! path-inserted forms the router mounts.

use axum::extract::State;
use axum::response::Response;

use crate::error::OAuthError;
use crate::oauth::admin_token::admin_resource_uri;
use crate::oauth::metadata::{Capabilities, authorization_server_metadata};
use crate::state::AppState;

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    description = "Authorization server metadata (RFC 8414 §3). Also served as `/.well-known/openid-configuration` (OpenID Connect Discovery §4) and, for an issuer with a path, in the path-inserted forms.",
    responses((status = 200, description = "The metadata document", body = Object)))]
pub async fn metadata(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let ctx = &state.oauth;
    // Built from every resource: cached as the resources are (`resources.cache_secs`), so that
    // discovery, which every agent fetches first, reads nothing from the database.
    // Kept as the JSON it is answered with, so that a request serializes nothing.
    let json = match ctx.resources.derived(METADATA) {
        Some(json) => json,
        None => {
            let doc = serde_json::Value::Object(build(ctx).await?);
            // A `Value` always serializes.
            let json = bytes::Bytes::from(serde_json::to_vec(&doc).unwrap_or_default());
            ctx.resources.keep_derived(METADATA, json.clone());
            json
        }
    };
    Ok(super::public_json(json, "public, max-age=60"))
}

/// The name the metadata document is cached under.
const METADATA: &str = "authorization_server_metadata";

async fn build(
    ctx: &crate::oauth::context::Context,
) -> Result<serde_json::Map<String, serde_json::Value>, OAuthError> {
    let resources = ctx.resources.list().await?;
    // The admin API's scope is for operators' clients only; clients that ask for every
    // advertised scope must not trip over it.
    let admin = admin_resource_uri(ctx.issuer());
    let mut scopes: Vec<String> = resources
        .iter()
        .filter(|r| r.uri.as_str() != admin)
        .flat_map(|r| r.scopes.iter().map(|s| s.name.clone()))
        .collect();
    scopes.sort();
    scopes.dedup();
    let doc = authorization_server_metadata(&Capabilities {
        issuer: ctx.issuer(),
        id_jag_trusted: crate::oauth::id_jag::trusts_any(ctx).await?,
        grants: ctx.grants.enabled(&ctx.config).collect(),
        registration_enabled: ctx.config.registration.enabled,
        cimd_enabled: ctx.cimd.is_some(),
        scopes,
        details_types: crate::oauth::authorization_details::types_supported(resources.iter()),
    });
    Ok(doc)
}
