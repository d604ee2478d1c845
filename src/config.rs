//! Configuration, layered: built-in defaults < `concierge.toml` < `CONCIERGE_*` environment
//! variables < command-line flags.
//!
//! Every field is documented where it is defined, with its default. Nested fields are set from
//! the environment with a double underscore: `CONCIERGE_REGISTRATION__RATE_LIMIT_MAX=5`. An
//! environment value is read as a TOML value when it parses as one (numbers, booleans,
//! arrays such as `["a","b"]`) and as a string otherwise.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use url::Url;

/// Everything the server needs to start.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// The issuer identifier (RFC 8414 §2): `https://…`, or `http://` on a loopback host for
    /// development. No query, fragment or trailing slash. Default `http://localhost:8080`.
    pub issuer: String,
    /// Where the zero-configuration mode keeps its SQLite database and generated
    /// key-encryption key. Default `./concierge-data`.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`. Default: `sqlite://<data_dir>/concierge.db`.
    pub database_url: Option<String>,
    /// Base64url of 32 random bytes that encrypts signing keys at rest. Default: a key file
    /// `<data_dir>/key-encryption-key`, generated on first start. Every replica sharing one
    /// database must use the same key.
    pub key_encryption_key: Option<String>,
    /// Earlier key-encryption keys, still accepted for decrypting while a KEK rotation is under
    /// way (deploy/README.md); `concierge keys rekey` re-encrypts under the current one, after
    /// which these can go. Default: none.
    pub previous_key_encryption_keys: Vec<String>,
    /// `text` (default) or `json` log lines.
    pub log_format: LogFormat,
    /// Deprecated: use `trusted_proxies`. `true` trusts whatever connects to us as one proxy,
    /// so the caller's address is the last entry of `forwarded_header` (as if the peer's
    /// address were listed in `trusted_proxies`). Default `false`.
    pub trust_forwarded_for: bool,
    /// The proxies in front of Concierge, as addresses or CIDR ranges
    /// (`["10.0.0.0/8", "127.0.0.1", "fd00::/8"]`). When the connection comes from one of
    /// them, the caller's address is found in `forwarded_header` by walking its entries from
    /// the right, past every trusted proxy, to the first address that is not one; a request
    /// from any other peer is taken at the peer's address and its forwarding headers are
    /// ignored. Rate limits, sign-in throttling and the audit log use that address.
    /// Default: none (the peer's address is the caller's).
    pub trusted_proxies: Vec<ProxyRange>,
    /// Which header the trusted proxies maintain: `x-forwarded-for` (default) or `forwarded`
    /// (RFC 7239, its `for=` parameters). Only that one is read: a client can send the other
    /// one, and a proxy that does not maintain it passes it on unchanged.
    pub forwarded_header: ForwardedHeader,
    /// The resource a client gets when its authorization request names none (some MCP
    /// clients send no `resource`). Without it, the only registered resource is
    /// used when there is exactly one; otherwise the request fails with `invalid_target`.
    pub default_resource: Option<String>,
    pub registration: RegistrationConfig,
    pub cimd: CimdConfig,
    pub clients: ClientsConfig,
    pub resources: ResourcesConfig,
    pub tokens: TokenConfig,
    pub keys: KeysConfig,
    pub audit: AuditConfig,
    pub dpop: DpopConfig,
    pub id_jag: IdJagConfig,
    pub workload_identity: WorkloadIdentityConfig,
    pub http: HttpConfig,
    pub metrics: MetricsConfig,
    pub rate_limits: RateLimitConfig,
    pub signin: SigninConfig,
    /// Asynchronous approval requests (OpenID Connect CIBA, poll mode).
    pub ciba: CibaConfig,
    /// Upstream identity providers: a "Sign in with …" button each, as `[[upstream]]`
    /// tables (OpenID Connect, or `kind = "github"`). More can be added with
    /// `concierge idp add`. Default: none.
    pub upstream: Vec<crate::store::UpstreamProvider>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            issuer: "http://localhost:8080".into(),
            data_dir: PathBuf::from("./concierge-data"),
            database_url: None,
            key_encryption_key: None,
            previous_key_encryption_keys: Vec::new(),
            log_format: LogFormat::Text,
            trust_forwarded_for: false,
            trusted_proxies: Vec::new(),
            forwarded_header: ForwardedHeader::XForwardedFor,
            default_resource: None,
            registration: RegistrationConfig::default(),
            cimd: CimdConfig::default(),
            clients: ClientsConfig::default(),
            resources: ResourcesConfig::default(),
            tokens: TokenConfig::default(),
            keys: KeysConfig::default(),
            audit: AuditConfig::default(),
            dpop: DpopConfig::default(),
            id_jag: IdJagConfig::default(),
            workload_identity: WorkloadIdentityConfig::default(),
            http: HttpConfig::default(),
            metrics: MetricsConfig::default(),
            rate_limits: RateLimitConfig::default(),
            signin: SigninConfig::default(),
            ciba: CibaConfig::default(),
            upstream: Vec::new(),
        }
    }
}

/// `Debug` never shows a secret: the key-encryption keys are hidden, a password in the
/// database URL is masked, and the sections' own `Debug` hides theirs (`redacted_debug!`;
/// an upstream provider's client secret). Every field is named here, so a new one cannot be
/// added without deciding how it is shown.
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            listen,
            issuer,
            data_dir,
            database_url,
            key_encryption_key,
            previous_key_encryption_keys,
            log_format,
            trust_forwarded_for,
            trusted_proxies,
            forwarded_header,
            default_resource,
            registration,
            cimd,
            clients,
            resources,
            tokens,
            keys,
            audit,
            dpop,
            id_jag,
            workload_identity,
            http,
            metrics,
            rate_limits,
            signin,
            ciba,
            upstream,
        } = self;
        f.debug_struct("Config")
            .field("listen", listen)
            .field("issuer", issuer)
            .field("data_dir", data_dir)
            .field(
                "database_url",
                &database_url.as_deref().map(without_password),
            )
            .field("key_encryption_key", &Hidden(key_encryption_key))
            .field(
                "previous_key_encryption_keys",
                &Hidden(previous_key_encryption_keys),
            )
            .field("log_format", log_format)
            .field("trust_forwarded_for", trust_forwarded_for)
            .field("trusted_proxies", trusted_proxies)
            .field("forwarded_header", forwarded_header)
            .field("default_resource", default_resource)
            .field("registration", registration)
            .field("cimd", cimd)
            .field("clients", clients)
            .field("resources", resources)
            .field("tokens", tokens)
            .field("keys", keys)
            .field("audit", audit)
            .field("dpop", dpop)
            .field("id_jag", id_jag)
            .field("workload_identity", workload_identity)
            .field("http", http)
            .field("metrics", metrics)
            .field("rate_limits", rate_limits)
            .field("signin", signin)
            .field("ciba", ciba)
            .field("upstream", upstream)
            .finish()
    }
}

/// A database URL with its password (if any) masked; one that does not parse as a URL is
/// hidden whole, since it cannot be told apart from a secret.
fn without_password(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() {
                // Only fails for URLs that cannot have credentials, which have no password.
                let _ = url.set_password(Some("redacted"));
            }
            url.to_string()
        }
        Err(_) => "<unparsable>".into(),
    }
}

/// A trusted proxy: an address (`127.0.0.1`, `::1`) or a CIDR range (`10.0.0.0/8`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRange(pub ipnet::IpNet);

impl ProxyRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&ip)
    }
}

impl std::str::FromStr for ProxyRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(ip) = s.parse::<IpAddr>() {
            return Ok(Self(ipnet::IpNet::from(ip.to_canonical())));
        }
        let net = s.parse::<ipnet::IpNet>().map_err(|_| {
            format!("trusted_proxies: {s:?} is neither an IP address nor a CIDR range")
        })?;
        // `10.1.2.3/8` is most likely a typo for a host or for `10.0.0.0/8`: say so.
        if net.trunc() != net {
            return Err(format!(
                "trusted_proxies: {s:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        Ok(Self(net))
    }
}

impl<'de> Deserialize<'de> for ProxyRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for ProxyRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// The forwarding header trusted proxies maintain (see `Config::forwarded_header`).
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
pub enum ForwardedHeader {
    #[serde(rename = "x-forwarded-for")]
    XForwardedFor,
    /// RFC 7239.
    #[serde(rename = "forwarded")]
    Forwarded,
}

/// Sign-in throttling (`crate::oauth::authn::throttle`). Nothing here refuses a correct
/// password for ever: a username that keeps failing waits longer and longer between
/// attempts (up to `user_max_delay_secs`), and an attempt made after its wait is checked;
/// `concierge user unlock` or `POST /admin/v1/users/{id}/unlock` clears the wait at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SigninConfig {
    /// Failed sign-ins a username may have, from any addresses, before each further attempt
    /// must wait. Default 5.
    pub user_free_failures: u32,
    /// The wait after those, in seconds; every further failure doubles it. Default 30.
    pub user_delay_secs: u32,
    /// The longest wait, in seconds. Default 900 (15 minutes).
    pub user_max_delay_secs: u32,
    /// A username's failures are forgotten this many seconds after its last attempt; a
    /// correct password forgets them at once. Default 43200 (12 hours).
    pub user_failure_reset_secs: u32,
    /// The password-spraying guard: once this many distinct usernames have failed from one
    /// address within `address_window_secs`, that address may not try again, until the
    /// window ends, any username that failed from it in the window. Usernames that did not
    /// fail from it are never refused by this guard, so a user sharing the address (a NAT,
    /// an office) who types the right password still gets in. Default 30.
    pub address_max_usernames: u32,
    /// The window of `address_max_usernames`, in seconds. Default 900.
    pub address_window_secs: u32,
    /// Multi-factor authentication for everyone: `off`, `offered` (the default) or
    /// `required`. Clients (`default_acr_values`) and resources (`--require-mfa`) can require
    /// it where this does not.
    pub mfa: MfaPolicy,
}

/// The server-wide multi-factor policy (`[signin] mfa`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MfaPolicy {
    /// Users are not offered an authenticator on their account page. A second factor is
    /// still asked of users who have one, and of everyone where a client or resource
    /// requires it.
    Off,
    /// Users may add an authenticator (the default); it is then asked at every sign-in.
    #[default]
    Offered,
    /// Every user signs in with a second factor; one who has none enrols at their next
    /// sign-in.
    Required,
}

impl MfaPolicy {
    /// May users set up a second factor of their own accord?
    pub fn offered(self) -> bool {
        self != Self::Off
    }
}

impl Default for SigninConfig {
    fn default() -> Self {
        Self {
            user_free_failures: 5,
            user_delay_secs: 30,
            user_max_delay_secs: 900,
            user_failure_reset_secs: 43_200,
            address_max_usernames: 30,
            address_window_secs: 900,
            mfa: MfaPolicy::default(),
        }
    }
}

impl SigninConfig {
    fn check(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("user_free_failures", self.user_free_failures),
            ("user_delay_secs", self.user_delay_secs),
            ("user_failure_reset_secs", self.user_failure_reset_secs),
            ("address_max_usernames", self.address_max_usernames),
            ("address_window_secs", self.address_window_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "signin.{name} must be at least 1"
                )));
            }
        }
        if self.user_max_delay_secs < self.user_delay_secs {
            return Err(ConfigError::Invalid(
                "signin.user_max_delay_secs must be at least user_delay_secs".into(),
            ));
        }
        // Rate-limit windows are swept a day after they start.
        if self.address_window_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "signin.address_window_secs must be at most a day (86400)".into(),
            ));
        }
        // Failures forgotten before the longest wait ends would make that wait unreachable.
        if self.user_failure_reset_secs <= self.user_max_delay_secs {
            return Err(ConfigError::Invalid(
                "signin.user_failure_reset_secs must be longer than user_max_delay_secs".into(),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The HTTP listener: what a client may hold without using it (a slow client is cut off).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// A request's headers must arrive within this many seconds, counted from the
    /// connection's start or from the request's first byte (HTTP/1.1). Default 10.
    pub header_read_timeout_secs: u32,
    /// A request's body must arrive within this many seconds. Default 30.
    pub body_timeout_secs: u32,
    /// A connection with no request in flight and no bytes moving for this many seconds
    /// is closed. Default 60.
    pub idle_timeout_secs: u32,
    /// Most connections served at once; one more is closed on arrival. Default 4096.
    pub max_connections: u32,
    /// At shutdown, how long in-flight requests get to finish, in seconds. Default 10.
    pub shutdown_grace_secs: u32,
    /// One INFO line per request (target `concierge::access`): method, path without the
    /// query, status, latency, client id when known, request id. Default `false`.
    pub access_log: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_secs: 10,
            body_timeout_secs: 30,
            idle_timeout_secs: 60,
            max_connections: 4096,
            shutdown_grace_secs: 10,
            access_log: false,
        }
    }
}

/// Who may read the Prometheus metrics.
#[derive(Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// When set, `/metrics` answers only `Authorization: Bearer <this token>` (401
    /// otherwise). Default: none.
    pub bearer_token: Option<String>,
    /// When set, `/metrics`, `/healthz` and `/readyz` are served on this address instead of
    /// the main listener (e.g. `127.0.0.1:9100`, or a cluster-internal address), and not on
    /// the main one. Default: on the main listener.
    pub listen: Option<SocketAddr>,
}

/// Rate limits on the token endpoint, per replica (kept in memory, so a token costs no
/// database write). 0 turns a limit off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Token requests per client per minute. Default 1200.
    pub token_per_client: u32,
    /// Token requests per address per minute (agents behind one egress address share it).
    /// Default 6000.
    pub token_per_address: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            token_per_client: 1200,
            token_per_address: 6000,
        }
    }
}

/// DPoP (RFC 9449): proofs at the token and userinfo endpoints, and server nonces.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpopConfig {
    /// Require a server nonce in token endpoint proofs (RFC 9449 §8): a proof without the
    /// current one gets `use_dpop_nonce` and a `DPoP-Nonce` header. Nonces are derived from
    /// the key-encryption key and the time, so every replica accepts every replica's.
    /// Default `false`.
    pub require_nonce: bool,
    /// How long a nonce is issued for, in seconds; the previous window's nonce is accepted
    /// too. Default 300.
    pub nonce_window_secs: u32,
    /// How old a proof's `iat` may be, in seconds. Default 60.
    pub proof_max_age_secs: u32,
    /// Clock skew tolerated on both sides of the `iat` window, in seconds. Default 5.
    pub proof_leeway_secs: u32,
}

impl Default for DpopConfig {
    fn default() -> Self {
        Self {
            require_nonce: false,
            nonce_window_secs: 300,
            proof_max_age_secs: 60,
            proof_leeway_secs: 5,
        }
    }
}

/// Dynamic client registration policy (RFC 7591).
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrationConfig {
    /// Open registration at `/register`. Default `true`.
    pub enabled: bool,
    /// When set, `POST /register` requires `Authorization: Bearer <this token>`
    /// (RFC 7591 §3, initial access token). Default: none required.
    pub initial_access_token: Option<String>,
    /// When not empty, redirect URI schemes must be one of these. Default: any scheme the
    /// security rules allow (https, loopback http, private-use schemes of native apps).
    pub allowed_redirect_schemes: Vec<String>,
    /// When not empty, non-loopback redirect hosts must be one of these; `*.example.com`
    /// matches any subdomain. Default: any host.
    pub allowed_redirect_hosts: Vec<String>,
    /// Registrations one address may make per window with metadata it has not registered
    /// in the window (distinct registrations). Default 30.
    pub rate_limit_max: u32,
    /// Registrations one address may make per window that repeat metadata it already
    /// registered in the window: hosted agents register one client per user from a few
    /// shared egress addresses, all alike. Counted apart from `rate_limit_max`, and bounded
    /// so that identical registrations cannot fill the database either (unused ones expire
    /// after `unused_client_ttl_secs`). Default 600.
    pub rate_limit_identical_max: u32,
    /// The rate-limit window in seconds. Default 600.
    pub rate_limit_window_secs: u32,
    /// A registered client that is never used expires after this many seconds. Default 86400.
    pub unused_client_ttl_secs: u32,
    /// Let self-registered (RFC 7591) and metadata-document clients use the client
    /// credentials grant for protected resources, with the scopes they registered (never more
    /// than the resource offers; no registered scope, no scope). Off by default: such clients
    /// get tokens only through a user's authorization, and machine tokens are for clients an
    /// operator registered. Default `false`.
    pub allow_client_credentials: bool,
}

impl Default for RegistrationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            initial_access_token: None,
            allowed_redirect_schemes: Vec::new(),
            allowed_redirect_hosts: Vec::new(),
            rate_limit_max: 30,
            rate_limit_identical_max: 600,
            rate_limit_window_secs: 600,
            unused_client_ttl_secs: 86_400,
            allow_client_credentials: false,
        }
    }
}

/// Client ID Metadata Documents (an https `client_id` that names its own metadata).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CimdConfig {
    /// Accept URL client_ids. Default `true`.
    pub enabled: bool,
    /// Development only: allow documents on loopback addresses (127.0.0.0/8, ::1), over
    /// plain http too. Other special-use addresses stay refused. Default `false`.
    pub allow_loopback: bool,
    /// Whole-fetch timeout in milliseconds. Default 5000.
    pub timeout_ms: u64,
    /// Largest document accepted, in bytes. Default 5120.
    pub max_document_bytes: usize,
    /// Cache lifetime when the response has no cache headers, in seconds. Default 300.
    pub default_cache_secs: u64,
    /// Upper bound on any cache lifetime, whatever the headers say, in seconds. This is also
    /// how stale another replica's copy can be. Default 3600.
    pub max_cache_secs: u64,
    /// Most documents held in the cache. Default 10000.
    pub cache_capacity: usize,
}

impl Default for CimdConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            allow_loopback: false,
            timeout_ms: 5000,
            max_document_bytes: 5120,
            default_cache_secs: 300,
            max_cache_secs: 3600,
            cache_capacity: 10_000,
        }
    }
}

/// Stored clients (registered or pre-registered).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientsConfig {
    /// How long a replica keeps a stored client's record in memory, in seconds, so the token
    /// endpoint does not read the database on every request; 0 disables the cache. A change
    /// made through this replica (RFC 7592 update or delete) applies at once; one made through
    /// another replica or the CLI applies here within this bound. "No such client" is never
    /// cached. Default 10.
    pub cache_secs: u64,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self { cache_secs: 10 }
    }
}

/// Protected resources.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourcesConfig {
    /// How long a replica keeps a resource (its URI and scopes) in memory, in seconds, so
    /// issuing a token needs no database read; 0 disables the cache. A resource added,
    /// changed or removed with the CLI applies on running servers within this bound; an
    /// unknown resource is never cached. Default 10.
    pub cache_secs: u64,
}

impl Default for ResourcesConfig {
    fn default() -> Self {
        Self { cache_secs: 10 }
    }
}

/// Token lifetimes.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Access token lifetime in seconds. Default 600.
    pub access_token_ttl_secs: u32,
    /// ID token lifetime in seconds. Default 3600.
    pub id_token_ttl_secs: u32,
    /// Authorization code lifetime in seconds. Default 60.
    pub code_ttl_secs: u32,
    /// A refresh token unused this long expires, in seconds. Default 2592000 (30 days).
    pub refresh_token_idle_secs: u32,
    /// No refresh token lives longer than this, in seconds. Default 7776000 (90 days).
    pub refresh_token_absolute_secs: u32,
    /// Reuse grace for rotated refresh tokens (public clients), in seconds: within this long
    /// after a token was rotated, its client presenting it again (a retry after a lost
    /// response, two processes refreshing at once) gets a new successor that replaces the
    /// first, so one stays valid. Later, from another client, or for an older token of the
    /// family, reuse revokes the whole family (RFC 9700 §4.14.2). 0 turns the grace off.
    /// Default 30.
    pub refresh_reuse_grace_secs: u32,
    /// A browser sign-in lasts this long, in seconds. Default 43200 (12 hours).
    pub session_ttl_secs: u32,
    /// Longest delegation chain (`act` nesting) a token exchange may produce. Default 4.
    pub max_delegation_depth: u32,
    /// Device codes (RFC 8628) live this long, in seconds. Default 600.
    pub device_code_ttl_secs: u32,
    /// Devices poll no more often than this, in seconds. Default 5.
    pub device_poll_interval_secs: u32,
    /// ID-JAGs we issue as an enterprise IdP live this long, in seconds. Default 300.
    pub id_jag_ttl_secs: u32,
    /// Issue authorization codes, refresh tokens, device codes, back-channel request ids and
    /// session cookies that begin with their issue time (54 characters), which the store
    /// keeps in issue order: writing and finding one stays as fast with 10⁶ stored grants as
    /// with none. Those of the earlier shape (43 random characters) are read either way.
    /// Releases before this one read only the earlier shape: while replicas of one still run
    /// beside this one (a rolling update), set this to `false`, then back (UPGRADE.md).
    /// Default true.
    pub ordered_secrets: bool,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 600,
            id_token_ttl_secs: 3600,
            code_ttl_secs: 60,
            refresh_token_idle_secs: 2_592_000,
            refresh_token_absolute_secs: 7_776_000,
            refresh_reuse_grace_secs: 30,
            session_ttl_secs: 43_200,
            max_delegation_depth: 4,
            device_code_ttl_secs: 600,
            device_poll_interval_secs: 5,
            id_jag_ttl_secs: 300,
            ordered_secrets: true,
        }
    }
}

impl TokenConfig {
    /// Every lifetime is positive (a zero one would issue tokens dead on arrival, e.g.
    /// `expires_in: 0`), and a refresh token's idle limit fits in its absolute one.
    fn check(&self) -> Result<(), ConfigError> {
        for (name, v) in [
            ("access_token_ttl_secs", self.access_token_ttl_secs),
            ("id_token_ttl_secs", self.id_token_ttl_secs),
            ("code_ttl_secs", self.code_ttl_secs),
            ("refresh_token_idle_secs", self.refresh_token_idle_secs),
            (
                "refresh_token_absolute_secs",
                self.refresh_token_absolute_secs,
            ),
            ("session_ttl_secs", self.session_ttl_secs),
            ("device_code_ttl_secs", self.device_code_ttl_secs),
            ("id_jag_ttl_secs", self.id_jag_ttl_secs),
        ] {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "tokens.{name} must be at least 1 second"
                )));
            }
        }
        if self.refresh_token_idle_secs > self.refresh_token_absolute_secs {
            return Err(ConfigError::Invalid(
                "tokens.refresh_token_idle_secs must not exceed refresh_token_absolute_secs".into(),
            ));
        }
        Ok(())
    }

    /// The longest any signed token lives: how long a retired key stays published.
    pub fn longest_signed_lifetime(&self) -> i64 {
        i64::from(
            self.access_token_ttl_secs
                .max(self.id_token_ttl_secs)
                .max(self.id_jag_ttl_secs),
        )
    }
}

/// Signing keys.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeysConfig {
    /// How often a running server rereads keys from the database, in seconds, so a rotation
    /// made elsewhere (CLI, another replica) is served within this bound. Default 30.
    pub refresh_secs: u64,
    /// How long after a rotation the new key starts signing, in seconds. Until then every
    /// replica publishes it (they reread keys within `refresh_secs`) while the previous key
    /// keeps signing, so no verifier ever sees a token signed by a key it has not been shown.
    /// Must exceed `refresh_secs`. Default: twice `refresh_secs` plus 30 (90).
    pub activation_delay_secs: Option<u64>,
    /// Rotate automatically when a key has signed for this many days (publish-then-activate,
    /// one replica does it). 0 (the default): only when an operator rotates.
    pub rotate_after_days: u32,
}

impl Default for KeysConfig {
    fn default() -> Self {
        Self {
            refresh_secs: 30,
            activation_delay_secs: None,
            rotate_after_days: 0,
        }
    }
}

impl KeysConfig {
    /// The activation delay in effect.
    pub fn activation_delay(&self) -> i64 {
        let secs = self
            .activation_delay_secs
            .unwrap_or(self.refresh_secs.saturating_mul(2).saturating_add(30));
        i64::try_from(secs).unwrap_or(i64::MAX)
    }

    /// Seconds a key signs before a scheduled rotation; 0: off.
    pub fn rotate_after_secs(&self) -> i64 {
        i64::from(self.rotate_after_days) * 86_400
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.refresh_secs == 0 || self.refresh_secs > 3600 {
            return Err(ConfigError::Invalid(
                "keys.refresh_secs must be between 1 and 3600".into(),
            ));
        }
        let delay = self.activation_delay();
        if delay <= i64::try_from(self.refresh_secs).unwrap_or(i64::MAX) || delay > 7 * 86_400 {
            return Err(ConfigError::Invalid(format!(
                "keys.activation_delay_secs ({delay}) must exceed keys.refresh_secs ({}), so \
                 every replica publishes a new key before any signs with it, and be at most a \
                 week",
                self.refresh_secs
            )));
        }
        if self.rotate_after_days > 0 && self.rotate_after_secs() <= delay {
            return Err(ConfigError::Invalid(
                "keys.rotate_after_days must be longer than keys.activation_delay_secs".into(),
            ));
        }
        Ok(())
    }
}

/// The audit log.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Days an audit event is kept before the sweeper deletes it. Default 365.
    pub retention_days: u32,
    /// Also push events, as they are stored, to a SIEM or log pipeline. Default: none (events
    /// are only pulled, from the admin API).
    pub webhook: Option<AuditWebhook>,
    /// Also push events, as they are stored, as OpenTelemetry log records (OTLP/HTTP, JSON
    /// encoding) to a collector. Default: none.
    pub otlp: Option<AuditOtlp>,
    /// Every change's event is stored before its response is sent. Token issuance's events
    /// are stored within about 100 ms of the response (batched: a crash in that window loses
    /// them); `true` makes token responses wait for theirs too, at a cost in throughput.
    /// Default `false`.
    pub durable_tokens: bool,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            retention_days: 365,
            webhook: None,
            otlp: None,
            durable_tokens: false,
        }
    }
}

/// `[ciba]`: asynchronous approval requests (OpenID Connect CIBA Core, poll mode). A client
/// that registered the CIBA grant asks at `/bc-authorize`; the user decides on
/// `/account/approvals`; the client polls the token endpoint.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CibaConfig {
    /// How long a request waits for the user when the client names no `requested_expiry`.
    /// Default 300.
    pub default_expiry_secs: u32,
    /// The longest `requested_expiry` granted (a longer one is shortened). Default 1800.
    pub max_expiry_secs: u32,
    /// The least time between two polls (`interval`); polling faster is answered
    /// `slow_down`. Default 5.
    pub poll_interval_secs: u32,
    /// Where each new request is announced, so it reaches its user where they are (a chat
    /// bot, a mobile push service): a signed JSON `POST`, retried, its outcome in the audit
    /// log (`approval.notified`). Default: none (users look at their approvals page).
    pub notify: Option<NotifyWebhook>,
}

impl Default for CibaConfig {
    fn default() -> Self {
        Self {
            default_expiry_secs: 300,
            max_expiry_secs: 1800,
            poll_interval_secs: 5,
            notify: None,
        }
    }
}

impl CibaConfig {
    fn check(&self) -> Result<(), ConfigError> {
        if self.default_expiry_secs == 0 || self.default_expiry_secs > self.max_expiry_secs {
            return Err(ConfigError::Invalid(
                "ciba.default_expiry_secs must be at least 1 and at most ciba.max_expiry_secs"
                    .into(),
            ));
        }
        if self.max_expiry_secs > 86_400 {
            return Err(ConfigError::Invalid(
                "ciba.max_expiry_secs must be at most 86400 (a day)".into(),
            ));
        }
        if self.poll_interval_secs > 60 {
            return Err(ConfigError::Invalid(
                "ciba.poll_interval_secs must be at most 60".into(),
            ));
        }
        match &self.notify {
            Some(n) => check_webhook("ciba.notify", &n.url, &n.secret, n.timeout_secs),
            None => Ok(()),
        }
    }
}

/// `[ciba.notify]`: a receiver of new approval requests, signed like the audit webhook (see
/// `crate::webhook`).
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotifyWebhook {
    /// An `https` URL (or `http` for a receiver on the same host or network).
    pub url: String,
    /// The HMAC-SHA256 key shared with the receiver: at least 32 characters.
    pub secret: String,
    /// Each attempt's timeout in seconds. Default 10.
    #[serde(default = "AuditWebhook::default_timeout")]
    pub timeout_secs: u32,
}

/// `[audit.webhook]`: where stored audit events are pushed, as signed JSON batches
/// (`{"events": [...]}`, each event as the admin API shows it), retried with backoff; see
/// `crate::webhook` for the signature.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditWebhook {
    /// An `https` URL (or `http` for a collector on the same host or network).
    pub url: String,
    /// The HMAC-SHA256 key shared with the receiver: at least 32 characters.
    pub secret: String,
    /// Only these kinds (`signin.failed`) or kinds' first parts (`signin`). Default: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Each attempt's timeout in seconds. Default 10.
    #[serde(default = "AuditWebhook::default_timeout")]
    pub timeout_secs: u32,
}

impl AuditWebhook {
    fn default_timeout() -> u32 {
        10
    }

    fn check(&self) -> Result<(), ConfigError> {
        check_webhook("audit.webhook", &self.url, &self.secret, self.timeout_secs)
    }
}

/// A secret as `Debug` shows it: whether it is set, never its value.
struct Hidden<'a, T>(&'a T);

impl std::fmt::Debug for Hidden<'_, String> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

impl std::fmt::Debug for Hidden<'_, Option<String>> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "<secret>" } else { "None" })
    }
}

impl std::fmt::Debug for Hidden<'_, Vec<String>> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} secret(s)>", self.0.len())
    }
}

/// Header names are shown, their values (an `authorization` header's token) are not.
impl std::fmt::Debug for Hidden<'_, std::collections::BTreeMap<String, String>> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.keys().map(|k| (k, "<secret>")))
            .finish()
    }
}

/// `Debug` for a settings section that holds a secret: the fields listed first as they are,
/// the ones after `hiding` as [`Hidden`]. Every field must be listed (the struct is
/// destructured), so a new one cannot be added without deciding how it is shown.
macro_rules! redacted_debug {
    ($ty:ident { $($field:ident),* } hiding { $($secret:ident),+ }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let $ty { $($field,)* $($secret,)+ } = self;
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), $field))*
                    $(.field(stringify!($secret), &Hidden($secret)))+
                    .finish()
            }
        }
    };
}
redacted_debug!(NotifyWebhook { url, timeout_secs } hiding { secret });
redacted_debug!(AuditWebhook { url, kinds, timeout_secs } hiding { secret });
redacted_debug!(AuditOtlp { endpoint, service_name, kinds, timeout_secs } hiding { headers });
redacted_debug!(MetricsConfig { listen } hiding { bearer_token });
redacted_debug!(
    RegistrationConfig {
        enabled,
        allowed_redirect_schemes,
        allowed_redirect_hosts,
        rate_limit_max,
        rate_limit_identical_max,
        rate_limit_window_secs,
        unused_client_ttl_secs,
        allow_client_credentials
    } hiding {
        initial_access_token
    }
);

/// A signed webhook's settings: an http(s) URL, a secret long enough, a sensible timeout.
fn check_webhook(
    section: &str,
    url: &str,
    secret: &str,
    timeout_secs: u32,
) -> Result<(), ConfigError> {
    let url = Url::parse(url).map_err(|e| ConfigError::Invalid(format!("{section}.url: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(ConfigError::Invalid(format!(
            "{section}.url must be an https (or http) URL"
        )));
    }
    if secret.len() < 32 {
        return Err(ConfigError::Invalid(format!(
            "{section}.secret must be at least 32 characters"
        )));
    }
    check_push(section, timeout_secs)
}

/// What both audit pushes check here: a sensible timeout. (Their `kinds` are checked
/// against the event kinds by `crate::audit::Push::from_config`.)
fn check_push(section: &str, timeout_secs: u32) -> Result<(), ConfigError> {
    if timeout_secs == 0 || timeout_secs > 300 {
        return Err(ConfigError::Invalid(format!(
            "{section}.timeout_secs must be between 1 and 300"
        )));
    }
    Ok(())
}

/// `[audit.otlp]`: where stored audit events go as OpenTelemetry log records (one per
/// event: the kind as body and `event.name`, the client, user, address and detail as
/// attributes), in OTLP/HTTP's JSON encoding, retried with backoff.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditOtlp {
    /// The collector's logs URL, in full: `http://collector:4318/v1/logs`.
    pub endpoint: String,
    /// Headers for the collector, e.g. `{ authorization = "Bearer …" }`. Default: none.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// The `service.name` resource attribute. Default `concierge`.
    #[serde(default = "AuditOtlp::default_service_name")]
    pub service_name: String,
    /// Only these kinds or kinds' first parts. Default: all.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// Each attempt's timeout in seconds. Default 10.
    #[serde(default = "AuditWebhook::default_timeout")]
    pub timeout_secs: u32,
}

impl AuditOtlp {
    fn default_service_name() -> String {
        "concierge".into()
    }

    fn check(&self) -> Result<(), ConfigError> {
        let url = Url::parse(&self.endpoint)
            .map_err(|e| ConfigError::Invalid(format!("audit.otlp.endpoint: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(ConfigError::Invalid(
                "audit.otlp.endpoint must be an http(s) URL such as http://collector:4318/v1/logs"
                    .into(),
            ));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err()
                || http::HeaderValue::from_str(value).is_err()
            {
                return Err(ConfigError::Invalid(format!(
                    "audit.otlp.headers: {name:?} is not a valid HTTP header"
                )));
            }
        }
        check_push("audit.otlp", self.timeout_secs)
    }
}

/// Identity Assertion JWT Authorization Grants (ID-JAG, MCP enterprise-managed
/// authorization), in both roles. Both lists empty (the default): neither role is on.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IdJagConfig {
    /// As the enterprise IdP: which of our clients may exchange an ID token for an ID-JAG,
    /// toward which authorization server and resource, with which scopes. No entry, no
    /// ID-JAG (default deny).
    pub policies: Vec<crate::store::IdJagPolicy>,
    /// As an MCP server's authorization server: the IdPs whose ID-JAGs we redeem with the
    /// `urn:ietf:params:oauth:grant-type:jwt-bearer` grant. Empty: that grant is off and not
    /// advertised.
    pub trusted_issuers: Vec<TrustedIssuer>,
}

/// Workload identity federation (MCP SEP-1933, `io.modelcontextprotocol/auth/wif`): a
/// headless agent presents a JWT its platform issued (a Kubernetes service-account token, a
/// SPIFFE JWT-SVID, any OpenID Connect issuer's token) with the
/// `urn:ietf:params:oauth:grant-type:jwt-bearer` grant, and gets a token as the client a rule
/// maps its subject to. Both lists empty (the default): no workload is trusted.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkloadIdentityConfig {
    /// The platforms whose tokens we accept. Keys from `jwks` inline, a `jwks_uri`, or else
    /// by OpenID Connect discovery at the issuer (fetched under the metadata-document rules).
    pub issuers: Vec<WorkloadIssuer>,
    /// Which client a workload acts as: the first rule whose issuer and subject match.
    pub rules: Vec<WorkloadRule>,
}

/// A platform issuer of workload tokens. At most one of `jwks_uri` and `jwks`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIssuer {
    /// The `iss` of its tokens, e.g. `https://kubernetes.default.svc` or a SPIFFE trust
    /// domain's JWT issuer.
    pub issuer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_uri: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<serde_json::Value>,
}

/// Maps a workload to a client: `subject` is the token's `sub` exactly, or a prefix ending
/// in `*` (`system:serviceaccount:agents:*`, `spiffe://example.org/agents/*`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRule {
    pub issuer: String,
    pub subject: String,
    pub client_id: String,
}

/// An IdP whose ID-JAGs we accept (the record is the store's, shared with the CLI's).
pub use crate::store::TrustedIssuer;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Top-level keys, so unrelated `CONCIERGE_*` variables are not mistaken for settings.
const TOP_LEVEL_KEYS: &[&str] = &[
    "listen",
    "issuer",
    "data_dir",
    "database_url",
    "key_encryption_key",
    "previous_key_encryption_keys",
    "log_format",
    "trust_forwarded_for",
    "trusted_proxies",
    "forwarded_header",
    "default_resource",
    "registration",
    "cimd",
    "clients",
    "resources",
    "tokens",
    "keys",
    "audit",
    "dpop",
    "id_jag",
    "http",
    "metrics",
    "rate_limits",
    "signin",
    "ciba",
    "workload_identity",
    "upstream",
];

impl Config {
    /// Load defaults < file < environment. `file` is read when given or when
    /// `./concierge.toml` exists.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut table = toml::Table::new();
        let default_file = Path::new("concierge.toml");
        let path = file.or(default_file.exists().then_some(default_file));
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            table = text
                .parse::<toml::Table>()
                .map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?;
        }
        for (name, value) in env {
            let Some(rest) = name.strip_prefix("CONCIERGE_") else {
                continue;
            };
            let parts: Vec<String> = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            if !TOP_LEVEL_KEYS.contains(&parts[0].as_str()) {
                continue;
            }
            insert_path(&mut table, &parts, env_value(&value))
                .map_err(|e| ConfigError::Invalid(format!("{name}: {e}")))?;
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.to_string()))?;
        Ok(config)
    }

    /// Check what cannot be expressed in types. Called once at start-up.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.issuer_url()?;
        self.tokens.check()?;
        self.signin.check()?;
        self.ciba.check()?;
        self.keys.check()?;
        // 0 would delete the whole audit log at the next sweep.
        if self.audit.retention_days == 0 {
            return Err(ConfigError::Invalid(
                "audit.retention_days must be at least 1 (days an audit event is kept)".into(),
            ));
        }
        if let Some(w) = &self.audit.webhook {
            w.check()?;
        }
        if let Some(o) = &self.audit.otlp {
            o.check()?;
        }
        if self.cimd.max_document_bytes == 0 || self.cimd.timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "cimd.max_document_bytes and cimd.timeout_ms must be positive".into(),
            ));
        }
        for w in &self.workload_identity.issuers {
            if w.jwks.is_some() && w.jwks_uri.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "workload_identity.issuers {:?}: set at most one of jwks_uri and jwks",
                    w.issuer
                )));
            }
            Url::parse(&w.issuer).map_err(|e| {
                ConfigError::Invalid(format!("workload_identity.issuers {:?}: {e}", w.issuer))
            })?;
        }
        for r in &self.workload_identity.rules {
            if !self
                .workload_identity
                .issuers
                .iter()
                .any(|w| w.issuer == r.issuer)
            {
                return Err(ConfigError::Invalid(format!(
                    "workload_identity.rules: the issuer {:?} is not in workload_identity.issuers",
                    r.issuer
                )));
            }
            if r.subject.is_empty() || r.subject == "*" {
                return Err(ConfigError::Invalid(format!(
                    "workload_identity.rules for {:?}: name a subject or a prefix ending in *, \
                     not every subject",
                    r.client_id
                )));
            }
        }
        for t in &self.id_jag.trusted_issuers {
            t.check().map_err(|e| {
                ConfigError::Invalid(format!("id_jag.trusted_issuers {:?}: {e}", t.issuer))
            })?;
        }
        for (i, u) in self.upstream.iter().enumerate() {
            u.check().map_err(ConfigError::Invalid)?;
            if self.upstream[..i].iter().any(|o| o.id == u.id) {
                return Err(ConfigError::Invalid(format!(
                    "upstream {:?} is listed twice",
                    u.id
                )));
            }
        }
        if self.registration.rate_limit_window_secs == 0 {
            return Err(ConfigError::Invalid(
                "registration.rate_limit_window_secs must be positive".into(),
            ));
        }
        // Revoked refresh-token families are remembered for a bounded time (store module).
        if self.tokens.refresh_token_absolute_secs > 366 * 86_400 {
            return Err(ConfigError::Invalid(
                "tokens.refresh_token_absolute_secs must be at most a year (31622400)".into(),
            ));
        }
        Ok(())
    }

    /// The issuer as a URL, checked against RFC 8414 §2.
    /// What is valid but probably not what the operator meant: said at start-up and by
    /// `concierge config check`.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        if self.trust_forwarded_for {
            w.push(
                "trust_forwarded_for is deprecated: list the proxies in trusted_proxies (it now \
                 trusts any peer as one proxy, as before)"
                    .to_string(),
            );
        }
        // A loopback issuer is reached directly, not through a proxy: on another port than
        // the listener, every redirect and metadata URL sends clients to the wrong place.
        if let Ok(url) = Url::parse(&self.issuer)
            && crate::util::is_loopback_host(&url)
            && self.listen.port() != 0
            && url.port_or_known_default() != Some(self.listen.port())
        {
            let mut fixed = url.clone();
            let _ = fixed.set_port(Some(self.listen.port()));
            w.push(format!(
                "the issuer {} is a loopback address on port {} but the server listens on {}: \
                 clients would be sent to the wrong port (set issuer, or --issuer, to {})",
                self.issuer,
                url.port_or_known_default().unwrap_or_default(),
                self.listen,
                fixed.as_str().trim_end_matches('/')
            ));
        }
        w
    }

    pub fn issuer_url(&self) -> Result<Url, ConfigError> {
        let bad = |why: &str| ConfigError::Invalid(format!("issuer {:?}: {why}", self.issuer));
        let url = Url::parse(&self.issuer).map_err(|e| bad(&e.to_string()))?;
        let loopback = crate::util::is_loopback_host(&url);
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            _ => return Err(bad("must be https (http only on a loopback host)")),
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("must have no query or fragment"));
        }
        if self.issuer.ends_with('/') {
            return Err(bad("must not end with '/'"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("must not contain credentials"));
        }
        Ok(url)
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}",
                self.data_dir.join("concierge.db").to_string_lossy()
            )
        })
    }
}

fn env_value(raw: &str) -> toml::Value {
    match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

fn insert_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [last] => {
            table.insert(last.clone(), value);
            Ok(())
        }
        [head, rest @ ..] => {
            let entry = table
                .entry(head.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => insert_path(t, rest, value),
                _ => Err(format!("{head} is not a table")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_the_configurations_debug() {
        let mut c = Config {
            database_url: Some("postgres://concierge:hunter2-db@db.internal/concierge".into()),
            key_encryption_key: Some("kek-current-value".into()),
            previous_key_encryption_keys: vec!["kek-previous-value".into()],
            ..Config::default()
        };
        c.registration.initial_access_token = Some("initial-access-value".into());
        c.metrics.bearer_token = Some("metrics-bearer-value".into());
        c.audit.otlp = Some(AuditOtlp {
            endpoint: "http://collector:4318/v1/logs".into(),
            headers: [("authorization".to_string(), "Bearer otlp-value".to_string())].into(),
            service_name: "concierge".into(),
            kinds: Vec::new(),
            timeout_secs: 10,
        });
        let shown = format!("{c:?}");
        for secret in [
            "hunter2-db",
            "kek-current-value",
            "kek-previous-value",
            "initial-access-value",
            "metrics-bearer-value",
            "otlp-value",
        ] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        for shown_as_is in [
            "concierge:redacted@db.internal",
            "<1 secret(s)>",
            "\"authorization\": \"<secret>\"",
            "bearer_token: <secret>",
            "rate_limit_max: 30",
        ] {
            assert!(shown.contains(shown_as_is), "{shown_as_is} not in {shown}");
        }
    }

    #[test]
    fn webhook_secrets_stay_out_of_debug() {
        let w = NotifyWebhook {
            url: "https://hooks.example/approvals".into(),
            secret: "a-shared-secret-of-at-least-32-characters".into(),
            timeout_secs: 10,
        };
        let shown = format!("{w:?}");
        assert!(shown.contains("hooks.example") && !shown.contains("a-shared-secret"));
    }

    /// Every setting can be given in the environment: none is missing from the list the
    /// environment is matched against (`workload_identity` once was).
    #[test]
    fn every_setting_has_an_environment_name() {
        let names = serde_json::to_value(Config::default()).expect("serialise");
        for key in names.as_object().expect("object").keys() {
            assert!(TOP_LEVEL_KEYS.contains(&key.as_str()), "{key}");
        }
        let c = Config::load(None, env(&[("CONCIERGE_WORKLOAD_IDENTITY__ISSUERS", "[]")]))
            .expect("loads");
        assert!(c.workload_identity.issuers.is_empty());
    }

    /// Issue 15.4: a loopback issuer on another port than the listener is warned about.
    #[test]
    fn loopback_issuer_on_another_port_is_warned_about() {
        let mut c = Config {
            listen: "127.0.0.1:8092".parse().expect("addr"),
            ..Config::default()
        };
        let w = c.warnings();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(w[0].contains("http://localhost:8092"), "{w:?}");
        c.issuer = "http://127.0.0.1:8092".into();
        assert!(c.warnings().is_empty());
        c.issuer = "https://auth.example.com".into();
        assert!(c.warnings().is_empty(), "a public issuer is behind a proxy");
        c.listen = "127.0.0.1:0".parse().expect("addr");
        c.issuer = "http://localhost:8080".into();
        assert!(c.warnings().is_empty(), "port 0: chosen at bind");
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_need_no_file() {
        let c = Config::load(Some(Path::new("/nonexistent")), env(&[]));
        assert!(c.is_err(), "a named file that is missing is an error");
        let c = Config::load(None, env(&[])).expect("defaults");
        assert_eq!(c.issuer, "http://localhost:8080");
        assert_eq!(c.listen.port(), 8080);
        c.validate().expect("defaults are valid");
        assert!(c.database_url().starts_with("sqlite://"));
    }

    #[test]
    fn env_overrides_file_and_nests() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "issuer = \"https://a.example\"\n[registration]\nrate_limit_max = 3\n",
        )
        .expect("write");
        let c = Config::load(
            Some(&f),
            env(&[
                ("CONCIERGE_ISSUER", "https://b.example"),
                (
                    "CONCIERGE_REGISTRATION__ALLOWED_REDIRECT_HOSTS",
                    "[\"x.example\"]",
                ),
                ("CONCIERGE_CIMD__ALLOW_LOOPBACK", "true"),
                ("CONCIERGE_TEST_SOMETHING", "ignored"),
                ("OTHER", "ignored"),
            ]),
        )
        .expect("load");
        assert_eq!(c.issuer, "https://b.example");
        assert_eq!(c.registration.rate_limit_max, 3);
        assert_eq!(c.registration.allowed_redirect_hosts, vec!["x.example"]);
        assert!(c.cimd.allow_loopback);
    }

    #[test]
    fn the_sample_file_documents_the_defaults() {
        let sample = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/concierge.toml.example");
        let loaded = Config::load(Some(&sample), env(&[])).expect("sample parses");
        assert_eq!(
            serde_json::to_value(&loaded).expect("json"),
            serde_json::to_value(Config::default()).expect("json")
        );
    }

    #[test]
    fn lifetimes_and_retention_must_be_positive() {
        let mut c = Config::default();
        assert!(c.validate().is_ok());
        c.tokens.access_token_ttl_secs = 0;
        let e = c.validate().expect_err("zero lifetime");
        assert!(e.to_string().contains("access_token_ttl_secs"), "{e}");
        let mut c = Config::default();
        c.tokens.refresh_token_idle_secs = c.tokens.refresh_token_absolute_secs + 1;
        assert!(c.validate().is_err());
        let mut c = Config::default();
        c.audit.retention_days = 0;
        let e = c.validate().expect_err("keeps nothing");
        assert!(e.to_string().contains("retention_days"), "{e}");
    }

    #[test]
    fn signin_limits_are_checked() {
        let check = |f: fn(&mut SigninConfig)| {
            let mut c = Config::default();
            f(&mut c.signin);
            c.validate()
        };
        assert!(check(|_| {}).is_ok());
        let e = check(|s| s.user_delay_secs = 0).expect_err("no wait");
        assert!(e.to_string().contains("signin.user_delay_secs"), "{e}");
        assert!(check(|s| s.address_window_secs = 0).is_err());
        assert!(check(|s| s.address_max_usernames = 0).is_err());
        assert!(check(|s| s.user_free_failures = 0).is_err());
        assert!(
            check(|s| s.user_max_delay_secs = 10).is_err(),
            "below the first wait"
        );
        assert!(
            check(|s| s.user_failure_reset_secs = 900).is_err(),
            "before the cap"
        );
        assert!(check(|s| s.address_window_secs = 86_401).is_err());
        assert!(
            check(|s| {
                s.user_delay_secs = 1;
                s.user_max_delay_secs = 1;
                s.user_failure_reset_secs = 2;
            })
            .is_ok()
        );
    }

    #[test]
    fn trusted_proxies_are_addresses_or_ranges() {
        let c = Config::load(
            None,
            env(&[
                (
                    "CONCIERGE_TRUSTED_PROXIES",
                    "[\"10.0.0.0/8\", \"127.0.0.1\", \" ::1 \", \"fd00::/8\"]",
                ),
                ("CONCIERGE_FORWARDED_HEADER", "forwarded"),
                ("CONCIERGE_SIGNIN__USER_DELAY_SECS", "2"),
            ]),
        )
        .expect("load");
        let shown: Vec<String> = c.trusted_proxies.iter().map(|r| r.0.to_string()).collect();
        assert_eq!(shown, ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8"]);
        assert!(c.trusted_proxies[0].contains("10.200.0.1".parse().expect("ip")));
        assert!(!c.trusted_proxies[1].contains("127.0.0.2".parse().expect("ip")));
        assert_eq!(c.forwarded_header, ForwardedHeader::Forwarded);
        assert_eq!(c.signin.user_delay_secs, 2);
        for bad in ["\"10.0.0.1/8\"", "\"proxy.internal\"", "\"10.0.0.0/33\""] {
            let e = Config::load(
                None,
                env(&[("CONCIERGE_TRUSTED_PROXIES", &format!("[{bad}]"))]),
            )
            .expect_err(bad);
            assert!(e.to_string().contains("trusted_proxies"), "{e}");
        }
        let e = Config::load(None, env(&[("CONCIERGE_FORWARDED_HEADER", "x-real-ip")]))
            .expect_err("unknown header");
        assert!(e.to_string().contains("x-real-ip"), "{e}");
    }

    #[test]
    fn unknown_file_keys_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "isuer = \"https://a.example\"\n").expect("write");
        let e = Config::load(Some(&f), env(&[])).expect_err("typo");
        assert!(e.to_string().contains("isuer"), "{e}");
    }

    #[test]
    fn issuer_rules() {
        let check = |i: &str| {
            Config {
                issuer: i.into(),
                ..Config::default()
            }
            .validate()
        };
        assert!(check("https://as.example.com").is_ok());
        assert!(check("https://as.example.com/tenant").is_ok());
        assert!(check("http://127.0.0.1:9000").is_ok());
        assert!(check("http://as.example.com").is_err());
        assert!(check("https://as.example.com/").is_err());
        assert!(check("https://as.example.com?x=1").is_err());
        assert!(check("https://as.example.com#f").is_err());
        assert!(check("not a url").is_err());
    }
}
