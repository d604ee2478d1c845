//! `GET|POST /userinfo` (OpenID Connect Core §5.3): claims about the user, for an access
//! token we issued with `openid` whose audience includes this endpoint.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use super::bearer_token;
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::form::Form;
use crate::oauth::grants::user_tokens::user_claims;
use crate::oauth::scope::Scope;
use crate::startup::AppState;

/// Verify one of our access tokens for `audience`; returns its claims.
pub fn verify_access_token(
    state: &AppState,
    token: &str,
    audience: &str,
) -> Result<Value, OAuthError> {
    let bad = || OAuthError::invalid_token("the access token is not valid here");
    let header = jsonwebtoken::decode_header(token).map_err(|_| bad())?;
    if header.alg != Algorithm::ES256 || header.typ.as_deref() != Some("at+jwt") {
        return Err(bad());
    }
    let ring = state.keys.ring();
    let key = ring
        .keys()
        .iter()
        .find(|k| Some(k.kid.as_str()) == header.kid.as_deref())
        .ok_or_else(bad)?;
    let jwk: jsonwebtoken::jwk::Jwk =
        serde_json::from_value(key.public_jwk.clone()).map_err(|_| bad())?;
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| bad())?;
    let mut v = Validation::new(Algorithm::ES256);
    v.set_issuer(&[state.issuer.as_ref()]);
    v.set_audience(&[audience]);
    v.leeway = 30;
    jsonwebtoken::decode::<Value>(token, &key, &v)
        .map(|d| d.claims)
        .map_err(|_| bad())
}

async fn answer(state: &AppState, token: Option<&str>) -> Result<Response, OAuthError> {
    let token = token.ok_or_else(|| {
        let mut e = OAuthError::new(ErrorCode::InvalidToken, "an access token is required");
        e.www_authenticate = Some("Bearer".into());
        e
    })?;
    let claims = verify_access_token(state, token, &format!("{}/userinfo", state.issuer))?;
    let scope = Scope::parse(claims["scope"].as_str().unwrap_or("")).unwrap_or_default();
    if !scope.contains("openid") {
        let mut e = OAuthError::new(
            ErrorCode::AccessDenied,
            "the access token lacks the openid scope",
        )
        .with_status(StatusCode::FORBIDDEN);
        e.www_authenticate = Some("Bearer error=\"insufficient_scope\", scope=\"openid\"".into());
        return Err(e);
    }
    let sub = claims["sub"].as_str().unwrap_or_default();
    let user = state
        .store
        .get_user(sub)
        .await?
        .ok_or_else(|| OAuthError::invalid_token("the user no longer exists"))?;
    let mut body = user_claims(&user, &scope);
    body.insert("sub".into(), user.id.into());
    Ok(Json(body).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    answer(&state, bearer_token(&headers)).await
}

pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, OAuthError> {
    if let Some(t) = bearer_token(&headers) {
        return answer(&state, Some(t)).await;
    }
    let form = Form::parse(&body)?;
    answer(&state, form.get("access_token")).await
}
