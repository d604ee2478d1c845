//! Errors and their single mapping to HTTP.
//!
//! Policy:
//! - Anything the caller did wrong is an [`OAuthError`] carrying an RFC error code
//!   (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8707 §2) and an `error_description`
//!   written for the developer on the other side: it names the parameter or field at fault.
//! - Anything that is our fault (database down, key material unreadable) becomes
//!   `server_error` (500) with a generic description and a correlation id; the detail goes
//!   to the log under that id, never to the caller. Pages do the same.
//! - Nothing on a request path panics; handlers return `Result<_, OAuthError>`.
//! - Descriptions never contain secrets or tokens.

use std::borrow::Cow;

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// The RFC error codes Concierge answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// RFC 6749 §5.2: missing, repeated or malformed parameter.
    InvalidRequest,
    /// RFC 6749 §5.2: client authentication failed or the client is unknown.
    InvalidClient,
    /// RFC 6749 §5.2: the grant (code, refresh token, assertion) is invalid.
    InvalidGrant,
    /// RFC 6749 §5.2: this client may not use this grant type.
    UnauthorizedClient,
    /// RFC 6749 §5.2.
    UnsupportedGrantType,
    /// RFC 6749 §5.2.
    InvalidScope,
    /// RFC 8707 §2: the resource is unknown or not allowed.
    InvalidTarget,
    /// RFC 7591 §3.2.2.
    InvalidClientMetadata,
    /// RFC 7591 §3.2.2.
    InvalidRedirectUri,
    /// RFC 6750 §3.1: the bearer token (e.g. a registration access token) is not valid.
    InvalidToken,
    /// RFC 6749 §4.1.2.1.
    AccessDenied,
    /// RFC 6749 §4.1.2.1.
    UnsupportedResponseType,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` but the user must sign in.
    LoginRequired,
    /// OpenID Connect Core §3.1.2.6: `prompt=none` but the user must consent.
    ConsentRequired,
    /// OpenID Connect Unmet Authentication Requirements 1.0 §2: the user cannot sign in
    /// as strongly as required (no factor of that kind).
    UnmetAuthenticationRequirements,
    /// OpenID Connect Core §3.1.2.6.
    RequestNotSupported,
    /// OpenID Connect Core §3.1.2.6.
    RequestUriNotSupported,
    /// RFC 8628 §3.5.
    AuthorizationPending,
    /// RFC 8628 §3.5.
    SlowDown,
    /// RFC 8628 §3.5.
    ExpiredToken,
    /// RFC 9449 §5, §7.1: the DPoP proof is missing, invalid or for another key.
    InvalidDpopProof,
    /// RFC 9449 §8, §9: send a proof with the server's nonce (from the `DPoP-Nonce` header).
    UseDpopNonce,
    /// OpenID Connect CIBA Core §13: the `login_hint_token` is not valid any more.
    ExpiredLoginHintToken,
    /// OpenID Connect CIBA Core §13: the binding message is too long or not plain text.
    InvalidBindingMessage,
    /// RFC 9396 §5: `authorization_details` malformed, of an unknown type, or not as its
    /// type defines.
    InvalidAuthorizationDetails,
    /// Our fault; details are logged, not returned.
    ServerError,
    /// RFC 6749 §4.1.2.1; used with 429 for rate limits.
    TemporarilyUnavailable,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidToken => "invalid_token",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::LoginRequired => "login_required",
            Self::UnmetAuthenticationRequirements => "unmet_authentication_requirements",
            Self::ConsentRequired => "consent_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
            Self::InvalidDpopProof => "invalid_dpop_proof",
            Self::UseDpopNonce => "use_dpop_nonce",
            Self::ExpiredLoginHintToken => "expired_login_hint_token",
            Self::InvalidBindingMessage => "invalid_binding_message",
            Self::InvalidAuthorizationDetails => "invalid_authorization_details",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    fn default_status(self) -> StatusCode {
        match self {
            Self::InvalidClient | Self::InvalidToken => StatusCode::UNAUTHORIZED,
            Self::AccessDenied => StatusCode::FORBIDDEN,
            Self::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            Self::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: RFC code, description, HTTP status and optional extra headers.
#[derive(Debug, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
    pub status: StatusCode,
    /// `WWW-Authenticate` value for 401 answers (RFC 6750 §3, RFC 6749 §5.2).
    pub www_authenticate: Option<String>,
    /// `Retry-After` seconds for 429/503 answers.
    pub retry_after: Option<u64>,
    /// A fresh server nonce for the `DPoP-Nonce` header (RFC 9449 §8).
    pub dpop_nonce: Option<String>,
}

/// `text` with only the characters RFC 6749 §5.2 allows in `error_description`
/// (`%x20-21 / %x23-5B / %x5D-7E`): `§` (in our own RFC references) becomes `section `, a
/// double quote `'`, a backslash `/`, anything else outside the range (control characters,
/// non-ASCII) `?`. Borrowed when already clean.
pub fn rfc6749_text(text: Cow<'static, str>) -> Cow<'static, str> {
    let allowed = |c: char| matches!(c, '\x20'..='\x21' | '\x23'..='\x5B' | '\x5D'..='\x7E');
    if text.chars().all(allowed) {
        return text;
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '§' => out.push_str("section "),
            '"' => out.push('\''),
            '\\' => out.push('/'),
            c if allowed(c) => out.push(c),
            _ => out.push('?'),
        }
    }
    Cow::Owned(out)
}

impl OAuthError {
    /// An error with `code` and a description; the description is kept to the characters
    /// RFC 6749 §5.2 allows, whatever went into it (a client's own input, say).
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: rfc6749_text(description.into()),
            status: code.default_status(),
            www_authenticate: None,
            retry_after: None,
            dpop_nonce: None,
        }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn invalid_request(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, d)
    }
    pub fn invalid_client_metadata(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidClientMetadata, d)
    }
    pub fn invalid_redirect_uri(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRedirectUri, d)
    }

    /// 401 `invalid_token` with the RFC 6750 §3 challenge.
    pub fn invalid_token(d: impl Into<Cow<'static, str>>) -> Self {
        let mut e = Self::new(ErrorCode::InvalidToken, d);
        e.www_authenticate = Some(format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            e.description
        ));
        e
    }

    /// 400 `invalid_dpop_proof` (RFC 9449 §5).
    pub fn invalid_dpop_proof(d: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidDpopProof, d)
    }

    /// 429 with `Retry-After`: "too many {what}; retry in N s".
    pub fn rate_limited(what: &str, retry_after: u64) -> Self {
        let mut e = Self::new(
            ErrorCode::TemporarilyUnavailable,
            format!("too many {what}; retry in {retry_after} s"),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS);
        e.retry_after = Some(retry_after);
        e
    }

    /// Our fault: log the detail under a correlation id, tell the caller only the id.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(ErrorCode::ServerError, internal_message(detail))
    }
}

/// Log an internal error and return the message a caller may see: that it was our fault,
/// and the id to quote. The id is the request's (`X-Request-Id`, also on every log line of
/// the request), or a fresh one outside a request.
pub fn internal_message(detail: impl std::fmt::Display) -> String {
    let id = crate::request_id::current().map_or_else(
        || crate::util::random_id()[..12].to_string(),
        |r| r.as_str().to_string(),
    );
    tracing::error!(error = %detail, error_id = %id, "internal error");
    format!("the server could not complete the request; it has been logged as {id}")
}

/// The response header carrying a DPoP server nonce (RFC 9449 §8.1).
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_keep_to_the_rfc_6749_characters() {
        let e = OAuthError::new(
            ErrorCode::InvalidScope,
            "scope contains the invalid scope token \"a\\\"b\" caf\u{e9}\n",
        );
        assert_eq!(
            e.description,
            "scope contains the invalid scope token 'a/'b' caf??"
        );
        assert_eq!(
            OAuthError::new(ErrorCode::InvalidRequest, "see RFC 6749 §3.2").description,
            "see RFC 6749 section 3.2"
        );
        assert!(matches!(
            rfc6749_text(Cow::Borrowed("plain text (ok) [1]")),
            Cow::Borrowed(_)
        ));
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'static str,
    error_description: &'a str,
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.as_str(),
            error_description: &self.description,
        };
        let mut res = no_store_with_challenge(
            (self.status, Json(body)).into_response(),
            self.www_authenticate,
        );
        if let Some(s) = self.retry_after {
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // For the metrics middleware: errors counted by RFC code.
        res.extensions_mut().insert(self.code);
        if let Some(v) = self.dpop_nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            res.headers_mut().insert(DPOP_NONCE_HEADER, v);
        }
        res
    }
}

/// An error answer's headers: never cached (RFC 6749 §5.1/§5.2 for token-related answers),
/// and the `WWW-Authenticate` challenge when there is one (RFC 6750 §3).
fn no_store_with_challenge(mut res: Response, challenge: Option<String>) -> Response {
    let headers = res.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(v) = challenge.and_then(|c| HeaderValue::from_str(&c).ok()) {
        headers.insert(header::WWW_AUTHENTICATE, v);
    }
    res
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

/// The admin API's error envelope: `{"error": {"code", "message", "field"?}}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiErrorBody {
    pub error: ApiErrorDetail,
}

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApiErrorDetail {
    /// `unauthorized`, `forbidden`, `validation_failed`, `not_found`, `conflict` or
    /// `server_error`.
    pub code: &'static str,
    /// For the developer: what is wrong and how to fix it.
    pub message: String,
    /// The input field at fault (`redirect_uris[0]`, `scopes[1].name`), for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An admin API error (see [`ApiErrorBody`]). Our faults are logged and answered with a
/// generic message, as with [`OAuthError::internal`].
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub detail: ApiErrorDetail,
    pub www_authenticate: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            detail: ApiErrorDetail {
                code,
                message: message.into(),
                field: None,
            },
            www_authenticate: None,
        }
    }

    /// 400 naming the field at fault.
    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::BAD_REQUEST, "validation_failed", message);
        e.detail.field = Some(field.into());
        e
    }

    /// 400 about the request as a whole (unreadable body, malformed query).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation_failed", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 401 with the RFC 6750 §3 challenge; `error` is the RFC 6750 §3.1 code, if any.
    pub fn unauthorized(error: Option<&str>, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.www_authenticate = Some(match error {
            // RFC 6750 §3.1: no error code when the request had no token at all.
            None => "Bearer".to_string(),
            Some(code) => format!("Bearer error=\"{code}\""),
        });
        e
    }

    /// 403 `insufficient_scope` (RFC 6750 §3.1).
    pub fn forbidden(scope: &str, message: impl Into<String>) -> Self {
        let mut e = Self::new(StatusCode::FORBIDDEN, "forbidden", message);
        e.www_authenticate = Some(format!(
            "Bearer error=\"insufficient_scope\", scope=\"{scope}\""
        ));
        e
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            internal_message(detail),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        no_store_with_challenge(
            (self.status, Json(ApiErrorBody { error: self.detail })).into_response(),
            self.www_authenticate,
        )
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        match e {
            crate::store::StoreError::Conflict(what) => {
                Self::conflict(format!("{what} already exists"))
            }
            other => Self::internal(other),
        }
    }
}
