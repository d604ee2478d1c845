//! The validated caller handed to handlers.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;

/// The caller behind a validated access token.
///
/// The [`GuardLayer`](crate::GuardLayer) inserts it into the request's
/// extensions; take it with the axum extractor (`principal: Principal` or
/// `Option<Principal>`), or in an rmcp tool from the request
/// [`Parts`](http::request::Parts)' `extensions`. Cloning is cheap (one
/// `Arc`).
///
/// ```
/// use axum::{Router, routing::get};
/// use concierge_guard::Principal;
///
/// async fn whoami(principal: Principal) -> String {
///     format!("{} via {} with {:?}", principal.sub(), principal.client_id(), principal.scopes())
/// }
/// let app: Router = Router::new().route("/whoami", get(whoami));
/// ```
#[derive(Clone)]
pub struct Principal(Arc<PrincipalData>);

/// What a [`Principal`] is made of; built by validation.
pub(crate) struct PrincipalData {
    pub(crate) sub: String,
    pub(crate) client_id: String,
    pub(crate) scopes: Vec<String>,
    pub(crate) act: Vec<Actor>,
    pub(crate) expires_at: i64,
    pub(crate) claims: Value,
}

impl From<PrincipalData> for Principal {
    fn from(data: PrincipalData) -> Self {
        Self(Arc::new(data))
    }
}

/// The raw bearer token of a request the [`GuardLayer`](crate::GuardLayer)
/// let through, next to the [`Principal`] in the request extensions: what a
/// server passes to [`Guard::exchange`](crate::Guard::exchange) to call
/// another resource on the caller's behalf. Never forward it itself.
/// `Debug` does not show it.
#[derive(Clone)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    pub(crate) fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// The token.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// One party in a delegation chain (`act` claim, RFC 8693 §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Actor {
    /// The acting party's subject.
    pub sub: Option<String>,
    /// The acting party's client, when the issuer names it.
    pub client_id: Option<String>,
}

impl Principal {
    /// The subject (`sub`): the user, or the client itself for machine tokens.
    #[must_use]
    pub fn sub(&self) -> &str {
        &self.0.sub
    }

    /// The OAuth client the token was issued to (`client_id`, RFC 9068 §2.2).
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.0.client_id
    }

    /// The granted scopes (`scope`, split on spaces).
    #[must_use]
    pub fn scopes(&self) -> &[String] {
        &self.0.scopes
    }

    /// Whether `scope` was granted.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.0.scopes.iter().any(|s| s == scope)
    }

    /// The delegation chain from the `act` claim, current actor first; empty
    /// when the token was not obtained by token exchange.
    #[must_use]
    pub fn act(&self) -> &[Actor] {
        &self.0.act
    }

    /// Expiry (`exp`), in seconds since the Unix epoch.
    #[must_use]
    pub fn expires_at(&self) -> i64 {
        self.0.expires_at
    }

    /// The DPoP key the token is bound to (`cnf.jkt`, RFC 9449 §6.1), if any.
    /// The guard has checked the request's proof of that key.
    #[must_use]
    pub fn dpop_jkt(&self) -> Option<&str> {
        self.0.claims.get("cnf")?.get("jkt")?.as_str()
    }

    /// Every claim of the token, as sent.
    #[must_use]
    pub fn claims(&self) -> &Value {
        &self.0.claims
    }

    /// The scopes of `required` that were not granted.
    #[must_use]
    pub fn missing_scopes<'a>(&self, required: &'a [String]) -> Vec<&'a str> {
        required
            .iter()
            .filter(|s| !self.has_scope(s))
            .map(String::as_str)
            .collect()
    }
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("sub", &self.0.sub)
            .field("client_id", &self.0.client_id)
            .field("scopes", &self.0.scopes)
            .field("act", &self.0.act)
            .field("expires_at", &self.0.expires_at)
            .finish_non_exhaustive()
    }
}
