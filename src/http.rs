//! What handlers of every kind (endpoints, the admin API, pages) read from a request the
//! same way: the caller's address, form and JSON bodies' media types, and access tokens in
//! the `Authorization` header.

pub mod access;
pub mod cors;
pub mod durable;
pub mod forwarded;
pub mod front;
pub mod host;

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;

use crate::error::OAuthError;
use crate::oauth::form::Form;
use crate::state::AppState;

/// The caller's address: the peer's, or when the peer is a trusted proxy (`trusted_proxies`,
/// or any peer with the deprecated `trust_forwarded_for`) the first address in the
/// forwarding header, from the right, that is not a trusted proxy ([`forwarded`]).
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub Option<IpAddr>);

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(client_addr(
            &parts.headers,
            &parts.extensions,
            &state.oauth.config,
        )))
    }
}

/// The caller's address of a request with these headers and extensions ([`ClientAddr`]).
pub fn client_addr(
    headers: &HeaderMap,
    extensions: &axum::http::Extensions,
    config: &crate::config::Config,
) -> Option<IpAddr> {
    let peer = extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(a)| a.ip());
    let trust = forwarded::Trust {
        peer: config.trust_forwarded_for,
        proxies: &config.trusted_proxies,
        header: config.forwarded_header,
    };
    if !trust.any() {
        return peer;
    }
    let name = match config.forwarded_header {
        crate::config::ForwardedHeader::XForwardedFor => "x-forwarded-for",
        crate::config::ForwardedHeader::Forwarded => "forwarded",
    };
    // A value that is not visible ASCII names no address: an empty entry ends the walk.
    let values = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or(","));
    forwarded::client_addr(peer, &trust, values)
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

#[cfg(test)]
mod tests {
    /// Property tests (README: Fuzzing).
    mod fuzz {
        use axum::http::{HeaderValue, header};
        use proptest::prelude::*;

        use super::super::*;
        use crate::error::ErrorCode;
        use crate::fuzz::{config, nasty_bytes};

        /// Any value a header can carry (visible ASCII, spaces, tabs, obs-text).
        fn header_value() -> impl Strategy<Value = HeaderValue> {
            prop_oneof![
                nasty_bytes(),
                ("(?i)(bearer|dpop|basic)?", " {0,3}", "[ -~\t]{0,40}")
                    .prop_map(|(s, sp, t)| format!("{s}{sp}{t}").into_bytes()),
            ]
            .prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok())
        }

        fn headers(name: header::HeaderName) -> impl Strategy<Value = HeaderMap> {
            proptest::collection::vec(header_value(), 0..3).prop_map(move |values| {
                let mut h = HeaderMap::new();
                for v in values {
                    h.append(name.clone(), v);
                }
                h
            })
        }

        proptest! {
            #![proptest_config(config())]

            /// Any `Authorization` headers give at most one token: of a single header, with
            /// a known scheme, non-empty and trimmed.
            #[test]
            fn authorization_header_gives_at_most_one_clean_token(h in headers(header::AUTHORIZATION)) {
                if let Some((scheme, token)) = access_token(&h) {
                    prop_assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
                    let value = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
                    let prefix = match scheme {
                        TokenScheme::Bearer => "bearer ",
                        TokenScheme::DPoP => "dpop ",
                    };
                    prop_assert!(value.to_ascii_lowercase().starts_with(prefix));
                    prop_assert!(!token.is_empty() && token.trim() == token);
                    prop_assert_eq!(bearer_token(&h).is_some(), scheme == TokenScheme::Bearer);
                } else {
                    prop_assert!(bearer_token(&h).is_none());
                }
            }

            /// A token68 sent with either scheme, in any case, comes back unchanged.
            #[test]
            fn token68_round_trips(
                token in "[A-Za-z0-9._~+/-]{1,200}=*",
                scheme in "(?i)(bearer|dpop)",
                spaces in " {1,3}",
            ) {
                let mut h = HeaderMap::new();
                h.insert(header::AUTHORIZATION, HeaderValue::from_str(&format!("{scheme}{spaces}{token}"))?);
                let (got_scheme, got) = access_token(&h).ok_or_else(|| TestCaseError::fail("no token"))?;
                prop_assert_eq!(got, token.as_str());
                prop_assert_eq!(got_scheme == TokenScheme::Bearer, scheme.eq_ignore_ascii_case("bearer"));
            }

            /// Any content type and body: a form, or an `invalid_request`.
            #[test]
            fn form_bodies_parse_or_are_invalid_requests(
                h in headers(header::CONTENT_TYPE),
                form_type in any::<bool>(),
                body in nasty_bytes(),
            ) {
                let mut h = h;
                if form_type {
                    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("Application/X-WWW-Form-Urlencoded ; charset=UTF-8"));
                }
                let _ = has_content_type(&h, "application/json");
                match form_body(&h, Ok(axum::body::Bytes::from(body))) {
                    Ok(_) => prop_assert!(has_content_type(&h, "application/x-www-form-urlencoded")),
                    Err(e) => prop_assert_eq!(e.code, ErrorCode::InvalidRequest),
                }
            }
        }
    }
}
