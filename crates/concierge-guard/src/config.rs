//! [`GuardBuilder`]: the guard's settings and their defaults.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use jsonwebtoken::{Algorithm, AlgorithmFamily};
use url::{Host, Url};

use crate::cache::{ReplayCache, ValidationCache};
use crate::client::{Answer, ClientCredentials, post_form};
use crate::error::BuildError;
use crate::exchange::ExchangeCache;
use crate::guard::{DpopRules, Guard, Inner, signature_only};
use crate::introspect::Introspection;
use crate::jwks::{KeyStore, discover};
use crate::metadata::{ProtectedResourceMetadata, metadata_url};
use crate::validate::{ClaimRules, normalize_uri};

/// Default cap on a buffered JSON-RPC body (per-tool scopes): 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 1024 * 1024;

/// Configures and builds a [`Guard`]. Start with [`Guard::builder`].
///
/// | Setting | Default |
/// | --- | --- |
/// | [`algorithms`](Self::algorithms) | ES256, RS256 |
/// | [`leeway`](Self::leeway) | 60 s |
/// | [`jwks_ttl`](Self::jwks_ttl) | 5 min |
/// | [`jwks_refetch_interval`](Self::jwks_refetch_interval) | 30 s |
/// | [`cache_size`](Self::cache_size) / [`cache_ttl`](Self::cache_ttl) | 10 000 tokens / 5 min |
/// | [`max_body_bytes`](Self::max_body_bytes) | 1 MiB |
/// | [`dpop_bound_access_tokens_required`](Self::dpop_bound_access_tokens_required) | `false` |
/// | [`dpop_algorithms`](Self::dpop_algorithms) | [`dpop::DEFAULT_ALGORITHMS`](crate::dpop::DEFAULT_ALGORITHMS) |
/// | [`dpop_proof_max_age`](Self::dpop_proof_max_age) | 60 s (plus 5 s of leeway) |
/// | [`dpop_replay_cache_size`](Self::dpop_replay_cache_size) | 100 000 proofs |
/// | required scopes, route and tool scopes | none |
#[must_use = "call .build().await to get a Guard"]
pub struct GuardBuilder {
    issuer: String,
    resource: String,
    required_scopes: Vec<String>,
    route_scopes: Vec<(String, Vec<String>)>,
    tool_scopes: HashMap<String, Vec<String>>,
    scopes_supported: Option<Vec<String>>,
    algorithms: Vec<Algorithm>,
    leeway: Duration,
    jwks_ttl: Duration,
    refetch_interval: Duration,
    cache_size: usize,
    cache_ttl: Duration,
    resource_name: Option<String>,
    dpop_required: bool,
    dpop_algorithms: Vec<Algorithm>,
    dpop_max_age: Duration,
    dpop_replay_capacity: usize,
    max_body_bytes: usize,
    allow_insecure_http: bool,
    http: Option<reqwest::Client>,
    credentials: Option<ClientCredentials>,
    introspection: Introspection,
    introspection_cache_ttl: Duration,
    check_clock: bool,
}

impl fmt::Debug for GuardBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GuardBuilder")
            .field("issuer", &self.issuer)
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
    pub(crate) fn new(issuer: impl Into<String>, resource: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            resource: resource.into(),
            required_scopes: Vec::new(),
            route_scopes: Vec::new(),
            tool_scopes: HashMap::new(),
            scopes_supported: None,
            algorithms: vec![Algorithm::ES256, Algorithm::RS256],
            leeway: Duration::from_secs(60),
            jwks_ttl: Duration::from_secs(300),
            refetch_interval: Duration::from_secs(30),
            cache_size: 10_000,
            cache_ttl: Duration::from_secs(300),
            resource_name: None,
            dpop_required: false,
            dpop_algorithms: crate::dpop::DEFAULT_ALGORITHMS.to_vec(),
            dpop_max_age: Duration::from_secs(60),
            dpop_replay_capacity: 100_000,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            allow_insecure_http: false,
            http: None,
            credentials: None,
            introspection: Introspection::Off,
            introspection_cache_ttl: Duration::from_secs(60),
            check_clock: true,
        }
    }

    /// Scopes every request must carry (on top of route and tool scopes).
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

    /// Scopes needed to call the MCP tool `tool`: for a `POST` whose JSON-RPC
    /// body is a `tools/call` with `params.name == tool`.
    pub fn tool_scopes<I, S>(mut self, tool: impl Into<String>, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tool_scopes.insert(tool.into(), strings(scopes));
        self
    }

    /// The `scopes_supported` published in the metadata. Default: every scope
    /// named by the required, route and tool scopes.
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

    /// Accept only DPoP-bound tokens ([RFC 9449]): a token without `cnf.jkt`
    /// is refused, and the metadata says `dpop_bound_access_tokens_required:
    /// true`. Bound tokens are always accepted, with the `DPoP` scheme and a
    /// proof of their key; this setting refuses the others.
    ///
    /// [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
    pub fn dpop_bound_access_tokens_required(mut self, required: bool) -> Self {
        self.dpop_required = required;
        self
    }

    /// Algorithms accepted for DPoP proofs (published as
    /// `dpop_signing_alg_values_supported`). HMAC algorithms are refused by
    /// [`build`](Self::build).
    pub fn dpop_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.dpop_algorithms = algorithms.into_iter().collect();
        self
    }

    /// How old (`iat`) a DPoP proof may be. Proof ids are remembered this
    /// long to refuse replays.
    pub fn dpop_proof_max_age(mut self, max_age: Duration) -> Self {
        self.dpop_max_age = max_age;
        self
    }

    /// How many recent DPoP proof ids to remember. When that many live ones
    /// are held, further proofs are refused until some expire (so a flood
    /// cannot push out an id and make a replay pass).
    pub fn dpop_replay_cache_size(mut self, entries: usize) -> Self {
        self.dpop_replay_capacity = entries;
        self
    }

    /// Cap on the request body the layer buffers to read a JSON-RPC tool
    /// name; larger bodies get 413. Only used when tool scopes are set.
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
    /// exchange ([`Guard::exchange`]) and introspection. With credentials,
    /// [`build`](Self::build) also checks that the issuer knows the resource
    /// URI (see there).
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
    pub fn client_credentials(mut self, credentials: ClientCredentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// When to ask the issuer's introspection endpoint (RFC 7662) about a
    /// token: never (default), for opaque tokens, or for every token so
    /// revoked JWTs are refused. Needs [`client_credentials`](Self::client_credentials).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), concierge_guard::BuildError> {
    /// use std::time::{Duration, SystemTime};
    /// use concierge_guard::{ClientCredentials, Guard, Introspection};
    /// let guard = Guard::builder("https://auth.example.com", "https://mcp.example.com/mcp")
    ///     .client_credentials(ClientCredentials::secret_basic("notes-server", "s3cret"))
    ///     .introspection(Introspection::AllTokens)
    ///     .introspection_cache_ttl(Duration::from_secs(30))
    ///     .build()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn introspection(mut self, mode: Introspection) -> Self {
        self.introspection = mode;
        self
    }

    /// How long an introspection answer is reused at most (default 60 s; it
    /// is never reused past the token's `exp`). This bounds how long a
    /// revoked token is still accepted. Zero asks every time.
    pub fn introspection_cache_ttl(mut self, ttl: Duration) -> Self {
        self.introspection_cache_ttl = ttl;
        self
    }

    /// Compare this machine's clock with the issuer's HTTP `Date` at build
    /// time and fail when they differ by more than the leeway (default on).
    pub fn check_clock(mut self, check: bool) -> Self {
        self.check_clock = check;
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
        self.check_secure(what, &url)?;
        Ok(url)
    }

    fn check_secure(&self, what: &'static str, url: &Url) -> Result<(), BuildError> {
        let loopback = match url.host() {
            Some(Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
            None => false,
        };
        if url.scheme() == "https" || loopback || self.allow_insecure_http {
            Ok(())
        } else {
            Err(BuildError::InsecureUrl {
                what,
                url: url.to_string(),
            })
        }
    }

    /// Checks the settings, discovers the issuer's metadata and loads its
    /// keys. Fails with a [`BuildError`] saying what is misconfigured: a bad
    /// URL, an unreachable issuer, metadata naming another issuer or no
    /// `jwks_uri`, an unusable key set, an unsafe algorithm.
    pub async fn build(self) -> Result<Guard, BuildError> {
        let issuer_url = self.check_url("issuer URL", &self.issuer)?;
        let resource = self.check_url("resource URI", &self.resource)?;
        if self.algorithms.is_empty() {
            return Err(BuildError::InvalidSetting(
                "allow at least one algorithm".into(),
            ));
        }
        if let Some(alg) = self
            .algorithms
            .iter()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(BuildError::UnsafeAlgorithm(*alg));
        }
        if let Some(alg) = self
            .dpop_algorithms
            .iter()
            .find(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(BuildError::UnsafeAlgorithm(*alg));
        }
        if self.dpop_algorithms.is_empty() || self.dpop_replay_capacity == 0 {
            return Err(BuildError::InvalidSetting(
                "DPoP needs at least one algorithm and a replay cache of at least one entry".into(),
            ));
        }
        let dpop_max_age = i64::try_from(self.dpop_max_age.as_secs())
            .map_err(|_| BuildError::InvalidSetting("dpop_proof_max_age is too large".into()))?;
        if self.refetch_interval.is_zero() {
            return Err(BuildError::InvalidSetting(
                "jwks_refetch_interval must be above zero, or unknown key ids could make the guard fetch keys on every request".into(),
            ));
        }
        let leeway = i64::try_from(self.leeway.as_secs())
            .map_err(|_| BuildError::InvalidSetting("leeway is too large".into()))?;
        let client = match self.http.clone() {
            Some(c) => c,
            None => reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .redirect(reqwest::redirect::Policy::limited(3))
                .build()
                .map_err(|e| {
                    BuildError::InvalidSetting(format!("cannot create the HTTP client: {e}"))
                })?,
        };
        let discovered = discover(&client, &issuer_url, &self.issuer).await?;
        self.check_secure("jwks_uri", &discovered.jwks_uri)?;
        if self.check_clock
            && let Some(date) = &discovered.date
        {
            check_clock(&discovered.issuer, date, SystemTime::now(), leeway)?;
        }
        if self.introspection != Introspection::Off {
            let Some(credentials) = &self.credentials else {
                return Err(BuildError::InvalidSetting(
                    "introspection needs this server's client credentials: call client_credentials"
                        .into(),
                ));
            };
            let Some(endpoint) = &discovered.introspection_endpoint else {
                return Err(BuildError::InvalidSetting(format!(
                    "introspection is on but the metadata of {} names no introspection_endpoint",
                    discovered.issuer
                )));
            };
            probe_introspection(&client, endpoint, credentials).await?;
        }
        if let (Some(credentials), Some(endpoint)) = (&self.credentials, &discovered.token_endpoint)
        {
            check_registered(
                &client,
                endpoint,
                credentials,
                &discovered.issuer,
                &self.resource,
            )
            .await?;
        }
        let keys = KeyStore::new(
            client.clone(),
            discovered.jwks_uri,
            self.jwks_ttl,
            self.refetch_interval,
        );
        let loaded = keys.load().await?;
        tracing::debug!(issuer = %discovered.issuer, keys = loaded, "concierge-guard ready");

        let mut all_scopes = self.required_scopes.clone();
        for (_, scopes) in &self.route_scopes {
            union_into(&mut all_scopes, scopes);
        }
        let mut tools: Vec<_> = self.tool_scopes.iter().collect();
        tools.sort();
        for (_, scopes) in tools {
            union_into(&mut all_scopes, scopes);
        }
        let mut metadata =
            ProtectedResourceMetadata::new(self.resource.clone(), discovered.issuer.clone())
                .with_scopes(self.scopes_supported.unwrap_or(all_scopes));
        metadata.resource_name = self.resource_name;
        metadata.dpop_signing_alg_values_supported = self
            .dpop_algorithms
            .iter()
            .map(|a| format!("{a:?}"))
            .collect();
        if self.dpop_required {
            metadata = metadata.require_dpop();
        }
        let dpop = DpopRules {
            required: self.dpop_required,
            challenge_algs: metadata.dpop_signing_alg_values_supported.join(" "),
            algorithms: self.dpop_algorithms,
            max_age: dpop_max_age,
            origin: resource.origin().ascii_serialization(),
            replays: ReplayCache::new(self.dpop_replay_capacity),
        };
        let rules = ClaimRules {
            issuer: discovered.issuer,
            audience: normalize_uri(&self.resource).to_owned(),
            leeway,
        };
        Ok(Guard {
            inner: Arc::new(Inner {
                metadata_url: metadata_url(&resource),
                metadata,
                rules,
                validations: self
                    .algorithms
                    .iter()
                    .map(|a| (*a, signature_only(*a)))
                    .collect(),
                algorithms: self.algorithms,
                required_scopes: self.required_scopes,
                route_scopes: self.route_scopes,
                tool_scopes: self.tool_scopes,
                max_body_bytes: self.max_body_bytes,
                dpop,
                keys,
                cache: ValidationCache::new(self.cache_size, self.cache_ttl),
                http: client,
                credentials: self.credentials,
                token_endpoint: discovered.token_endpoint,
                introspection_endpoint: discovered.introspection_endpoint,
                introspection: self.introspection,
                introspection_cache: ValidationCache::new(
                    self.cache_size,
                    self.introspection_cache_ttl,
                ),
                exchanges: ExchangeCache::new(),
            }),
        })
    }
}

/// Fails when `now` and the issuer's `Date` differ by more than `leeway`
/// seconds (pure). An unparseable `Date` is ignored.
pub(crate) fn check_clock(
    issuer: &str,
    date: &str,
    now: SystemTime,
    leeway: i64,
) -> Result<(), BuildError> {
    let Ok(theirs) = httpdate::parse_http_date(date) else {
        return Ok(());
    };
    let (skew, direction) = match now.duration_since(theirs) {
        Ok(ahead) => (ahead.as_secs(), "ahead of"),
        Err(behind) => (behind.duration().as_secs(), "behind"),
    };
    if i64::try_from(skew).unwrap_or(i64::MAX) > leeway {
        return Err(BuildError::ClockSkew {
            issuer: issuer.to_owned(),
            issuer_date: date.to_owned(),
            skew_secs: skew,
            direction,
            leeway_secs: leeway,
        });
    }
    Ok(())
}

/// Introspects a made-up token once, to learn at start-up rather than on the
/// first request whether the issuer accepts this client there.
async fn probe_introspection(
    http: &reqwest::Client,
    endpoint: &Url,
    credentials: &ClientCredentials,
) -> Result<(), BuildError> {
    let form = vec![("token", "concierge-guard-probe".to_owned())];
    match post_form(http, endpoint, credentials, form).await {
        Ok(Answer::Ok(_)) => Ok(()),
        Ok(Answer::Error {
            error, description, ..
        }) if error == "invalid_client" => Err(BuildError::ClientRejected {
            client_id: credentials.client_id().to_owned(),
            endpoint: endpoint.to_string(),
            description: description.unwrap_or_default(),
        }),
        Ok(Answer::Error {
            error, description, ..
        }) => Err(BuildError::IntrospectionNotAllowed {
            client_id: credentials.client_id().to_owned(),
            endpoint: endpoint.to_string(),
            description: description.unwrap_or(error),
        }),
        Err(e) => Err(BuildError::IssuerUnreachable {
            issuer: endpoint.to_string(),
            tried: endpoint.to_string(),
            reason: e,
        }),
    }
}

/// Asks for a client-credentials token for `resource` (RFC 8707): an
/// `invalid_target` answer means the issuer does not know the resource URI,
/// the commonest misconfiguration (tokens would never carry this `aud`).
/// `invalid_client` means the credentials are wrong. Any other refusal (this
/// client may not use the grant, or no scope fits) proves nothing either way
/// and is only logged. The token obtained, if any, is dropped.
async fn check_registered(
    http: &reqwest::Client,
    endpoint: &Url,
    credentials: &ClientCredentials,
    issuer: &str,
    resource: &str,
) -> Result<(), BuildError> {
    let form = vec![
        ("grant_type", "client_credentials".to_owned()),
        ("resource", resource.to_owned()),
    ];
    match post_form(http, endpoint, credentials, form).await {
        Ok(Answer::Ok(_)) => Ok(()),
        Ok(Answer::Error {
            error, description, ..
        }) => match error.as_str() {
            "invalid_target" => Err(BuildError::ResourceNotRegistered {
                issuer: issuer.to_owned(),
                resource: resource.to_owned(),
                description: description.unwrap_or_default(),
            }),
            "invalid_client" => Err(BuildError::ClientRejected {
                client_id: credentials.client_id().to_owned(),
                endpoint: endpoint.to_string(),
                description: description.unwrap_or_default(),
            }),
            _ => {
                tracing::debug!(%error, "could not check that the issuer knows the resource");
                Ok(())
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "could not check that the issuer knows the resource");
            Ok(())
        }
    }
}
