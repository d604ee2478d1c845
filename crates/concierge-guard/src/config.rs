//! [`GuardBuilder`]: the guard's settings and their defaults.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use url::{Host, Url};

use crate::cache::ValidationCache;
use crate::error::BuildError;
use crate::guard::{Guard, Inner, IssuerSlot, Readiness, advertised, signature_only};
use crate::issuer::Issuer;
use crate::metadata::{ProtectedResourceMetadata, metadata_url};
use crate::observe::{Hooks, Refusal};
use crate::principal::Principal;
use crate::scopes::{OperationRules, ScopeHierarchy, ScopeRule};
use crate::validate::normalize_uri;

/// Default cap on a buffered JSON-RPC body (per-operation scopes): 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Configures and builds a [`Guard`]. Start with [`Guard::builder`].
///
/// | Setting | Default |
/// | --- | --- |
/// | [`also_trust`](Self::also_trust), [`audiences`](Self::audiences) | the one issuer; the resource URI |
/// | [`algorithms`](Self::algorithms) | ES256, RS256 |
/// | [`leeway`](Self::leeway) | 60 s |
/// | [`jwks_ttl`](Self::jwks_ttl) | 5 min |
/// | [`jwks_refetch_interval`](Self::jwks_refetch_interval) | 30 s |
/// | [`cache_size`](Self::cache_size) / [`cache_ttl`](Self::cache_ttl) | 10 000 tokens / 5 min |
/// | [`max_body_bytes`](Self::max_body_bytes) | 1 MiB |
/// | [`default_deny`](Self::default_deny) | `false` |
/// | `dpop_bound_access_tokens_required` | `false` |
/// | `dpop_algorithms` | [`dpop::DEFAULT_ALGORITHMS`](crate::dpop::DEFAULT_ALGORITHMS) |
/// | `dpop_proof_max_age` | 60 s (plus 5 s of leeway) |
/// | `dpop_replay_cache_size` | 10 000 proofs per DPoP key |
/// | `dpop_nonces` | off; nonces live 5 to 10 min when on |
/// | [`check_clock`](Self::check_clock) | on |
/// | `check_resource_registration`, `check_introspection_access` | on |
/// | required scopes, route and operation scopes | none |
#[must_use = "call .build().await to get a Guard"]
pub struct GuardBuilder {
    issuers: Vec<Issuer>,
    resource: String,
    audiences: Vec<String>,
    required_scopes: Vec<String>,
    route_scopes: Vec<(String, Vec<String>)>,
    rules: OperationRules,
    declared_tools: HashMap<String, ScopeRule>,
    declared_prompts: HashMap<String, ScopeRule>,
    known_tools: Option<BTreeSet<String>>,
    known_prompts: Option<BTreeSet<String>>,
    declaration_errors: Vec<String>,
    hierarchy: ScopeHierarchy,
    scopes_supported: Option<Vec<String>>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    jwks_ttl: Duration,
    refetch_interval: Duration,
    cache_size: usize,
    cache_ttl: Duration,
    resource_name: Option<String>,
    resource_documentation: Option<String>,
    dpop_required: bool,
    #[cfg(feature = "dpop")]
    dpop: DpopSettings,
    max_body_bytes: usize,
    allow_insecure_http: bool,
    http: Option<reqwest::Client>,
    #[cfg(any(feature = "exchange", feature = "introspection"))]
    credentials: Option<crate::client::ClientCredentials>,
    #[cfg(feature = "introspection")]
    introspection: crate::introspect::Introspection,
    #[cfg(feature = "introspection")]
    introspection_cache_ttl: Duration,
    check_clock: bool,
    check_registration: bool,
    check_introspection: bool,
    hooks: Hooks,
}

#[cfg(feature = "dpop")]
struct DpopSettings {
    algorithms: Vec<Algorithm>,
    max_age: Duration,
    per_key: usize,
    nonces: bool,
    nonce_secret: Option<Vec<u8>>,
    nonce_lifetime: Duration,
}

/// What connecting to the issuers needs, kept for a background start.
#[derive(Debug, Clone)]
pub(crate) struct StartupSettings {
    pub(crate) jwks_ttl: Duration,
    pub(crate) refetch_interval: Duration,
    pub(crate) check_clock: bool,
    #[cfg_attr(
        not(any(feature = "exchange", feature = "introspection")),
        allow(dead_code)
    )]
    pub(crate) check_registration: bool,
    #[cfg_attr(not(feature = "introspection"), allow(dead_code))]
    pub(crate) check_introspection: bool,
    pub(crate) allow_insecure_http: bool,
}

impl fmt::Debug for GuardBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("issuers", &self.issuers)
            .field("resource", &self.resource)
            .field("required_scopes", &self.required_scopes)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

fn strings<I, S>(items: I) -> Vec<String>
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    items.into_iter().map(Into::into).collect()
}

/// Appends the items of `more` not yet in `into`, keeping order.
pub(crate) fn union_into(into: &mut Vec<String>, more: &[String]) {
    for s in more {
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

impl GuardBuilder {
    pub(crate) fn new(issuer: Issuer, resource: String) -> Self {
        Self {
            issuers: vec![issuer],
            resource,
            audiences: Vec::new(),
            required_scopes: Vec::new(),
            route_scopes: Vec::new(),
            rules: OperationRules::default(),
            declared_tools: HashMap::new(),
            declared_prompts: HashMap::new(),
            known_tools: None,
            known_prompts: None,
            declaration_errors: Vec::new(),
            hierarchy: ScopeHierarchy::default(),
            scopes_supported: None,
            algorithms: vec![Algorithm::ES256, Algorithm::RS256],
            leeway: Duration::from_secs(60),
            jwks_ttl: Duration::from_secs(300),
            refetch_interval: Duration::from_secs(30),
            cache_size: 10_000,
            cache_ttl: Duration::from_secs(300),
            resource_name: None,
            resource_documentation: None,
            dpop_required: false,
            #[cfg(feature = "dpop")]
            dpop: DpopSettings {
                algorithms: crate::dpop::DEFAULT_ALGORITHMS.to_vec(),
                max_age: Duration::from_secs(60),
                per_key: 10_000,
                nonces: false,
                nonce_secret: None,
                nonce_lifetime: Duration::from_secs(300),
            },
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allow_insecure_http: false,
            http: None,
            #[cfg(any(feature = "exchange", feature = "introspection"))]
            credentials: None,
            #[cfg(feature = "introspection")]
            introspection: crate::introspect::Introspection::Off,
            #[cfg(feature = "introspection")]
            introspection_cache_ttl: Duration::from_secs(60),
            check_clock: true,
            check_registration: true,
            check_introspection: true,
            hooks: Hooks::default(),
        }
    }

    /// Also accept tokens from another issuer (e.g. an identity provider
    /// next to Concierge). Every issuer is listed in the metadata's
    /// `authorization_servers` (RFC 9728 §2); a token is checked with the
    /// keys and [claim mapping](crate::Issuer::claims) of the issuer its
    /// `iss` names.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concierge_guard::BuildError> {
    /// use concierge_guard::{ClaimMapping, Guard, Issuer};
    /// let guard = Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .also_trust(Issuer::new("https://example.okta.com/oauth2/default")
    ///         .claims(ClaimMapping::identity_providers()))
    ///     .audiences(["api://mcp"]) // the audience Okta's authorization server issues
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn also_trust(mut self, issuer: impl Into<Issuer>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Audiences accepted besides the resource URI, for issuers that cannot
    /// put the resource URI in `aud` (an API identifier like `api://notes`).
    /// Prefer issuers that do (RFC 8707, which MCP requires).
    pub fn audiences<I, S>(mut self, audiences: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.audiences = strings(audiences);
        self
    }

    /// Scopes every request must carry (on top of route and operation scopes).
    pub fn required_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.required_scopes = strings(scopes);
        self
    }

    /// Scopes needed for requests whose path is `prefix` or lies under it
    /// (`/admin` matches `/admin` and `/admin/users`, not `/administrator`).
    /// The path is the one the layer sees: inside an axum `nest`, without the
    /// nest's prefix. Every matching entry applies.
    pub fn route_scopes<I, S>(mut self, prefix: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.route_scopes.push((prefix.into(), strings(scopes)));
        self
    }

    /// The scopes needed to call the MCP tool `tool` (a `POST` whose JSON-RPC
    /// body is a `tools/call` with `params.name == tool`): a list (all of
    /// them) or a [`ScopeRule`] with alternatives.
    ///
    /// With the `rmcp` feature, declare them on the tool instead
    /// (`#[tool(meta = concierge_guard::rmcp::scopes([...]))]`), and pass
    /// the tool router to `tools`: then a rule naming a tool the server does
    /// not have fails [`build`](Self::build). A rule given here wins over one
    /// declared on the tool.
    ///
    /// ```
    /// use concierge_guard::{Guard, ScopeRule};
    /// let builder = Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .tool_scopes("add_note", ["notes:write"])
    ///     .tool_scopes("delete_note", ScopeRule::any_of(["notes:delete", "notes:admin"]));
    /// # let _ = builder;
    /// ```
    pub fn tool_scopes(mut self, tool: impl Into<String>, rule: impl Into<ScopeRule>) -> Self {
        self.rules.tools.insert(tool.into(), rule.into());
        self
    }

    /// Step-up for a sensitive tool (RFC 9470): calling `tool` needs a token
    /// whose user signed in with one of `acr_values` (any, when empty) at
    /// most `max_age` ago (any time, when `None`). A token that falls short
    /// gets `401` with `WWW-Authenticate: Bearer
    /// error="insufficient_user_authentication"` naming `acr_values` and
    /// `max_age`, so the client sends the user back to the authorization
    /// server, which signs them in again as strongly as asked.
    ///
    /// With Concierge, `urn:concierge:acr:mfa` is a second factor and `phr`
    /// a passkey (list both to accept either).
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .tool_authentication(
    ///         "transfer_money",
    ///         ["urn:concierge:acr:mfa", "phr"],
    ///         Some(Duration::from_secs(300)),
    ///     );
    /// # let _ = builder;
    /// ```
    pub fn tool_authentication<I, S>(
        mut self,
        tool: impl Into<String>,
        acr_values: I,
        max_age: Option<Duration>,
    ) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rules.tool_authentication.insert(
            tool.into(),
            crate::scopes::AuthenticationRule {
                acr_values: strings(acr_values),
                max_age,
            },
        );
        self
    }

    /// The scopes needed to get the MCP prompt `prompt` (`prompts/get`).
    pub fn prompt_scopes(mut self, prompt: impl Into<String>, rule: impl Into<ScopeRule>) -> Self {
        self.rules.prompts.insert(prompt.into(), rule.into());
        self
    }

    /// The scopes needed to read MCP resources (`resources/read`) whose URI
    /// is `uri`, or starts with it when it ends with `*`. The most specific
    /// pattern applies.
    ///
    /// ```
    /// let builder = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .resource_scopes("notes://*", ["notes:read"])
    ///     .resource_scopes("notes://private/*", ["notes:private"]);
    /// # let _ = builder;
    /// ```
    pub fn resource_scopes(mut self, uri: impl Into<String>, rule: impl Into<ScopeRule>) -> Self {
        self.rules.resources.push((uri.into(), rule.into()));
        self
    }

    /// Refuse (403) calls of tools, gets of prompts and reads of resources
    /// that no rule covers, instead of letting every valid token through.
    /// A rule with no scope (`ScopeRule::all::<[&str; 0], &str>([])`, or
    /// `noauth` declared on the tool) lets an operation through.
    pub fn default_deny(mut self, deny: bool) -> Self {
        self.rules.default_deny = deny;
        self
    }

    /// The names of the server's tools, so [`build`](Self::build) can refuse
    /// a rule naming another (the `rmcp` feature's `tools` reads them from
    /// the tool router).
    pub fn known_tools<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.known_tools
            .get_or_insert_default()
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// The names of the server's prompts (see [`known_tools`](Self::known_tools)).
    pub fn known_prompts<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.known_prompts
            .get_or_insert_default()
            .extend(names.into_iter().map(Into::into));
        self
    }

    /// A tool with its declared rule, or an error from reading it.
    #[cfg(feature = "rmcp")]
    pub(crate) fn declare_tool(
        mut self,
        name: String,
        rule: Result<Option<ScopeRule>, String>,
    ) -> Self {
        match rule {
            Ok(Some(rule)) => {
                self.declared_tools.insert(name.clone(), rule);
            }
            Ok(None) => {}
            Err(e) => self.declaration_errors.push(format!("tool {name:?}: {e}")),
        }
        self.known_tools.get_or_insert_default().insert(name);
        self
    }

    /// A prompt with its declared rule, or an error from reading it.
    #[cfg(feature = "rmcp")]
    pub(crate) fn declare_prompt(
        mut self,
        name: String,
        rule: Result<Option<ScopeRule>, String>,
    ) -> Self {
        match rule {
            Ok(Some(rule)) => {
                self.declared_prompts.insert(name.clone(), rule);
            }
            Ok(None) => {}
            Err(e) => self
                .declaration_errors
                .push(format!("prompt {name:?}: {e}")),
        }
        self.known_prompts.get_or_insert_default().insert(name);
        self
    }

    /// Declares that `scope` implies each of `implied`: a token granted
    /// `notes:write` passes rules needing `notes:read` after
    /// `.scope_implies("notes:write", ["notes:read"])`. Transitive.
    pub fn scope_implies<I, S>(mut self, scope: impl Into<String>, implied: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hierarchy = self.hierarchy.implies(scope, implied);
        self
    }

    /// The `scopes_supported` published in the metadata. Default: every scope
    /// named by the required, route and operation scopes and the hierarchy.
    /// `offline_access` is never published (it is not a resource's scope).
    pub fn scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = Some(strings(scopes));
        self
    }

    /// Signature algorithms accepted. HMAC algorithms are refused by
    /// [`build`](Self::build); `none` cannot even be named.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub fn leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// How long fetched keys are used before they are refetched.
    pub fn jwks_ttl(mut self, ttl: Duration) -> Self {
        self.jwks_ttl = ttl;
        self
    }

    /// The least time between two JWKS fetches, however many tokens with
    /// unknown key ids arrive.
    pub fn jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.refetch_interval = interval;
        self
    }

    /// How many validated tokens to remember (0 turns the cache off).
    pub fn cache_size(mut self, entries: usize) -> Self {
        self.cache_size = entries;
        self
    }

    /// How long a validation result is remembered at most (it is forgotten
    /// when the token expires in any case).
    pub fn cache_ttl(mut self, ttl: Duration) -> Self {
        self.cache_ttl = ttl;
        self
    }

    /// `resource_name` for the metadata, shown to users by some clients.
    pub fn resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// `resource_documentation` for the metadata: a page for client developers.
    pub fn resource_documentation(mut self, url: impl Into<String>) -> Self {
        self.resource_documentation = Some(url.into());
        self
    }

    /// Accept only DPoP-bound tokens ([RFC 9449]): a token without `cnf.jkt`
    /// is refused, and the metadata says `dpop_bound_access_tokens_required:
    /// true`. Bound tokens are always accepted, with the `DPoP` scheme and a
    /// proof of their key; this setting refuses the others.
    ///
    /// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
    #[cfg(feature = "dpop")]
    pub fn dpop_bound_access_tokens_required(mut self, required: bool) -> Self {
        self.dpop_required = required;
        self
    }

    /// Algorithms accepted for DPoP proofs (published as
    /// `dpop_signing_alg_values_supported`). HMAC algorithms are refused by
    /// [`build`](Self::build).
    #[cfg(feature = "dpop")]
    pub fn dpop_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.dpop.algorithms = algorithms.into_iter().collect();
        self
    }

    /// How old (`iat`) a DPoP proof may be. Proof ids are remembered this
    /// long to refuse replays.
    #[cfg(feature = "dpop")]
    pub fn dpop_proof_max_age(mut self, max_age: Duration) -> Self {
        self.dpop.max_age = max_age;
        self
    }

    /// How many recent DPoP proof ids to remember per DPoP key. A key that
    /// sends more proofs within the proof lifetime gets them refused until
    /// some expire (so it cannot push out an id and make a replay pass);
    /// other keys are not affected.
    #[cfg(feature = "dpop")]
    pub fn dpop_replay_cache_size(mut self, per_key: usize) -> Self {
        self.dpop.per_key = per_key;
        self
    }

    /// Require a nonce this resource issued in every DPoP proof (RFC 9449
    /// §9), which bounds how long a pre-made proof is usable. A proof without
    /// one is answered `401` with `WWW-Authenticate: DPoP
    /// error="use_dpop_nonce"` and a `DPoP-Nonce` header; accepted requests
    /// get the current nonce in `DPoP-Nonce` too.
    ///
    /// ```
    /// use std::time::Duration;
    /// let builder = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .dpop_nonces(true)
    ///     .dpop_nonce_lifetime(Duration::from_secs(120))
    ///     .dpop_nonce_secret(b"shared by every replica, 32 bytes or more".to_vec());
    /// # let _ = builder;
    /// ```
    #[cfg(feature = "dpop")]
    pub fn dpop_nonces(mut self, required: bool) -> Self {
        self.dpop.nonces = required;
        self
    }

    /// The secret nonces are made with; replicas behind one resource URI
    /// need the same (default: random per process, so a nonce from one
    /// replica fails at another and the client retries once).
    #[cfg(feature = "dpop")]
    pub fn dpop_nonce_secret(mut self, secret: Vec<u8>) -> Self {
        self.dpop.nonce_secret = Some(secret);
        self
    }

    /// How long a nonce is handed out; it is accepted for up to twice that.
    #[cfg(feature = "dpop")]
    pub fn dpop_nonce_lifetime(mut self, lifetime: Duration) -> Self {
        self.dpop.nonce_lifetime = lifetime;
        self
    }

    /// Cap on the request body the layer buffers to read the JSON-RPC
    /// operation; larger bodies get 413. Only used when operation scopes or
    /// [`default_deny`](Self::default_deny) are set.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Accept plain `http` issuer and JWKS URLs on non-loopback hosts
    /// (loopback hosts are always accepted). Never do this in production.
    pub fn allow_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }

    /// The HTTP client for discovery and JWKS fetches. The default has a
    /// 10 s timeout and follows at most 3 redirects.
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// This resource server's own client at the issuer, used for token
    /// exchange and introspection. With credentials, [`build`](Self::build)
    /// also checks that the issuer knows the resource URI (see
    /// [`check_resource_registration`](Self::check_resource_registration)).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concierge_guard::BuildError> {
    /// use concierge_guard::{ClientCredentials, Guard};
    /// let guard = Guard::builder("https://auth.example.com", "https://calendar.example.com/mcp")
    ///     .client_credentials(ClientCredentials::secret_basic("calendar-server", "s3cret"))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(any(feature = "exchange", feature = "introspection"))]
    pub fn client_credentials(mut self, credentials: crate::client::ClientCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// When to ask the issuer's introspection endpoint (RFC 7662) about a
    /// token: never (default), for opaque tokens, or for every token so
    /// revoked JWTs are refused. Needs [`client_credentials`](Self::client_credentials).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concierge_guard::BuildError> {
    /// use std::time::Duration;
    /// use concierge_guard::{ClientCredentials, Guard, Introspection};
    /// let guard = Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .client_credentials(ClientCredentials::secret_basic("notes-server", "s3cret"))
    ///     .introspection(Introspection::AllTokens)
    ///     .introspection_cache_ttl(Duration::from_secs(30))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "introspection")]
    pub fn introspection(mut self, mode: crate::introspect::Introspection) -> Self {
        self.introspection = mode;
        self
    }

    /// How long an introspection answer is reused at most (default 60 s; it
    /// is never reused past the token's `exp`). This bounds how long a
    /// revoked token is still accepted. Zero asks every time.
    #[cfg(feature = "introspection")]
    pub fn introspection_cache_ttl(mut self, ttl: Duration) -> Self {
        self.introspection_cache_ttl = ttl;
        self
    }

    /// Compare this machine's clock with the issuer's (the `Date` of its
    /// metadata or JWKS answer, plus any `Age` a cache added) at start-up and
    /// fail when they differ by more than the leeway (default on).
    pub fn check_clock(mut self, check: bool) -> Self {
        self.check_clock = check;
        self
    }

    /// With client credentials, ask the token endpoint at start-up for a
    /// `client_credentials` token for the resource, to learn whether the
    /// issuer knows the resource URI (default on; the token is discarded).
    /// Turn it off where such a request is unwelcome (rate limits, audit
    /// noise).
    pub fn check_resource_registration(mut self, check: bool) -> Self {
        self.check_registration = check;
        self
    }

    /// With introspection on, introspect a made-up token at start-up to learn
    /// whether the issuer lets this client introspect (default on).
    pub fn check_introspection_access(mut self, check: bool) -> Self {
        self.check_introspection = check;
        self
    }

    /// Called with the principal of every request the guard lets through
    /// (for metrics; keep it cheap).
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU64, Ordering};
    /// static ACCEPTED: AtomicU64 = AtomicU64::new(0);
    /// let builder = concierge_guard::Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .on_accept(|_principal| { ACCEPTED.fetch_add(1, Ordering::Relaxed); });
    /// # let _ = builder;
    /// ```
    pub fn on_accept(mut self, hook: impl Fn(&Principal) + Send + Sync + 'static) -> Self {
        self.hooks.on_accept = Some(Arc::new(hook));
        self
    }

    /// Called with every refusal (for metrics; keep it cheap). Each refusal
    /// is also a `tracing` event (target `concierge_guard`) with the reason.
    pub fn on_refuse(mut self, hook: impl Fn(&Refusal) + Send + Sync + 'static) -> Self {
        self.hooks.on_refuse = Some(Arc::new(hook));
        self
    }

    /// Called once when the guard becomes [ready](Guard::is_ready): at once
    /// from [`build`](Self::build), later from
    /// [`build_in_background`](Self::build_in_background).
    pub fn on_ready(mut self, hook: impl Fn() + Send + Sync + 'static) -> Self {
        self.hooks.on_ready = Some(Arc::new(hook));
        self
    }

    fn check_url(&self, what: &'static str, value: &str) -> Result<Url, BuildError> {
        let invalid = |reason: String| BuildError::InvalidUrl {
            what,
            value: value.to_owned(),
            reason,
        };
        let url = Url::parse(value).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
            return Err(invalid("it must be an http(s) URL with a host".into()));
        }
        if url.fragment().is_some() {
            return Err(invalid("it must not have a fragment".into()));
        }
        check_secure(self.allow_insecure_http, what, &url)?;
        Ok(url)
    }

    /// Checks the settings, discovers each issuer's metadata and loads its
    /// keys, then runs the start-up probes. Fails with a [`BuildError`]
    /// saying what is misconfigured: a bad URL, an unreachable issuer,
    /// metadata naming another issuer or no `jwks_uri`, an unusable key set,
    /// an unsafe algorithm, a scope rule for a tool that does not exist.
    ///
    /// # Errors
    ///
    /// What is misconfigured.
    pub async fn build(self) -> Result<Guard, BuildError> {
        let guard = self.prepare()?;
        for index in 0..guard.inner.issuers.len() {
            guard.connect(index, true).await?;
        }
        guard.probe(true).await?;
        guard.mark_ready();
        Ok(guard)
    }

    /// Checks the settings and returns the guard at once; the issuers are
    /// reached in a background task (retrying with back-off up to 30 s), so
    /// the server starts while the issuer is still down. Until an issuer is
    /// reached, requests carrying its tokens are answered `503` with
    /// `Retry-After`; requests without a token get the usual challenge, and
    /// the metadata is served. [`Guard::ready`], [`Guard::is_ready`] and
    /// [`on_ready`](Self::on_ready) report readiness; problems are logged and
    /// kept in [`Guard::startup_error`].
    ///
    /// Needs a Tokio runtime.
    ///
    /// # Errors
    ///
    /// Settings that are wrong whatever the issuer says.
    pub fn build_in_background(self) -> Result<Guard, BuildError> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            BuildError::InvalidSetting(
                "build_in_background needs a Tokio runtime; call it from async code".into(),
            )
        })?;
        let guard = self.prepare()?;
        runtime.spawn(crate::startup::connect_in_background(Arc::downgrade(
            &guard.inner,
        )));
        Ok(guard)
    }

    /// Everything that needs no network: the guard, not yet connected.
    fn prepare(mut self) -> Result<Guard, BuildError> {
        let issuers = std::mem::take(&mut self.issuers);
        for issuer in &issuers {
            self.check_url("issuer URL", &issuer.url)?;
            if let Some(jwks_uri) = &issuer.jwks_uri {
                self.check_url("jwks_uri", jwks_uri)?;
            }
        }
        let resource_url = self.check_url("resource URI", &self.resource)?;
        let mut audiences = vec![normalize_uri(&self.resource).to_owned()];
        for a in &self.audiences {
            let a = normalize_uri(a).to_owned();
            if !audiences.contains(&a) {
                audiences.push(a);
            }
        }
        if self.algorithms.is_empty() {
            return Err(BuildError::InvalidSetting(
                "allow at least one algorithm (GuardBuilder::algorithms)".into(),
            ));
        }
        if let Some(alg) = self
            .algorithms
            .iter()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(BuildError::UnsafeAlgorithm(*alg));
        }
        if self.refetch_interval.is_zero() {
            return Err(BuildError::InvalidSetting(
                "jwks_refetch_interval must be above zero, or unknown key ids could make the guard fetch keys on every request".into(),
            ));
        }
        let leeway = i64::try_from(self.leeway.as_secs())
            .map_err(|_| BuildError::InvalidSetting("leeway is too large".into()))?;
        let rules = self.operation_rules()?;
        #[cfg(feature = "introspection")]
        if self.introspection != crate::introspect::Introspection::Off && self.credentials.is_none()
        {
            return Err(BuildError::InvalidSetting(
                "introspection needs this server's client credentials: call GuardBuilder::client_credentials"
                    .into(),
            ));
        }
        let http = match self.http.clone() {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .map_err(|e| {
                    BuildError::InvalidSetting(format!("cannot create the HTTP client: {e}"))
                })?,
        };

        let mut all_scopes = self.required_scopes.clone();
        for (_, scopes) in &self.route_scopes {
            union_into(&mut all_scopes, scopes);
        }
        for s in rules.scopes() {
            union_into(&mut all_scopes, std::slice::from_ref(s));
        }
        for s in self.hierarchy.scopes() {
            union_into(&mut all_scopes, std::slice::from_ref(s));
        }
        let scopes: Vec<String> = self
            .scopes_supported
            .take()
            .unwrap_or(all_scopes)
            .into_iter()
            .filter(|s| advertised(s))
            .collect();
        let mut metadata = ProtectedResourceMetadata::new(self.resource.clone(), String::new())
            .with_scopes(scopes);
        metadata.authorization_servers.clear();
        metadata.resource_name = self.resource_name.take();
        metadata.resource_documentation = self.resource_documentation.take();
        #[cfg(feature = "dpop")]
        let dpop = self.dpop_rules(&resource_url, &mut metadata)?;
        let cache = ValidationCache::new(self.cache_size, self.cache_ttl);
        let guard = Guard {
            inner: Arc::new(Inner {
                metadata_url: metadata_url(&resource_url),
                resource: self.resource,
                resource_url,
                metadata_base: metadata,
                metadata_doc: RwLock::new(bytes::Bytes::new()),
                issuers: issuers
                    .into_iter()
                    .map(|config| IssuerSlot {
                        config,
                        connected: RwLock::new(None),
                    })
                    .collect(),
                audiences,
                leeway,
                hierarchy: Arc::new(self.hierarchy),
                validations: self
                    .algorithms
                    .iter()
                    .map(|a| (*a, signature_only(*a)))
                    .collect(),
                algorithms: self.algorithms,
                required_scopes: self.required_scopes,
                route_scopes: self.route_scopes,
                rules,
                max_body_bytes: self.max_body_bytes,
                dpop_required: self.dpop_required,
                #[cfg(feature = "dpop")]
                dpop,
                cache,
                http,
                startup: crate::config::StartupSettings {
                    jwks_ttl: self.jwks_ttl,
                    refetch_interval: self.refetch_interval,
                    check_clock: self.check_clock,
                    check_registration: self.check_registration,
                    check_introspection: self.check_introspection,
                    allow_insecure_http: self.allow_insecure_http,
                },
                #[cfg(any(feature = "exchange", feature = "introspection"))]
                credentials: self.credentials,
                #[cfg(feature = "introspection")]
                introspection: self.introspection,
                #[cfg(feature = "introspection")]
                introspection_cache: ValidationCache::new(
                    self.cache_size,
                    self.introspection_cache_ttl,
                ),
                #[cfg(feature = "exchange")]
                exchanges: crate::exchange::ExchangeCache::new(),
                hooks: self.hooks,
                readiness: Readiness::default(),
            }),
        };
        guard.render_metadata();
        Ok(guard)
    }

    /// The operation rules: declared ones, overridden by explicit ones,
    /// every named tool and prompt checked against the known ones.
    fn operation_rules(&mut self) -> Result<OperationRules, BuildError> {
        if let Some(e) = self.declaration_errors.first() {
            return Err(BuildError::InvalidSetting(format!(
                "a scope declaration cannot be read: {e}"
            )));
        }
        let mut rules = std::mem::take(&mut self.rules);
        for (name, rule) in self.declared_tools.drain() {
            rules.tools.entry(name).or_insert(rule);
        }
        for (name, rule) in self.declared_prompts.drain() {
            rules.prompts.entry(name).or_insert(rule);
        }
        for (kind, named, known) in [
            ("tool", &rules.tools, &self.known_tools),
            ("prompt", &rules.prompts, &self.known_prompts),
        ] {
            if let Some(known) = known {
                let mut names: Vec<_> = named.keys().collect();
                names.sort();
                if let Some(unknown) = names.into_iter().find(|n| !known.contains(*n)) {
                    return Err(BuildError::UnknownOperation {
                        kind,
                        name: unknown.clone(),
                        known: known.iter().cloned().collect::<Vec<_>>().join(", "),
                    });
                }
                if rules.default_deny {
                    let open: Vec<_> = known.iter().filter(|n| !named.contains_key(*n)).collect();
                    if !open.is_empty() {
                        tracing::warn!(
                            target: "concierge_guard",
                            kind,
                            names = ?open,
                            "default_deny is on and these have no scope rule: every call is refused"
                        );
                    }
                }
            }
        }
        let all_rules = rules
            .tools
            .iter()
            .chain(rules.prompts.iter())
            .map(|(n, r)| (n.as_str(), r))
            .chain(rules.resources.iter().map(|(n, r)| (n.as_str(), r)));
        for (name, rule) in all_rules {
            if rule.alternatives().is_empty() {
                return Err(BuildError::InvalidSetting(format!(
                    "the scope rule for {name:?} has no alternative: ScopeRule::any_of needs at least one scope"
                )));
            }
        }
        Ok(rules)
    }

    #[cfg(feature = "dpop")]
    fn dpop_rules(
        &self,
        resource: &Url,
        metadata: &mut ProtectedResourceMetadata,
    ) -> Result<crate::dpop_rules::DpopRules, BuildError> {
        let settings = &self.dpop;
        if let Some(alg) = settings
            .algorithms
            .iter()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(BuildError::UnsafeAlgorithm(*alg));
        }
        if settings.algorithms.is_empty() || settings.per_key == 0 {
            return Err(BuildError::InvalidSetting(
                "DPoP needs at least one algorithm (dpop_algorithms) and a replay cache of at least one entry per key (dpop_replay_cache_size)".into(),
            ));
        }
        let max_age = i64::try_from(settings.max_age.as_secs())
            .map_err(|_| BuildError::InvalidSetting("dpop_proof_max_age is too large".into()))?;
        let nonces = if settings.nonces {
            let period = i64::try_from(settings.nonce_lifetime.as_secs())
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    BuildError::InvalidSetting(
                        "dpop_nonce_lifetime must be at least one second".into(),
                    )
                })?;
            let secret = match &settings.nonce_secret {
                Some(s) if s.len() >= 16 => s.clone(),
                Some(_) => {
                    return Err(BuildError::InvalidSetting(
                        "dpop_nonce_secret must be at least 16 bytes".into(),
                    ));
                }
                None => {
                    let mut s = vec![0u8; 32];
                    aws_lc_rs::rand::fill(&mut s).map_err(|_| {
                        BuildError::InvalidSetting("no randomness for the DPoP nonce secret".into())
                    })?;
                    s
                }
            };
            Some(crate::nonce::Nonces::new(&secret, period))
        } else {
            None
        };
        // RFC 9728 §2: the resource states which DPoP algorithms it accepts
        // and whether it accepts only DPoP-bound tokens.
        metadata.dpop_signing_alg_values_supported = settings
            .algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        if self.dpop_required {
            metadata.dpop_bound_access_tokens_required = Some(true);
        }
        Ok(crate::dpop_rules::DpopRules {
            challenge_algs: metadata.dpop_signing_alg_values_supported.join(" "),
            algorithms: settings.algorithms.clone(),
            max_age,
            origin: resource.origin().ascii_serialization(),
            replays: crate::cache::ReplayCache::new(settings.per_key),
            nonces,
        })
    }
}

/// Plain `http` only for loopback hosts, unless allowed.
pub(crate) fn check_secure(
    allow_insecure: bool,
    what: &'static str,
    url: &Url,
) -> Result<(), BuildError> {
    let loopback = match url.host() {
        Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    };
    if url.scheme() == "https" || loopback || allow_insecure {
        Ok(())
    } else {
        Err(BuildError::InsecureUrl {
            what,
            url: url.to_string(),
        })
    }
}
