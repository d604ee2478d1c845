//! `POST /revoke` (RFC 7009): a client revokes its own access or refresh token. The answer is
//! 200 whatever the token was (§2.2), so the endpoint cannot be used to probe tokens; a token
//! issued to another client is left alone.

use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::audit::{Event, Kind};
use crate::error::OAuthError;
use crate::http::form_body;
use crate::oauth::client_auth::authenticate_client;
use crate::oauth::tokens::{decode_access_token, revoked_key};
use crate::state::AppState;
use crate::util;

#[utoipa::path(post, path = "/revoke", tag = "oauth",
    description = "Token revocation (RFC 7009): refresh tokens and access tokens.",
    request_body(content = crate::endpoints::schemas::TokenRequestByValue, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "Revoked, or was not valid (RFC 7009 §2.2)"),
        (status = 401, description = "Client authentication failed", body = crate::endpoints::schemas::OAuthErrorResponse),
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, OAuthError> {
    let ctx = &state.oauth;
    let form = form_body(&headers, body)?;
    let client = authenticate_client(ctx, &headers, &form).await?;
    crate::http::access::note_client(&client.client_id);
    let token = form
        .get("token")
        .ok_or_else(|| OAuthError::invalid_request("token is missing"))?;
    let now = ctx.now();
    // The hint only orders the look-ups (§2.1); both kinds are tried.
    if let Some(claims) = decode_access_token(ctx, token) {
        if claims.client_id == client.client_id {
            ctx.replay()
                .use_once(&revoked_key(&claims.jti), claims.exp + 60, now)
                .await?;
            tracing::info!(client_id = %client.client_id, "access token revoked");
            ctx.audit.record(
                Event::new(Kind::TokenRevoked)
                    .client(&client.client_id)
                    .user(&claims.sub)
                    .detail(serde_json::json!({ "token_type": "access_token", "jti": claims.jti })),
            );
        }
    } else {
        // The whole grant goes: the refresh token and its rotations, with its audit event
        // (the family's user and id added by the store) in the same write.
        let event = Event::new(Kind::TokenRevoked)
            .client(&client.client_id)
            .detail(serde_json::json!({ "token_type": "refresh_token" }));
        let revoked = ctx
            .refresh_tokens()
            .revoke_family_of(
                &util::secret_key(token),
                &client.client_id,
                now,
                event.row(),
            )
            .await?;
        if let Some(family) = revoked {
            tracing::info!(client_id = %client.client_id, "refresh token revoked");
            ctx.audit.stored(family.event(event.row()));
        }
    }
    let mut res = StatusCode::OK.into_response();
    res.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(res)
}
