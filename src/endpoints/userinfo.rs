//! `GET|POST /userinfo` (OpenID Connect Core §5.3): claims about the user, for an access
//! token we issued with `openid` whose audience includes this endpoint. DPoP-bound tokens
//! come as `Authorization: DPoP <token>` with a proof of their key (RFC 9449 §7).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::error::{ErrorCode, OAuthError};
use crate::http::{TokenScheme, access_token};
use crate::oauth::dpop;
use crate::oauth::form::Form;
use crate::oauth::grants::user_grant::user_claims;
use crate::oauth::tokens::{AccessClaims, TokenError, check_access_token};
use crate::state::AppState;

async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    token: Option<(TokenScheme, &str)>,
) -> Result<Response, OAuthError> {
    let (scheme, token) = token.ok_or_else(|| {
        let mut e = OAuthError::new(ErrorCode::InvalidToken, "an access token is required");
        e.www_authenticate = Some(format!(
            "Bearer, DPoP algs=\"{}\"",
            dpop::algorithm_names().join(" ")
        ));
        e
    })?;
    let ctx = &state.oauth;
    let url = ctx.url("/userinfo");
    let claims = check_access_token(ctx, token, Some(&url))
        .await
        .map_err(|e| match e {
            TokenError::Invalid => OAuthError::invalid_token("the access token is not valid here"),
            TokenError::Revoked => OAuthError::invalid_token("the access token was revoked"),
            TokenError::Store(e) => e.into(),
        })?;
    check_possession(state, headers, method, &url, scheme, token, &claims).await?;
    let scope = claims.scopes();
    if !scope.contains("openid") {
        let mut e = OAuthError::new(
            ErrorCode::AccessDenied,
            "the access token lacks the openid scope",
        )
        .with_status(StatusCode::FORBIDDEN);
        e.www_authenticate = Some("Bearer error=\"insufficient_scope\", scope=\"openid\"".into());
        return Err(e);
    }
    let user = ctx
        .users()
        .get_user(&claims.sub)
        .await?
        .filter(|u| !u.is_disabled())
        .ok_or_else(|| OAuthError::invalid_token("the user no longer exists or is disabled"))?;
    let mut body = user_claims(&user, &scope);
    body.insert("sub".into(), user.id.into());
    Ok(Json(body).into_response())
}

/// RFC 9449 §7.1, §7.2: a bound token only with the `DPoP` scheme and a proof of its key
/// for this request; an unbound one only as a bearer token.
async fn check_possession(
    state: &AppState,
    headers: &HeaderMap,
    method: &Method,
    url: &str,
    scheme: TokenScheme,
    token: &str,
    claims: &AccessClaims,
) -> Result<(), OAuthError> {
    let refuse = |d: String| {
        let mut e = OAuthError::invalid_dpop_proof(d.clone()).with_status(StatusCode::UNAUTHORIZED);
        e.www_authenticate = Some(format!(
            "DPoP error=\"invalid_dpop_proof\", error_description=\"{}\", algs=\"{}\"",
            d.replace(['"', '\\'], "'"),
            dpop::algorithm_names().join(" ")
        ));
        e
    };
    match (scheme, claims.jkt()) {
        (TokenScheme::Bearer, None) => Ok(()),
        (TokenScheme::Bearer, Some(_)) => Err(OAuthError::invalid_token(
            "the access token is DPoP-bound: send it as 'Authorization: DPoP' with a DPoP proof",
        )),
        (TokenScheme::DPoP, None) => Err(OAuthError::invalid_token(
            "the access token is not DPoP-bound: send it as a Bearer token",
        )),
        (TokenScheme::DPoP, Some(jkt)) => {
            let proof = dpop::check(
                &state.oauth,
                headers,
                dpop::Expect {
                    method: method.as_str(),
                    url,
                    access_token: Some(token),
                    nonce: false,
                },
            )
            .await
            .map_err(|e| match e.code {
                ErrorCode::InvalidDpopProof => refuse(e.description.into_owned()),
                _ => e,
            })?
            .ok_or_else(|| refuse("a DPoP proof is required with a DPoP token".into()))?;
            if proof.jkt != jkt {
                return Err(refuse(
                    "the DPoP proof is signed with another key than the token is bound to".into(),
                ));
            }
            Ok(())
        }
    }
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
    answer(&state, &headers, &Method::GET, access_token(&headers)).await
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
    if let Some(t) = access_token(&headers) {
        return answer(&state, &headers, &Method::POST, Some(t)).await;
    }
    let form = Form::parse(&body)?;
    let token = form.get("access_token").map(|t| (TokenScheme::Bearer, t));
    answer(&state, &headers, &Method::POST, token).await
}
