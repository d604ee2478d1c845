//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, preferred by
//! the MCP authorization specification): a `client_id` that is an https URL names a JSON
//! document holding the client's metadata.
//!
//! Fetch rules (the server must not become a way into its own network): https only, no redirects, a size cap, a timeout, no
//! special-use addresses unless the development flag allows loopback (then plain http on
//! loopback too). Successes are cached within bounds, honouring `Cache-Control`/`Expires`;
//! failures never are.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use url::Url;

use super::client_metadata::{self, Origin, RawClientMetadata};
use super::grants::GrantRegistry;
use super::net_guard::{FetchError, SafeFetcher};
use super::ttl_cache::TtlCache;
use super::window_counts::WindowCounts;
use crate::config::CimdConfig;
use crate::store::ClientMetadata;

#[derive(Debug, Clone, thiserror::Error)]
pub enum CimdError {
    #[error("the client_id URL {0}")]
    BadUrl(String),
    #[error("the client metadata document could not be fetched: {0}")]
    Fetch(#[from] FetchError),
    #[error("the client metadata document is invalid: {0}")]
    Invalid(String),
    /// Fetches from this host failed too often lately; not tried again yet.
    #[error(
        "fetches of client metadata documents from {host} failed too often; retry in {retry_after} s"
    )]
    Throttled { host: String, retry_after: i64 },
    /// Too many documents are being fetched at once.
    #[error("too many client metadata documents are being fetched at once; retry shortly")]
    Busy,
}

impl CimdError {
    /// What the caller may be told: what is wrong with the URL or the document, but never
    /// how a fetch failed (addresses, DNS answers and network errors stay in the log and the
    /// audit event).
    pub fn public(&self) -> String {
        match self {
            Self::BadUrl(_) | Self::Invalid(_) | Self::Throttled { .. } | Self::Busy => {
                self.to_string()
            }
            Self::Fetch(_) => "the client metadata document could not be fetched from the \
                               client_id URL"
                .to_string(),
        }
    }
}

/// Would this `client_id` be resolved as a metadata document? (Generated client ids never
/// contain `://`, so the two kinds cannot collide.)
pub fn is_document_client_id(client_id: &str, cfg: &CimdConfig) -> bool {
    client_id.starts_with("https://") || (cfg.allow_loopback && client_id.starts_with("http://"))
}

/// Check a `client_id` URL against the document rules.
pub fn parse_client_id_url(client_id: &str, cfg: &CimdConfig) -> Result<Url, CimdError> {
    let bad = |why: &str| CimdError::BadUrl(why.to_string());
    let url = Url::parse(client_id).map_err(|e| bad(&format!("is not a URL ({e})")))?;
    let loopback_http = url.scheme() == "http" && super::redirect_uri::is_loopback_host(&url);
    if !(url.scheme() == "https" || (cfg.allow_loopback && loopback_http)) {
        return Err(bad("must use https"));
    }
    if url.fragment().is_some() || client_id.contains('#') {
        return Err(bad("must not contain a fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(bad("must not contain user information"));
    }
    if url.path() == "/" || url.path().is_empty() {
        return Err(bad("must contain a path"));
    }
    // Dot segments, odd case or default ports would make the URL differ from its own
    // normal form; the document's client_id must equal the URL exactly, so refuse them.
    if url.as_str() != client_id {
        return Err(bad(
            "must be in normal form (no dot segments, lower-case host, no default port)",
        ));
    }
    Ok(url)
}

/// How long a successful response may be cached, from its headers: `None` means not at all.
pub fn cache_ttl(headers: &HeaderMap, now: SystemTime, cfg: &CimdConfig) -> Option<Duration> {
    let max = cfg.max_cache_secs;
    let mut max_age: Option<u64> = None;
    for value in headers.get_all(http::header::CACHE_CONTROL) {
        let Ok(value) = value.to_str() else {
            return None;
        };
        for directive in value.split(',') {
            let d = directive.trim().to_ascii_lowercase();
            if d == "no-store" || d == "no-cache" {
                return None;
            }
            if let Some(n) = d.strip_prefix("max-age=") {
                max_age = Some(n.trim_matches('"').parse().ok()?);
            }
        }
    }
    let secs = match max_age {
        Some(n) => n,
        None => match headers
            .get(http::header::EXPIRES)
            .and_then(|v| v.to_str().ok())
        {
            // An unparsable Expires means "already expired" (RFC 9111 §5.3).
            Some(v) => httpdate::parse_http_date(v)
                .ok()?
                .duration_since(now)
                .ok()?
                .as_secs(),
            None => cfg.default_cache_secs,
        },
    };
    let secs = secs.min(max);
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Most documents fetched at once; more wait (up to the fetch timeout) for a turn.
const CONCURRENT_FETCHES: usize = 32;
/// Failed fetches from one host allowed per window before fetches from it pause.
const FAILURES_PER_HOST: u32 = 10;
const FAILURE_WINDOW_SECS: i64 = 60;

type Shared = Arc<tokio::sync::OnceCell<Result<Arc<ClientMetadata>, CimdError>>>;

/// Fetches, validates and caches metadata documents. One per server; cheap to share.
///
/// Concurrent look-ups of one URL share one fetch (single flight); at most
/// [`CONCURRENT_FETCHES`] fetches run at once; a host whose documents keep failing is not
/// fetched from again for the rest of a window (so we are nobody's scanner), and its
/// failures reach the audit log once per window with their count, not once each.
pub struct CimdResolver {
    fetcher: SafeFetcher,
    cfg: CimdConfig,
    /// The grants documents may list.
    grants: Arc<GrantRegistry>,
    cache: TtlCache<String, Arc<ClientMetadata>>,
    in_flight: std::sync::Mutex<std::collections::HashMap<String, Shared>>,
    permits: tokio::sync::Semaphore,
    /// Failed fetches per host.
    failures: WindowCounts<String>,
    audit: Option<crate::audit::Audit>,
}

impl CimdResolver {
    pub fn new(cfg: CimdConfig, grants: Arc<GrantRegistry>) -> Result<Self, CimdError> {
        let fetcher = SafeFetcher::new(cfg.allow_loopback, cfg.timeout_ms)?;
        Ok(Self {
            fetcher,
            grants,
            cache: TtlCache::new(cfg.cache_capacity),
            cfg,
            in_flight: std::sync::Mutex::new(std::collections::HashMap::new()),
            permits: tokio::sync::Semaphore::new(CONCURRENT_FETCHES),
            failures: WindowCounts::new(FAILURE_WINDOW_SECS),
            audit: None,
        })
    }

    /// Record fetch failures in the audit log (aggregated per host and window).
    pub fn with_audit(mut self, audit: crate::audit::Audit) -> Self {
        self.audit = Some(audit);
        self
    }

    pub fn config(&self) -> &CimdConfig {
        &self.cfg
    }

    /// The validated metadata for a document `client_id`, from the cache or fetched.
    pub async fn resolve(&self, client_id: &str) -> Result<Arc<ClientMetadata>, CimdError> {
        let url = parse_client_id_url(client_id, &self.cfg)?;
        if let Some(hit) = self.cache.get(client_id) {
            return Ok(hit);
        }
        // Single flight: whoever comes first fetches; the others wait for the same answer.
        let shared = {
            let mut map = lock(&self.in_flight);
            map.entry(client_id.to_string()).or_default().clone()
        };
        let result = shared
            .get_or_init(|| async {
                // A flight that ended between the cache look-up above and joining this one
                // has cached its answer already: use it rather than fetch again.
                match self.cache.get(client_id) {
                    Some(hit) => Ok(hit),
                    None => self.fetch_and_cache(&url, client_id).await,
                }
            })
            .await
            .clone();
        // Remove this flight only: a later one for the same URL may have taken its place.
        let mut map = lock(&self.in_flight);
        if map.get(client_id).is_some_and(|s| Arc::ptr_eq(s, &shared)) {
            map.remove(client_id);
        }
        result
    }

    async fn fetch_and_cache(
        &self,
        url: &Url,
        client_id: &str,
    ) -> Result<Arc<ClientMetadata>, CimdError> {
        let host = url.host_str().unwrap_or_default().to_string();
        let now = crate::util::now();
        self.check_host(&host, now)?;
        let timeout = Duration::from_millis(self.cfg.timeout_ms);
        let Ok(Ok(_permit)) = tokio::time::timeout(timeout, self.permits.acquire()).await else {
            return Err(CimdError::Busy);
        };
        match self.fetch(url, client_id).await {
            Ok((metadata, ttl)) => {
                let metadata = Arc::new(metadata);
                if let Some(ttl) = ttl {
                    self.cache
                        .insert(client_id.to_string(), metadata.clone(), ttl);
                }
                Ok(metadata)
            }
            Err(e) => {
                self.failed(&host, client_id, &e, now);
                Err(e)
            }
        }
    }

    /// Refuse a host whose fetches failed too often in this window.
    fn check_host(&self, host: &str, now: i64) -> Result<(), CimdError> {
        if self.failures.get(host, now) >= FAILURES_PER_HOST {
            return Err(CimdError::Throttled {
                host: host.to_string(),
                retry_after: self.failures.retry_after(now),
            });
        }
        Ok(())
    }

    /// Count a failure; the first of a window and the one that pauses the host reach the
    /// audit log.
    fn failed(&self, host: &str, client_id: &str, e: &CimdError, now: i64) {
        let count = self.failures.add(host.to_string(), now);
        if (count == 1 || count == FAILURES_PER_HOST)
            && let Some(audit) = &self.audit
        {
            audit.record(
                crate::audit::Event::new(crate::audit::Kind::CimdFetchFailed)
                    .client(client_id)
                    .detail(serde_json::json!({
                        "host": host,
                        "error": e.to_string(),
                        "failures_in_window": count,
                        "paused": count >= FAILURES_PER_HOST,
                    })),
            );
        }
    }

    /// The documents cached now, each with the seconds it has left, ordered by client_id.
    pub fn cached(&self) -> Vec<(String, Arc<ClientMetadata>, u64)> {
        let mut list: Vec<_> = self
            .cache
            .entries()
            .into_iter()
            .map(|(id, m, left)| (id, m, left.as_secs()))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        list
    }

    /// Drop a cached document (after an operator change, say).
    pub fn forget(&self, client_id: &str) {
        self.cache.remove(client_id);
    }

    async fn fetch(
        &self,
        url: &Url,
        client_id: &str,
    ) -> Result<(ClientMetadata, Option<Duration>), CimdError> {
        let (headers, body) = self
            .fetcher
            .get(url, "application/json", self.cfg.max_document_bytes)
            .await?;
        let ttl = cache_ttl(&headers, SystemTime::now(), &self.cfg);
        let raw = RawClientMetadata::from_json(&body)
            .map_err(|e| CimdError::Invalid(e.description.into_owned()))?;
        let metadata =
            client_metadata::validate(raw, Origin::Document { url: client_id }, &self.grants)
                .map_err(|e| CimdError::Invalid(e.description.into_owned()))?;
        Ok((metadata, ttl))
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cfg() -> CimdConfig {
        CimdConfig::default()
    }

    #[test]
    fn client_id_url_rules() {
        let c = cfg();
        assert!(parse_client_id_url("https://agent.example/client.json", &c).is_ok());
        for bad in [
            "http://agent.example/client.json",
            "https://agent.example",
            "https://agent.example/",
            "https://agent.example/a/../client.json",
            "https://agent.example/client.json#x",
            "https://u:p@agent.example/client.json",
            "https://Agent.example/client.json",
            "https://agent.example:443/client.json",
        ] {
            assert!(parse_client_id_url(bad, &c).is_err(), "{bad}");
        }
        let dev = CimdConfig {
            allow_loopback: true,
            ..cfg()
        };
        assert!(parse_client_id_url("http://127.0.0.1:4000/client.json", &dev).is_ok());
        assert!(parse_client_id_url("http://agent.example/client.json", &dev).is_err());
        assert!(is_document_client_id("https://a/b", &c));
        assert!(!is_document_client_id("http://127.0.0.1/b", &c));
        assert!(is_document_client_id("http://127.0.0.1/b", &dev));
        assert!(!is_document_client_id("abcDEF123", &dev));
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn cache_lifetime_from_headers_within_bounds() {
        let c = cfg();
        let now = SystemTime::now();
        let ttl = |h: &[(&str, &str)]| cache_ttl(&headers(h), now, &c).map(|d| d.as_secs());
        assert_eq!(ttl(&[]), Some(300));
        assert_eq!(ttl(&[("cache-control", "public, max-age=120")]), Some(120));
        assert_eq!(ttl(&[("cache-control", "max-age=999999")]), Some(3600));
        assert_eq!(ttl(&[("cache-control", "max-age=0")]), None);
        assert_eq!(ttl(&[("cache-control", "no-store")]), None);
        assert_eq!(ttl(&[("cache-control", "max-age=60, no-cache")]), None);
        assert_eq!(ttl(&[("cache-control", "max-age=abc")]), None);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(600));
        let got = ttl(&[("expires", &later)]).expect("cached");
        assert!((598..=600).contains(&got), "{got}");
        let past = httpdate::fmt_http_date(now - Duration::from_secs(10));
        assert_eq!(ttl(&[("expires", &past)]), None);
        assert_eq!(ttl(&[("expires", "0")]), None);
        assert_eq!(
            ttl(&[("cache-control", "max-age=30"), ("expires", &later)]),
            Some(30)
        );
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use proptest::prelude::*;

        use super::*;
        use crate::fuzz::{config, nasty_bytes, nasty_string, uri_like};

        proptest! {
            #![proptest_config(config())]

            /// Any client_id: a document URL that is its own normal form (https, a path, no
            /// fragment or user information), or a reason.
            #[test]
            fn document_urls_are_in_normal_form_or_refused(id in uri_like(), loopback in any::<bool>()) {
                let cfg = CimdConfig { allow_loopback: loopback, ..CimdConfig::default() };
                if let Ok(url) = parse_client_id_url(&id, &cfg) {
                    prop_assert_eq!(url.as_str(), id.as_str());
                    prop_assert!(is_document_client_id(&id, &cfg));
                    prop_assert!(url.scheme() == "https" || (loopback && crate::util::is_loopback_host(&url)));
                    prop_assert!(url.path() != "/" && url.fragment().is_none() && url.username().is_empty());
                }
            }

            /// Any response headers: a cache lifetime within the configured bound, or none.
            #[test]
            fn cache_lifetime_is_bounded(
                headers in proptest::collection::vec(
                    (proptest::sample::select(&["cache-control", "expires", "age"][..]), prop_oneof![
                        nasty_bytes(),
                        "(max-age=[0-9]{0,25}|no-store|no-cache|public|\\\"[0-9]+\\\"|, )+".prop_map(String::into_bytes),
                        nasty_string().prop_map(String::into_bytes),
                    ]),
                    0..4,
                ),
                offset in any::<i32>(),
            ) {
                let mut h = HeaderMap::new();
                for (name, v) in headers {
                    if let Ok(v) = http::HeaderValue::from_bytes(&v) {
                        h.append(name, v);
                    }
                }
                let now = if offset >= 0 {
                    SystemTime::now() + Duration::from_secs(offset.unsigned_abs().into())
                } else {
                    SystemTime::now() - Duration::from_secs(offset.unsigned_abs().into())
                };
                let cfg = CimdConfig::default();
                if let Some(ttl) = cache_ttl(&h, now, &cfg) {
                    prop_assert!(ttl.as_secs() > 0 && ttl.as_secs() <= cfg.max_cache_secs);
                }
            }
        }
    }
}
