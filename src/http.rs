//! What handlers of every kind (endpoints, the admin API, pages) read from a request the
//! same way: the caller's address, form and JSON bodies' media types, and access tokens in
//! the `Authorization` header.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::error::OAuthError;
use crate::oauth::form::Form;
use crate::state::AppState;

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
        if state.oauth.config.trust_forwarded_for
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

/// A form body of media type `application/x-www-form-urlencoded`, parsed.
pub fn form_body(
    headers: &HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Form, OAuthError> {
    if !has_content_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "the request must have Content-Type: application/x-www-form-urlencoded",
        ));
    }
    let body =
        body.map_err(|e| OAuthError::invalid_request(format!("the body could not be read: {e}")))?;
    Form::parse(&body)
}

/// Is the request body of media type `mime` (parameters such as `charset` aside)?
pub fn has_content_type(headers: &HeaderMap, mime: &str) -> bool {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(mime))
}

/// How an access token was presented in the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenScheme {
    /// RFC 6750 §2.1.
    Bearer,
    /// RFC 9449 §7.1: with a `DPoP` proof header.
    DPoP,
}

/// The access token of an `Authorization` header (`Bearer` or `DPoP`), if there is exactly
/// one such header.
pub fn access_token(headers: &HeaderMap) -> Option<(TokenScheme, &str)> {
    let mut values = headers.get_all(axum::http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    let scheme = if scheme.eq_ignore_ascii_case("bearer") {
        TokenScheme::Bearer
    } else if scheme.eq_ignore_ascii_case("dpop") {
        TokenScheme::DPoP
    } else {
        return None;
    };
    (!token.is_empty()).then_some((scheme, token))
}

/// The bearer token of an `Authorization` header (RFC 6750 §2.1), if there is exactly one.
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    access_token(headers)
        .filter(|(s, _)| *s == TokenScheme::Bearer)
        .map(|(_, t)| t)
}
