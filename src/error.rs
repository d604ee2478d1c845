//! Errors and their single mapping to HTTP.
//!
//! Policy:
//! - Anything the caller did wrong is an [`OAuthError`] carrying an RFC error code
//!   (RFC 6749 §5.2, RFC 6750 §3.1, RFC 7591 §3.2.2, RFC 8707 §2) and an `error_description`
//!   written for the developer on the other side: it names the parameter or field at fault.
//! - Anything that is our fault (database down, key material unreadable) becomes
//!   `server_error` with a generic description; the detail goes to the log, never to the caller.
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
            Self::ConsentRequired => "consent_required",
            Self::RequestNotSupported => "request_not_supported",
            Self::RequestUriNotSupported => "request_uri_not_supported",
            Self::AuthorizationPending => "authorization_pending",
            Self::SlowDown => "slow_down",
            Self::ExpiredToken => "expired_token",
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
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            status: code.default_status(),
            www_authenticate: None,
            retry_after: None,
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
        let d = d.into();
        let challenge = format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            d.replace(['"', '\\'], "'")
        );
        let mut e = Self::new(ErrorCode::InvalidToken, d);
        e.www_authenticate = Some(challenge);
        e
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(what: &str, retry_after: u64) -> Self {
        let mut e = Self::new(
            ErrorCode::TemporarilyUnavailable,
            format!("too many {what} from this address; retry in {retry_after} s"),
        )
        .with_status(StatusCode::TOO_MANY_REQUESTS);
        e.retry_after = Some(retry_after);
        e
    }

    /// Our fault: log the detail, tell the caller only that it was ours.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            ErrorCode::ServerError,
            "the server could not complete the request; it has been logged",
        )
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
        let mut res = (self.status, Json(body)).into_response();
        let headers = res.headers_mut();
        // RFC 6749 §5.1/§5.2: token-related answers must not be cached.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(v) = self
            .www_authenticate
            .and_then(|c| HeaderValue::from_str(&c).ok())
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        if let Some(s) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        // For the metrics middleware: errors counted by RFC code.
        res.extensions_mut().insert(self.code);
        res
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(e: crate::store::StoreError) -> Self {
        Self::internal(e)
    }
}

impl From<crate::keys::KeyError> for OAuthError {
    fn from(e: crate::keys::KeyError) -> Self {
        Self::internal(e)
    }
}
