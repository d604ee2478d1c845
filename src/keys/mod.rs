//! Signing keys: generated on first start, private parts encrypted at rest, rotated with
//! overlap (publish-then-activate), revoked at once, published as a JWKS, used to sign JWTs.
//!
//! Each replica holds a [`KeyRing`] in memory and rereads the database every
//! `keys.refresh_secs`. A rotation stores the new key with an activation time at least that
//! far ahead (`keys.activation_delay_secs`), so every replica publishes it before any signs
//! with it; which key signs is then decided from the stored times and the clock alone
//! ([`lifecycle::states`]), so replicas agree without talking to each other. A revoked key
//! leaves every replica's JWKS, and stops verifying there, at its next reload.

pub mod encryption;
pub mod lifecycle;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair,
};
use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};

pub use encryption::Kek;
pub use lifecycle::{KeyState, Timeline};

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
    #[error("no signing key {0}")]
    UnknownKey(String),
    #[error("signing key {0} is already revoked")]
    AlreadyRevoked(String),
    #[error(
        "a new {0} key is already pending activation; wait until it signs, revoke it, or \
         rotate with --now in an emergency"
    )]
    AlreadyPending(Alg),
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
    pub times: Timeline,
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

/// The keys one replica holds: every key published when it was loaded (pending, active,
/// retired). Their states move on with the clock between reloads.
#[derive(Debug, Default)]
pub struct KeyRing {
    keys: Vec<Arc<LoadedKey>>,
    /// How long a retired key stays published.
    retention: i64,
    /// The JWK Set's JSON, and the second it is the set of ([`KeyRing::jwks_json`]).
    jwks_json: Mutex<Option<(i64, Bytes)>>,
}

impl KeyRing {
    /// What the lifecycle needs to know of each key.
    fn facts(&self) -> Vec<lifecycle::KeyFacts<'_>> {
        self.keys
            .iter()
            .map(|k| lifecycle::KeyFacts {
                kid: &k.kid,
                alg: k.alg.as_str(),
                times: k.times,
            })
            .collect()
    }

    /// Every key with its state at `now`.
    pub fn states(&self, now: i64) -> Vec<(&Arc<LoadedKey>, KeyState)> {
        let facts = self.facts();
        let states = lifecycle::states(&facts, now, self.retention);
        self.keys.iter().zip(states).collect()
    }

    /// The key that signs `alg` now.
    pub fn active(&self, alg: Alg) -> Option<&Arc<LoadedKey>> {
        self.active_at(alg, util::now())
    }

    pub fn active_at(&self, alg: Alg, now: i64) -> Option<&Arc<LoadedKey>> {
        self.states(now)
            .into_iter()
            .find(|(k, s)| k.alg == alg && matches!(s, KeyState::Active { .. }))
            .map(|(k, _)| k)
    }

    /// The published key `kid`, to verify a token of ours with; never a revoked or expired
    /// one.
    pub fn verifier(&self, kid: &str, now: i64) -> Option<&Arc<LoadedKey>> {
        self.states(now)
            .into_iter()
            .find(|(k, s)| k.kid == kid && s.is_published())
            .map(|(k, _)| k)
    }

    pub fn keys(&self) -> &[Arc<LoadedKey>] {
        &self.keys
    }

    /// The JWK Set (RFC 7517 §5) of every key still needed to verify a token, and of the
    /// pending keys about to sign.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<&Value> = self
            .states(now)
            .into_iter()
            .filter(|(_, s)| s.is_published())
            .map(|(k, _)| &k.public_jwk)
            .collect();
        json!({ "keys": keys })
    }

    /// [`KeyRing::jwks`] as the JSON `GET /jwks` answers with. Made once for each second
    /// it is asked for and shared until then: the set changes only with the clock, by the
    /// second (`now`), and at a reload, which makes a new ring. A fixed answer then costs
    /// no serialization (issue 17.1).
    pub fn jwks_json(&self, now: i64) -> Bytes {
        let mut memo = self
            .jwks_json
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((at, json)) = &*memo
            && *at == now
        {
            return json.clone();
        }
        // A `Value` always serializes.
        let json = Bytes::from(serde_json::to_vec(&self.jwks(now)).unwrap_or_default());
        *memo = Some((now, json.clone()));
        json
    }
}

/// How keys are rotated and kept; from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct KeyPolicy {
    /// How long a retired key stays published: the longest lifetime of a signed token, plus a
    /// minute of leeway for clock skew at the verifiers.
    pub retention_secs: i64,
    /// How long a rotated key is published before it signs.
    pub activation_delay_secs: i64,
    /// Rotate a key that has signed this long; 0: never on schedule.
    pub rotate_after_secs: i64,
}

impl KeyPolicy {
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            retention_secs: config.tokens.longest_signed_lifetime() + 60,
            activation_delay_secs: config.keys.activation_delay(),
            rotate_after_secs: config.keys.rotate_after_secs(),
        }
    }
}

/// When a rotated key starts signing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// After the activation delay, once every replica publishes it (the normal way).
    Delayed,
    /// At once: an emergency. Replicas that have not reloaded yet do not publish it for up
    /// to `keys.refresh_secs`, so tokens it signs may be refused there meanwhile.
    Now,
}

/// A key made by a rotation.
#[derive(Debug, Clone, Serialize)]
pub struct NewKey {
    pub kid: String,
    pub alg: Alg,
    pub activates_at: i64,
    /// It signs from the moment it was made (no key of its algorithm was active, or an
    /// emergency rotation), rather than after the activation delay.
    pub immediate: bool,
}

/// What a revocation did.
#[derive(Debug, Clone, Serialize)]
pub struct Revocation {
    pub kid: String,
    pub alg: Alg,
    /// The key now signing instead, when the revoked key was the active one.
    pub replacement: Option<String>,
}

/// Loads, generates, rotates and uses the signing keys.
pub struct KeyManager {
    store: Arc<dyn Store>,
    kek: Kek,
    policy: KeyPolicy,
    ring: RwLock<Arc<KeyRing>>,
    /// The state of each key at the last reload, to log what changed.
    seen: Mutex<BTreeMap<String, &'static str>>,
}

impl KeyManager {
    /// Load the keys without generating any (the CLI).
    pub async fn open(
        store: Arc<dyn Store>,
        kek: Kek,
        policy: KeyPolicy,
    ) -> Result<Self, KeyError> {
        let manager = Self {
            store,
            kek,
            policy,
            ring: RwLock::new(Arc::new(KeyRing::default())),
            seen: Mutex::new(BTreeMap::new()),
        };
        manager.reload().await?;
        Ok(manager)
    }

    /// Load the keys, generating an active key for any algorithm that has none: a server
    /// with no key signs at once (there is no earlier key to keep signing meanwhile).
    pub async fn start(
        store: Arc<dyn Store>,
        kek: Kek,
        policy: KeyPolicy,
    ) -> Result<Self, KeyError> {
        let manager = Self::open(store, kek, policy).await?;
        let missing: Vec<Alg> = {
            let ring = manager.ring();
            Alg::ALL
                .into_iter()
                .filter(|a| ring.active(*a).is_none())
                .collect()
        };
        if !missing.is_empty() {
            manager.rotate(&missing, Activation::Now).await?;
        }
        Ok(manager)
    }

    pub fn policy(&self) -> KeyPolicy {
        self.policy
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

    /// Reread every key from the database; log what changed since the last reload.
    pub async fn reload(&self) -> Result<(), KeyError> {
        let rows = self.store.list_keys().await?;
        let now = util::now();
        let states = row_states(&rows, now, self.policy.retention_secs);
        let mut keys = Vec::with_capacity(rows.len());
        let mut seen = BTreeMap::new();
        for (row, state) in rows.into_iter().zip(states) {
            seen.insert(row.kid.clone(), state.name());
            // Revoked and expired keys are never needed again; skip decrypting them.
            if state.is_published() {
                keys.push(Arc::new(self.load_row(row)?));
            }
        }
        self.log_changes(seen);
        let ring = Arc::new(KeyRing {
            keys,
            retention: self.policy.retention_secs,
            jwks_json: Mutex::default(),
        });
        match self.ring.write() {
            Ok(mut w) => *w = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
        Ok(())
    }

    /// Info when a key appeared, changed state or went; debug otherwise. Kids only.
    fn log_changes(&self, now_seen: BTreeMap<String, &'static str>) {
        let mut last = match self.seen.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut changes = Vec::new();
        for (kid, state) in &now_seen {
            match last.get(kid) {
                Some(before) if before == state => {}
                Some(before) => changes.push(format!("{kid} {before}->{state}")),
                None => changes.push(format!("{kid} {state}")),
            }
        }
        for kid in last.keys().filter(|k| !now_seen.contains_key(*k)) {
            changes.push(format!("{kid} removed"));
        }
        let summary = now_seen
            .iter()
            .filter(|(_, s)| **s != "expired")
            .map(|(k, s)| format!("{k} {s}"))
            .collect::<Vec<_>>()
            .join(", ");
        if changes.is_empty() {
            tracing::debug!(keys = %summary, "signing keys reloaded, unchanged");
        } else {
            tracing::info!(changes = %changes.join(", "), keys = %summary, "signing keys changed");
        }
        *last = now_seen;
    }

    fn load_row(&self, row: StoredKey) -> Result<LoadedKey, KeyError> {
        let alg = Alg::parse(&row.alg)
            .ok_or_else(|| KeyError::Crypto(format!("unknown algorithm {:?}", row.alg)))?;
        let pkcs8 = self.kek.open(&row.kid, &row.private_key)?;
        let (signer, _) = parse_signer(alg, &pkcs8)?;
        let public_jwk: Value = serde_json::from_str(&row.public_jwk)
            .map_err(|e| KeyError::Crypto(format!("stored JWK of {}: {e}", row.kid)))?;
        Ok(LoadedKey {
            times: timeline(&row),
            kid: row.kid,
            alg,
            public_jwk,
            signer,
        })
    }

    /// A new key row for `alg`, sealed under the KEK (saving a generated KEK first).
    fn new_key(
        &self,
        alg: Alg,
        now: i64,
        activates_at: i64,
        supersedes: Option<String>,
    ) -> Result<StoredKey, KeyError> {
        let pkcs8 = zeroize::Zeroizing::new(generate_pkcs8(alg)?);
        let (_, jwk) = parse_signer(alg, &pkcs8)?;
        let kid = thumbprint(&jwk);
        Ok(StoredKey {
            public_jwk: publishable(&jwk, &kid, alg).to_string(),
            private_key: self.kek.seal(&kid, &pkcs8)?,
            kid,
            alg: alg.as_str().to_string(),
            created_at: now,
            activates_at: Some(activates_at),
            retired_at: None,
            expires_at: None,
            revoked_at: None,
            supersedes,
        })
    }

    /// Generate a new key for each of `algs`. With [`Activation::Delayed`] it is published at
    /// once and signs after the activation delay, when the previous key of its algorithm
    /// retires (it stays published until every token it signed has expired). An algorithm
    /// with no active key gets one that signs at once. `AlreadyPending` when a rotation of
    /// the algorithm is already under way (made here, elsewhere, or by the schedule).
    pub async fn rotate(&self, algs: &[Alg], when: Activation) -> Result<Vec<NewKey>, KeyError> {
        let mut made = Vec::new();
        let ring = self.ring();
        for &alg in algs {
            let now = util::now();
            let (activates_at, supersedes) = match (when, ring.active_at(alg, now)) {
                (Activation::Delayed, Some(current)) => (
                    now + self.policy.activation_delay_secs,
                    Some(current.kid.clone()),
                ),
                _ => (now, None),
            };
            made.push(self.add(alg, now, activates_at, supersedes).await?);
        }
        self.reload().await?;
        Ok(made)
    }

    async fn add(
        &self,
        alg: Alg,
        now: i64,
        activates_at: i64,
        supersedes: Option<String>,
    ) -> Result<NewKey, KeyError> {
        let row = self.new_key(alg, now, activates_at, supersedes)?;
        match self.store.add_key(&row).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => return Err(KeyError::AlreadyPending(alg)),
            Err(e) => return Err(e.into()),
        }
        let event = Event::new(Kind::KeyRotated)
            .detail(json!({
                "kid": row.kid, "alg": alg.as_str(), "activates_at": activates_at,
                "immediate": activates_at <= now,
            }))
            .into_inner();
        // Rare and operator-driven, so written at once rather than queued.
        if let Err(e) = self.store.append_audit(&[event]).await {
            tracing::error!(error = %e, "recording a key rotation in the audit log failed");
        }
        tracing::info!(kid = %row.kid, alg = %alg, activates_at, "new signing key");
        Ok(NewKey {
            kid: row.kid,
            alg,
            activates_at,
            immediate: activates_at <= now,
        })
    }

    /// The scheduled rotation (`keys.rotate_after_days`): rotate, publish-then-activate, each
    /// algorithm whose active key has signed that long. Replicas race here; the store lets
    /// exactly one new key supersede a given key, so the others find it done. Returns the new
    /// keys made by this replica.
    pub async fn rotate_due(&self, now: i64) -> Result<Vec<NewKey>, KeyError> {
        if self.policy.rotate_after_secs <= 0 {
            return Ok(Vec::new());
        }
        let ring = self.ring();
        let facts = ring.facts();
        let states = lifecycle::states(&facts, now, self.policy.retention_secs);
        let due = lifecycle::due_for_rotation(&facts, &states, now, self.policy.rotate_after_secs);
        let mut made = Vec::new();
        for i in due {
            let current = &ring.keys[i];
            let activates_at = now + self.policy.activation_delay_secs;
            match self
                .add(current.alg, now, activates_at, Some(current.kid.clone()))
                .await
            {
                Ok(k) => made.push(k),
                Err(KeyError::AlreadyPending(alg)) => {
                    tracing::debug!(alg = %alg, "scheduled rotation already made by another replica");
                }
                Err(e) => return Err(e),
            }
        }
        if !made.is_empty() {
            self.reload().await?;
        }
        Ok(made)
    }

    /// Withdraw `kid` at once: out of the JWKS and never trusted or used again (every replica
    /// within `keys.refresh_secs`). When it was the active key of its algorithm, a new key
    /// replaces it at once in the same transaction, so signing never stops: an emergency
    /// path, which replicas that have not reloaded yet do not publish for up to
    /// `keys.refresh_secs`.
    pub async fn revoke(&self, kid: &str) -> Result<Revocation, KeyError> {
        let rows = self.store.list_keys().await?;
        let now = util::now();
        let states = row_states(&rows, now, self.policy.retention_secs);
        let (row, state) = rows
            .iter()
            .zip(states)
            .find(|(r, _)| r.kid == kid)
            .ok_or_else(|| KeyError::UnknownKey(kid.to_string()))?;
        if matches!(state, KeyState::Revoked { .. }) {
            return Err(KeyError::AlreadyRevoked(kid.to_string()));
        }
        let alg = Alg::parse(&row.alg)
            .ok_or_else(|| KeyError::Crypto(format!("unknown algorithm {:?}", row.alg)))?;
        let replacement = match state {
            KeyState::Active { .. } => Some(self.new_key(alg, now, now, None)?),
            _ => None,
        };
        if !self
            .store
            .revoke_key(kid, now, replacement.as_ref())
            .await?
        {
            return Err(KeyError::AlreadyRevoked(kid.to_string()));
        }
        let replacement = replacement.map(|r| r.kid);
        let event = Event::new(Kind::KeyRevoked)
            .detail(json!({ "kid": kid, "alg": alg.as_str(), "replacement": replacement }))
            .into_inner();
        if let Err(e) = self.store.append_audit(&[event]).await {
            tracing::error!(error = %e, "recording a key revocation in the audit log failed");
        }
        tracing::warn!(kid, alg = %alg, replacement = ?replacement, "signing key revoked");
        self.reload().await?;
        Ok(Revocation {
            kid: kid.to_string(),
            alg,
            replacement,
        })
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

fn timeline(row: &StoredKey) -> Timeline {
    Timeline {
        created_at: row.created_at,
        activates_at: row.activates_at.unwrap_or(row.created_at),
        retired_at: row.retired_at,
        expires_at: row.expires_at,
        revoked_at: row.revoked_at,
    }
}

/// The state of each stored key at `now`.
pub fn row_states(rows: &[StoredKey], now: i64, retention: i64) -> Vec<KeyState> {
    let facts: Vec<lifecycle::KeyFacts<'_>> = rows
        .iter()
        .map(|r| lifecycle::KeyFacts {
            kid: &r.kid,
            alg: &r.alg,
            times: timeline(r),
        })
        .collect();
    lifecycle::states(&facts, now, retention)
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
                times: Timeline {
                    created_at: 0,
                    activates_at: 0,
                    retired_at: None,
                    expires_at: None,
                    revoked_at: None,
                },
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
