//! [`Guard`]: validated configuration, keys and cache, shared by the layer,
//! the extractors and the metadata route.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use url::Url;

use crate::cache::{ReplayCache, Spend, ValidationCache};
use crate::challenge::BearerChallenge;
use crate::client::{ClientCredentials, unix_now};
use crate::config::{GuardBuilder, union_into};
use crate::error::TokenError;
use crate::exchange::ExchangeCache;
use crate::introspect::{Introspection, looks_like_jwt};
use crate::jwks::KeyStore;
use crate::layer::GuardLayer;
use crate::metadata::{ProtectedResourceMetadata, WELL_KNOWN_SUFFIX};
use crate::principal::Principal;
use crate::validate::{ClaimRules, check_claims, check_header, parse_header};

/// Protects one resource with tokens from one issuer.
///
/// Build it once at start-up with [`Guard::builder`]; it is cheap to clone
/// (an `Arc` inside). Put [`layer`](Self::layer) in front of the routes to
/// protect and merge [`metadata_router`](Self::metadata_router) beside them.
#[derive(Clone)]
pub struct Guard {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) metadata: ProtectedResourceMetadata,
    pub(crate) metadata_url: Url,
    pub(crate) rules: ClaimRules,
    pub(crate) algorithms: Vec<Algorithm>,
    /// One signature-only `Validation` per allowed algorithm; the claims are
    /// checked by [`check_claims`].
    pub(crate) validations: Vec<(Algorithm, Validation)>,
    pub(crate) required_scopes: Vec<String>,
    pub(crate) route_scopes: Vec<(String, Vec<String>)>,
    pub(crate) tool_scopes: HashMap<String, Vec<String>>,
    pub(crate) max_body_bytes: usize,
    pub(crate) dpop: DpopRules,
    pub(crate) keys: KeyStore,
    pub(crate) cache: ValidationCache,
    /// For the token and introspection endpoints.
    pub(crate) http: reqwest::Client,
    pub(crate) credentials: Option<ClientCredentials>,
    pub(crate) token_endpoint: Option<Url>,
    pub(crate) introspection_endpoint: Option<Url>,
    pub(crate) introspection: Introspection,
    pub(crate) introspection_cache: ValidationCache,
    pub(crate) exchanges: ExchangeCache,
}

/// How DPoP-bound tokens are checked (RFC 9449 §7).
pub(crate) struct DpopRules {
    /// Refuse tokens that are not bound.
    pub(crate) required: bool,
    pub(crate) algorithms: Vec<Algorithm>,
    /// The `algs` of the `DPoP` challenge.
    pub(crate) challenge_algs: String,
    pub(crate) max_age: i64,
    /// The configured resource's origin: `htu` is this plus the request path,
    /// never the `Host` header.
    pub(crate) origin: String,
    pub(crate) replays: ReplayCache,
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    DPoP,
}

/// Seconds of clock skew tolerated around a DPoP proof's `iat` window.
const DPOP_LEEWAY: i64 = 5;

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("issuer", &self.inner.rules.issuer)
            .field("resource", &self.inner.metadata.resource)
            .field("jwks_uri", &self.inner.keys.jwks_uri().as_str())
            .finish_non_exhaustive()
    }
}

/// A `Validation` that only checks the signature with `alg`.
pub(crate) fn signature_only(alg: Algorithm) -> Validation {
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation
}

impl Guard {
    /// Starts configuring a guard for `resource` (the exact URL clients use
    /// for this MCP server, e.g. `https://mcp.example.com/mcp`) accepting
    /// tokens from `issuer` (e.g. `https://auth.example.com`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concierge_guard::BuildError> {
    /// let guard = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .required_scopes(["notes:read"])
    ///     .tool_scopes("add_note", ["notes:write"])
    ///     .resource_name("Notes")
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(issuer: impl Into<String>, resource: impl Into<String>) -> GuardBuilder {
        GuardBuilder::new(issuer, resource)
    }

    /// The issuer, exactly as its metadata announces it (and as `iss` must be).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.inner.rules.issuer
    }

    /// The protected resource's identifier.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.inner.metadata.resource
    }

    /// The RFC 9728 metadata this guard serves.
    #[must_use]
    pub fn metadata(&self) -> &ProtectedResourceMetadata {
        &self.inner.metadata
    }

    /// Where the metadata is served (sent as `resource_metadata` in challenges).
    #[must_use]
    pub fn metadata_url(&self) -> &Url {
        &self.inner.metadata_url
    }

    /// How many times the issuer's JWKS has been fetched (for monitoring).
    #[must_use]
    pub fn jwks_fetch_count(&self) -> u64 {
        self.inner.keys.fetches()
    }

    /// A layer requiring a valid token with the configured scopes.
    #[must_use]
    pub fn layer(&self) -> GuardLayer {
        GuardLayer::new(self.clone())
    }

    /// The issuer's token endpoint, from its metadata.
    #[must_use]
    pub fn token_endpoint(&self) -> Option<&Url> {
        self.inner.token_endpoint.as_ref()
    }

    /// Validates an access token: size, header (`typ`, `alg`), signature
    /// with the issuer's key, `iss`, `aud`, `exp`, `nbf`. Scopes are not
    /// checked here. Successes are cached until the token expires or the
    /// cache TTL passes.
    ///
    /// With [`Introspection::OpaqueTokens`], a token that is not a JWT is
    /// asked about at the issuer's introspection endpoint instead; with
    /// [`Introspection::AllTokens`], a valid JWT is asked about too, so a
    /// revoked one is refused ([`TokenError::Inactive`]).
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > crate::validate::MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        match (self.inner.introspection, looks_like_jwt(token)) {
            (Introspection::Off, _) | (Introspection::OpaqueTokens, true) => {
                self.validate_jwt(token).await
            }
            (_, false) => self.introspect(token).await,
            (Introspection::AllTokens, true) => {
                let principal = self.validate_jwt(token).await?;
                self.introspect(token).await?;
                Ok(principal)
            }
        }
    }

    /// Local validation of a JWT access token, cached.
    async fn validate_jwt(&self, token: &str) -> Result<Principal, TokenError> {
        let inner = &self.inner;
        let now = Instant::now();
        if let Some(principal) = inner.cache.get(token, now) {
            let unix = unix_now();
            if unix <= principal.expires_at().saturating_add(inner.rules.leeway) {
                return Ok(principal);
            }
        }
        let header = parse_header(token)?;
        let alg = check_header(&header, &inner.algorithms)?;
        let key = inner.keys.key(header.kid.as_deref(), alg).await?;
        let validation = inner
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or_else(|| TokenError::AlgorithmNotAllowed(format!("{alg:?}")))?;
        let claims = jsonwebtoken::decode::<Value>(token, &key.key, validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => TokenError::BadSignature,
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::KeyMismatch,
                _ => TokenError::Malformed("the payload or signature cannot be decoded"),
            })?
            .claims;
        let unix = unix_now();
        let principal = check_claims(claims, &inner.rules, unix)?;
        inner.cache.insert(token, &principal, now, unix);
        Ok(principal)
    }

    /// RFC 9449 §7.1, §7.2: a bound token only with the `DPoP` scheme and a
    /// valid, fresh proof of its key for this request; an unbound one only as
    /// a bearer token, and not at all when DPoP is required.
    pub(crate) fn check_possession(
        &self,
        principal: &Principal,
        scheme: Scheme,
        token: &str,
        method: &str,
        path: &str,
        proofs: &[&str],
    ) -> Result<(), TokenError> {
        let rules = &self.inner.dpop;
        let Some(jkt) = principal.dpop_jkt() else {
            return match scheme {
                Scheme::DPoP => Err(TokenError::NotDpopBound(
                    "the token is not DPoP-bound: send it as a Bearer token",
                )),
                Scheme::Bearer if rules.required => Err(TokenError::NotDpopBound(
                    "this resource accepts DPoP-bound tokens only",
                )),
                Scheme::Bearer => Ok(()),
            };
        };
        if scheme == Scheme::Bearer {
            return Err(TokenError::DpopBound);
        }
        let proof = match proofs {
            [one] => *one,
            [] => {
                return Err(TokenError::InvalidDpopProof(
                    "a DPoP proof header is required with a DPoP token".into(),
                ));
            }
            _ => {
                return Err(TokenError::InvalidDpopProof(
                    "send exactly one DPoP header".into(),
                ));
            }
        };
        let url = format!("{}{path}", rules.origin);
        let now = unix_now();
        let check = crate::dpop::ProofCheck::new(method, &url, now)
            .access_token(token)
            .algorithms(&rules.algorithms)
            .window(rules.max_age, DPOP_LEEWAY);
        let proof = crate::dpop::verify(proof, &check)
            .map_err(|e| TokenError::InvalidDpopProof(e.to_string()))?;
        if proof.jkt != jkt {
            return Err(TokenError::InvalidDpopProof(
                "the DPoP proof is signed with another key than the token is bound to".into(),
            ));
        }
        match rules
            .replays
            .spend(&proof.replay_key(), now + proof.replay_window, now)
        {
            Spend::Fresh => Ok(()),
            Spend::Replayed => Err(TokenError::InvalidDpopProof(
                "this DPoP proof was already used; make a new one per request".into(),
            )),
            Spend::Full => Err(TokenError::InvalidDpopProof(
                "too many DPoP proofs right now; retry shortly".into(),
            )),
        }
    }

    /// The `DPoP` challenge (RFC 9449 §7.1) for an error, with `algs`.
    pub(crate) fn dpop_challenge(&self, error: Option<(&str, &str)>) -> String {
        let algs = &self.inner.dpop.challenge_algs;
        match error {
            Some((code, description)) => format!(
                "DPoP error=\"{code}\", error_description=\"{}\", algs=\"{algs}\"",
                description
                    .chars()
                    .filter(|c| (' '..='~').contains(c) && !matches!(c, '"' | '\\'))
                    .collect::<String>()
            ),
            None => format!("DPoP algs=\"{algs}\""),
        }
    }

    /// The scopes a request needs: the required ones, those of every route
    /// prefix matching `path`, and those of the named tools.
    pub(crate) fn scopes_for(&self, path: &str, tools: &[String]) -> Vec<String> {
        let inner = &self.inner;
        let mut scopes = inner.required_scopes.clone();
        for (prefix, more) in &inner.route_scopes {
            let under = path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            });
            if under {
                union_into(&mut scopes, more);
            }
        }
        for tool in tools {
            if let Some(more) = inner.tool_scopes.get(tool) {
                union_into(&mut scopes, more);
            }
        }
        scopes
    }

    /// A challenge pointing at this resource's metadata.
    pub(crate) fn challenge(&self, scopes: &[String]) -> BearerChallenge {
        BearerChallenge::new()
            .with_scope(scopes)
            .with_resource_metadata(self.inner.metadata_url.clone())
    }

    /// An axum `Router` answering `GET` with the RFC 9728 metadata at the
    /// path-inserted well-known URL (e.g.
    /// `/.well-known/oauth-protected-resource/mcp`) and at the root form
    /// `/.well-known/oauth-protected-resource`, with
    /// `Access-Control-Allow-Origin: *`. Merge it *after* applying the guard
    /// layer so the metadata stays public.
    ///
    /// ```no_run
    /// # async fn run(guard: concierge_guard::Guard) {
    /// use axum::{Router, routing::post};
    /// let app: Router = Router::new()
    ///     .route("/mcp", post(|| async { "ok" }))
    ///     .layer(guard.layer())
    ///     .merge(guard.metadata_router());
    /// # }
    /// ```
    pub fn metadata_router<S>(&self) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        let body = serde_json::to_vec(&self.inner.metadata).unwrap_or_default();
        let body = bytes::Bytes::from(body);
        let handler = move || {
            let body = body.clone();
            async move {
                (
                    [
                        (
                            header::CONTENT_TYPE,
                            HeaderValue::from_static("application/json"),
                        ),
                        (
                            header::ACCESS_CONTROL_ALLOW_ORIGIN,
                            HeaderValue::from_static("*"),
                        ),
                        (
                            header::CACHE_CONTROL,
                            HeaderValue::from_static("public, max-age=300"),
                        ),
                    ],
                    body,
                )
                    .into_response()
            }
        };
        let path = self.inner.metadata_url.path().to_owned();
        let root = format!("/.well-known/{WELL_KNOWN_SUFFIX}");
        let mut router = Router::new().route(&root, get(handler.clone()));
        if path != root {
            router = router.route(&path, get(handler));
        }
        router
    }
}
