//! [`Issuer`]: one authorization server whose tokens the guard accepts.

use serde_json::Value;

use crate::claims::ClaimMapping;

/// An authorization server whose access tokens the guard accepts, and how
/// to reach its keys. A plain issuer URL converts into one, so
/// `Guard::builder("https://auth.example.com", …)` works.
///
/// By default the guard discovers the issuer's metadata (RFC 8414, then
/// OpenID Connect Discovery) for its `jwks_uri` and endpoints. With
/// [`jwks_uri`](Self::jwks_uri) discovery is skipped; with
/// [`jwks`](Self::jwks) nothing is fetched at all (fixed keys, for tests and
/// offline set-ups).
///
/// ```
/// use concierge_guard::{ClaimMapping, Issuer};
///
/// let auth0 = Issuer::new("https://tenant.eu.auth0.com/")
///     .claims(ClaimMapping::identity_providers());
/// let keycloak = Issuer::new("https://sso.example.com/realms/mcp")
///     .jwks_uri("https://sso.example.com/realms/mcp/protocol/openid-connect/certs")
///     .claims(ClaimMapping::identity_providers());
/// assert_eq!(keycloak.url(), "https://sso.example.com/realms/mcp");
/// # let _ = auth0;
/// ```
#[derive(Debug, Clone)]
pub struct Issuer {
    pub(crate) url: String,
    pub(crate) jwks_uri: Option<String>,
    pub(crate) jwks: Option<Value>,
    pub(crate) claims: ClaimMapping,
    pub(crate) token_endpoint: Option<String>,
    pub(crate) introspection_endpoint: Option<String>,
}

impl Issuer {
    /// The issuer identifier: the `iss` of its tokens (a lone trailing slash
    /// is tolerated when its metadata is discovered; with
    /// [`jwks_uri`](Self::jwks_uri) or [`jwks`](Self::jwks) it must be exact).
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            jwks_uri: None,
            jwks: None,
            claims: ClaimMapping::default(),
            token_endpoint: None,
            introspection_endpoint: None,
        }
    }

    /// The issuer identifier as configured.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetch the keys from this JWKS URL and skip discovery: the guard
    /// starts without the issuer's metadata (the `iss` of tokens must then
    /// byte-equal the configured issuer).
    #[must_use]
    pub fn jwks_uri(mut self, url: impl Into<String>) -> Self {
        self.jwks_uri = Some(url.into());
        self
    }

    /// Fixed keys (a JWKS document, `{"keys": [...]}`): nothing is fetched.
    ///
    /// ```
    /// let jwks = serde_json::json!({"keys": [{"kty": "EC", "crv": "P-256", "kid": "k1",
    ///     "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
    ///     "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]});
    /// let issuer = concierge_guard::Issuer::new("https://auth.example.com").jwks(jwks);
    /// # let _ = issuer;
    /// ```
    #[must_use]
    pub fn jwks(mut self, jwks: Value) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// How this issuer's tokens are read (default [`ClaimMapping::rfc9068`]).
    #[must_use]
    pub fn claims(mut self, mapping: ClaimMapping) -> Self {
        self.claims = mapping;
        self
    }

    /// The token endpoint, when discovery is skipped (token exchange and the
    /// start-up registration check use it).
    #[must_use]
    pub fn token_endpoint(mut self, url: impl Into<String>) -> Self {
        self.token_endpoint = Some(url.into());
        self
    }

    /// The introspection endpoint (RFC 7662), when discovery is skipped.
    #[must_use]
    pub fn introspection_endpoint(mut self, url: impl Into<String>) -> Self {
        self.introspection_endpoint = Some(url.into());
        self
    }
}

impl From<&str> for Issuer {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<String> for Issuer {
    fn from(url: String) -> Self {
        Self::new(url)
    }
}

impl From<&String> for Issuer {
    fn from(url: &String) -> Self {
        Self::new(url.as_str())
    }
}
