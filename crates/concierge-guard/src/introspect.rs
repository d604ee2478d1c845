//! Token introspection (RFC 7662) as a fallback for opaque tokens, and, when
//! asked, as a second opinion on JWTs so revoked ones are refused.

use std::time::Instant;

use serde_json::Value;

use crate::client::{Answer, post_form, unix_now};
use crate::error::TokenError;
use crate::guard::Guard;
use crate::principal::Principal;
use crate::validate::{ClaimRules, check_claims};

/// When the guard asks the issuer's introspection endpoint about a token.
///
/// Both modes need [`client_credentials`](crate::GuardBuilder::client_credentials)
/// (Concierge: a client an operator allowed with `client add --may-introspect`)
/// and an `introspection_endpoint` in the first issuer's metadata (or
/// [`Issuer::introspection_endpoint`](crate::Issuer::introspection_endpoint)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Introspection {
    /// Never: only JWT access tokens are accepted (the default).
    #[default]
    Off,
    /// For tokens that are not JWTs (opaque tokens).
    OpaqueTokens,
    /// For every token: JWTs are validated locally *and* introspected, so a
    /// token revoked at the issuer is refused once the cached answer ends
    /// (at most [`introspection_cache_ttl`](crate::GuardBuilder::introspection_cache_ttl)).
    AllTokens,
}

/// A compact JWS has exactly three dot-separated parts.
pub(crate) fn looks_like_jwt(token: &str) -> bool {
    token.split('.').count() == 3
}

/// Reads an introspection answer (RFC 7662 §2.2) into a principal, with the
/// same claim rules as a JWT: an inactive token, a refresh token, another
/// issuer or audience, a missing `exp`, `sub` or `client_id` are refused.
pub(crate) fn principal_from_introspection(
    mut answer: Value,
    rules: &ClaimRules,
    now: i64,
) -> Result<Principal, TokenError> {
    if answer.get("active") != Some(&Value::Bool(true)) {
        return Err(TokenError::Inactive);
    }
    // `token_type` (§2.2) is only a hint, but a refresh token is never a bearer credential.
    if let Some(t) = answer.get("token_type").and_then(Value::as_str)
        && !t.eq_ignore_ascii_case("bearer")
        && !t.eq_ignore_ascii_case("access_token")
        && !t.eq_ignore_ascii_case("dpop")
    {
        return Err(TokenError::Inactive);
    }
    // The answer comes from the issuer's own endpoint: without `iss` it speaks for it.
    if let Some(obj) = answer.as_object_mut() {
        obj.entry("iss")
            .or_insert_with(|| Value::String(rules.issuer.clone()));
    }
    check_claims(answer, rules, now)
}

impl Guard {
    /// Asks the introspection endpoint about `token`; cached (successes only)
    /// no longer than the token's `exp` and the configured bound.
    pub(crate) async fn introspect(&self, token: &str) -> Result<Principal, TokenError> {
        let inner = &self.inner;
        let now = Instant::now();
        if let Some(principal) = inner.introspection_cache.get(token, now) {
            return Ok(principal);
        }
        let Some(primary) = inner.issuers.first().and_then(|s| s.connected()) else {
            return Err(TokenError::NotReady);
        };
        let (Some(endpoint), Some(credentials)) =
            (&primary.introspection_endpoint, &inner.credentials)
        else {
            return Err(TokenError::IntrospectionUnavailable);
        };
        let form = vec![
            ("token", token.to_owned()),
            ("token_type_hint", "access_token".to_owned()),
        ];
        let answer = post_form(&inner.http, endpoint, credentials, form).await;
        let json = match answer {
            Ok(Answer::Ok(json)) => json,
            Ok(Answer::Error { error, status, .. }) => {
                tracing::warn!(%endpoint, %error, status, "introspection refused");
                return Err(TokenError::IntrospectionUnavailable);
            }
            Err(e) => {
                tracing::warn!(%endpoint, error = %e, "introspection failed");
                return Err(TokenError::IntrospectionUnavailable);
            }
        };
        let unix = unix_now();
        let principal = principal_from_introspection(json, &primary.rules, unix)?;
        inner
            .introspection_cache
            .insert(token, &principal, now, unix);
        Ok(principal)
    }
}
