//! `POST /introspect` (RFC 7662): for resource servers an operator allowed to ask. Anything
//! unknown, expired or revoked is `{"active": false}` and nothing more (§2.2).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::error::{ErrorCode, OAuthError};
use crate::oauth::dpop;
use crate::oauth::tokens::{revoked_key, verify_access_token};
use crate::startup::AppState;
use crate::util;

#[utoipa::path(post, path = "/introspect", tag = "oauth",
    description = "Token introspection (RFC 7662), for clients an operator allowed.",
    request_body(content = crate::endpoints::schemas::TokenRequestByValue, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The token's state", body = crate::endpoints::schemas::IntrospectionResponse),
        (status = 401, description = "Client authentication failed", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 403, description = "This client may not introspect", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let form = super::form_body(&headers, body)?;
    let client = super::authenticated_client(&state, &headers, &form).await?;
    if !client.metadata.may_introspect {
        return Err(OAuthError::new(
            ErrorCode::UnauthorizedClient,
            "this client may not introspect tokens; an operator allows it with `client add --may-introspect`",
        )
        .with_status(StatusCode::FORBIDDEN));
    }
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let answer = describe(&state, token)
        .await?
        .unwrap_or_else(|| json!({ "active": false }));
    let mut res = Json(answer).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// The introspection answer for an active token, or `None`.
async fn describe(state: &AppState, token: &str) -> Result<Option<Value>, OAuthError> {
    let now = util::now();
    if let Some(claims) = verify_access_token(&state.keys, &state.issuer, token, None) {
        let jti = claims["jti"].as_str().unwrap_or_default();
        if state.store.is_used(&revoked_key(jti), now).await? {
            return Ok(None);
        }
        let mut out = Map::new();
        out.insert("active".into(), true.into());
        // RFC 9449 §6.2: a bound token is a DPoP token, and its `cnf` says to which key.
        let bound = claims
            .get("cnf")
            .filter(|_| dpop::bound_jkt(&claims).is_some());
        out.insert(
            "token_type".into(),
            if bound.is_some() { "DPoP" } else { "Bearer" }.into(),
        );
        if let Some(cnf) = bound {
            out.insert("cnf".into(), cnf.clone());
        }
        for k in [
            "scope",
            "client_id",
            "sub",
            "aud",
            "iss",
            "exp",
            "iat",
            "jti",
            "auth_time",
            "act",
        ] {
            if let Some(v) = claims.get(k) {
                out.insert(k.into(), v.clone());
            }
        }
        return Ok(Some(Value::Object(out)));
    }
    if let Some(rt) = state
        .store
        .get_refresh(&util::secret_hash(token), now)
        .await?
    {
        return Ok(Some(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": rt.client_id,
            "sub": rt.user_id,
            "scope": rt.scope,
            "iss": state.issuer.as_ref(),
            "iat": rt.created_at,
            "exp": rt.expires_at,
        })));
    }
    Ok(None)
}
