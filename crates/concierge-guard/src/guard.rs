//! [`Guard`]: validated configuration, issuers, keys and caches, shared by the
//! layer, the extractors and the metadata route.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::get;
use jsonwebtoken::{Algorithm, Validation};
use serde_json::Value;
use url::Url;

use crate::cache::ValidationCache;
use crate::challenge::BearerChallenge;
use crate::client::unix_now;
use crate::config::{GuardBuilder, union_into};
use crate::error::TokenError;
use crate::issuer::Issuer;
use crate::jwks::KeyStore;
use crate::layer::GuardLayer;
use crate::metadata::{ProtectedResourceMetadata, WELL_KNOWN_SUFFIX};
use crate::observe::Hooks;
use crate::principal::Principal;
use crate::scopes::{Operation, OperationRules, ScopeHierarchy, ScopeRule};
use crate::validate::{
    ClaimRules, check_claims, check_header, normalize_uri, parse_header, peek_issuer,
};

/// Protects one resource with tokens from one or more issuers.
///
/// Build it once at start-up with [`Guard::builder`]; it is cheap to clone
/// (an `Arc` inside). Put [`layer`](Self::layer) in front of the routes to
/// protect and merge [`metadata_router`](Self::metadata_router) beside them
/// — or, with the `rmcp` feature, let `Guard::mcp_router` do both for an
/// rmcp server.
#[derive(Clone)]
pub struct Guard {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    /// The resource URI as configured (the metadata's `resource`).
    pub(crate) resource: String,
    #[cfg_attr(not(feature = "rmcp"), allow(dead_code))]
    pub(crate) resource_url: Url,
    pub(crate) metadata_url: Url,
    /// The metadata without `authorization_servers`, which follow discovery.
    pub(crate) metadata_base: ProtectedResourceMetadata,
    /// The metadata document served, re-rendered when an issuer connects.
    pub(crate) metadata_doc: RwLock<bytes::Bytes>,
    pub(crate) issuers: Vec<IssuerSlot>,
    /// This resource and other accepted audiences, normalised.
    pub(crate) audiences: Vec<String>,
    pub(crate) leeway: i64,
    pub(crate) hierarchy: Arc<ScopeHierarchy>,
    pub(crate) algorithms: Vec<Algorithm>,
    /// One signature-only `Validation` per allowed algorithm; the claims are
    /// checked by [`check_claims`].
    pub(crate) validations: Vec<(Algorithm, Validation)>,
    pub(crate) required_scopes: Vec<String>,
    pub(crate) route_scopes: Vec<(String, Vec<String>)>,
    pub(crate) rules: OperationRules,
    pub(crate) max_body_bytes: usize,
    pub(crate) dpop_required: bool,
    #[cfg(feature = "dpop")]
    pub(crate) dpop: crate::dpop_rules::DpopRules,
    pub(crate) cache: ValidationCache,
    /// For discovery, keys, and the token and introspection endpoints.
    pub(crate) http: reqwest::Client,
    pub(crate) startup: crate::config::StartupSettings,
    #[cfg(any(feature = "exchange", feature = "introspection"))]
    pub(crate) credentials: Option<crate::client::ClientCredentials>,
    #[cfg(feature = "introspection")]
    pub(crate) introspection: crate::introspect::Introspection,
    #[cfg(feature = "introspection")]
    pub(crate) introspection_cache: ValidationCache,
    #[cfg(feature = "exchange")]
    pub(crate) exchanges: crate::exchange::ExchangeCache,
    pub(crate) hooks: Hooks,
    pub(crate) readiness: Readiness,
}

/// One trusted issuer: its configuration, and what connecting to it found.
pub(crate) struct IssuerSlot {
    pub(crate) config: Issuer,
    pub(crate) connected: RwLock<Option<Arc<Connected>>>,
}

/// A connected issuer: its announced identifier, keys and endpoints.
pub(crate) struct Connected {
    pub(crate) rules: ClaimRules,
    pub(crate) keys: KeyStore,
    pub(crate) token_endpoint: Option<Url>,
    #[cfg_attr(not(feature = "introspection"), allow(dead_code))]
    pub(crate) introspection_endpoint: Option<Url>,
    #[cfg_attr(not(feature = "approval"), allow(dead_code))]
    pub(crate) backchannel_endpoint: Option<Url>,
}

impl IssuerSlot {
    pub(crate) fn connected(&self) -> Option<Arc<Connected>> {
        self.connected
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The identifier for the metadata: as announced once connected.
    pub(crate) fn identifier(&self) -> String {
        self.connected()
            .map_or_else(|| self.config.url.clone(), |c| c.rules.issuer.clone())
    }
}

/// Whether every issuer is connected, and how to wait for it.
#[derive(Default)]
pub(crate) struct Readiness {
    pub(crate) ready: AtomicBool,
    pub(crate) notify: tokio::sync::Notify,
    pub(crate) last_error: Mutex<Option<String>>,
}

/// How the token was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheme {
    Bearer,
    DPoP,
}

/// What a request needs: scopes all required (global, route, layer), and
/// the rules of the MCP operations it names.
#[derive(Debug, Clone, Default)]
pub(crate) struct Needed {
    pub(crate) base: Vec<String>,
    pub(crate) rules: Vec<ScopeRule>,
    /// An operation without a rule while the guard denies by default.
    pub(crate) denied: Option<Operation>,
}

impl fmt::Debug for Guard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Guard")
            .field("issuers", &self.issuers())
            .field("resource", &self.inner.resource)
            .field("ready", &self.is_ready())
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

/// Scopes never advertised: `offline_access` asks the authorization server
/// for a refresh token (OpenID Connect Core §11); it is not a permission at
/// a resource, and MCP clients (SEP-2207) must not be told to request it.
pub(crate) fn advertised(scope: &str) -> bool {
    scope != "offline_access"
}

impl Guard {
    /// Starts configuring a guard for `resource` (the exact URL clients use
    /// for this MCP server, e.g. `https://mcp.example.com/mcp`) accepting
    /// tokens from `issuer` (e.g. `https://auth.example.com`, or an
    /// [`Issuer`] with more settings).
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
    pub fn builder(issuer: impl Into<Issuer>, resource: impl Into<String>) -> GuardBuilder {
        GuardBuilder::new(issuer.into(), resource.into())
    }

    /// The first issuer, as its metadata announces it once connected (and as
    /// `iss` must be).
    #[must_use]
    pub fn issuer(&self) -> String {
        self.inner
            .issuers
            .first()
            .map(IssuerSlot::identifier)
            .unwrap_or_default()
    }

    /// Every trusted issuer (the metadata's `authorization_servers`).
    #[must_use]
    pub fn issuers(&self) -> Vec<String> {
        self.inner
            .issuers
            .iter()
            .map(IssuerSlot::identifier)
            .collect()
    }

    /// The protected resource's identifier.
    #[must_use]
    pub fn resource(&self) -> &str {
        &self.inner.resource
    }

    /// The RFC 9728 metadata this guard serves.
    #[must_use]
    pub fn metadata(&self) -> ProtectedResourceMetadata {
        let mut metadata = self.inner.metadata_base.clone();
        metadata.authorization_servers = self.issuers();
        metadata
    }

    /// Where the metadata is served (sent as `resource_metadata` in challenges).
    #[must_use]
    pub fn metadata_url(&self) -> &Url {
        &self.inner.metadata_url
    }

    /// How many times the issuers' JWKS have been fetched (for monitoring).
    #[must_use]
    pub fn jwks_fetch_count(&self) -> u64 {
        self.inner
            .issuers
            .iter()
            .filter_map(IssuerSlot::connected)
            .map(|c| c.keys.fetches())
            .sum()
    }

    /// A layer requiring a valid token with the configured scopes.
    #[must_use]
    pub fn layer(&self) -> GuardLayer {
        GuardLayer::new(self.clone())
    }

    /// The first issuer's token endpoint, from its metadata.
    #[must_use]
    pub fn token_endpoint(&self) -> Option<Url> {
        self.inner
            .issuers
            .first()?
            .connected()?
            .token_endpoint
            .clone()
    }

    /// Whether every issuer has been reached and its keys loaded. Always
    /// true for a guard from [`build`](GuardBuilder::build); a guard from
    /// [`build_in_background`](GuardBuilder::build_in_background) becomes
    /// ready when its issuers answer.
    #[must_use]
    pub fn is_ready(&self) -> bool {
        self.inner.readiness.ready.load(Ordering::Acquire)
    }

    /// Resolves once the guard [is ready](Self::is_ready) (at once if it is).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concierge_guard::BuildError> {
    /// let guard = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .build_in_background()?;
    /// guard.ready().await; // e.g. before reporting the server healthy
    /// # Ok(()) }
    /// ```
    pub async fn ready(&self) {
        loop {
            let notified = self.inner.readiness.notify.notified();
            if self.is_ready() {
                return;
            }
            notified.await;
        }
    }

    /// The last problem met while connecting to the issuers, or while
    /// probing them, in the background; `None` when there was none.
    #[must_use]
    pub fn startup_error(&self) -> Option<String> {
        self.inner
            .readiness
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn mark_ready(&self) {
        if let Some(hook) = &self.inner.hooks.on_ready {
            hook();
        }
        self.inner.readiness.ready.store(true, Ordering::Release);
        self.inner.readiness.notify.notify_waiters();
        tracing::info!(target: "concierge_guard", issuers = ?self.issuers(), resource = %self.inner.resource, "concierge-guard ready");
    }

    /// Validates an access token: size, header (`typ`, `alg`), signature
    /// with the issuer's key, `iss`, `aud`, `exp`, `nbf`. Scopes are not
    /// checked here. Successes are cached until the token expires or the
    /// cache TTL passes.
    ///
    /// With `Introspection::OpaqueTokens` (feature `introspection`), a token
    /// that is not a JWT is asked about at the issuer's introspection
    /// endpoint instead; with `Introspection::AllTokens`, a valid JWT is
    /// asked about too, so a revoked one is refused ([`TokenError::Inactive`]).
    ///
    /// # Errors
    ///
    /// Why the token is refused.
    pub async fn validate(&self, token: &str) -> Result<Principal, TokenError> {
        if token.len() > crate::validate::MAX_TOKEN_BYTES {
            return Err(TokenError::TooLarge);
        }
        #[cfg(feature = "introspection")]
        {
            use crate::introspect::{Introspection, looks_like_jwt};
            match (self.inner.introspection, looks_like_jwt(token)) {
                (Introspection::Off, _) | (Introspection::OpaqueTokens, true) => {}
                (_, false) => return self.introspect(token).await,
                (Introspection::AllTokens, true) => {
                    let principal = self.validate_jwt(token).await?;
                    self.introspect(token).await?;
                    return Ok(principal);
                }
            }
        }
        self.validate_jwt(token).await
    }

    /// The issuer a token names, connected. Routing only: the signature and
    /// the exact `iss` are checked afterwards.
    fn issuer_for(&self, iss: Option<&str>) -> Result<Arc<Connected>, TokenError> {
        let inner = &self.inner;
        let Some(iss) = iss else {
            return Err(TokenError::WrongIssuer);
        };
        let mut waiting = false;
        for slot in &inner.issuers {
            match slot.connected() {
                Some(c) if c.rules.issuer == iss => return Ok(c),
                Some(_) => {}
                None => waiting |= normalize_uri(&slot.config.url) == normalize_uri(iss),
            }
        }
        if waiting {
            return Err(TokenError::NotReady);
        }
        tracing::debug!(
            target: "concierge_guard",
            expected = ?self.issuers(),
            actual = iss,
            "the token's issuer is not trusted"
        );
        Err(TokenError::WrongIssuer)
    }

    /// Local validation of a JWT access token, cached.
    async fn validate_jwt(&self, token: &str) -> Result<Principal, TokenError> {
        let inner = &self.inner;
        let now = Instant::now();
        if let Some(principal) = inner.cache.get(token, now) {
            let unix = unix_now();
            if unix <= principal.expires_at().saturating_add(inner.leeway) {
                return Ok(principal);
            }
        }
        let header = parse_header(token)?;
        let issuer = self.issuer_for(peek_issuer(token).as_deref())?;
        let alg = check_header(&header, &inner.algorithms, &issuer.rules.mapping)?;
        let key = issuer.keys.key(header.kid.as_deref(), alg).await?;
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
        let (aud, iss) = (claims.get("aud").cloned(), claims.get("iss").cloned());
        let principal = check_claims(claims, &issuer.rules, unix).inspect_err(|e| match e {
            TokenError::WrongAudience => tracing::debug!(
                target: "concierge_guard",
                expected = ?issuer.rules.audiences,
                actual = %aud.unwrap_or(serde_json::Value::Null),
                "the token's audience is not this resource"
            ),
            TokenError::WrongIssuer => tracing::debug!(
                target: "concierge_guard",
                expected = %issuer.rules.issuer,
                actual = %iss.unwrap_or(serde_json::Value::Null),
                "the token's issuer does not byte-equal the announced issuer"
            ),
            _ => {}
        })?;
        inner.cache.insert(token, &principal, now, unix);
        Ok(principal)
    }

    /// RFC 9449 §7.1, §7.2: a bound token only with the `DPoP` scheme and a
    /// valid, fresh proof of its key for this request; an unbound one only as
    /// a bearer token, and not at all when DPoP is required. Returns the
    /// nonce to hand the client (RFC 9449 §8.2), when nonces are on.
    pub(crate) fn check_possession(
        &self,
        principal: &Principal,
        scheme: Scheme,
        token: &str,
        method: &str,
        path: &str,
        proofs: &[&str],
    ) -> Result<Option<String>, TokenError> {
        #[cfg(feature = "dpop")]
        {
            self.inner.dpop.check(
                principal,
                scheme,
                token,
                method,
                path,
                proofs,
                self.inner.dpop_required,
            )
        }
        #[cfg(not(feature = "dpop"))]
        {
            let _ = (token, method, path, proofs);
            match (principal.dpop_jkt(), scheme) {
                (None, Scheme::Bearer) => Ok(None),
                _ => Err(TokenError::NotDpopBound(
                    "this resource does not accept DPoP; send an unbound token as a Bearer token",
                )),
            }
        }
    }

    /// The `DPoP` challenge (RFC 9449 §7.1) for an error, with `algs`.
    pub(crate) fn dpop_challenge(&self, error: Option<(&str, &str)>) -> Option<String> {
        #[cfg(feature = "dpop")]
        {
            Some(self.inner.dpop.challenge(error))
        }
        #[cfg(not(feature = "dpop"))]
        {
            let _ = error;
            None
        }
    }

    /// What a request to `path` naming `operations` needs, with the scopes a
    /// [`GuardLayer::require_scopes`] adds.
    pub(crate) fn needed(&self, path: &str, operations: &[Operation], layer: &[String]) -> Needed {
        let inner = &self.inner;
        let mut base = inner.required_scopes.clone();
        for (prefix, more) in &inner.route_scopes {
            let under = path.strip_prefix(prefix.as_str()).is_some_and(|rest| {
                rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/')
            });
            if under {
                union_into(&mut base, more);
            }
        }
        union_into(&mut base, layer);
        let mut needed = Needed {
            base,
            ..Needed::default()
        };
        for op in operations {
            match inner.rules.rule(op) {
                Some(rule) => needed.rules.push(rule.clone()),
                None if inner.rules.default_deny => {
                    needed.denied.get_or_insert_with(|| op.clone());
                }
                None => {}
            }
        }
        needed
    }

    /// The scopes a challenge names for `needed`: the base, then for each
    /// rule the alternative the principal satisfies, or else the preferred
    /// one — so a client re-authorizing with exactly these keeps what it has.
    pub(crate) fn challenge_scopes(
        &self,
        needed: &Needed,
        principal: Option<&Principal>,
    ) -> Vec<String> {
        let mut scopes = needed.base.clone();
        for rule in &needed.rules {
            let satisfied = principal.and_then(|p| {
                rule.alternatives()
                    .iter()
                    .find(|alt| alt.iter().all(|s| p.has_scope(s)))
            });
            union_into(
                &mut scopes,
                satisfied.map_or(rule.preferred(), Vec::as_slice),
            );
        }
        scopes
    }

    /// A challenge pointing at this resource's metadata. `offline_access`
    /// is never named.
    pub(crate) fn challenge(&self, scopes: &[String]) -> BearerChallenge {
        BearerChallenge::new()
            .with_scope(scopes.iter().filter(|s| advertised(s)))
            .with_resource_metadata(self.inner.metadata_url.clone())
    }

    /// Renders the metadata document again (after an issuer connected).
    pub(crate) fn render_metadata(&self) {
        let body = serde_json::to_vec(&self.metadata()).unwrap_or_default();
        *self
            .inner
            .metadata_doc
            .write()
            .unwrap_or_else(PoisonError::into_inner) = bytes::Bytes::from(body);
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
        let guard = self.clone();
        let handler = move || {
            let body = guard
                .inner
                .metadata_doc
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
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

    /// The least time before retrying a failed connection to an issuer.
    pub(crate) const RETRY_MIN: Duration = Duration::from_secs(1);
    /// The most time between two attempts.
    pub(crate) const RETRY_MAX: Duration = Duration::from_secs(30);
}
