//! [`GuardRejection`]: the answer to a request the guard refuses, as RFC 6750
//! and RFC 9449 say it is written (status, challenges, JSON body). The layer
//! decides what to refuse; this only writes the answer.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::challenge::{BearerChallenge, ChallengeError};

/// The answer to a request the guard refuses. Implements
/// [`IntoResponse`]; also the rejection of the [`Principal`](crate::Principal) extractor.
#[derive(Debug, Clone)]
pub struct GuardRejection {
    pub(crate) status: StatusCode,
    pub(crate) challenge: Option<Box<BearerChallenge>>,
    pub(crate) description: Option<Box<str>>,
    /// A `DPoP` challenge (RFC 9449 §7.1), sent as a second `WWW-Authenticate`.
    pub(crate) dpop_challenge: Option<Box<str>>,
    /// The body's `error` (when not the bearer challenge's).
    pub(crate) body_error: Option<&'static str>,
    /// A `DPoP-Nonce` to send (RFC 9449 §9).
    pub(crate) dpop_nonce: Option<Box<str>>,
    /// `Retry-After`, in seconds.
    pub(crate) retry_after: Option<u32>,
    pub(crate) reason: &'static str,
    pub(crate) hint: Option<&'static str>,
}

impl GuardRejection {
    pub(crate) fn new(status: StatusCode, reason: &'static str) -> Self {
        Self {
            status,
            challenge: None,
            description: None,
            dpop_challenge: None,
            body_error: None,
            dpop_nonce: None,
            retry_after: None,
            reason,
            hint: None,
        }
    }

    pub(crate) fn challenge_only(challenge: BearerChallenge) -> Self {
        let status =
            StatusCode::from_u16(challenge.http_status()).unwrap_or(StatusCode::UNAUTHORIZED);
        let reason = challenge.error().map_or("no_token", ChallengeError::as_str);
        Self {
            challenge: Some(Box::new(challenge)),
            ..Self::new(status, reason)
        }
    }

    pub(crate) fn with_description(
        challenge: BearerChallenge,
        description: impl Into<String>,
    ) -> Self {
        let description = description.into();
        let mut rejection =
            Self::challenge_only(challenge.with_error_description(description.clone()));
        rejection.description = Some(description.into());
        rejection
    }

    pub(crate) fn too_large(limit: usize) -> Self {
        Self {
            description: Some(
                format!("the request body is larger than the {limit} bytes this server reads")
                    .into(),
            ),
            hint: Some("raise GuardBuilder::max_body_bytes if such bodies are legitimate"),
            ..Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large")
        }
    }

    /// The HTTP status: 400, 401, 403, 413 or 503.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// Why, as a short stable name (see [`Refusal::reason`](crate::Refusal::reason)).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// The `WWW-Authenticate` challenge sent, if any.
    #[must_use]
    pub fn challenge(&self) -> Option<&BearerChallenge> {
        self.challenge.as_deref()
    }

    /// The `DPoP` challenge sent beside the bearer one (RFC 9449 §7.1), if any.
    #[must_use]
    pub fn dpop_challenge(&self) -> Option<&str> {
        self.dpop_challenge.as_deref()
    }
}

impl IntoResponse for GuardRejection {
    fn into_response(self) -> axum::response::Response {
        let error = self.body_error.or_else(|| {
            self.challenge
                .as_deref()
                .and_then(BearerChallenge::error)
                .map(ChallengeError::as_str)
        });
        let description = self
            .description
            .as_deref()
            .map(crate::challenge::description_text);
        let body = match (error, description) {
            (Some(error), description) => {
                Some(json!({"error": error, "error_description": description}))
            }
            (None, Some(description)) => Some(json!({"error_description": description})),
            (None, None) => None,
        };
        let mut response = match body {
            Some(body) => (
                self.status,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                )],
                body.to_string(),
            )
                .into_response(),
            None => self.status.into_response(),
        };
        let headers = response.headers_mut();
        if let Some(challenge) = &self.challenge {
            let value = HeaderValue::from_str(&challenge.to_string())
                .unwrap_or(HeaderValue::from_static("Bearer"));
            headers.insert(header::WWW_AUTHENTICATE, value);
        }
        if let Some(value) = self
            .dpop_challenge
            .as_deref()
            .and_then(|c| HeaderValue::from_str(c).ok())
        {
            headers.append(header::WWW_AUTHENTICATE, value);
        }
        if let Some(value) = self
            .dpop_nonce
            .as_deref()
            .and_then(|n| HeaderValue::from_str(n).ok())
        {
            headers.insert("dpop-nonce", value);
        }
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("WWW-Authenticate, DPoP-Nonce"),
        );
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}
