//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, OpenID Connect Core §9):
//! the client signs a short-lived JWT about itself with a key it published in its `jwks` or
//! at its `jwks_uri`, and sends it as `client_assertion`.
//!
//! The checks, in order: the assertion's shape and size; `alg` on the allow-list
//! ([`SIGNING_ALGS`], never `none`, never HMAC); a key of the client that fits the `alg`
//! (key type and curve, its own `alg`/`use` when it states them) and whose signature
//! verifies; `iss` = `sub` = the client_id; `aud` the issuer or the token endpoint
//! (clients use either); `exp` present, not past, and at most [`MAX_LIFETIME_SECS`] ahead; `nbf`
//! and `iat` not in the future (both with [`LEEWAY_SECS`]); `jti` present and never seen
//! before for this client — the last check, one atomic statement in the database, so
//! replicas sharing PostgreSQL refuse a replay too, and junk cannot use up `jti`s.
//!
//! `jwks_uri` key sets are fetched with the SSRF-safe fetcher and cached per URI for
//! [`JWKS_TTL`]. An unknown `kid` (a client that rotated its key) refetches the set, at most
//! once per [`JWKS_REFETCH_INTERVAL`] per URI, so a flood of made-up `kid`s costs the client's
//! server nothing.

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde::Deserialize;
use serde_json::Value;
use url::Url;

use super::clients::Client;
use super::net_guard::{FetchError, SafeFetcher};
use super::ttl_cache::TtlCache;
use crate::store::{ReplayStore, StoreError};
use crate::util;

/// `client_assertion_type` for JWT client assertions (RFC 7523 §2.2).
pub const CLIENT_ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Signature algorithms accepted on client assertions; metadata's
/// `token_endpoint_auth_signing_alg_values_supported` is this list.
pub const SIGNING_ALGS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::EdDSA,
];

/// The longest an assertion may live: `exp` at most this far ahead.
pub const MAX_LIFETIME_SECS: i64 = 300;
/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECS: i64 = 60;
/// How long a fetched `jwks_uri` key set is used.
pub const JWKS_TTL: Duration = Duration::from_secs(300);
/// At most one fetch per `jwks_uri` in this interval (an unknown `kid` refetches).
pub const JWKS_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
const MAX_ASSERTION_BYTES: usize = 8 * 1024;
const MAX_JWKS_BYTES: usize = 64 * 1024;
const MAX_JTI_CHARS: usize = 256;
const JWKS_CACHE_CAPACITY: usize = 10_000;

pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::RS256 => "RS256",
        Algorithm::PS256 => "PS256",
        Algorithm::EdDSA => "EdDSA",
        // Not on the allow-list; never named to a client as accepted.
        _ => "unsupported",
    }
}

/// The names of [`SIGNING_ALGS`].
pub fn signing_alg_names() -> Vec<&'static str> {
    SIGNING_ALGS.iter().map(|a| alg_name(*a)).collect()
}

/// Why an assertion was refused. Every message is written for the client's developer and
/// never contains the assertion.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("client_assertion is not a compact JWS (three base64url parts)")]
    Malformed,
    #[error("client_assertion is larger than {MAX_ASSERTION_BYTES} bytes")]
    TooLarge,
    #[error("client_assertion header: {0}")]
    Header(String),
    #[error("client_assertion uses alg {0:?}; accepted: {list}", list = signing_alg_names().join(", "))]
    Alg(String),
    #[error("client_assertion must carry the client_id in sub (and iss)")]
    NoSubject,
    #[error("the client has no keys: its metadata has neither jwks nor jwks_uri")]
    NoKeys,
    #[error("the client's jwks_uri could not be used: {0}")]
    Jwks(String),
    #[error("no key in the client's JWK Set has kid {0:?} and fits alg {1}")]
    UnknownKid(String, &'static str),
    #[error("no key in the client's JWK Set fits alg {0}")]
    NoKeyFits(&'static str),
    #[error("the client_assertion signature does not verify with the client's keys")]
    Signature,
    #[error("client_assertion {0}")]
    Claim(String),
    #[error("client_assertion was used before (same jti); sign a new one for every request")]
    Replayed,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The parts of a compact JWS, split and size-checked.
struct Parts<'a> {
    header: &'a str,
    payload: &'a str,
}

fn split(assertion: &str) -> Result<Parts<'_>, AssertionError> {
    if assertion.len() > MAX_ASSERTION_BYTES {
        return Err(AssertionError::TooLarge);
    }
    let mut it = assertion.split('.');
    match (it.next(), it.next(), it.next(), it.next()) {
        (Some(h), Some(p), Some(_), None) if !h.is_empty() && !p.is_empty() => Ok(Parts {
            header: h,
            payload: p,
        }),
        _ => Err(AssertionError::Malformed),
    }
}

fn json_part(part: &str) -> Result<Value, AssertionError> {
    let bytes = util::b64_decode(part).ok_or(AssertionError::Malformed)?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| AssertionError::Malformed)?;
    v.is_object().then_some(v).ok_or(AssertionError::Malformed)
}

/// A JWS's payload, read before anything is verified (size-capped, a JSON object): what it
/// claims only says whose keys to verify it with.
pub(crate) fn unverified_payload(token: &str) -> Result<Value, AssertionError> {
    json_part(split(token)?.payload)
}

/// The client an assertion names (`sub`), read before anything is verified: it only says
/// which client's keys to verify it with.
pub fn claimed_client_id(assertion: &str) -> Result<String, AssertionError> {
    let payload = unverified_payload(assertion)?;
    payload
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or(AssertionError::NoSubject)
}

/// A JWS protected header: `alg` (on the allow-list), `kid` and `typ`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct JwsHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
    pub typ: Option<String>,
}

/// Read the protected header of a compact JWS (also used for ID-JAGs, see `id_jag`).
pub(crate) fn jws_header(token: &str) -> Result<JwsHeader, AssertionError> {
    let h = json_part(split(token)?.header)?;
    if h.get("crit").is_some() {
        return Err(AssertionError::Header(
            "crit is not supported; send no critical extensions".into(),
        ));
    }
    let alg = h
        .get("alg")
        .and_then(Value::as_str)
        .ok_or_else(|| AssertionError::Header("alg is missing".into()))?;
    let alg = SIGNING_ALGS
        .iter()
        .copied()
        .find(|a| alg_name(*a) == alg)
        .ok_or_else(|| AssertionError::Alg(alg.chars().take(20).collect()))?;
    let string = |name: &str| match h.get(name) {
        None => Ok(None),
        Some(Value::String(k)) => Ok(Some(k.clone())),
        Some(_) => Err(AssertionError::Header(format!("{name} must be a string"))),
    };
    Ok(JwsHeader {
        alg,
        kid: string("kid")?,
        typ: string("typ")?,
    })
}

/// Why no candidate key accepted a token.
#[derive(Debug)]
pub(crate) enum DecodeFailure {
    /// No key's signature verified.
    Signature,
    /// A key's signature verified, but a claim check failed.
    Claim(ErrorKind),
}

/// Verify `token` with the first of `candidates` whose signature verifies, then check its
/// claims with `validation`.
pub(crate) fn decode_with_any<T: serde::de::DeserializeOwned>(
    token: &str,
    candidates: &[Jwk],
    validation: &Validation,
) -> Result<T, DecodeFailure> {
    for jwk in candidates {
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<T>(token, &key, validation) {
            Ok(data) => return Ok(data.claims),
            Err(e) => match e.kind() {
                // Wrong key (or unusable key material): try the next one.
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidEddsaKey
                | ErrorKind::InvalidRsaKey(_)
                | ErrorKind::InvalidKeyFormat
                | ErrorKind::InvalidAlgorithm => {}
                // The signature verified; a claim is wrong.
                kind => return Err(DecodeFailure::Claim(kind.clone())),
            },
        }
    }
    Err(DecodeFailure::Signature)
}

/// Does `jwk` hold a public key of the type `alg` needs, meant for signing with it?
pub fn key_fits(jwk: &Jwk, alg: Algorithm) -> bool {
    let use_ok = match &jwk.common.public_key_use {
        None | Some(PublicKeyUse::Signature) => true,
        Some(_) => false,
    };
    let alg_ok = jwk
        .common
        .key_algorithm
        .is_none_or(|a| format!("{a:?}") == alg_name(alg));
    let type_ok = match (&jwk.algorithm, alg) {
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES256) => p.curve == EllipticCurve::P256,
        (AlgorithmParameters::EllipticCurve(p), Algorithm::ES384) => p.curve == EllipticCurve::P384,
        (AlgorithmParameters::RSA(_), Algorithm::RS256 | Algorithm::PS256) => true,
        (AlgorithmParameters::OctetKeyPair(p), Algorithm::EdDSA) => {
            p.curve == EllipticCurve::Ed25519
        }
        _ => false,
    };
    use_ok && alg_ok && type_ok
}

/// The claims checked after the signature; `jsonwebtoken` checks `exp`, `nbf`, `iss`, `sub`
/// and `aud` itself.
#[derive(Deserialize)]
struct Claims {
    // Optional here so that a missing one is named by the required-claims check.
    exp: Option<i64>,
    iat: Option<i64>,
    jti: Option<String>,
}

/// A verified assertion, before its `jti` is spent.
#[derive(Debug)]
struct Verified {
    jti: String,
    exp: i64,
}

/// Verifies client assertions for one issuer. One per server.
pub struct AssertionVerifier {
    issuer: String,
    audiences: Vec<String>,
    store: Arc<dyn ReplayStore>,
    jwks: JwksResolver,
    /// Issuer → its `jwks_uri` from OpenID Connect discovery (workload issuers).
    discovered: TtlCache<String, String>,
}

impl AssertionVerifier {
    /// `allow_loopback` and `timeout_ms` are the outbound-fetch rules (see `net_guard`).
    pub fn new(
        issuer: &str,
        store: Arc<dyn ReplayStore>,
        allow_loopback: bool,
        timeout_ms: u64,
    ) -> Result<Self, FetchError> {
        let mut audiences = vec![issuer.to_string(), format!("{issuer}/token")];
        // An origin with and without its lone trailing slash are one issuer (clients differ).
        if Url::parse(issuer).is_ok_and(|u| u.path() == "/") {
            audiences.push(format!("{issuer}/"));
        }
        Ok(Self {
            issuer: issuer.to_string(),
            audiences,
            store,
            jwks: JwksResolver::new(
                SafeFetcher::new(allow_loopback, timeout_ms)?,
                JWKS_REFETCH_INTERVAL,
            ),
            discovered: TtlCache::new(JWKS_CACHE_CAPACITY),
        })
    }

    /// The `aud` values that name this server in an assertion: its issuer (with and without
    /// an origin's trailing slash) and its token endpoint (RFC 7523 §3).
    pub(crate) fn audiences(&self) -> &[String] {
        &self.audiences
    }

    /// Record `key` as used until `until`; false when it was used before (replicas agree:
    /// the record is in the store).
    pub(crate) async fn spend_once(&self, key: &str, until: i64) -> Result<bool, StoreError> {
        self.store.use_once(key, until, util::now()).await
    }

    /// An OpenID Connect issuer's `jwks_uri`, by discovery (OpenID Connect Discovery §4,
    /// fetched under the metadata-document rules; the document must name the same issuer,
    /// §4.3). Cached like key sets.
    pub(crate) async fn discovered_jwks_uri(&self, issuer: &str) -> Result<String, AssertionError> {
        if let Some(uri) = self.discovered.get(issuer) {
            return Ok(uri);
        }
        let at = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let url = Url::parse(&at).map_err(|e| AssertionError::Jwks(format!("{at}: {e}")))?;
        let (_, body) = self
            .jwks
            .fetcher
            .get(&url, "application/json", MAX_JWKS_BYTES)
            .await
            .map_err(|e| AssertionError::Jwks(format!("discovery at {at}: {e}")))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|_| AssertionError::Jwks(format!("discovery at {at} is not JSON")))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(AssertionError::Jwks(format!(
                "discovery at {at} names another issuer"
            )));
        }
        let uri = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| AssertionError::Jwks(format!("discovery at {at} has no jwks_uri")))?
            .to_string();
        self.discovered
            .insert(issuer.to_string(), uri.clone(), JWKS_TTL);
        Ok(uri)
    }

    /// Authenticate `client` with `assertion`: every check, then spend the `jti`.
    pub async fn verify(&self, client: &Client, assertion: &str) -> Result<(), AssertionError> {
        let now = util::now();
        let v = self.check(client, assertion, now).await?;
        // Scoped by client: two clients may pick the same jti. Hashed, so the key has a
        // fixed size and no separator can be forged.
        let id = &client.client_id;
        let key = format!(
            "client_assertion:{}",
            util::b64(&util::secret_hash(&format!("{}:{id}:{}", id.len(), v.jti)))
        );
        let fresh = self.store.use_once(&key, v.exp + LEEWAY_SECS, now).await?;
        if fresh {
            Ok(())
        } else {
            Err(AssertionError::Replayed)
        }
    }

    async fn check(
        &self,
        client: &Client,
        assertion: &str,
        now: i64,
    ) -> Result<Verified, AssertionError> {
        let JwsHeader { alg, kid, .. } = jws_header(assertion)?;
        let candidates = self.keys(client, alg, kid.as_deref()).await?;
        let mut validation = Validation::new(alg);
        validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
        validation.leeway = LEEWAY_SECS as u64;
        validation.validate_nbf = true;
        validation.set_issuer(&[&client.client_id]);
        validation.sub = Some(client.client_id.clone());
        validation.set_audience(&self.audiences);
        let claims: Claims =
            decode_with_any(assertion, &candidates, &validation).map_err(|e| match e {
                DecodeFailure::Signature => AssertionError::Signature,
                DecodeFailure::Claim(kind) => self.claim_error(&kind),
            })?;
        let exp = claims
            .exp
            .ok_or_else(|| AssertionError::Claim("must carry the exp claim".into()))?;
        if exp > now + MAX_LIFETIME_SECS + LEEWAY_SECS {
            return Err(AssertionError::Claim(format!(
                "exp is more than {MAX_LIFETIME_SECS} s ahead; client assertions must be \
                 short-lived"
            )));
        }
        if claims.iat.is_some_and(|iat| iat > now + LEEWAY_SECS) {
            return Err(AssertionError::Claim("iat is in the future".into()));
        }
        let jti = claims
            .jti
            .filter(|j| !j.is_empty() && j.chars().count() <= MAX_JTI_CHARS)
            .ok_or_else(|| {
                AssertionError::Claim(format!(
                    "must carry a jti claim: a unique string of 1 to {MAX_JTI_CHARS} characters"
                ))
            })?;
        Ok(Verified { jti, exp })
    }

    fn claim_error(&self, kind: &ErrorKind) -> AssertionError {
        let text = match kind {
            ErrorKind::ExpiredSignature => "has expired (exp)".to_string(),
            ErrorKind::ImmatureSignature => "is not valid yet (nbf)".to_string(),
            ErrorKind::InvalidIssuer => "iss must be the client_id".to_string(),
            ErrorKind::InvalidSubject => "sub must be the client_id".to_string(),
            ErrorKind::InvalidAudience => format!(
                "aud must be this server's issuer ({}) or its token endpoint ({}/token)",
                self.issuer, self.issuer
            ),
            ErrorKind::MissingRequiredClaim(c) => format!("must carry the {c} claim"),
            ErrorKind::InvalidClaimFormat(c) => format!("claim {c} has the wrong type"),
            // Serde messages can quote the payload; name no detail.
            _ => "claims are malformed (exp, iat and nbf are numbers; jti a string)".to_string(),
        };
        AssertionError::Claim(text)
    }

    /// The client's keys that fit `alg` (and `kid` when given).
    async fn keys(
        &self,
        client: &Client,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<Jwk>, AssertionError> {
        let m = &client.metadata;
        self.keys_from(m.jwks.as_ref(), m.jwks_uri.as_deref(), alg, kid)
            .await
    }

    /// The keys of an inline `jwks` (preferred) or a `jwks_uri` that fit `alg` (and `kid`
    /// when given). `jwks_uri` sets are cached and refetched on an unknown `kid` at most once
    /// per [`JWKS_REFETCH_INTERVAL`]. Shared by client assertions and ID-JAG issuers.
    pub(crate) async fn keys_from(
        &self,
        jwks: Option<&Value>,
        jwks_uri: Option<&str>,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<Jwk>, AssertionError> {
        let select = |set: &JwkSet| -> Vec<Jwk> {
            set.keys
                .iter()
                .filter(|k| kid.is_none_or(|kid| k.common.key_id.as_deref() == Some(kid)))
                .filter(|k| key_fits(k, alg))
                .cloned()
                .collect()
        };
        let found = if let Some(jwks) = jwks {
            let set = parse_jwks(jwks)?;
            select(&set)
        } else if let Some(uri) = jwks_uri {
            let set = self.jwks.get(uri).await?;
            let found = select(&set);
            match kid {
                // The key owner may have rotated its key since we fetched.
                Some(_) if found.is_empty() => match self.jwks.refetch(uri).await? {
                    Some(set) => select(&set),
                    None => found,
                },
                _ => found,
            }
        } else {
            return Err(AssertionError::NoKeys);
        };
        if found.is_empty() {
            let name = alg_name(alg);
            return Err(match kid {
                Some(k) => AssertionError::UnknownKid(k.chars().take(64).collect(), name),
                None => AssertionError::NoKeyFits(name),
            });
        }
        Ok(found)
    }
}

fn parse_jwks(v: &Value) -> Result<JwkSet, AssertionError> {
    // Keys we cannot read (other kty, private members) are left out, not fatal: a set may
    // hold encryption keys too.
    let keys = v
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| AssertionError::Jwks("not a JWK Set (no keys array)".into()))?;
    let keys = keys
        .iter()
        .filter(|k| k.get("d").is_none())
        .filter_map(|k| serde_json::from_value::<Jwk>(k.clone()).ok())
        .collect();
    Ok(JwkSet { keys })
}

/// Fetches and caches `jwks_uri` key sets.
struct JwksResolver {
    fetcher: SafeFetcher,
    sets: TtlCache<String, Arc<JwkSet>>,
    /// A live entry means "fetched within the refetch interval".
    recent: TtlCache<String, ()>,
    refetch_interval: Duration,
}

impl JwksResolver {
    fn new(fetcher: SafeFetcher, refetch_interval: Duration) -> Self {
        Self {
            fetcher,
            sets: TtlCache::new(JWKS_CACHE_CAPACITY),
            recent: TtlCache::new(JWKS_CACHE_CAPACITY),
            refetch_interval,
        }
    }

    /// The cached set, or a fresh fetch.
    async fn get(&self, uri: &str) -> Result<Arc<JwkSet>, AssertionError> {
        if let Some(set) = self.sets.get(uri) {
            return Ok(set);
        }
        self.recent
            .insert(uri.to_string(), (), self.refetch_interval);
        self.fetch(uri).await
    }

    /// Fetch again unless this URI was fetched within the refetch interval (then `None`).
    async fn refetch(&self, uri: &str) -> Result<Option<Arc<JwkSet>>, AssertionError> {
        if !self
            .recent
            .insert_if_absent(uri.to_string(), (), self.refetch_interval)
        {
            return Ok(None);
        }
        self.fetch(uri).await.map(Some)
    }

    /// Failures are never cached: a client that fixed its keys is not kept waiting.
    async fn fetch(&self, uri: &str) -> Result<Arc<JwkSet>, AssertionError> {
        let url = Url::parse(uri).map_err(|e| AssertionError::Jwks(format!("{uri}: {e}")))?;
        let (_, body) = self
            .fetcher
            .get(
                &url,
                "application/jwk-set+json, application/json",
                MAX_JWKS_BYTES,
            )
            .await
            .map_err(|e| AssertionError::Jwks(e.to_string()))?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| AssertionError::Jwks("the response is not JSON".into()))?;
        let set = Arc::new(parse_jwks(&v)?);
        self.sets.insert(uri.to_string(), set.clone(), JWKS_TTL);
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwk(v: Value) -> Jwk {
        serde_json::from_value(v).expect("jwk")
    }

    #[test]
    fn key_type_must_fit_the_alg() {
        let p256 = jwk(serde_json::json!({"kty":"EC","crv":"P-256","x":"AA","y":"AA"}));
        assert!(key_fits(&p256, Algorithm::ES256));
        assert!(!key_fits(&p256, Algorithm::ES384));
        assert!(!key_fits(&p256, Algorithm::RS256));
        let rsa = jwk(serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB","alg":"RS256"}));
        assert!(key_fits(&rsa, Algorithm::RS256));
        assert!(!key_fits(&rsa, Algorithm::PS256), "the key states its alg");
        let enc = jwk(serde_json::json!({"kty":"RSA","n":"AQAB","e":"AQAB","use":"enc"}));
        assert!(!key_fits(&enc, Algorithm::RS256));
        let ed = jwk(serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"AA"}));
        assert!(key_fits(&ed, Algorithm::EdDSA));
        let oct = jwk(serde_json::json!({"kty":"oct","k":"c2VjcmV0"}));
        assert!(SIGNING_ALGS.iter().all(|a| !key_fits(&oct, *a)));
    }

    #[test]
    fn header_allow_list() {
        let token = |h: Value| format!("{}.e30.sig", util::b64(h.to_string().as_bytes()));
        let h = jws_header(&token(serde_json::json!({"alg":"ES256","kid":"k"}))).expect("ok");
        assert_eq!(
            (h.alg, h.kid, h.typ),
            (Algorithm::ES256, Some("k".into()), None)
        );
        for bad in ["none", "HS256", "RS512", "ES512"] {
            let e = jws_header(&token(serde_json::json!({ "alg": bad }))).expect_err(bad);
            assert!(matches!(e, AssertionError::Alg(_)), "{bad}");
        }
        assert!(jws_header(&token(serde_json::json!({"alg":"ES256","crit":["x"]}))).is_err());
        assert!(jws_header("a.b").is_err());
        assert!(jws_header(&"a".repeat(MAX_ASSERTION_BYTES + 1)).is_err());
        assert_eq!(
            signing_alg_names(),
            vec!["ES256", "ES384", "RS256", "PS256", "EdDSA"]
        );
    }

    /// A rotated key is found by refetching, at most once per interval, never in between.
    #[tokio::test]
    async fn jwks_uri_refetch_is_rate_limited() {
        use std::sync::Mutex;
        use std::sync::atomic::{AtomicUsize, Ordering};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let uri = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        let kid = Arc::new(Mutex::new("k1".to_string()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (k, h) = (kid.clone(), hits.clone());
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let (k, h) = (k.clone(), h.clone());
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    let kid = k.lock().map(|k| k.clone()).unwrap_or_default();
                    serde_json::json!({"keys": [
                        {"kty": "OKP", "crv": "Ed25519", "x": "AA", "kid": kid}
                    ]})
                    .to_string()
                }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        let interval = Duration::from_millis(300);
        let jwks = JwksResolver::new(SafeFetcher::new(true, 2000).expect("fetcher"), interval);
        let kid_of = |s: &JwkSet| s.keys[0].common.key_id.clone().unwrap_or_default();

        assert_eq!(kid_of(&jwks.get(&uri).await.expect("get")), "k1");
        assert_eq!(kid_of(&jwks.get(&uri).await.expect("cached")), "k1");
        // The client rotates; an unknown kid right after a fetch does not refetch.
        if let Ok(mut k) = kid.lock() {
            *k = "k2".into();
        }
        assert!(jwks.refetch(&uri).await.expect("limited").is_none());
        assert_eq!(hits.load(Ordering::SeqCst), 1);
        // After the interval, one refetch finds the new key and replaces the cached set.
        tokio::time::sleep(interval + Duration::from_millis(50)).await;
        let fresh = jwks.refetch(&uri).await.expect("refetch").expect("fetched");
        assert_eq!(kid_of(&fresh), "k2");
        assert!(jwks.refetch(&uri).await.expect("limited").is_none());
        assert_eq!(kid_of(&jwks.get(&uri).await.expect("cached")), "k2");
        assert_eq!(hits.load(Ordering::SeqCst), 2);
        // https only, loopback http being the development exception.
        let strict = JwksResolver::new(SafeFetcher::new(false, 2000).expect("fetcher"), interval);
        assert!(matches!(
            strict.get(&uri).await,
            Err(AssertionError::Jwks(_))
        ));
    }

    #[test]
    fn subject_is_read_before_verification() {
        let payload = util::b64(br#"{"sub":"abc","iss":"abc"}"#);
        assert_eq!(
            claimed_client_id(&format!("e30.{payload}.x")).expect("sub"),
            "abc"
        );
        let none = util::b64(br#"{"iss":"abc"}"#);
        assert!(claimed_client_id(&format!("e30.{none}.x")).is_err());
        assert!(claimed_client_id("not a jwt").is_err());
    }

    /// Property tests (README: Fuzzing).
    mod fuzz {
        use std::collections::HashSet;
        use std::sync::Mutex;

        use proptest::prelude::*;
        use proptest::test_runner::TestRunner;
        use serde_json::json;

        use super::*;
        use crate::fuzz::{claims, compact_jws, config, jose_header, jws_part, sign};
        use crate::oauth::client_metadata::{Origin, RawClientMetadata, validate};
        use crate::oauth::clients::ClientSource;
        use crate::oauth::grants::GrantRegistry;
        use crate::store::ClientKind;

        /// Single use, in memory.
        #[derive(Default)]
        struct Memory(Mutex<HashSet<String>>);

        #[async_trait::async_trait]
        impl ReplayStore for Memory {
            async fn use_once(&self, key: &str, _: i64, _: i64) -> Result<bool, StoreError> {
                Ok(self
                    .0
                    .lock()
                    .map(|mut s| s.insert(key.into()))
                    .unwrap_or(false))
            }
            async fn purge_used(&self, _: i64) -> Result<u64, StoreError> {
                Ok(0)
            }
            async fn is_used(&self, key: &str, _: i64) -> Result<bool, StoreError> {
                Ok(self.0.lock().map(|s| s.contains(key)).unwrap_or(false))
            }
        }

        proptest! {
            #![proptest_config(config())]

            /// Any text as an assertion: a header with an accepted `alg`, or a refusal that
            /// does not repeat the assertion.
            #[test]
            fn any_assertion_header_is_allowed_or_refused(token in compact_jws()) {
                match jws_header(&token) {
                    Ok(h) => prop_assert!(SIGNING_ALGS.contains(&h.alg)),
                    Err(e) => prop_assert!(token.len() < 16 || !e.to_string().contains(&token)),
                }
            }

            /// Headers of every shape: the `alg` read is the one sent, `kid` and `typ` are
            /// strings when present, `crit` is refused.
            #[test]
            fn headers_are_read_as_sent(h in jose_header(), rest in jws_part()) {
                let token = format!("{}.{rest}.sig", crate::fuzz::b64(h.to_string().as_bytes()));
                if let Ok(got) = jws_header(&token) {
                    prop_assert_eq!(h.get("alg").and_then(Value::as_str), Some(alg_name(got.alg)));
                    prop_assert!(h.get("crit").is_none());
                    prop_assert_eq!(got.kid.as_deref(), h.get("kid").and_then(Value::as_str));
                    prop_assert_eq!(got.typ.as_deref(), h.get("typ").and_then(Value::as_str));
                }
            }

            /// The client an assertion names is its `sub`, a non-empty string, or nobody.
            #[test]
            fn claimed_client_is_the_sub(token in compact_jws()) {
                if let Ok(id) = claimed_client_id(&token) {
                    prop_assert!(!id.is_empty());
                    let payload = token.split('.').nth(1).and_then(util::b64_decode);
                    let sub = payload
                        .and_then(|p| serde_json::from_slice::<Value>(&p).ok())
                        .and_then(|p| p.get("sub").and_then(Value::as_str).map(str::to_string));
                    prop_assert_eq!(Some(id), sub);
                }
            }
        }

        /// Assertions signed with the client's own key over claims of every shape (missing,
        /// mistyped, huge, past and future): accepted only when every rule holds, never
        /// a panic.
        #[test]
        fn signed_assertions_are_accepted_only_when_every_claim_holds() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            let (key, jwk) = crate::fuzz::es256_key("k1");
            let metadata = validate(
                RawClientMetadata {
                    grant_types: Some(vec!["client_credentials".into()]),
                    token_endpoint_auth_method: Some("private_key_jwt".into()),
                    jwks: Some(json!({ "keys": [jwk] })),
                    ..Default::default()
                },
                Origin::Operator,
                &GrantRegistry::standard(),
            )
            .expect("metadata");
            let client = Client {
                client_id: "c1".into(),
                source: ClientSource::Stored(ClientKind::Static),
                metadata: Arc::new(metadata),
                secret_hash: None,
                previous_secret: None,
                last_used_at: None,
            };
            let issuer = "https://as.example";
            let verifier = AssertionVerifier::new(issuer, Arc::new(Memory::default()), false, 1000)
                .expect("verifier");
            let now = util::now();
            let strategy = (
                claims(
                    vec![
                        ("iss", json!("c1")),
                        ("sub", json!("c1")),
                        ("aud", json!("https://as.example/token")),
                        ("exp", json!(now + 60)),
                        ("iat", json!(now)),
                        ("nbf", json!(now - 1)),
                        ("jti", json!("j")),
                    ],
                    now,
                ),
                proptest::option::of(prop_oneof![Just("k1".to_string()), ".{0,8}"]),
                "[a-z0-9]{0,12}",
            );
            let mut runner = TestRunner::new(config());
            let result = runner.run(&strategy, |(claims, kid, jti_suffix)| {
                let mut claims = claims;
                // Distinct jtis, so a replay refusal does not hide the other checks.
                if let Some(Value::String(j)) = claims.get_mut("jti") {
                    j.push_str(&jti_suffix);
                }
                let mut header = jsonwebtoken::Header::new(Algorithm::ES256);
                header.kid = kid;
                let token = sign(&key, &header, &claims);
                match rt.block_on(verifier.verify(&client, &token)) {
                    Ok(()) => {
                        prop_assert_eq!(&claims["iss"], "c1");
                        prop_assert_eq!(&claims["sub"], "c1");
                        let aud_ok = |a: &Value| {
                            a.as_str()
                                .is_some_and(|a| verifier.audiences.iter().any(|o| o == a))
                        };
                        let aud = match &claims["aud"] {
                            Value::Array(list) => list.iter().any(aud_ok),
                            a => aud_ok(a),
                        };
                        prop_assert!(aud, "aud {}", claims["aud"]);
                        let exp = claims["exp"]
                            .as_i64()
                            .ok_or_else(|| TestCaseError::fail("exp is an integer"))?;
                        prop_assert!(
                            exp >= now - LEEWAY_SECS - 5
                                && exp <= now + MAX_LIFETIME_SECS + LEEWAY_SECS
                        );
                        prop_assert!(claims["jti"].as_str().is_some_and(|j| !j.is_empty()));
                    }
                    Err(AssertionError::Store(e)) => prop_assert!(false, "store error {e}"),
                    Err(_) => {}
                }
                Ok(())
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }
}
