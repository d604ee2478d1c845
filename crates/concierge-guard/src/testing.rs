//! A local test issuer (feature `test-util`): keys, token minting with the
//! claims you choose, and a guard built on its keys — to test tools and
//! servers without an authorization server.
//!
//! ```
//! use concierge_guard::test::TestIssuer;
//! use concierge_guard::Guard;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let issuer = TestIssuer::new();
//! let resource = "https://mcp.example.com/mcp";
//! let guard = Guard::builder(&issuer, resource).build().await?; // fixed keys: no network
//! let token = issuer.token(resource).subject("alice").scopes(["notes:read"]).sign();
//! let principal = guard.validate(&token).await?;
//! assert_eq!(principal.sub(), "alice");
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value, json};

use crate::client::unix_now;
use crate::issuer::Issuer;

/// A signing key (ES256, or RS256 like most identity providers) with its
/// public JWK.
#[derive(Clone)]
pub struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl fmt::Debug for TestKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl TestKey {
    /// A fresh P-256 key named `kid`, for ES256.
    ///
    /// # Panics
    ///
    /// When the system has no randomness (test code only).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn generate(kid: &str) -> Self {
        let pair =
            EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).expect("generate a P-256 key");
        let der = pair.to_pkcs8v1().expect("encode the key");
        Self::from_encoding(
            kid,
            Algorithm::ES256,
            EncodingKey::from_ec_der(der.as_ref()),
        )
    }

    /// A fresh 2048-bit RSA key named `kid`, for RS256 (what most identity
    /// providers sign with).
    ///
    /// # Panics
    ///
    /// When the system has no randomness (test code only).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn generate_rsa(kid: &str) -> Self {
        use aws_lc_rs::encoding::AsDer as _;
        let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
            .expect("generate an RSA key");
        let pkcs8: aws_lc_rs::encoding::Pkcs8V1Der<'_> = pair.as_der().expect("encode the key");
        let pkcs1 = pkcs1_from_pkcs8(pkcs8.as_ref()).expect("an RSA PKCS#8 document");
        Self::from_encoding(kid, Algorithm::RS256, EncodingKey::from_rsa_der(pkcs1))
    }

    #[allow(clippy::expect_used)]
    fn from_encoding(kid: &str, alg: Algorithm, encoding: EncodingKey) -> Self {
        let mut jwk = Jwk::from_encoding_key(&encoding, alg).expect("the public JWK");
        jwk.common.key_id = Some(kid.to_owned());
        Self {
            kid: kid.to_owned(),
            alg,
            encoding,
            jwk: serde_json::to_value(jwk).unwrap_or_default(),
        }
    }

    /// The signature algorithm (ES256 or RS256).
    #[must_use]
    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    /// The key id.
    #[must_use]
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK (what a JWKS lists, and a DPoP proof's `jwk` header).
    #[must_use]
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// The private key, for signing anything else (DPoP proofs, client assertions).
    #[must_use]
    pub fn encoding_key(&self) -> &EncodingKey {
        &self.encoding
    }

    /// Signs `claims` as a JWT with this header `typ` and `kid`.
    ///
    /// # Panics
    ///
    /// When the claims cannot be serialised (test code only).
    #[must_use]
    #[allow(clippy::expect_used)]
    pub fn sign_with(&self, claims: &Value, typ: Option<&str>, kid: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.typ = typ.map(str::to_owned);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign the token")
    }
}

/// The RSAPrivateKey (RFC 8017) inside a PKCS#8 PrivateKeyInfo (RFC 5208):
/// `SEQUENCE { INTEGER, SEQUENCE { OID, NULL }, OCTET STRING { key } }`.
fn pkcs1_from_pkcs8(der: &[u8]) -> Option<&[u8]> {
    /// One DER tag-length-value: (tag, content, rest).
    fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
            (len, &rest[n..])
        };
        (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
    }
    let (0x30, info, _) = tlv(der)? else {
        return None;
    };
    let (0x02, _, rest) = tlv(info)? else {
        return None;
    };
    let (0x30, _, rest) = tlv(rest)? else {
        return None;
    };
    let (0x04, key, _) = tlv(rest)? else {
        return None;
    };
    Some(key)
}

/// A test authorization server: a signing key, an issuer identifier, and
/// token minting. Use it offline (`Guard::builder(&issuer, resource)` uses
/// its keys directly) or [`serve`](Self::serve) it on a loopback port to go
/// through discovery.
pub struct TestIssuer {
    issuer: String,
    key: TestKey,
    served: Option<Served>,
}

struct Served {
    keys: Arc<Mutex<Vec<Value>>>,
    jwks_fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl fmt::Debug for TestIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TestIssuer")
            .field("issuer", &self.issuer)
            .field("kid", &self.key.kid)
            .field("served", &self.served.is_some())
            .finish()
    }
}

impl Default for TestIssuer {
    fn default() -> Self {
        Self::new()
    }
}

impl TestIssuer {
    /// An issuer `https://issuer.test` with a fresh key `test-key`.
    #[must_use]
    pub fn new() -> Self {
        Self::with_issuer("https://issuer.test")
    }

    /// An issuer with this identifier.
    #[must_use]
    pub fn with_issuer(issuer: impl Into<String>) -> Self {
        Self {
            issuer: issuer.into(),
            key: TestKey::generate("test-key"),
            served: None,
        }
    }

    /// Signs with `key` instead (e.g. [`TestKey::generate_rsa`]); a served
    /// issuer publishes it in place of its first key.
    #[must_use]
    pub fn with_key(mut self, key: TestKey) -> Self {
        if let Some(served) = &self.served {
            *served.keys.lock().unwrap_or_else(PoisonError::into_inner) = vec![key.jwk.clone()];
        }
        self.key = key;
        self
    }

    /// Serves RFC 8414 metadata (`issuer`, `jwks_uri`, `token_endpoint`) and
    /// the JWKS on `http://127.0.0.1:<port>`, which becomes the issuer. The
    /// server stops when the `TestIssuer` is dropped. Needs a Tokio runtime.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let issuer = concierge_guard::test::TestIssuer::serve().await?;
    /// let guard = concierge_guard::Guard::builder(issuer.issuer(), "http://127.0.0.1:1/mcp")
    ///     .build()
    ///     .await?; // discovers the metadata and fetches the JWKS over HTTP
    /// assert_eq!(issuer.jwks_fetches(), 1);
    /// # let _ = guard;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn serve() -> std::io::Result<Self> {
        Self::serve_with(|_| {}).await
    }

    /// Like [`serve`](Self::serve); `edit` may change the metadata document
    /// first (to test how a server copes with odd issuers).
    ///
    /// # Errors
    ///
    /// When no loopback port can be bound.
    pub async fn serve_with(edit: impl FnOnce(&mut Value)) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        Self::serve_on(listener, edit)
    }

    /// Like [`serve_with`](Self::serve_with), on a listener you bound (e.g.
    /// to bring an issuer up on a port a guard is already trying).
    ///
    /// # Errors
    ///
    /// When the listener has no local address.
    pub fn serve_on(
        listener: tokio::net::TcpListener,
        edit: impl FnOnce(&mut Value),
    ) -> std::io::Result<Self> {
        use axum::routing::get;

        let issuer = format!("http://{}", listener.local_addr()?);
        let key = TestKey::generate("test-key");
        let mut metadata = json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/jwks"),
            "token_endpoint": format!("{issuer}/token"),
        });
        edit(&mut metadata);
        let metadata = metadata.to_string();
        let keys = Arc::new(Mutex::new(vec![key.jwk.clone()]));
        let jwks_fetches = Arc::new(AtomicUsize::new(0));
        let (k, n) = (keys.clone(), jwks_fetches.clone());
        let json = |body: String| ([(http::header::CONTENT_TYPE, "application/json")], body);
        let app = axum::Router::new()
            .route(
                "/.well-known/oauth-authorization-server",
                get(move || async move { json(metadata) }),
            )
            .route(
                "/jwks",
                get(move || async move {
                    n.fetch_add(1, Ordering::SeqCst);
                    let keys = k.lock().unwrap_or_else(PoisonError::into_inner).clone();
                    json(json!({ "keys": keys }).to_string())
                }),
            );
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            issuer,
            key,
            served: Some(Served {
                keys,
                jwks_fetches,
                task,
            }),
        })
    }

    /// The issuer identifier (the `iss` of its tokens).
    #[must_use]
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The signing key.
    #[must_use]
    pub fn key(&self) -> &TestKey {
        &self.key
    }

    /// Its JWKS document.
    #[must_use]
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.jwk] })
    }

    /// How many times the served JWKS was fetched (0 when not served).
    #[must_use]
    pub fn jwks_fetches(&self) -> usize {
        self.served
            .as_ref()
            .map_or(0, |s| s.jwks_fetches.load(Ordering::SeqCst))
    }

    /// Publishes another key in the served JWKS (a key rotation).
    pub fn publish_key(&self, key: &TestKey) {
        if let Some(served) = &self.served {
            served
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(key.jwk.clone());
        }
    }

    /// Withdraws every key from the served JWKS.
    pub fn withdraw_keys(&self) {
        if let Some(served) = &self.served {
            served
                .keys
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Starts an RFC 9068 access token for `resource`: `iss`, `aud`,
    /// `sub: user`, `client_id: client`, `iat`, `exp` in 10 minutes, a
    /// unique `jti`, no scope.
    pub fn token(&self, resource: &str) -> TokenBuilder<'_> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let now = unix_now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer));
        claims.insert("aud".into(), json!(resource));
        claims.insert("sub".into(), json!("user"));
        claims.insert("client_id".into(), json!("client"));
        claims.insert("iat".into(), json!(now));
        claims.insert("exp".into(), json!(now + 600));
        claims.insert(
            "jti".into(),
            json!(format!("t{}", NEXT.fetch_add(1, Ordering::Relaxed))),
        );
        TokenBuilder {
            issuer: self,
            claims,
            typ: Some("at+jwt".into()),
            key: None,
        }
    }

    /// Signs any claims with `typ: at+jwt` and the issuer's key.
    #[must_use]
    pub fn sign(&self, claims: &Value) -> String {
        self.key
            .sign_with(claims, Some("at+jwt"), Some(&self.key.kid))
    }
}

impl From<&TestIssuer> for Issuer {
    /// A served test issuer is discovered; an offline one gives its keys.
    fn from(test: &TestIssuer) -> Self {
        let issuer = Issuer::new(test.issuer.clone());
        if test.served.is_some() {
            issuer
        } else {
            issuer.jwks(test.jwks())
        }
    }
}

/// A token being minted by [`TestIssuer::token`].
#[must_use = "call .sign()"]
pub struct TokenBuilder<'a> {
    issuer: &'a TestIssuer,
    claims: Map<String, Value>,
    typ: Option<String>,
    key: Option<&'a TestKey>,
}

impl fmt::Debug for TokenBuilder<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenBuilder")
            .field("claims", &self.claims)
            .field("typ", &self.typ)
            .finish_non_exhaustive()
    }
}

impl<'a> TokenBuilder<'a> {
    /// The subject (`sub`).
    pub fn subject(self, sub: &str) -> Self {
        self.claim("sub", sub)
    }

    /// The client (`client_id`).
    pub fn client_id(self, client_id: &str) -> Self {
        self.claim("client_id", client_id)
    }

    /// The granted scopes, as the space-separated `scope` string.
    pub fn scopes<I, S>(self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let joined = scopes
            .into_iter()
            .map(|s| s.as_ref().to_owned())
            .collect::<Vec<_>>()
            .join(" ");
        self.claim("scope", joined)
    }

    /// The lifetime from now (negative values make expired tokens with
    /// [`claim`](Self::claim)`("exp", …)`).
    pub fn expires_in(self, lifetime: Duration) -> Self {
        let exp = unix_now().saturating_add(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
        self.claim("exp", exp)
    }

    /// Binds the token to a DPoP key thumbprint (`cnf.jkt`).
    pub fn dpop_jkt(self, jkt: &str) -> Self {
        self.claim("cnf", json!({ "jkt": jkt }))
    }

    /// Any claim (replacing one set before).
    pub fn claim(mut self, name: &str, value: impl Into<Value>) -> Self {
        self.claims.insert(name.to_owned(), value.into());
        self
    }

    /// Removes a claim.
    pub fn without(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// The header's `typ` (default `at+jwt`; `None` leaves it out).
    pub fn typ(mut self, typ: Option<&str>) -> Self {
        self.typ = typ.map(str::to_owned);
        self
    }

    /// Signs with another key (e.g. one the issuer does not publish).
    pub fn signed_by(mut self, key: &'a TestKey) -> Self {
        self.key = Some(key);
        self
    }

    /// The claims as they stand.
    #[must_use]
    pub fn claims(&self) -> Value {
        Value::Object(self.claims.clone())
    }

    /// The signed token.
    #[must_use]
    pub fn sign(self) -> String {
        let key = self.key.unwrap_or(&self.issuer.key);
        key.sign_with(
            &Value::Object(self.claims),
            self.typ.as_deref(),
            Some(&key.kid),
        )
    }
}
