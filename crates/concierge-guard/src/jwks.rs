//! Issuer discovery (RFC 8414, OpenID Connect Discovery) and the cached,
//! rate-limited JSON Web Key Set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey};
use serde_json::Value;
use url::Url;

use crate::error::{BuildError, TokenError};
use crate::validate::normalize_uri;

/// Remote documents larger than this are refused.
const MAX_DOCUMENT_BYTES: usize = 512 * 1024;

/// The metadata URLs to try for `issuer`, in order: RFC 8414 §3.1 (the
/// well-known segment inserted before the issuer's path), then OpenID Connect
/// Discovery (appended after it).
pub(crate) fn discovery_urls(issuer: &Url) -> Vec<Url> {
    let path = issuer.path().trim_end_matches('/');
    let mut rfc8414 = issuer.clone();
    rfc8414.set_path(&format!("/.well-known/oauth-authorization-server{path}"));
    let mut oidc = issuer.clone();
    oidc.set_path(&format!("{path}/.well-known/openid-configuration"));
    vec![rfc8414, oidc]
}

/// What discovery found.
#[derive(Debug, Clone)]
pub(crate) struct Discovered {
    /// The `issuer` exactly as the metadata announces it.
    pub(crate) issuer: String,
    pub(crate) jwks_uri: Url,
    /// `token_endpoint`, for token exchange and the registration check.
    pub(crate) token_endpoint: Option<Url>,
    /// `introspection_endpoint` (RFC 7662), for introspection.
    pub(crate) introspection_endpoint: Option<Url>,
    /// `backchannel_authentication_endpoint` (OpenID Connect CIBA), for approvals.
    pub(crate) backchannel_endpoint: Option<Url>,
    /// The issuer's clock, read from the metadata answer.
    pub(crate) clock: Option<ClockReading>,
}

/// The `Date` (RFC 9110 §6.6.1) and `Age` (RFC 9111 §5.1) of an answer: the
/// origin made it at `Date`; a cache may have held it `Age` seconds since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClockReading {
    pub(crate) date: String,
    pub(crate) age: u64,
}

/// GET a JSON document with a size cap; also the answer's `Date` and `Age`.
async fn fetch_json(
    client: &reqwest::Client,
    url: &Url,
) -> Result<(Value, Option<ClockReading>), String> {
    let res = client
        .get(url.clone())
        .header(http::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("HTTP status {}", res.status()));
    }
    let header = |name: http::HeaderName| {
        res.headers()
            .get(name)
            .and_then(|d| d.to_str().ok())
            .map(str::to_owned)
    };
    let clock = header(http::header::DATE).map(|date| ClockReading {
        date,
        age: header(http::header::AGE)
            .and_then(|a| a.trim().parse().ok())
            .unwrap_or(0),
    });
    if res
        .content_length()
        .is_some_and(|n| n > MAX_DOCUMENT_BYTES as u64)
    {
        return Err("the document is too large".into());
    }
    let body = res
        .bytes()
        .await
        .map_err(|e| format!("reading the body failed: {e}"))?;
    if body.len() > MAX_DOCUMENT_BYTES {
        return Err("the document is too large".into());
    }
    let doc = serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))?;
    Ok((doc, clock))
}

/// Fetch the issuer's metadata and check it names this issuer and a `jwks_uri`.
pub(crate) async fn discover(
    client: &reqwest::Client,
    issuer: &Url,
    configured: &str,
) -> Result<Discovered, BuildError> {
    let urls = discovery_urls(issuer);
    let mut last = String::new();
    for url in &urls {
        let (doc, clock) = match fetch_json(client, url).await {
            Ok(answer) => answer,
            Err(e) => {
                last = format!("{url}: {e}");
                continue;
            }
        };
        let mut found = check_metadata(&doc, url, configured)?;
        found.clock = clock;
        return Ok(found);
    }
    Err(BuildError::IssuerUnreachable {
        issuer: configured.to_owned(),
        tried: urls.iter().map(Url::as_str).collect::<Vec<_>>().join(", "),
        reason: last,
    })
}

/// The checks on an authorization server metadata document (pure).
pub(crate) fn check_metadata(
    doc: &Value,
    url: &Url,
    configured: &str,
) -> Result<Discovered, BuildError> {
    let found = doc
        .get("issuer")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if normalize_uri(found) != normalize_uri(configured) {
        return Err(BuildError::IssuerMismatch {
            url: url.to_string(),
            found: found.to_owned(),
            configured: configured.to_owned(),
        });
    }
    let jwks =
        doc.get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| BuildError::MissingJwksUri {
                url: url.to_string(),
            })?;
    let jwks_uri = Url::parse(jwks).map_err(|e| BuildError::InvalidUrl {
        what: "jwks_uri",
        value: jwks.to_owned(),
        reason: e.to_string(),
    })?;
    let endpoint = |name: &str| {
        doc.get(name)
            .and_then(Value::as_str)
            .and_then(|u| Url::parse(u).ok())
    };
    Ok(Discovered {
        issuer: found.to_owned(),
        jwks_uri,
        token_endpoint: endpoint("token_endpoint"),
        introspection_endpoint: endpoint("introspection_endpoint"),
        backchannel_endpoint: endpoint("backchannel_authentication_endpoint"),
        clock: None,
    })
}

/// One verification key from the JWKS.
pub(crate) struct VerifyKey {
    kid: Option<String>,
    /// The `alg` the JWKS pins the key to, if any.
    alg: Option<Algorithm>,
    pub(crate) key: DecodingKey,
}

impl VerifyKey {
    fn fits(&self, alg: Algorithm) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// The usable signature keys of a JWKS (pure). Keys for encryption, HMAC
/// (`oct`) keys, keys of unknown types and keys pinned to algorithms we do
/// not know are left out.
pub(crate) fn parse_jwks(doc: &Value) -> Vec<Arc<VerifyKey>> {
    let Some(keys) = doc.get("keys").and_then(Value::as_array) else {
        return Vec::new();
    };
    keys.iter()
        .filter(|k| k.get("use").is_none_or(|u| u == "sig"))
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .filter(|jwk| {
            !matches!(
                jwk.algorithm,
                AlgorithmParameters::OctetKey(_) | AlgorithmParameters::Other(_)
            )
        })
        .filter_map(|jwk| {
            let alg = match k_alg(&jwk) {
                Ok(alg) => alg,
                Err(()) => return None,
            };
            let key = DecodingKey::from_jwk(&jwk).ok()?;
            (key.family() != AlgorithmFamily::Hmac).then(|| {
                Arc::new(VerifyKey {
                    kid: jwk.common.key_id.clone(),
                    alg,
                    key,
                })
            })
        })
        .collect()
}

/// The key's `alg` as a signature algorithm; `Err` for an `alg` that is not one.
fn k_alg(jwk: &Jwk) -> Result<Option<Algorithm>, ()> {
    let Some(alg) = jwk.common.key_algorithm else {
        return Ok(None);
    };
    let name = serde_json::to_value(alg).map_err(|_| ())?;
    name.as_str()
        .and_then(|n| n.parse::<Algorithm>().ok())
        .map(Some)
        .ok_or(())
}

/// Pick the key for a token (pure): by `kid` when the token names one,
/// otherwise the only key that fits the algorithm.
pub(crate) fn select_key(
    keys: &[Arc<VerifyKey>],
    kid: Option<&str>,
    alg: Algorithm,
) -> Result<Arc<VerifyKey>, TokenError> {
    let Some(kid) = kid else {
        let mut fitting = keys.iter().filter(|k| k.fits(alg));
        return match (fitting.next(), fitting.next()) {
            (Some(key), None) => Ok(key.clone()),
            (None, _) => Err(TokenError::UnknownKey),
            (Some(_), Some(_)) => Err(TokenError::Malformed("the header has no kid")),
        };
    };
    let mut named = keys
        .iter()
        .filter(|k| k.kid.as_deref() == Some(kid))
        .peekable();
    if named.peek().is_none() {
        return Err(TokenError::UnknownKey);
    }
    named
        .find(|k| k.fits(alg))
        .cloned()
        .ok_or(TokenError::KeyMismatch)
}

struct KeyState {
    keys: Arc<Vec<Arc<VerifyKey>>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
}

/// The issuer's keys: cached for `ttl`, refetched when stale or when a token
/// names an unknown `kid` — but never more than once per `min_interval`,
/// however many requests ask. Fixed keys (no `jwks_uri`) are never fetched.
pub(crate) struct KeyStore {
    client: reqwest::Client,
    jwks_uri: Option<Url>,
    ttl: Duration,
    min_interval: Duration,
    state: RwLock<KeyState>,
    refresh: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

impl KeyStore {
    pub(crate) fn new(
        client: reqwest::Client,
        jwks_uri: Url,
        ttl: Duration,
        min_interval: Duration,
    ) -> Self {
        Self {
            client,
            jwks_uri: Some(jwks_uri),
            ttl,
            min_interval,
            state: RwLock::new(KeyState {
                keys: Arc::new(Vec::new()),
                fetched_at: None,
                last_attempt: None,
            }),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// Keys given at build time (a JWKS document), never fetched.
    pub(crate) fn fixed(client: reqwest::Client, jwks: &Value) -> Result<Self, BuildError> {
        let keys = parse_jwks(jwks);
        if keys.is_empty() {
            return Err(BuildError::JwksUnavailable {
                url: "the JWKS given to Issuer::jwks".into(),
                reason: "it holds no usable signature key".into(),
            });
        }
        Ok(Self {
            client,
            jwks_uri: None,
            ttl: Duration::MAX,
            min_interval: Duration::MAX,
            state: RwLock::new(KeyState {
                keys: Arc::new(keys),
                fetched_at: Some(Instant::now()),
                last_attempt: Some(Instant::now()),
            }),
            refresh: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        })
    }

    /// How many times the JWKS was requested.
    pub(crate) fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The first fetch, at start-up: failures are configuration errors.
    /// Returns how many keys, and the clock of the answer.
    pub(crate) async fn load(&self) -> Result<(usize, Option<ClockReading>), BuildError> {
        let Some(uri) = &self.jwks_uri else {
            let n = self.snapshot(Instant::now()).0.len();
            return Ok((n, None));
        };
        let (keys, clock) =
            self.fetch(uri)
                .await
                .map_err(|reason| BuildError::JwksUnavailable {
                    url: uri.to_string(),
                    reason,
                })?;
        if keys.is_empty() {
            return Err(BuildError::JwksUnavailable {
                url: uri.to_string(),
                reason: "it holds no usable signature key".into(),
            });
        }
        let n = keys.len();
        let now = Instant::now();
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        state.keys = Arc::new(keys);
        state.fetched_at = Some(now);
        state.last_attempt = Some(now);
        Ok((n, clock))
    }

    async fn fetch(
        &self,
        uri: &Url,
    ) -> Result<(Vec<Arc<VerifyKey>>, Option<ClockReading>), String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (doc, clock) = fetch_json(&self.client, uri).await?;
        Ok((parse_jwks(&doc), clock))
    }

    fn snapshot(&self, now: Instant) -> (Arc<Vec<Arc<VerifyKey>>>, bool, bool) {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        let fresh = self.jwks_uri.is_none()
            || state
                .fetched_at
                .is_some_and(|t| now.duration_since(t) < self.ttl);
        let may_refetch = self.jwks_uri.is_some()
            && state
                .last_attempt
                .is_none_or(|t| now.duration_since(t) >= self.min_interval);
        (state.keys.clone(), fresh, may_refetch)
    }

    /// The key for a token with this `kid` and `alg`.
    pub(crate) async fn key(
        &self,
        kid: Option<&str>,
        alg: Algorithm,
    ) -> Result<Arc<VerifyKey>, TokenError> {
        let (keys, fresh, may_refetch) = self.snapshot(Instant::now());
        match select_key(&keys, kid, alg) {
            Ok(key) if fresh || !may_refetch => return Ok(key),
            Err(TokenError::UnknownKey) if may_refetch => {}
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        self.refresh().await;
        let (keys, _, _) = self.snapshot(Instant::now());
        if keys.is_empty() {
            return Err(TokenError::KeysUnavailable);
        }
        select_key(&keys, kid, alg)
    }

    /// Refetch, unless another task did within `min_interval`. Keeps the old
    /// keys when the fetch fails.
    async fn refresh(&self) {
        let Some(uri) = &self.jwks_uri else {
            return;
        };
        let _single_flight = self.refresh.lock().await;
        {
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if state
                .last_attempt
                .is_some_and(|t| now.duration_since(t) < self.min_interval)
            {
                return;
            }
            state.last_attempt = Some(now);
        }
        match self.fetch(uri).await {
            Ok((keys, _)) if !keys.is_empty() => {
                let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
                state.keys = Arc::new(keys);
                state.fetched_at = Some(Instant::now());
            }
            Ok(_) => {
                tracing::warn!(jwks_uri = %uri, "the JWKS holds no usable key; keeping the previous keys")
            }
            Err(e) => {
                tracing::warn!(jwks_uri = %uri, error = %e, "refreshing the JWKS failed; keeping the previous keys")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    const EC: &str = "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU";
    const EC_Y: &str = "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0";

    fn ec(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-256", "x": EC, "y": EC_Y, "kid": kid, "alg": "ES256", "use": "sig"})
    }

    #[test]
    fn discovery_urls_insert_then_append() {
        let got = discovery_urls(&url("https://as.example"));
        assert_eq!(
            got[0].as_str(),
            "https://as.example/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            got[1].as_str(),
            "https://as.example/.well-known/openid-configuration"
        );
        let got = discovery_urls(&url("https://as.example/tenant/a/"));
        assert_eq!(
            got[0].as_str(),
            "https://as.example/.well-known/oauth-authorization-server/tenant/a"
        );
        assert_eq!(
            got[1].as_str(),
            "https://as.example/tenant/a/.well-known/openid-configuration"
        );
    }

    #[test]
    fn metadata_checks() {
        let at = url("https://as.example/.well-known/oauth-authorization-server");
        let ok = check_metadata(
            &json!({"issuer": "https://as.example", "jwks_uri": "https://as.example/jwks"}),
            &at,
            "https://as.example/",
        )
        .unwrap();
        assert_eq!(ok.issuer, "https://as.example");
        assert_eq!(ok.jwks_uri.as_str(), "https://as.example/jwks");
        assert!(matches!(
            check_metadata(
                &json!({"issuer": "https://evil.example", "jwks_uri": "https://x"}),
                &at,
                "https://as.example"
            ),
            Err(BuildError::IssuerMismatch { .. })
        ));
        assert!(matches!(
            check_metadata(
                &json!({"issuer": "https://as.example"}),
                &at,
                "https://as.example"
            ),
            Err(BuildError::MissingJwksUri { .. })
        ));
        assert!(matches!(
            check_metadata(
                &json!({"issuer": "https://as.example", "jwks_uri": "not a url"}),
                &at,
                "https://as.example"
            ),
            Err(BuildError::InvalidUrl { .. })
        ));
    }

    #[test]
    fn jwks_keeps_only_signature_keys() {
        let doc = json!({"keys": [
            ec("a"),
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "EC", "crv": "P-256", "x": EC, "y": EC_Y, "kid": "enc", "use": "enc"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "oaep", "alg": "RSA-OAEP"},
            {"kty": "weird", "kid": "w"},
            "not even an object",
        ]});
        let keys = parse_jwks(&doc);
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("a"));
        assert!(parse_jwks(&json!({"nokeys": []})).is_empty());
    }

    #[test]
    fn key_selection() {
        let keys = parse_jwks(&json!({"keys": [ec("a"), ec("b")]}));
        assert!(select_key(&keys, Some("a"), Algorithm::ES256).is_ok());
        assert_eq!(
            select_key(&keys, Some("zzz"), Algorithm::ES256).err(),
            Some(TokenError::UnknownKey)
        );
        assert_eq!(
            select_key(&keys, Some("a"), Algorithm::RS256).err(),
            Some(TokenError::KeyMismatch)
        );
        assert_eq!(
            select_key(&keys, Some("a"), Algorithm::ES384).err(),
            Some(TokenError::KeyMismatch)
        );
        assert!(matches!(
            select_key(&keys, None, Algorithm::ES256),
            Err(TokenError::Malformed(_))
        ));
        let one = parse_jwks(&json!({"keys": [ec("a")]}));
        assert!(select_key(&one, None, Algorithm::ES256).is_ok());
        assert_eq!(
            select_key(&one, None, Algorithm::RS256).err(),
            Some(TokenError::UnknownKey)
        );
    }
}
