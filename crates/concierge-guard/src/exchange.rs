//! The token-exchange helper (RFC 8693): a token for a downstream resource,
//! obtained for the caller of this one, with a per-subject cache.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::digest::{SHA256, digest};
use serde_json::Value;
use thiserror::Error;

use crate::client::{Answer, post_form};
use crate::guard::Guard;

/// RFC 8693 §2.1 grant type.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
/// RFC 8693 §3 token type of an access token.
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// A cached downstream token is not handed out during its last this-many seconds.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Most cached downstream tokens kept.
const MAX_CACHED: usize = 10_000;

/// A token obtained by [`Guard::exchange`]. `Debug` does not show the token.
#[derive(Clone)]
pub struct ExchangedToken {
    access_token: String,
    token_type: String,
    scope: Option<String>,
    expires_at: Option<Instant>,
}

impl fmt::Debug for ExchangedToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExchangedToken")
            .field("token_type", &self.token_type)
            .field("scope", &self.scope)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl ExchangedToken {
    /// The downstream access token, for `Authorization: Bearer …`.
    #[must_use]
    pub fn access_token(&self) -> &str {
        &self.access_token
    }

    /// `token_type` as answered (`Bearer`).
    #[must_use]
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// The scopes granted, when the issuer said (RFC 8693 §2.2.1).
    #[must_use]
    pub fn scope(&self) -> Option<&str> {
        self.scope.as_deref()
    }

    /// When the token expires, when the issuer said (`expires_in`).
    #[must_use]
    pub fn expires_at(&self) -> Option<Instant> {
        self.expires_at
    }
}

/// Why [`Guard::exchange`] failed. The messages say what to change.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The guard was built without [`client_credentials`](crate::GuardBuilder::client_credentials).
    #[error(
        "token exchange needs this server's client credentials: call GuardBuilder::client_credentials"
    )]
    NoCredentials,
    /// The issuer's metadata names no `token_endpoint` (or the guard has not
    /// reached the issuer yet).
    #[error(
        "the issuer's token endpoint is unknown: its metadata names none, discovery was skipped \
         (give Issuer::token_endpoint), or the issuer has not answered yet"
    )]
    NoTokenEndpoint,
    /// The issuer does not know the target (`invalid_target`, RFC 8693 §2.2.2).
    #[error(
        "the issuer does not accept {target} as a target ({description}); register it there \
         (concierge resource add --uri {target} …) and use exactly that URI"
    )]
    TargetNotRegistered {
        /// The requested target resource.
        target: String,
        /// The issuer's `error_description`.
        description: String,
    },
    /// No exchange policy lets this client exchange such tokens for the
    /// target (`unauthorized_client`), or the client may not use the grant.
    #[error(
        "the issuer does not let client {client_id} exchange this token for {target} \
         ({description}); an operator adds an exchange policy (concierge resource allow-exchange …)"
    )]
    NotAllowed {
        /// This server's client id.
        client_id: String,
        /// The requested target resource.
        target: String,
        /// The issuer's `error_description`.
        description: String,
    },
    /// The issuer refused this server's client authentication (`invalid_client`).
    #[error("the issuer refused client {client_id}'s credentials ({description})")]
    BadCredentials {
        /// This server's client id.
        client_id: String,
        /// The issuer's `error_description`.
        description: String,
    },
    /// The requested scopes cannot be granted (`invalid_scope`).
    #[error("the requested scopes cannot be granted: {0}")]
    InvalidScope(String),
    /// The subject token is not acceptable (`invalid_grant`), e.g. expired or revoked.
    #[error("the incoming token cannot be exchanged: {0}")]
    InvalidSubject(String),
    /// Another OAuth error.
    #[error("the token endpoint answered {error}: {description}")]
    Refused {
        /// The `error` code.
        error: String,
        /// The `error_description`, or empty.
        description: String,
    },
    /// The token endpoint could not be reached or answered nonsense.
    #[error("token exchange failed: {0}")]
    Transport(String),
}

/// Cache of downstream tokens keyed by SHA-256 of (subject token, target, scope).
pub(crate) struct ExchangeCache {
    entries: Mutex<HashMap<[u8; 32], ExchangedToken>>,
}

fn cache_key(subject: &str, target: &str, scope: &str) -> [u8; 32] {
    // Lengths first, so no two different triples serialise the same.
    let material = format!(
        "{}:{}:{}:{subject}{target}{scope}",
        subject.len(),
        target.len(),
        scope.len()
    );
    let mut key = [0; 32];
    key.copy_from_slice(digest(&SHA256, material.as_bytes()).as_ref());
    key
}

impl ExchangeCache {
    pub(crate) fn new() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, key: &[u8; 32], now: Instant) -> Option<ExchangedToken> {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get(key) {
            Some(t) if t.expires_at.is_some_and(|e| e > now + EXPIRY_MARGIN) => Some(t.clone()),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn insert(&self, key: [u8; 32], token: &ExchangedToken, now: Instant) {
        // Tokens without a known lifetime are not cached.
        if token.expires_at.is_none_or(|e| e <= now + EXPIRY_MARGIN) {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_CACHED {
            entries.retain(|_, t| t.expires_at.is_some_and(|e| e > now + EXPIRY_MARGIN));
            if entries.len() >= MAX_CACHED {
                entries.clear();
            }
        }
        entries.insert(key, token.clone());
    }
}

/// Reads a successful token response (RFC 8693 §2.2.1).
fn token_from(json: &Value, now: Instant) -> Result<ExchangedToken, ExchangeError> {
    let text = |k: &str| json.get(k).and_then(Value::as_str).map(str::to_owned);
    let access_token = text("access_token")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ExchangeError::Transport("the answer has no access_token".into()))?;
    let token_type = text("token_type")
        .ok_or_else(|| ExchangeError::Transport("the answer has no token_type".into()))?;
    if !token_type.eq_ignore_ascii_case("bearer") {
        // A DPoP- or N_A-typed token cannot be sent as a bearer token downstream.
        return Err(ExchangeError::Transport(format!(
            "the issued token_type {token_type:?} is not Bearer"
        )));
    }
    let expires_at = json
        .get("expires_in")
        .and_then(Value::as_u64)
        .map(|s| now + Duration::from_secs(s));
    Ok(ExchangedToken {
        access_token,
        token_type,
        scope: text("scope"),
        expires_at,
    })
}

impl Guard {
    /// Exchanges `subject_token` — the access token this server received (the
    /// layer puts it in the request extensions as [`BearerToken`](crate::BearerToken))
    /// — for a token for `target` with `scopes`, at the issuer's token
    /// endpoint (RFC 8693 §2.1), authenticated with this server's
    /// [`client_credentials`](crate::GuardBuilder::client_credentials).
    /// The incoming token itself is never sent anywhere else.
    ///
    /// Answers are cached per (hash of the subject token, target, scopes)
    /// until 30 s before they expire. An empty `scopes` lets the issuer pick
    /// (Concierge: every scope its exchange policy maps the subject's to).
    ///
    /// ```no_run
    /// # async fn run(guard: concierge_guard::Guard, incoming: concierge_guard::BearerToken)
    /// # -> Result<(), concierge_guard::ExchangeError> {
    /// let notes = guard
    ///     .exchange(incoming.as_str(), "https://notes.example.com/mcp", &["notes:read"])
    ///     .await?;
    /// // call the notes server with `Authorization: Bearer {notes.access_token()}`
    /// # Ok(()) }
    /// ```
    pub async fn exchange(
        &self,
        subject_token: &str,
        target: &str,
        scopes: &[&str],
    ) -> Result<ExchangedToken, ExchangeError> {
        let inner = &self.inner;
        let credentials = inner
            .credentials
            .as_ref()
            .ok_or(ExchangeError::NoCredentials)?;
        let endpoint = self
            .token_endpoint()
            .ok_or(ExchangeError::NoTokenEndpoint)?;
        let scope = scopes.join(" ");
        let key = cache_key(subject_token, target, &scope);
        let now = Instant::now();
        if let Some(token) = inner.exchanges.get(&key, now) {
            return Ok(token);
        }
        let mut form = vec![
            ("grant_type", TOKEN_EXCHANGE.to_owned()),
            ("subject_token", subject_token.to_owned()),
            ("subject_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            ("requested_token_type", ACCESS_TOKEN_TYPE.to_owned()),
            ("resource", target.to_owned()),
        ];
        if !scope.is_empty() {
            form.push(("scope", scope));
        }
        let answer = post_form(&inner.http, &endpoint, credentials, form)
            .await
            .map_err(ExchangeError::Transport)?;
        let json = match answer {
            Answer::Ok(json) => json,
            Answer::Error {
                error, description, ..
            } => {
                let description = description.unwrap_or_default();
                return Err(match error.as_str() {
                    "invalid_target" => ExchangeError::TargetNotRegistered {
                        target: target.to_owned(),
                        description,
                    },
                    "unauthorized_client" | "unsupported_grant_type" => ExchangeError::NotAllowed {
                        client_id: credentials.client_id().to_owned(),
                        target: target.to_owned(),
                        description,
                    },
                    "invalid_client" => ExchangeError::BadCredentials {
                        client_id: credentials.client_id().to_owned(),
                        description,
                    },
                    "invalid_scope" => ExchangeError::InvalidScope(description),
                    "invalid_grant" => ExchangeError::InvalidSubject(description),
                    _ => ExchangeError::Refused { error, description },
                });
            }
        };
        let token = token_from(&json, now)?;
        inner.exchanges.insert(key, &token, now);
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cache_keys_separate_every_part() {
        assert_ne!(cache_key("ab", "c", ""), cache_key("a", "bc", ""));
        assert_ne!(cache_key("a", "b", "x"), cache_key("a", "b", "y"));
        assert_eq!(cache_key("a", "b", "x"), cache_key("a", "b", "x"));
    }

    #[test]
    fn token_response_is_read_and_cached_until_near_expiry() {
        let now = Instant::now();
        let t = token_from(
            &json!({"access_token": "at", "token_type": "Bearer", "expires_in": 300, "scope": "notes:read"}),
            now,
        )
        .unwrap();
        assert_eq!(t.access_token(), "at");
        assert_eq!(t.scope(), Some("notes:read"));
        assert!(!format!("{t:?}").contains("\"at\""));
        let cache = ExchangeCache::new();
        let key = cache_key("s", "t", "");
        cache.insert(key, &t, now);
        assert!(cache.get(&key, now).is_some());
        assert!(cache.get(&key, now + Duration::from_secs(271)).is_none());

        let short = token_from(
            &json!({"access_token": "at", "token_type": "bearer", "expires_in": 10}),
            now,
        )
        .unwrap();
        cache.insert(key, &short, now);
        assert!(cache.get(&key, now).is_none(), "too close to expiry");

        for bad in [
            json!({"token_type": "Bearer"}),
            json!({"access_token": "at"}),
            json!({"access_token": "at", "token_type": "DPoP"}),
        ] {
            assert!(token_from(&bad, now).is_err(), "{bad}");
        }
    }
}
