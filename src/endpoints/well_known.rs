//! `GET /.well-known/oauth-authorization-server` (RFC 8414 §3) and
//! `GET /.well-known/openid-configuration` (OpenID Connect Discovery §4), in the root and
//! path-inserted forms the router mounts.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::OAuthError;
use crate::oauth::grants;
use crate::oauth::metadata::{Capabilities, authorization_server_metadata};
use crate::startup::AppState;

#[utoipa::path(get, path = "/.well-known/oauth-authorization-server", tag = "oauth",
    description = "Authorization server metadata (RFC 8414 §3). Also served as `/.well-known/openid-configuration` (OpenID Connect Discovery §4) and, for an issuer with a path, in the path-inserted forms.",
    responses((status = 200, description = "The metadata document", body = Object)))]
pub async fn metadata(State(state): State<AppState>) -> Result<Response, OAuthError> {
    let resources = state.store.list_resources().await?;
    // The admin API's scope is for operators' clients only; clients that ask for every
    // advertised scope must not trip over it.
    let admin = crate::manage::admin_resource_uri(&state.issuer);
    let mut scopes: Vec<String> = resources
        .iter()
        .filter(|r| r.uri.as_str() != admin)
        .flat_map(|r| r.scopes.iter().map(|s| s.name.clone()))
        .collect();
    scopes.sort();
    scopes.dedup();
    let grants = grants::implemented(&state.config);
    let doc = authorization_server_metadata(&Capabilities {
        issuer: &state.issuer,
        grants: &grants,
        registration_enabled: state.config.registration.enabled,
        cimd_enabled: state.cimd.is_some(),
        scopes,
    });
    let mut res = Json(doc).into_response();
    res.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(res)
}
