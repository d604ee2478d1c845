//! DPoP proofs ([RFC 9449]): the checks of §4.3 as pure functions, shared by
//! the guard (resource server side, §7) and by authorization servers such as
//! Concierge (token endpoint, §5).
//!
//! [`verify`] checks one proof JWT against what the request was: its method,
//! its URL, the access token it carries (for `ath`), the accepted algorithms
//! and the clock. It returns the [`Proof`]: the key's [RFC 7638] thumbprint
//! (`jkt`, what `cnf.jkt` binds a token to), `jti`, `iat` and `nonce`.
//! What needs state is left to the caller: refusing a replayed `jti` (keep it
//! for [`Proof::replay_window`] seconds) and checking `nonce` values the
//! caller issued.
//!
//! ```
//! use concierge_guard::dpop::{self, ProofCheck};
//! use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, jwk::Jwk};
//! use serde_json::json;
//!
//! // The client's key pair (here an Ed25519 key from its PKCS#8 document).
//! let pkcs8 = aws_lc_rs::signature::Ed25519KeyPair::generate()?.to_pkcs8v1()?;
//! let key = EncodingKey::from_ed_der(pkcs8.as_ref());
//! let public = Jwk::from_encoding_key(&key, Algorithm::EdDSA)?;
//!
//! // The client signs a proof for `POST https://as.example/token`.
//! let now = 1_800_000_000;
//! let mut header = Header::new(Algorithm::EdDSA);
//! header.typ = Some("dpop+jwt".into());
//! header.jwk = Some(public.clone());
//! let claims = json!({"jti": "a1", "htm": "POST", "htu": "https://as.example/token", "iat": now});
//! let proof = encode(&header, &claims, &key)?;
//!
//! // The server checks it (the query of the request URL does not matter).
//! let checked = dpop::verify(&proof, &ProofCheck::new("POST", "https://as.example/token?x=1", now))?;
//! assert_eq!(checked.jkt, dpop::thumbprint(&serde_json::to_value(&public)?)?);
//! assert_eq!(checked.jti, "a1");
//!
//! // Another method, another URL, or a stale proof is refused.
//! assert!(dpop::verify(&proof, &ProofCheck::new("GET", "https://as.example/token", now)).is_err());
//! assert!(dpop::verify(&proof, &ProofCheck::new("POST", "https://as.example/other", now)).is_err());
//! assert!(dpop::verify(&proof, &ProofCheck::new("POST", "https://as.example/token", now + 600)).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [RFC 9449]: https://www.rfc-editor.org/rfc/rfc9449
//! [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde_json::{Map, Value};
use thiserror::Error;
use url::Url;

/// The algorithms accepted by default: every asymmetric one `jsonwebtoken`
/// verifies with a key from a JWK (RFC 9449 §4.2 forbids symmetric ones).
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::EdDSA,
];

/// Proofs longer than this are refused without being parsed.
pub const MAX_PROOF_BYTES: usize = 8 * 1024;

/// Longest `jti` accepted.
const MAX_JTI_CHARS: usize = 256;

/// JWK members that only a private (or symmetric) key has (RFC 7517 §9.2,
/// RFC 7518 §6): a proof carrying one is refused (RFC 9449 §4.3 check 7).
const PRIVATE_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// What a proof is checked against. Build it with [`ProofCheck::new`] and
/// adjust the rest.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProofCheck<'a> {
    /// The request's method; `htm` must equal it (case-sensitive).
    pub method: &'a str,
    /// The request's URL; `htu` must equal it, both without query and
    /// fragment and normalised (RFC 9449 §4.3 check 9, RFC 3986 §6).
    pub url: &'a str,
    /// The access token the request carries; when set, `ath` must be its
    /// hash ([`access_token_hash`], RFC 9449 §4.3 check 11).
    pub access_token: Option<&'a str>,
    /// The signature algorithms accepted. Default [`DEFAULT_ALGORITHMS`];
    /// HMAC algorithms are refused whatever this says.
    pub algorithms: &'a [Algorithm],
    /// How old (`iat`) a proof may be, in seconds. Default 60.
    pub max_age: i64,
    /// Clock skew tolerated on both sides of the window, in seconds. Default 5.
    pub leeway: i64,
    /// The current time, in seconds since the Unix epoch.
    pub now: i64,
}

impl<'a> ProofCheck<'a> {
    /// Checks for a request with `method` to `url` at `now` (Unix seconds),
    /// with the default algorithms, a 60 s window and 5 s of leeway, and no
    /// access token.
    #[must_use]
    pub fn new(method: &'a str, url: &'a str, now: i64) -> Self {
        Self {
            method,
            url,
            access_token: None,
            algorithms: DEFAULT_ALGORITHMS,
            max_age: 60,
            leeway: 5,
            now,
        }
    }

    /// Also require `ath` to match this access token.
    #[must_use]
    pub fn access_token(mut self, token: &'a str) -> Self {
        self.access_token = Some(token);
        self
    }

    /// Accept these algorithms only.
    #[must_use]
    pub fn algorithms(mut self, algorithms: &'a [Algorithm]) -> Self {
        self.algorithms = algorithms;
        self
    }

    /// The `iat` window: `max_age` seconds into the past, `leeway` more on
    /// both sides.
    #[must_use]
    pub fn window(mut self, max_age: i64, leeway: i64) -> Self {
        self.max_age = max_age;
        self.leeway = leeway;
        self
    }
}

/// A proof that passed [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Proof {
    /// The RFC 7638 SHA-256 thumbprint of the proof's key, base64url: the
    /// `cnf.jkt` of tokens bound to it.
    pub jkt: String,
    /// The proof's unique id. Refuse a second proof with the same `jti` (and
    /// `jkt`) for [`replay_window`](Self::replay_window) seconds.
    pub jti: String,
    /// When the client made the proof.
    pub iat: i64,
    /// The server-provided nonce the proof carries, if any (RFC 9449 §8, §9).
    pub nonce: Option<String>,
    /// How long, from the check, the proof stays acceptable: how long its
    /// `jti` must be remembered.
    pub replay_window: i64,
}

impl Proof {
    /// A key for replay caches: SHA-256 of `jkt` and `jti`, base64url, so
    /// one client cannot spend another key's `jti`.
    #[must_use]
    pub fn replay_key(&self) -> String {
        let d = digest(&SHA256, format!("{}\n{}", self.jkt, self.jti).as_bytes());
        URL_SAFE_NO_PAD.encode(d.as_ref())
    }
}

/// Why a proof was refused. The `Display` text is meant for the
/// `error_description` of an `invalid_dpop_proof` answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProofError {
    /// Larger than [`MAX_PROOF_BYTES`].
    #[error("the DPoP proof is too large")]
    TooLarge,
    /// Not a compact JWS with JSON header and claims.
    #[error("the DPoP proof is malformed: {0}")]
    Malformed(&'static str),
    /// `typ` is not `dpop+jwt`.
    #[error("the DPoP proof's typ must be dpop+jwt")]
    WrongType,
    /// `alg` is symmetric, `none`, unknown or not accepted here.
    #[error("the DPoP proof's algorithm {0:?} is not accepted")]
    AlgorithmNotAllowed(String),
    /// The header has no usable public `jwk`.
    #[error("the DPoP proof's jwk header is missing or unusable: {0}")]
    BadKey(&'static str),
    /// The `jwk` holds private key members.
    #[error("the DPoP proof's jwk must be a public key; it holds private key members")]
    PrivateKey,
    /// The signature does not verify with the `jwk`.
    #[error("the DPoP proof's signature does not verify with its jwk")]
    BadSignature,
    /// A required claim is absent or has the wrong type.
    #[error("the DPoP proof's {0} claim is missing or invalid")]
    InvalidClaim(&'static str),
    /// `htm` is not the request's method.
    #[error("the DPoP proof's htm does not match the request method")]
    WrongMethod,
    /// `htu` is not the request's URL.
    #[error("the DPoP proof's htu does not match the request URL")]
    WrongUrl,
    /// `iat` is outside the accepted window.
    #[error("the DPoP proof's iat is too old or in the future")]
    OutsideWindow,
    /// `ath` is absent or not the hash of the access token sent.
    #[error("the DPoP proof's ath does not match the access token")]
    WrongAccessTokenHash,
}

/// `ath`: base64url of the SHA-256 of the access token (RFC 9449 §4.2).
///
/// ```
/// assert_eq!(
///     concierge_guard::dpop::access_token_hash("Kz~8mXK1EalYznwH-LC-1fBAo.4Ljp~zsPE_NeO.gxU"),
///     "fUHyO2r2Z3DZ53EsNrWBb0xWXoaNy59IiKCAqksmQEo",
/// );
/// ```
#[must_use]
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, token.as_bytes()).as_ref())
}

/// The form `htu` values are compared in: an absolute `http(s)` URL without
/// query and fragment, normalised as the URL standard does (lower-case scheme
/// and host, default port dropped, dot segments removed, empty path `/`).
///
/// ```
/// use concierge_guard::dpop::normalize_htu;
/// assert_eq!(normalize_htu("HTTPS://AS.example:443/token?x#y").as_deref(), Some("https://as.example/token"));
/// assert_eq!(normalize_htu("https://as.example").as_deref(), Some("https://as.example/"));
/// assert_eq!(normalize_htu("urn:x"), None);
/// ```
#[must_use]
pub fn normalize_htu(url: &str) -> Option<String> {
    let mut url = Url::parse(url).ok()?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return None;
    }
    url.set_query(None);
    url.set_fragment(None);
    Some(url.into())
}

/// The RFC 7638 SHA-256 thumbprint of a public JWK (`EC`, `RSA` or `OKP`),
/// base64url.
///
/// ```
/// // RFC 7638 §3.1.
/// let jwk = serde_json::json!({
///     "kty": "RSA", "e": "AQAB", "alg": "RS256", "kid": "2011-04-29",
///     "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
/// });
/// assert_eq!(
///     concierge_guard::dpop::thumbprint(&jwk)?,
///     "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
/// );
/// # Ok::<(), concierge_guard::dpop::ProofError>(())
/// ```
pub fn thumbprint(jwk: &Value) -> Result<String, ProofError> {
    let member = |name: &'static str| {
        jwk.get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(|v| Value::String(v.to_owned()).to_string())
            .ok_or(ProofError::BadKey("a required member is missing"))
    };
    // Members in lexicographic order, no whitespace (RFC 7638 §3.2, §3.3).
    let canonical = match jwk.get("kty").and_then(Value::as_str) {
        Some("EC") => format!(
            r#"{{"crv":{},"kty":"EC","x":{},"y":{}}}"#,
            member("crv")?,
            member("x")?,
            member("y")?
        ),
        Some("RSA") => format!(
            r#"{{"e":{},"kty":"RSA","n":{}}}"#,
            member("e")?,
            member("n")?
        ),
        Some("OKP") => format!(
            r#"{{"crv":{},"kty":"OKP","x":{}}}"#,
            member("crv")?,
            member("x")?
        ),
        _ => return Err(ProofError::BadKey("kty must be EC, RSA or OKP")),
    };
    Ok(URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()).as_ref()))
}

fn decode_json(part: &str, what: &'static str) -> Result<Map<String, Value>, ProofError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| ProofError::Malformed(what))?;
    serde_json::from_slice(&bytes).map_err(|_| ProofError::Malformed(what))
}

/// Does the curve fit the algorithm? (`jsonwebtoken` reads EC keys without
/// their curve.)
fn curve_fits(alg: Algorithm, jwk: &Map<String, Value>) -> bool {
    let crv = jwk.get("crv").and_then(Value::as_str);
    match alg {
        Algorithm::ES256 => crv == Some("P-256"),
        Algorithm::ES384 => crv == Some("P-384"),
        Algorithm::EdDSA => crv == Some("Ed25519"),
        _ => true,
    }
}

/// Checks a DPoP proof JWT (RFC 9449 §4.3, checks 2 to 11; the caller does
/// the single `DPoP` header (1), `jti` replay (12) and its own nonces (10)).
pub fn verify(proof: &str, check: &ProofCheck<'_>) -> Result<Proof, ProofError> {
    if proof.len() > MAX_PROOF_BYTES {
        return Err(ProofError::TooLarge);
    }
    let (header, _, _) =
        crate::validate::split_jws(proof).ok_or(ProofError::Malformed("not a signed JWT"))?;
    let header = decode_json(header, "the header is not base64url JSON")?;
    if !header
        .get("typ")
        .and_then(Value::as_str)
        .is_some_and(|t| t.eq_ignore_ascii_case("dpop+jwt"))
    {
        return Err(ProofError::WrongType);
    }
    let name = header.get("alg").and_then(Value::as_str).unwrap_or("");
    let alg = name
        .parse::<Algorithm>()
        .ok()
        .filter(|a| a.family() != AlgorithmFamily::Hmac && check.algorithms.contains(a))
        .ok_or_else(|| ProofError::AlgorithmNotAllowed(name.chars().take(16).collect()))?;
    let Some(Value::Object(jwk)) = header.get("jwk") else {
        return Err(ProofError::BadKey("there is no jwk header"));
    };
    if PRIVATE_MEMBERS.iter().any(|m| jwk.contains_key(*m)) {
        return Err(ProofError::PrivateKey);
    }
    if !curve_fits(alg, jwk) {
        return Err(ProofError::BadKey("its curve does not fit the algorithm"));
    }
    let jwk_value = Value::Object(jwk.clone());
    let jkt = thumbprint(&jwk_value)?;
    let parsed: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk_value)
        .map_err(|_| ProofError::BadKey("it is not a valid JWK"))?;
    let key = DecodingKey::from_jwk(&parsed).map_err(|_| ProofError::BadKey("unusable key"))?;
    let mut validation = Validation::new(alg);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Map<String, Value>>(proof, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => ProofError::BadSignature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => {
                ProofError::BadKey("it is not a key for the algorithm")
            }
            _ => ProofError::Malformed("the claims or signature cannot be decoded"),
        })?
        .claims;

    let text = |name: &'static str| {
        claims
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(ProofError::InvalidClaim(name))
    };
    let jti = text("jti")?;
    if jti.chars().count() > MAX_JTI_CHARS {
        return Err(ProofError::InvalidClaim("jti"));
    }
    if text("htm")? != check.method {
        return Err(ProofError::WrongMethod);
    }
    let htu = normalize_htu(text("htu")?).ok_or(ProofError::InvalidClaim("htu"))?;
    if Some(htu) != normalize_htu(check.url) {
        return Err(ProofError::WrongUrl);
    }
    let iat = claims
        .get("iat")
        .and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        })
        .ok_or(ProofError::InvalidClaim("iat"))?;
    let oldest = check.now - check.max_age - check.leeway;
    let newest = check.now + check.leeway;
    if iat < oldest || iat > newest {
        return Err(ProofError::OutsideWindow);
    }
    if let Some(token) = check.access_token
        && claims.get("ath").and_then(Value::as_str) != Some(access_token_hash(token).as_str())
    {
        return Err(ProofError::WrongAccessTokenHash);
    }
    let nonce = match claims.get("nonce") {
        None => None,
        Some(Value::String(n)) => Some(n.clone()),
        Some(_) => return Err(ProofError::InvalidClaim("nonce")),
    };
    Ok(Proof {
        jkt,
        jti: jti.to_owned(),
        iat,
        nonce,
        // Acceptable until `iat` leaves the window.
        replay_window: (iat - oldest).max(0) + 1,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_of_ec_and_okp_keys_are_canonical() {
        // Member order and extra members do not change the thumbprint.
        let a = serde_json::json!({"kty":"EC","crv":"P-256","x":"abc","y":"def","kid":"1"});
        let b = serde_json::json!({"y":"def","x":"abc","crv":"P-256","kty":"EC"});
        assert_eq!(thumbprint(&a), thumbprint(&b));
        let okp = serde_json::json!({"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"});
        // RFC 8037 Appendix A.3.
        assert_eq!(
            thumbprint(&okp).unwrap(),
            "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
        );
        assert!(thumbprint(&serde_json::json!({"kty":"oct","k":"x"})).is_err());
    }

    #[test]
    fn htu_normalisation() {
        assert_eq!(
            normalize_htu("https://a.example:443/x/../token").as_deref(),
            Some("https://a.example/token")
        );
        assert_ne!(
            normalize_htu("https://a.example/token"),
            normalize_htu("https://a.example/token/")
        );
        assert_eq!(normalize_htu("ftp://a.example/"), None);
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        let check = ProofCheck::new("POST", "https://a.example/token", 0);
        for p in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.??.xx",
            &"a".repeat(MAX_PROOF_BYTES + 1),
        ] {
            assert!(verify(p, &check).is_err(), "{p}");
        }
    }
}
