//! `GET|POST /userinfo` (OpenID Connect Core §5.3): claims about the user, for an access
//! token we issued with `openid` whose audience includes this endpoint.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::bearer_token;
use crate::error::{ErrorCode, OAuthError};
use crate::oauth::form::Form;
use crate::oauth::grants::user_tokens::user_claims;
use crate::oauth::scope::Scope;
use crate::oauth::tokens::{revoked_key, verify_access_token};
use crate::startup::AppState;

async fn answer(state: &AppState, token: Option<&str>) -> Result<Response, OAuthError> {
    let token = token.ok_or_else(|| {
        let mut e = OAuthError::new(ErrorCode::InvalidToken, "an access token is required");
        e.www_authenticate = Some("Bearer".into());
        e
    })?;
    let claims = verify_access_token(
        &state.keys,
        &state.issuer,
        token,
        Some(&format!("{}/userinfo", state.issuer)),
    )
    .ok_or_else(|| OAuthError::invalid_token("the access token is not valid here"))?;
    let jti = claims["jti"].as_str().unwrap_or_default();
    if state
        .store
        .is_used(&revoked_key(jti), crate::util::now())
        .await?
    {
        return Err(OAuthError::invalid_token("the access token was revoked"));
    }
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

#[utoipa::path(get, path = "/userinfo", tag = "oauth",
    description = "OpenID Connect UserInfo (Core §5.3) for an access token with `openid`.",
    security(("access_token" = ["openid"])),
    responses(
        (status = 200, description = "Claims", body = crate::endpoints::schemas::UserInfo),
        (status = 401, description = "`invalid_token`; `WWW-Authenticate: Bearer`", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 403, description = "`insufficient_scope`", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, OAuthError> {
    answer(&state, bearer_token(&headers)).await
}

#[utoipa::path(post, path = "/userinfo", tag = "oauth",
    description = "OpenID Connect UserInfo (Core §5.3); the token in the header or as `access_token` in a form body.",
    security(("access_token" = ["openid"])),
    request_body(content = crate::endpoints::schemas::UserInfoForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Claims", body = crate::endpoints::schemas::UserInfo),
        (status = 401, description = "`invalid_token`", body = crate::endpoints::schemas::OAuthErrorResponse),
        (status = 403, description = "`insufficient_scope`", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
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
