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
use crate::http::form_body;
use crate::oauth::Context;
use crate::oauth::client_auth::authenticate_client;
use crate::oauth::tokens::{AccessClaims, TokenError, check_access_token};
use crate::state::AppState;
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
    let form = form_body(&headers, body)?;
    let client = authenticate_client(&state.oauth, &headers, &form).await?;
    crate::http::access::note_client(&client.client_id);
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
    let answer = describe(&state.oauth, token)
        .await?
        .unwrap_or_else(|| json!({ "active": false }));
    let mut res = Json(answer).into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}

/// Whether the user an access token was issued for was disabled or deleted since: their
/// token is no longer active (RFC 7662 §2.2 leaves "active" to the server), as `/userinfo`
/// refuses it. Disabling revokes a user's refresh tokens, not their access tokens, which are
/// JWTs; a resource server that introspects learns it here instead of at the token's
/// expiry. A machine's own token (`sub` is its client) has no user to read.
async fn holder_gone(ctx: &Context, claims: &AccessClaims) -> Result<bool, OAuthError> {
    if claims.sub == claims.client_id {
        return Ok(false);
    }
    Ok(match ctx.users().get_user(&claims.sub).await? {
        Some(user) => user.is_disabled(),
        None => !names_a_machine(claims),
    })
}

/// Whether a token whose `sub` is not its client still names no user: a machine's own token
/// exchanged by another client (RFC 8693 §4.1: `act` says who acts; the subject, a client,
/// has no chain of a user's, `delegation::record`). Every other such token names a user:
/// one who signed in (`auth_time`), or one linked to an IdP's user by an ID-JAG, which may
/// carry no `auth_time` at all. So a token of a deleted user is never mistaken for a
/// machine's.
fn names_a_machine(claims: &AccessClaims) -> bool {
    claims.act.is_some() && claims.delegation.is_none()
}

/// The introspection answer for an active token, or `None`.
async fn describe(ctx: &Context, token: &str) -> Result<Option<Value>, OAuthError> {
    match check_access_token(ctx, token, None).await {
        Ok(claims) if holder_gone(ctx, &claims).await? => return Ok(None),
        Ok(claims) => {
            let mut out = Map::new();
            out.insert("active".into(), true.into());
            // RFC 9449 §6.2: a bound token is a DPoP token, and its `cnf` says to which key.
            let bound = claims.jkt().is_some();
            out.insert(
                "token_type".into(),
                if bound { "DPoP" } else { "Bearer" }.into(),
            );
            if let (true, Some(cnf)) = (bound, &claims.cnf) {
                out.insert("cnf".into(), cnf.clone());
            }
            if !claims.scope.is_empty() {
                out.insert("scope".into(), claims.scope.clone().into());
            }
            out.insert("client_id".into(), claims.client_id.clone().into());
            out.insert("sub".into(), claims.sub.clone().into());
            out.insert("aud".into(), claims.aud_claim());
            out.insert("iss".into(), claims.iss.clone().into());
            out.insert("exp".into(), claims.exp.into());
            out.insert("iat".into(), claims.iat.into());
            out.insert("jti".into(), claims.jti.clone().into());
            if let Some(t) = claims.auth_time {
                out.insert("auth_time".into(), t.into());
            }
            // How the user authenticated (RFC 9068 §2.2.1; RFC 9470 §4: a resource server
            // that introspects decides step-up from these).
            if !claims.amr.is_empty() {
                out.insert("amr".into(), claims.amr.clone().into());
            }
            if let Some(acr) = &claims.acr {
                out.insert("acr".into(), acr.clone().into());
            }
            if let Some(act) = &claims.act {
                out.insert("act".into(), act.clone());
            }
            // RFC 9396 §9.2: what exactly the user approved.
            if let Some(details) = &claims.authorization_details {
                out.insert("authorization_details".into(), details.clone());
            }
            return Ok(Some(Value::Object(out)));
        }
        Err(TokenError::Revoked) => return Ok(None),
        Err(TokenError::Store(e)) => return Err(e.into()),
        Err(TokenError::Invalid) => {}
    }
    if let Some(rt) = ctx
        .refresh_tokens()
        .get_refresh(&util::secret_key(token), ctx.now())
        .await?
    {
        return Ok(Some(json!({
            "active": true,
            "token_type": "refresh_token",
            "client_id": rt.client_id,
            "sub": rt.user_id,
            "scope": rt.scope,
            "iss": ctx.issuer(),
            "iat": rt.created_at,
            "exp": rt.expires_at,
        })));
    }
    Ok(None)
}
