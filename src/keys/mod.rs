//! Signing keys: generated on first start, private parts encrypted at rest, rotated with
//! overlap, published as a JWKS, used to sign JWTs.
//!
//! Each replica holds a [`KeyRing`] in memory and rereads the database every
//! `keys.refresh_secs`, so a rotation made by the CLI or another replica is served everywhere
//! within that bound. The active key of an algorithm is the newest unretired one, so replicas
//! that generated keys at the same moment still agree.

pub mod encryption;

use std::sync::{Arc, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use serde::Serialize;
use serde_json::{Value, json};

pub use encryption::Kek;

use crate::audit::{Event, Kind};
use crate::store::{Store, StoreError, StoredKey};
use crate::util;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key-encryption key {0}")]
    Kek(String),
    #[error(
        "signing key {kid} cannot be decrypted with the key-encryption key {fingerprint}; \
         every server sharing a database must use the same key-encryption key"
    )]
    Undecryptable { kid: String, fingerprint: String },
    #[error("key material: {0}")]
    Crypto(String),
    #[error("no active {0} signing key")]
    NoActiveKey(Alg),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A key failure in a request is the server's fault: a generic 500 with the detail logged.
impl From<KeyError> for crate::error::OAuthError {
    fn from(e: KeyError) -> Self {
        Self::internal(e)
    }
}

/// Signing algorithms. ES256 signs access tokens (fast); RS256 is what OpenID Connect
/// requires every provider to offer for ID tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Alg {
    ES256,
    RS256,
}

impl Alg {
    pub const ALL: [Alg; 2] = [Alg::ES256, Alg::RS256];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ES256 => "ES256",
            Self::RS256 => "RS256",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.as_str().eq_ignore_ascii_case(s))
    }
}

impl std::fmt::Display for Alg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

enum Signer {
    Ec(EcdsaKeyPair),
    Rsa(RsaKeyPair),
}

/// A key ready to sign and to publish.
pub struct LoadedKey {
    pub kid: String,
    pub alg: Alg,
    pub public_jwk: Value,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    pub expires_at: Option<i64>,
    signer: Signer,
}

impl std::fmt::Debug for LoadedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl LoadedKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ec(k) => k
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Crypto("ECDSA signing failed".into())),
            Signer::Rsa(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig)
                    .map_err(|_| KeyError::Crypto("RSA signing failed".into()))?;
                Ok(sig)
            }
        }
    }

    /// Published while not past `expires_at`.
    pub fn is_published(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|e| e > now)
    }
}

/// RFC 7638 thumbprint, used as the key id (the same function as DPoP's `jkt`). Our own
/// generated public keys always have the members it needs.
fn thumbprint(jwk: &Value) -> String {
    concierge_guard::dpop::thumbprint(jwk).unwrap_or_default()
}

fn parse_signer(alg: Alg, pkcs8: &[u8]) -> Result<(Signer, Value), KeyError> {
    let bad = |e: &dyn std::fmt::Display| KeyError::Crypto(format!("{alg} key: {e}"));
    match alg {
        Alg::ES256 => {
            let k = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8)
                .map_err(|e| bad(&e))?;
            let point = k.public_key().as_ref();
            if point.len() != 65 || point[0] != 4 {
                return Err(bad(&"unexpected public key encoding"));
            }
            let jwk = json!({
                "kty": "EC", "crv": "P-256",
                "x": util::b64(&point[1..33]), "y": util::b64(&point[33..65]),
            });
            Ok((Signer::Ec(k), jwk))
        }
        Alg::RS256 => {
            let k = RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| bad(&e))?;
            let public = k.public_key();
            let jwk = json!({
                "kty": "RSA",
                "n": util::b64(public.modulus().big_endian_without_leading_zero()),
                "e": util::b64(public.exponent().big_endian_without_leading_zero()),
            });
            Ok((Signer::Rsa(k), jwk))
        }
    }
}

fn generate_pkcs8(alg: Alg) -> Result<Vec<u8>, KeyError> {
    use aws_lc_rs::encoding::AsDer;
    match alg {
        Alg::ES256 => {
            let k = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING)
                .map_err(|_| KeyError::Crypto("EC key generation failed".into()))?;
            let doc = k
                .to_pkcs8v1()
                .map_err(|_| KeyError::Crypto("EC key export failed".into()))?;
            Ok(doc.as_ref().to_vec())
        }
        Alg::RS256 => {
            let k = RsaKeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048)
                .map_err(|_| KeyError::Crypto("RSA key generation failed".into()))?;
            let der = k
                .as_der()
                .map_err(|_| KeyError::Crypto("RSA key export failed".into()))?;
            Ok(der.as_ref().to_vec())
        }
    }
}

fn publishable(jwk: &Value, kid: &str, alg: Alg) -> Value {
    let mut jwk = jwk.clone();
    if let Some(o) = jwk.as_object_mut() {
        o.insert("kid".into(), json!(kid));
        o.insert("use".into(), json!("sig"));
        o.insert("alg".into(), json!(alg.as_str()));
    }
    jwk
}

/// The keys one replica holds: every key still published, and the active one per algorithm.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<Arc<LoadedKey>>,
}

impl KeyRing {
    /// The newest unretired key of `alg`.
    pub fn active(&self, alg: Alg) -> Option<&Arc<LoadedKey>> {
        self.keys
            .iter()
            .filter(|k| k.alg == alg && k.retired_at.is_none())
            .max_by(|a, b| a.created_at.cmp(&b.created_at).then(a.kid.cmp(&b.kid)))
    }

    pub fn keys(&self) -> &[Arc<LoadedKey>] {
        &self.keys
    }

    /// The JWK Set (RFC 7517 §5) of every key still needed to verify a token.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<&Value> = self
            .keys
            .iter()
            .filter(|k| k.is_published(now))
            .map(|k| &k.public_jwk)
            .collect();
        json!({ "keys": keys })
    }
}

/// Loads, generates, rotates and uses the signing keys.
pub struct KeyManager {
    store: Arc<dyn Store>,
    kek: Kek,
    /// How long a retired key stays published: the longest lifetime of a signed token.
    retention_secs: i64,
    ring: RwLock<Arc<KeyRing>>,
}

impl KeyManager {
    /// Load the keys, generating an active key for any algorithm that has none.
    pub async fn start(
        store: Arc<dyn Store>,
        kek: Kek,
        retention_secs: i64,
    ) -> Result<Self, KeyError> {
        let manager = Self {
            store,
            kek,
            retention_secs,
            ring: RwLock::new(Arc::new(KeyRing::default())),
        };
        manager.reload().await?;
        let missing: Vec<Alg> = {
            let ring = manager.ring();
            Alg::ALL
                .into_iter()
                .filter(|a| ring.active(*a).is_none())
                .collect()
        };
        if !missing.is_empty() {
            manager.rotate(&missing).await?;
        }
        Ok(manager)
    }

    /// The key-encryption key, for values derived from it (anti-forgery tokens).
    pub fn kek(&self) -> &Kek {
        &self.kek
    }

    pub fn ring(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reread every key from the database.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let rows = self.store.list_keys().await?;
        let mut keys = Vec::with_capacity(rows.len());
        let now = util::now();
        for row in rows {
            // A key past its publication time is never needed again; skip decrypting it.
            if row.expires_at.is_some_and(|e| e <= now) {
                continue;
            }
            keys.push(Arc::new(self.load_row(row)?));
        }
        let ring = Arc::new(KeyRing { keys });
        match self.ring.write() {
            Ok(mut w) => *w = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }

    fn load_row(&self, row: StoredKey) -> Result<LoadedKey, KeyError> {
        let alg = Alg::parse(&row.alg)
            .ok_or_else(|| KeyError::Crypto(format!("unknown algorithm {:?}", row.alg)))?;
        let pkcs8 = self.kek.open(&row.kid, &row.private_key)?;
        let (signer, _) = parse_signer(alg, &pkcs8)?;
        let public_jwk: Value = serde_json::from_str(&row.public_jwk)
            .map_err(|e| KeyError::Crypto(format!("stored JWK of {}: {e}", row.kid)))?;
        Ok(LoadedKey {
            kid: row.kid,
            alg,
            public_jwk,
            created_at: row.created_at,
            retired_at: row.retired_at,
            expires_at: row.expires_at,
            signer,
        })
    }

    /// Generate a new active key for each of `algs`; the previous active keys are retired
    /// and stay published until every token they signed has expired. Returns the new kids.
    pub async fn rotate(&self, algs: &[Alg]) -> Result<Vec<String>, KeyError> {
        let mut kids = Vec::new();
        for &alg in algs {
            let pkcs8 = zeroize::Zeroizing::new(generate_pkcs8(alg)?);
            let (_, jwk) = parse_signer(alg, &pkcs8)?;
            let kid = thumbprint(&jwk);
            let now = util::now();
            let row = StoredKey {
                kid: kid.clone(),
                alg: alg.as_str().to_string(),
                public_jwk: publishable(&jwk, &kid, alg).to_string(),
                private_key: self.kek.seal(&kid, &pkcs8)?,
                created_at: now,
                retired_at: None,
                expires_at: None,
            };
            // One minute of leeway for clock skew at the verifiers.
            self.store
                .rotate_key(&row, now, now + self.retention_secs + 60)
                .await?;
            // Rare and operator-driven, so written at once rather than queued.
            let event = Event::new(Kind::KeyRotated)
                .detail(serde_json::json!({ "kid": kid, "alg": alg.as_str() }))
                .into_inner();
            if let Err(e) = self.store.append_audit(&[event]).await {
                tracing::error!(error = %e, "recording a key rotation in the audit log failed");
            }
            kids.push(kid);
        }
        self.reload().await?;
        Ok(kids)
    }

    /// Sign a JWT with the active key of `alg`; `typ` goes in the header (RFC 9068 uses
    /// `at+jwt`).
    pub fn sign_jwt<C: Serialize>(
        &self,
        alg: Alg,
        typ: &str,
        claims: &C,
    ) -> Result<String, KeyError> {
        let ring = self.ring();
        let key = ring.active(alg).ok_or(KeyError::NoActiveKey(alg))?;
        let header = json!({ "alg": alg.as_str(), "typ": typ, "kid": key.kid });
        let claims =
            serde_json::to_vec(claims).map_err(|e| KeyError::Crypto(format!("claims: {e}")))?;
        let mut jwt = format!(
            "{}.{}",
            util::b64(header.to_string().as_bytes()),
            util::b64(&claims)
        );
        let sig = key.sign(jwt.as_bytes())?;
        jwt.push('.');
        jwt.push_str(&util::b64(&sig));
        Ok(jwt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_sign_what_jsonwebtoken_verifies() {
        for alg in Alg::ALL {
            let pkcs8 = generate_pkcs8(alg).expect("generate");
            let (signer, jwk) = parse_signer(alg, &pkcs8).expect("parse");
            let kid = thumbprint(&jwk);
            let key = LoadedKey {
                kid: kid.clone(),
                alg,
                public_jwk: publishable(&jwk, &kid, alg),
                created_at: 0,
                retired_at: None,
                expires_at: None,
                signer,
            };
            let header = util::b64(
                json!({"alg": alg.as_str(), "typ": "at+jwt", "kid": kid})
                    .to_string()
                    .as_bytes(),
            );
            let body = util::b64(
                json!({"sub": "u1", "exp": util::now() + 60})
                    .to_string()
                    .as_bytes(),
            );
            let input = format!("{header}.{body}");
            let token = format!(
                "{input}.{}",
                util::b64(&key.sign(input.as_bytes()).expect("sign"))
            );

            let jwk: jsonwebtoken::jwk::Jwk =
                serde_json::from_value(key.public_jwk.clone()).expect("jwk");
            let dk = jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("decoding key");
            let alg_j = match alg {
                Alg::ES256 => jsonwebtoken::Algorithm::ES256,
                Alg::RS256 => jsonwebtoken::Algorithm::RS256,
            };
            let mut v = jsonwebtoken::Validation::new(alg_j);
            v.required_spec_claims.clear();
            let data = jsonwebtoken::decode::<Value>(&token, &dk, &v).expect("verifies");
            assert_eq!(data.claims["sub"], "u1");
            assert_eq!(data.header.kid.as_deref(), Some(kid.as_str()));
        }
    }

    #[test]
    fn thumbprint_matches_rfc_7638_example() {
        // RFC 7638 §3.1.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
        });
        assert_eq!(
            thumbprint(&jwk),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }
}
