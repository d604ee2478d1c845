//! Thin axum handlers, one file per endpoint. They parse the request, call protocol logic in
//! `oauth`, do the I/O, and shape the response; decisions live elsewhere.

pub mod account;
pub mod authorize;
pub mod device;
pub mod health;
pub mod introspect;
pub mod jwks;
pub mod register;
pub mod revoke;
pub mod signin;
pub mod token;
pub mod userinfo;
pub mod well_known;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::startup::AppState;

/// The caller's address: the peer, or with `trust_forwarded_for` the last `X-Forwarded-For`
/// entry (the one our own proxy appended).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if state.config.trust_forwarded_for
            && let Some(ip) = parts
                .headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|s| s.trim().parse::<IpAddr>().ok())
                .next_back()
        {
            return Ok(Self(Some(ip)));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip());
        Ok(Self(peer))
    }
}

/// Authenticate the client of a token-endpoint-style request (token, introspection,
/// revocation): what it presented, checked against how it registered.
pub async fn authenticated_client(
    state: &AppState,
    headers: &HeaderMap,
    form: &crate::oauth::form::Form,
) -> Result<crate::oauth::clients::Client, crate::error::OAuthError> {
    use crate::oauth::client_auth::{self, invalid_client};
    let presented = client_auth::presented(headers, form)?;
    let basic = matches!(presented, client_auth::Presented::Basic { .. });
    let client = match state.clients.find(presented.client_id()).await {
        Ok(Some(c)) => c,
        // A client that no longer exists gets invalid_client, so agents know to register again.
        Ok(None) => return Err(invalid_client(basic, "unknown client; register again")),
        Err(e) => return Err(invalid_client(basic, e.to_string())),
    };
    client_auth::authenticate(&client, &presented, &state.assertions).await?;
    Ok(client)
}

/// A form body of media type `application/x-www-form-urlencoded`, parsed.
pub fn form_body(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<crate::oauth::form::Form, crate::error::OAuthError> {
    use crate::error::OAuthError;
    if !has_content_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the request must have Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let body =
        body.map_err(|e| OAuthError::invalid_request(format!("the body could not be read: {e}")))?;
    crate::oauth::form::Form::parse(&body)
}

/// Is the request body of media type `mime` (parameters such as `charset` aside)?
pub fn has_content_type(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime))
}

/// The bearer token of an `Authorization` header (RFC 6750 §2.1), if there is exactly one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}
